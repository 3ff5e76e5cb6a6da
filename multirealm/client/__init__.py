"""
C{multirealm-chat}: a terminal client that speaks only the public
protocol (docs/protocol.md).  L{commands} parses what the person types,
L{render} turns replies and events into lines, L{connection} talks to the
realm (reconnecting, re-subscribing, catching up), L{app} is the terminal.
"""
