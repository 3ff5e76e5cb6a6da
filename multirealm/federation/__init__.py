"""
Realm-to-realm links (docs/protocol.md, "Realm port"): the frames
(L{frames}) and the handshake (L{handshake}).  The links themselves (a
ReconnectingClientFactory per peer, RealmProtocol on the realm port, the
per-peer outbox drain) are the next step; these modules are pure and
tested on their own.
"""
