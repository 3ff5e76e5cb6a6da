"""
The realm's HTTP port (L{twisted.web}): files for browsers and scripts
(L{files}).  An adapter like chat: it reaches the realm only through core.
"""
