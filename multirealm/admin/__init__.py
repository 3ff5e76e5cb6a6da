"""
The admin channel: the realm serves it on a UNIX socket in its data
directory (L{server}), the operator's C{multirealm-admin} speaks it
(L{tool}); L{commands} is their contract.
"""
