"""
The chat protocol over a WebSocket: C{/ws} on the HTTP port
(docs/protocol.md, "The chat protocol over a WebSocket").

One WebSocket is one more transport for the same chat protocol: the
resource builds it with the chat port's own factory (C{build_chat}, given
by service.py: this adapter does not import the chat one), so the same
handlers, order, limits, rate limit, idle timeout, outbound queue and
back-pressure apply.  L{ChatSocket} stands between Twisted's WebSocket
(L{twisted.web.websocket}, wsproto underneath) and that protocol, as its
transport:

  - in: each text message is one request line; a binary message, or a
    text message with a line break, is refused with C{bad_encoding} or
    C{bad_request} in its place among the replies.  A message is kept to
    C{max_line_bytes} (and a little) as it arrives; a longer one is cut
    there, and the chat protocol answers it C{line_too_long};
  - out: each reply and each event (a JSON object, then an empty line)
    is one text message, without its line ends; a reply written in parts
    (a C{getfile} streamed from disk) goes out as the fragments of one
    message, a part at a time, never held whole;
  - flow: the TCP transport's producer is the chat protocol's outbound
    queue, so a browser that does not read is bounded as a chat
    connection is; when the chat protocol stops reading, the TCP
    connection stops being read, and the messages already read from it
    wait here, in order (at most one read's worth).

Only pages of the realm's own origin may open it (L{same_origin}).
"""

import io
import json
from collections import deque
from urllib.parse import urlsplit

from twisted.web.server import NOT_DONE_YET
from twisted.web.websocket import WebSocketResource
from wsproto.connection import ConnectionType
from wsproto.events import TextMessage
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError

from multirealm import errors, wire

# A message is kept to max_line_bytes and two characters: room for a final
# "\r" (allowed, as on the chat port) and one more, so that the chat
# protocol sees a longer message as the line too long that it is.
MESSAGE_SLACK = 2


def _binary():
    return errors.BadEncoding("a request is a text message, not a binary one")


def _line_break():
    return errors.BadRequest("a message is one request line: it holds no line break")


class ChatSocketResource(WebSocketResource):
    """
    C{/ws}: a WebSocket carrying the chat protocol, for pages of this
    origin only (others get a 403).

    @param build_chat: C{build_chat(address, ticket)} returns a new chat
        protocol, holding the connection's C{ticket} (see
        L{multirealm.connections}).
    @param max_line_bytes: the chat's longest request line.
    """

    def __init__(self, build_chat, max_line_bytes, origins=()):
        super().__init__(self)  # its own factory: buildProtocol below
        self._build_chat = build_chat
        self._most = max_line_bytes + MESSAGE_SLACK
        self._origins = frozenset(origins)  # web_origins of realms.ini

    def render_GET(self, request):
        refusal = same_origin(request, self._origins)
        if refusal is not None:
            return _refused(request, 403, errors.Forbidden(refusal))
        # Twisted would log an error for each (a link followed to /ws, say).
        refusal = no_handshake(request)
        if refusal is not None:
            return _refused(request, 400, errors.BadRequest(refusal))
        result = super().render_GET(request)
        if result is NOT_DONE_YET:  # upgraded: Twisted wrote the 101 itself
            # The access log writes a request as it finishes, which an
            # upgraded one never does: its line, 101, is written now.
            request.setResponseCode(101)
            request.channel.site.log(request)
        return result

    def buildProtocol(self, request):
        address = request.getClientAddress()
        return ChatSocket(self._build_chat, request.channel, address, self._most)


def same_origin(request, listed=frozenset()):
    """
    None if C{request} may open the WebSocket, else why not.  A page of
    another origin may not: its C{Origin} (scheme, host, port) must be
    this server's as the request reached it (C{Host}), or one the
    operator C{listed} (realms.ini's C{web_origins}: the page served
    through a TLS proxy, say, which this port sees as plain HTTP).  A
    request without C{Origin} is no browser's (browsers always send it
    with a WebSocket), and /ws grants nothing by ambient credentials (no
    cookie, no address: a session is a token sent in a request), so such
    a client gets no more than the chat port already gives it.
    """
    origins = request.requestHeaders.getRawHeaders(b"origin")
    if origins is None:
        return None
    if len(origins) != 1:
        return "one Origin header at most"
    scheme = "https" if request.isSecure() else "http"
    try:
        origin = urlsplit(origins[0].decode("ascii"))
        host = urlsplit("//" + (request.getHeader(b"host") or b"").decode("ascii"))
        claimed = origin.scheme.lower(), origin.hostname, origin.port or _PORTS.get(
            origin.scheme.lower())
        if not origin.path and (claimed in listed or host.hostname and claimed == (
            scheme, host.hostname, host.port or _PORTS[scheme],
        )):
            return None
    except (UnicodeDecodeError, ValueError):
        pass
    return "only pages of this realm's own origin may open /ws"


# The port an origin without one means.
_PORTS = {"http": 80, "https": 443}


def no_handshake(request):
    """None if C{request} is a WebSocket handshake (as wsproto reads it), else why not."""
    headers = [(name, value) for name, values in request.requestHeaders.getAllRawHeaders()
               for value in values]
    try:
        H11Handshake(ConnectionType.SERVER).initiate_upgrade_connection(headers, request.path)
    except RemoteProtocolError as e:
        return f"not a WebSocket handshake: {e}"
    return None


def _refused(request, status, error):
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"x-content-type-options", b"nosniff")
    return json.dumps(wire.error_reply(error)).encode("ascii")


