"""
The client's side of the wire: L{ReplyProtocol} (requests out; replies, in
request order, and events in) and L{ChatSession} (one person's session on
a realm: it reconnects when the connection drops, subscribes again and
catches up from history, so nothing is missed).
"""

import base64
import json
from collections import OrderedDict, deque

from twisted.internet import defer, task
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol, ReconnectingClientFactory

from multirealm.client import render
from multirealm.client.transfers import Base64Body
from multirealm.wire import REPLY_END

# The longest reply read: a getfile of the largest file (100 MiB, as base64),
# with room to spare.  A realm that sends more is dropped.
MAX_REPLY_BYTES = 256 * 2**20
# A request this often keeps the connection from the realm's idle_timeout.
KEEPALIVE_SECONDS = 60.0
# A chat port answers the first request at once; past this, the person is told.
FIRST_ANSWER_SECONDS = 5.0


class NotConnected(Exception):
    """There is no connection to the realm right now."""


class ReplyProtocol(Protocol):
    """Requests out; replies (each to the oldest request unanswered) and events in."""

    def connectionMade(self):
        self._buffer = bytearray()
        self._scanned = 0  # the buffer before this holds no reply end
        self._waiting = deque()
        self._uploading = False  # a file body is going out: requests wait
        self._after_upload = deque()  # (bytes, body) written once it is out
        self._file = None  # (Deferred, reply head) of a getfile being streamed
        # A first request, to know that this is a chat port (another port
        # answers it in its own way, or not at all, and is told apart).
        self._chat_port = False
        session = self.factory.session
        self._silence = session.reactor.callLater(FIRST_ANSWER_SECONDS, session.silent_port)
        self.request("ping").addCallbacks(self._answered, lambda f: f.trap(NotConnected))

    def _answered(self, reply):
        self._chat_port = True
        if self._silence.active():
            self._silence.cancel()
        self.factory.session.connected(self, reply)

    def request(self, line, body=None, sink=None):
        """
        Send one request line (and, for a file, its body: an open binary
        file, sent as base64 lines as the socket takes them); fires with
        the reply, a dict.  C{sink}: for a C{getfile}, where the file's
        bytes go as they arrive (L{multirealm.client.transfers.FileSink}); the reply then has no
        C{content}.
        """
        d = defer.Deferred()
        d.sink = sink
        self._waiting.append(d)
        data = line.encode("utf-8") + b"\r\n"
        if self._uploading:
            self._after_upload.append((data, body))  # never inside a file body
        else:
            self._write(data, body)
        return d

    def _write(self, data, body):
        self.transport.write(data)
        if body is not None:
            self.transport.write(b"\r\n")
            self._uploading = True
            self.transport.registerProducer(Base64Body(body, self), False)

    def body_sent(self):
        """A file body is out: the requests made meanwhile go now, in order."""
        self._uploading = False
        while self._after_upload and not self._uploading:
            self._write(*self._after_upload.popleft())

    def dataReceived(self, data):
        self._buffer += data
        if not self._chat_port and not self._buffer.startswith(b"{"):
            self.transport.abortConnection()  # no chat reply: told in connectionLost
            return
        while True:
            if self._file is not None or self._file_reply_starts():
                if not self._stream_file():
                    return  # the rest of the file is still to come
                continue
            end = self._buffer.find(REPLY_END, max(0, self._scanned - 3))
            if end == -1:
                self._scanned = len(self._buffer)
                if self._scanned > MAX_REPLY_BYTES:
                    self.transport.abortConnection()  # no reply is that long
                return
            chunk = bytes(self._buffer[:end])
            del self._buffer[:end + len(REPLY_END)]
            self._scanned = 0
            try:
                item = json.loads(chunk)
            except ValueError:
                continue  # not ours to understand
            if "event" in item:
                self.factory.session.event(item)
            elif self._waiting:
                self._waiting.popleft().callback(item)

    # -- a getfile reply, streamed to its sink ---------------------------------

    _OK_HEAD = b'{"status": "OK", '
    _CONTENT = b', "content": "'

    def _file_reply_starts(self):
        """
        True once the oldest request has a sink and its reply is an OK
        whose head (all before the base64) is here: the bytes that follow
        go to the sink, never into memory whole.
        """
        if not self._waiting or getattr(self._waiting[0], "sink", None) is None:
            return False
        if not self._buffer.startswith(self._OK_HEAD):
            return False  # an event, or an ERROR: read as usual
        at = self._buffer.find(self._CONTENT, 0, 4096)
        if at == -1:
            return False
        head = json.loads(bytes(self._buffer[:at]) + b"}")
        del self._buffer[:at + len(self._CONTENT)]
        d = self._waiting[0]
        d.sink.start(head)
        self._file = (d, head)
        return True

    def _stream_file(self):
        """Hand the base64 here to the sink; True once the reply has ended."""
        d, head = self._file
        end = self._buffer.find(b'"')  # base64 has no quote: the content ends here
        if end == -1:
            usable = len(self._buffer) - len(self._buffer) % 4
            if usable:
                d.sink.write(base64.b64decode(bytes(self._buffer[:usable])))
                del self._buffer[:usable]
            return False
        closing = self._buffer.find(REPLY_END, end)
        if closing == -1:
            return False
        d.sink.write(base64.b64decode(bytes(self._buffer[:end])))
        del self._buffer[:closing + len(REPLY_END)]
        self._file = None
        self._scanned = 0
        self._waiting.popleft()
        d.sink.finish()
        d.callback(head)
        return True

    def connectionLost(self, reason=ConnectionDone()):
        if self._silence.active():
            self._silence.cancel()
        if not self._chat_port and self._buffer:
            self.factory.session.not_a_chat_port(bytes(self._buffer[:512]))
        if self._file is not None:
            self._file[0].sink.abandon()
            self._file = None
        waiting, self._waiting = self._waiting, deque()
        for d in waiting:
            d.errback(NotConnected("the connection to the realm was lost"))
        self.factory.session.disconnected(self)


