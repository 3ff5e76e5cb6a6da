"""
The timeouts of every PostgreSQL connection of a realm (the store, the
bus, the leases).  No import of psycopg here: a realm on SQLite imports
this module too, and runs without psycopg installed.
"""

# libpq's own timeouts for every connection of a realm (store, bus,
# leases), so a call on a dead network fails rather than hangs: connecting,
# keepalives, unacknowledged writes (milliseconds).
CLIENT_TIMEOUTS = dict(
    connect_timeout=5, keepalives=1, keepalives_idle=5, keepalives_interval=2,
    keepalives_count=3, tcp_user_timeout=10000,
)
# The server's keepalives: a session whose machine vanished ends (and its
# locks are freed) idle + interval * count seconds after it was last heard.
SERVER_KEEPALIVES = dict(tcp_keepalives_idle=5, tcp_keepalives_interval=2, tcp_keepalives_count=3)
SERVER_TIMEOUTS = "; ".join(f"SET {name} = {value}" for name, value in SERVER_KEEPALIVES.items())
