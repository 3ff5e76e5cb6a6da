"""
The rules of one realm: no sockets, no SQL.  Adapters (chat, storage, and
later federation and web) reach the realm's state only through this package.
"""