class _KeptText:
    """
    Twisted's buffer of one text message as its frames arrive, keeping at
    most C{most} characters: the rest of a longer message is dropped as it
    comes, never buffered.
    """

    def __init__(self, most):
        self._most = most
        self._text = io.StringIO()  # linear however many frames a message comes in
        self._kept = 0

    def add(self, new):
        room = self._most - self._kept
        if room > 0:
            new = new[:room]
            self._text.write(new)
            self._kept += len(new)

    def done(self):
        text = self._text.getvalue()
        self._text = io.StringIO()
        self._kept = 0
        return text


class _Dropped:
    """Twisted's buffer of one binary message: none is kept (each is refused)."""

    def add(self, new):
        pass

    def done(self):
        return b""


class ChatSocket:
    """
    One WebSocket (Twisted's L{twisted.web.websocket.WebSocketProtocol})
    and the transport of its chat protocol.
    """

    _chat = None
    _tcp = None
    _open = False  # a message was begun by fragments and is not finished

    def __init__(self, build_chat, channel, address, most):
        self._build_chat = build_chat
        self._channel = channel
        self._address = address
        self._most = most
        self._ws = None
        # Messages read and not handed on yet, in order: bytearrays of
        # request lines, or what makes a refused message's error
        # (_binary, _line_break).  A deque only while any wait (an empty
        # one is most of a KiB): an idle connection holds none.
        self._waiting = None
        self._handing_on = False

    # -- the WebSocket ------------------------------------------------------

    def negotiationStarted(self, ws):
        self._ws = ws
        # Twisted keeps a whole message before delivering it, with no cap
        # of its own: these keep at most what the chat could read.
        ws._textBuffer = _KeptText(self._most)
        ws._bytesBuffer = _Dropped()

    def negotiationFinished(self):
        self._tcp = self._ws.transport
        ticket = self._channel.upgraded()
        self._chat = self._build_chat(self._address, ticket)
        self._chat.makeConnection(self)

    def textMessageReceived(self, text):
        if "\n" in text:
            self._receive(_line_break)
        else:
            self._receive(text.encode("utf-8") + b"\n")

    def bytesMessageReceived(self, data):
        self._receive(_binary)

    def pongReceived(self, payload):
        pass

    def connectionLost(self, reason):
        self._chat.connectionLost(reason)  # which acts on no line or refusal after this

    # -- in: messages to the chat protocol, in order --------------------------

    def _receive(self, entry):
        waiting = self._waiting
        if waiting is None:
            waiting = self._waiting = deque()
        if type(entry) is bytes and waiting and type(waiting[-1]) is bytearray:
            waiting[-1] += entry
        else:
            waiting.append(bytearray(entry) if type(entry) is bytes else entry)
        self._hand_on()

    def _hand_on(self):
        """Hand the messages waiting to the chat protocol while it reads."""
        if self._handing_on:
            return  # the loop below goes on with what was added
        self._handing_on = True
        chat = self._chat
        try:
            while self._waiting and not chat.paused:
                entry = self._waiting.popleft()
                if type(entry) is bytearray:
                    chat.dataReceived(bytes(entry))
                    continue
                chat.dataReceived(b"")  # the lines it held back go first
                if chat.paused:
                    self._waiting.appendleft(entry)
                    break
                chat.refuse(entry())
            if not self._waiting:
                self._waiting = None
        finally:
            self._handing_on = False

    # -- out: the chat protocol's transport ---------------------------------

    @property
    def disconnecting(self):
        return self._tcp.disconnecting

    def write(self, data):
        """
        Each line (a JSON object; the empty line after it is dropped) is
        one text message.  A reply holds no raw CR or LF but its CR LF CR
        LF end, and is ASCII, so a part of it decodes on its own.
        """
        if self._tcp.disconnecting:
            return  # closing: nothing may follow a close frame
        if not self._open and data.endswith(wire.REPLY_END) and data.count(b"\n") == 2:
            self._ws.sendTextMessage(data[: -len(wire.REPLY_END)].decode("ascii"))
            return
        lines = data.replace(b"\r", b"").split(b"\n")
        for line in lines[:-1]:
            if line or self._open:
                self._send(line, True)
        if lines[-1]:
            self._send(lines[-1], False)

    def _send(self, part, finished):
        # A fragment: Twisted sends whole messages only; wsproto, under it,
        # sends the frames of one message by parts.
        message = TextMessage(part.decode("ascii"), message_finished=finished)
        self._tcp.write(self._ws._wsconn.send(message))
        self._open = not finished

    def loseConnection(self):
        if not self._tcp.disconnecting:
            self._ws.loseConnection(1000)

    def abortConnection(self):
        self._tcp.abortConnection()

    def setTcpKeepAlive(self, enabled):
        keepalive = getattr(self._tcp, "setTcpKeepAlive", None)
        if keepalive is not None:
            keepalive(enabled)

    # IConsumer: the outbound queue is the TCP transport's producer.

    def registerProducer(self, producer, streaming):
        self._ws.attachProducer(producer)

    def unregisterProducer(self):
        self._ws.detachProducer()

    # IPushProducer: the chat protocol stops and starts reading.

    def pauseProducing(self):
        self._tcp.pauseProducing()

    def resumeProducing(self):
        self._hand_on()  # which may have closed the connection (a quit)
        if not (self._waiting or self._chat.paused or self._tcp.disconnecting):
            self._tcp.resumeProducing()