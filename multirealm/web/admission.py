"""
The HTTP port's connections: each admitted by the process's
L{multirealm.connections.ConnectionLimits} (else a 503 and closed), and
each request's headers complete within C{header_timeout} of the
connection or of the previous response (else a 408 and closed): a
trickle of bytes does not extend it, as it does twisted.web's idle
timeout.  The WebSocket to come (C{/ws}) starts as one of these requests;
its resource takes over the channel's C{ticket} (see
L{multirealm.connections}).
"""

import json

from twisted.web import http, server

from multirealm import errors, wire
from multirealm.connections import refusal


def _response(status, error):
    """A whole HTTP response, written before or instead of a request: a ChatError as JSON."""
    body = json.dumps(wire.error_reply(error)).encode("ascii")
    return b"".join([
        b"HTTP/1.1 %d %s\r\n" % (status, http.RESPONSES[status]),
        b"Content-Type: application/json\r\nConnection: close\r\n",
        b"Content-Length: %d\r\n\r\n" % len(body),
        body,
    ])


class _Channel(http.HTTPChannel):
    """
    An HTTP connection whose request headers must be complete within the
    site's C{header_timeout} of its start or of the previous response: the
    deadline is fixed, where twisted.web's idle timeout restarts with
    every byte.  Gives its ticket back when it ends.
    """

    ticket = None
    _deadline = None

    def connectionMade(self):
        super().connectionMade()
        self._wait_for_headers()

    def _wait_for_headers(self):
        self._stop_waiting()
        self._deadline = self.callLater(self.site.header_timeout, self._headers_too_slow)

    def _headers_too_slow(self):
        self._deadline = None
        self.transport.write(_response(408, errors.IdleTimeout(
            f"the request's headers did not come within {self.site.header_timeout:g} seconds"
        )))
        self.transport.loseConnection()

    def _stop_waiting(self):
        deadline, self._deadline = self._deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()

    def allHeadersReceived(self):
        self._stop_waiting()
        super().allHeadersReceived()

    def requestDone(self, request):
        if self.persistent:
            # Before the next request's bytes, already buffered, are parsed.
            self._wait_for_headers()
        super().requestDone(request)

    def connectionLost(self, reason):
        self._stop_waiting()
        if self.ticket is not None:
            self.ticket.release()
        super().connectionLost(reason)


class AdmittingSite(server.Site):
    """
    A Site that admits each connection through its C{connections} (a
    L{multirealm.connections.ConnectionLimits}) and gives each request
    C{header_timeout} seconds for its headers.
    """

    protocol = _Channel

    def buildProtocol(self, addr):
        try:
            ticket = self.connections.admit(addr)
        except errors.ChatError as e:
            return refusal(self.connections, _response(503, e))
        channel = super().buildProtocol(addr)
        channel.ticket = ticket
        return channel