class _Factory(ReconnectingClientFactory):
    protocol = ReplyProtocol
    maxDelay = 5
    noisy = False

    def __init__(self, session):
        self.session = session

    def buildProtocol(self, addr):
        self.resetDelay()
        return ReconnectingClientFactory.buildProtocol(self, addr)

    def clientConnectionFailed(self, connector, reason):
        self.session.show(f"(cannot reach the realm: {reason.getErrorMessage()}; trying again)")
        ReconnectingClientFactory.clientConnectionFailed(self, connector, reason)


class ChatSession:
    """
    One person's session on one realm.  C{show(line)} puts a line on the
    screen; C{render_event(event)} turns an event into one (or None).
    The session id stays in memory: it is never shown or written.
    """

    SEEN_MAX = 10_000  # ids remembered, to show a message once

    def __init__(self, host, port, reactor, show, render_event):
        self.host, self.port = host, port
        self.reactor = reactor
        self.show = show
        self.render_event = render_event
        self.user = None
        self.token = None
        self.groups = set()  # groups heard of, caught up after a reconnect
        self._last = {}  # conversation ("inbox" or a group) -> last message id seen
        self._seen = OrderedDict()
        self._protocol = None
        self._keepalive = None  # the LoopingCall that pings
        self._factory = _Factory(self)
        self._connector = None
        self._was_connected = False

    # -- the connection -------------------------------------------------------

    def connect(self):
        self._connector = self.reactor.connectTCP(self.host, self.port, self._factory)

    def _ping(self):
        """Keep the connection from the realm's idle timeout (a subscriber only listens)."""
        if self._protocol is not None:
            self.request("ping").addErrback(lambda failure: failure.trap(NotConnected))

    def close(self):
        if self._keepalive is not None and self._keepalive.running:
            self._keepalive.stop()
        self._factory.stopTrying()
        if self._connector is not None:
            self._connector.disconnect()

    def connected(self, protocol, reply):
        """The realm answered C{protocol}'s first request with C{reply}."""
        if reply.get("status") != "OK":  # e.g. too_many_connections: it closes
            self.show(f"(the realm refused the connection: {render.error(reply)})")
            return
        self._protocol = protocol
        if self._keepalive is None:
            self._keepalive = task.LoopingCall(self._ping)
            self._keepalive.clock = self.reactor
            self._keepalive.start(KEEPALIVE_SECONDS, now=False)
        if self._was_connected:
            self.show("(connected again)")
            if self.token is not None:
                self._resume()
        else:
            self.show(f"(connected to {self.host}:{self.port}; /help lists the commands)")
        self._was_connected = True

    def not_a_chat_port(self, answer):
        """What answered our first request was no chat port: said, and not tried again."""
        self._factory.stopTrying()
        self.show(render.not_a_chat_port(self.host, self.port, answer))

    def silent_port(self):
        self.show(render.silent_port(self.host, self.port, FIRST_ANSWER_SECONDS))

    def disconnected(self, protocol):
        if self._protocol is protocol:
            self._protocol = None
            if self._factory.continueTrying:
                self.show("(the connection to the realm was lost: reconnecting)")

    def request(self, line, body=None, sink=None):
        if self._protocol is None:
            trying = " (reconnecting)" if self._factory.continueTrying else ""
            return defer.fail(NotConnected("not connected to the realm" + trying))
        return self._protocol.request(line, body, sink)

    # -- the session ----------------------------------------------------------

    @defer.inlineCallbacks
    def login(self, user, password):
        reply = yield self.request(f"auth {user} {password}")
        if reply.get("status") == "OK":
            self.user, self.token = user, reply["tokenid"]
            yield self.request(f"subscribe {self.token}")
            # Where this session starts: what history holds is seen.
            inbox = yield self.request(f"inbox {self.token}")
            for entry in inbox.get("messages", []):
                self.note(entry, "inbox")
            yield self._follow_my_groups()
        return reply

    @defer.inlineCallbacks
    def _follow_my_groups(self):
        """Every group this user is in is caught up after a reconnect."""
        reply = yield self.request(f"mygroups {self.token}")
        for group in reply.get("groups", []):
            if group not in self.groups:
                yield self.follow_group(group)

    @defer.inlineCallbacks
    def follow_group(self, group):
        """
        Watch group C{group} (created, opened, read): caught up after a
        reconnect.  Fires with its history reply.
        """
        reply = yield self.request(f"groupinbox {self.token} {group}")
        if reply.get("status") == "OK":
            self.groups.add(group)
            for entry in reply["messages"]:
                self.note(entry, group)
        return reply

    @defer.inlineCallbacks
    def _resume(self):
        """After a reconnect: events again, then what came meanwhile."""
        try:
            yield self.request(f"subscribe {self.token}")
            yield self.catch_up()
            # Groups joined while it was away: from their start.
            before = set(self.groups)
            reply = yield self.request(f"mygroups {self.token}")
            for group in reply.get("groups", []):
                if group not in before:
                    self.groups.add(group)
            yield self.catch_up(only=self.groups - before)
        except NotConnected:
            pass  # lost again: the next connection resumes

    @defer.inlineCallbacks
    def catch_up(self, only=None):
        """
        Show what history has after the last message seen, per
        conversation (the inbox and every group followed; or only the
        groups C{only}).
        """
        shown = 0
        conversations = ["inbox"] + sorted(self.groups) if only is None else sorted(only)
        for conversation in conversations:
            last = self._last.get(conversation)
            if conversation == "inbox":
                command = f"inbox {self.token}"
            else:
                command = f"groupinbox {self.token} {conversation}"
            while True:
                # Without a message seen yet: the newest page (those seen
                # before are not shown again).
                reply = yield self.request(command if last is None else f"{command} {last}")
                if reply.get("status") != "OK":
                    break
                for entry in reply["messages"]:
                    kind = "private" if conversation == "inbox" else "group"
                    if self.note(entry, conversation) and entry.get("msg_from") != self.user:
                        line = self.render_event({"event": "message", "kind": kind,
                                                  "message": entry})
                        if line:
                            self.show(line)
                            shown += 1
                    last = entry["id"]
                if not reply.get("more"):
                    break
        return shown

    def note(self, entry, conversation):
        """Remember message C{entry} as seen; False if it was seen before."""
        self._last[conversation] = entry["id"]
        if entry["id"] in self._seen:
            return False
        self._seen[entry["id"]] = None
        if len(self._seen) > self.SEEN_MAX:
            self._seen.popitem(last=False)
        return True

    def event(self, item):
        if item.get("event") == "message":
            entry = item.get("message", {})
            if item.get("kind") == "group":
                group = entry.get("msg_to")
                self.groups.add(group)
                conversation = group
            else:
                conversation = "inbox"
            if not self.note(entry, conversation):
                return  # already shown (a catch-up and an event crossed)
        elif item.get("event") == "member" and item.get("change") == "created":
            self.groups.add(item.get("group"))  # a new group we are in (the creator named)
        elif item.get("event") == "member" and str(item.get("member")).lower() == (
            str(self.user).lower()
        ):
            # Added here or elsewhere: followed like the groups one created.
            if item.get("change") == "added":
                self.groups.add(item.get("group"))
            else:
                self.groups.discard(item.get("group"))
        elif item.get("event") == "overflow":
            self.show(self.render_event(item))
            d = self.request(f"subscribe {self.token}").addCallback(lambda _: self.catch_up())
            d.addErrback(lambda failure: failure.trap(NotConnected))
            return
        line = self.render_event(item)
        if line:
            self.show(line)

