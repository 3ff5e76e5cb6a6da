"""
The HTTP port's connections: each admitted by the process's
L{multirealm.connections.ConnectionLimits} (else a 503 and closed), and
timed where twisted.web's idle timeout is not enough:

  - each request's headers complete within C{header_timeout} of the
    connection or of the previous response (else a 408 and closed): a
    trickle of bytes does not extend it, as it does twisted.web's idle
    timeout;
  - during a request's body only progress restarts the idle timer: each
    L{PROGRESS} bytes of body (else a 408 and closed, the body dropped);
  - a response the client does not read for C{idle_timeout} (the
    transport stays paused) aborts the connection: twisted.web turns its
    idle timeout off while a response is produced.

A request may be refused before its body is read (L{_Channel.refuse}).
A WebSocket (C{/ws}) starts as one of these requests; once upgraded, it
takes over the channel's C{ticket} (L{_Channel.upgraded}; see
L{multirealm.connections}) and no HTTP timer runs on it.
"""

import json

from twisted.logger import Logger
from twisted.web import http, server

from multirealm import errors, wire
from multirealm.connections import Linger, admitted

log = Logger()

PROGRESS = 64 * 1024  # bytes of a request body that restart the idle timer


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
    every byte.  During a body, only L{PROGRESS} bytes of it restart the
    idle timer; a client that reads nothing of a response for the idle
    timeout is cut.  Gives its ticket back when it ends.
    """

    ticket = None
    _deadline = None
    _body = None  # bytes of the body being read since the idle timer last restarted
    _stalled = None  # aborts the connection if its client reads nothing more
    _lingering = None  # a Linger: cuts a refused connection its client does not close

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
        request = self.requests[-1]
        # twisted.web gives a request these only once its body is read
        # (requestReceived); UploadRequest.gotLength, called from here,
        # decides on the body before.
        request.method, request.uri, request.clientproto = self._command, self._path, self._version
        self._body = 0
        super().allHeadersReceived()

    def resetTimeout(self):
        # twisted.web's dataReceived restarts the idle timer at every read;
        # during a body only progress does (rawDataReceived).
        if self._body is None:
            super().resetTimeout()

    def rawDataReceived(self, data):
        if self._body is not None:
            self._body += len(data)
            if self._body >= PROGRESS:
                self._body = 0
                super().resetTimeout()
        super().rawDataReceived(data)

    def allContentReceived(self):
        self._body = None
        super().allContentReceived()  # turns the idle timer off until the response is done

    def timeoutConnection(self):
        if self._body is not None:  # a body stalled: nothing is answered yet
            self._body = None
            self.transport.write(_response(408, errors.IdleTimeout(
                f"less than {PROGRESS // 1024} KiB of the body in {self.timeOut:g} seconds:"
                " dropped"
            )))
        super().timeoutConnection()  # the request's connectionLost drops its body

    def refuse(self, status, error):
        """
        Answer the request whose headers are in with C{status} and
        C{error} before reading its body, and close.  twisted.web answers
        a request only once its body is read (its L{http.Request.finish}
        would hand the channel to the next request mid-body), so the
        response is written here whole, with C{Connection: close}.  The
        connection then closes its side and drops what comes for up to
        C{LINGER_SECONDS} (a L{Linger}, counted with the port's other
        refusals), so that the client reads the answer rather than a reset
        for the body it sent meanwhile.
        """
        self._body = None
        self.setTimeout(None)
        # Nothing more is parsed: neither the rest of this read nor later ones.
        self.dataReceived = self.rawDataReceived = lambda data: None
        self.transport.write(_response(status, error))
        half_close = getattr(self.transport, "loseWriteConnection", None)
        if half_close is None:
            self.loseConnection()
            return
        self.transport.unregisterProducer()  # else a paused channel would hold the close
        half_close()
        self.transport.resumeProducing()
        self._lingering = Linger(self.site.connections, self.transport)

    def pauseProducing(self):
        # The transport's buffer is full: the client is not reading.
        super().pauseProducing()
        if self._stalled is None:
            self._stalled = self.callLater(self.site.timeOut, self._not_reading)

    def resumeProducing(self):
        self._stop(self._stalled)
        self._stalled = None
        super().resumeProducing()

    def _not_reading(self):
        self._stalled = None
        log.info("{peer} read nothing for {timeout:g} s: aborting",
                 peer=str(self.transport.getPeer()), timeout=self.site.timeOut)
        self.transport.abortConnection()

    @staticmethod
    def _stop(call):
        if call is not None and call.active():
            call.cancel()

    def upgraded(self):
        """
        This connection is a WebSocket now (Twisted's upgrade has replaced
        this channel's C{dataReceived} and C{connectionLost}): the channel
        stops being the transport's producer (the WebSocket's protocol
        takes that place), lets go of the request it was upgraded by (a
        few KiB a connection, that nothing answers any more), and its
        ticket is handed over: returned, for the new protocol to release.
        No HTTP timer runs on it any more: the header deadline stopped
        when the headers were in, the idle timer while a request is
        answered, and neither starts again until a response ends, which
        this one never does.
        """
        self.transport.unregisterProducer()
        del self.requests[:]
        ticket, self.ticket = self.ticket, None
        return ticket

    def requestDone(self, request):
        if self.persistent:
            # Before the next request's bytes, already buffered, are parsed.
            self._wait_for_headers()
        super().requestDone(request)

    def connectionLost(self, reason):
        self._stop_waiting()
        self._stop(self._stalled)
        if self._lingering is not None:
            self._lingering.end()
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
        return admitted(
            self.connections, addr, lambda error: _response(503, error),
            lambda: super(AdmittingSite, self).buildProtocol(addr),
        )
