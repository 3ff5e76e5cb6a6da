"""
The client port: the thin protocol (L{protocol}), its outbound queue
(L{outbound}) and the command handlers (L{handlers}).
"""
