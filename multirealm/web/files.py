"""
Files over HTTP (docs/protocol.md, "Files over HTTP").

  - C{GET /files/<file_id>} with C{Authorization: Bearer <sessionid>} (or
    C{?session=<sessionid>} for a plain link): the file, served from disk
    by C{twisted.web.static}'s producers, whole or the one C{Range} asked
    for (L{multirealm.web.ranges}), always as an attachment of type
    C{application/octet-stream} with C{nosniff}, so a browser never runs
    an uploaded page as one of the realm's.  401 without a valid session,
    403 for someone who may not fetch it, 404 for an unknown id.
  - C{POST /files?to=<user or group>&name=<filename>} (or C{?group=}) with
    the raw file as the body, whatever its type but a multipart form
    (twisted.web would parse that whole in memory): the same rules, codes
    and JSON reply as C{sendfile}, through the same
    L{multirealm.core.incoming.IncomingFile}.  A C{Content-Length} over the
    limit, or a request without a valid session, is refused before its
    body is read (L{multirealm.web.upload}).
  - C{GET /}: the web client (L{multirealm.web.page}).

Connections are admitted, and request headers, bodies and stalled
responses timed, by L{multirealm.web.admission.AdmittingSite}.

Access is checked by the core for every read (L{Realm.file_for}).
"""

import json
import os
from urllib.parse import quote

from twisted.internet import defer
from twisted.web import http, resource, server, static

from multirealm import errors, wire
from multirealm.web import page, ranges
from multirealm.web.status import status_of
from multirealm.web.upload import UploadRequest, session_user
from multirealm.connections import for_this_process
from multirealm.model import FileRef
from multirealm.web.admission import AdmittingSite
from multirealm.logs import RealmLogger

log = RealmLogger()

def _fail(request, error, status=None):
    """Answer a ChatError (or a Failure of one) as JSON with its HTTP status."""
    if not isinstance(error, errors.ChatError):
        log.failure("file request failed", error, realm=request.site.realm)
        error = errors.ChatError("internal error: the server logged it")
    request.setResponseCode(status or status_of(error))
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(wire.error_reply(error)).encode("ascii")


class _Answer:
    """Finishes a request answered later, unless its client went away."""

    def __init__(self, request):
        self.request = request
        self.gone = False
        request.notifyFinish().addErrback(self._went)

    def _went(self, failure):
        self.gone = True

    def body(self, data):
        if not self.gone:
            self.request.write(data)
            self.request.finish()

    def failure(self, failure):
        error = failure.value if failure.check(errors.ChatError) else failure
        if not self.gone:
            self.body(_fail(self.request, error))


class FileResource(resource.Resource):
    """C{/files/<file_id>}: one file, for those who may have it."""

    isLeaf = True

    def __init__(self, realm, file_id):
        super().__init__()
        self.realm = realm
        self.file_id = file_id

    def render_GET(self, request):
        if request.postpath:  # /files/<id>/more: no such thing
            return _fail(request, errors.NoSuchFile("no such file"))
        answer = _Answer(request)
        d = session_user(self.realm, request)
        d.addCallback(lambda user: self.realm.file_for(user, self.file_id))
        d.addCallback(self._serve, answer)
        d.addErrback(answer.failure)
        return server.NOT_DONE_YET

    def _serve(self, file, answer):
        """
        The file from disk, by a producer: whole (200) or the one range
        asked for (206, L{ranges.byte_range}); the headers only for HEAD.
        """
        if answer.gone:
            return
        request = answer.request
        try:
            opened = self.realm.files.open(file.id)
        except FileNotFoundError:
            raise errors.NoSuchFile(f"no file {self.file_id!r}") from None
        status = os.fstat(opened.fileno())
        size = status.st_size
        if request.setLastModified(status.st_mtime) is http.CACHED:  # before Range: RFC 9110, 13.2.2
            opened.close()
            request.finish()
            return
        try:
            wanted = ranges.byte_range(request.getHeader(b"range"), size)
        except ranges.Unsatisfiable:
            opened.close()
            request.setHeader(b"content-range", b"bytes */%d" % size)
            answer.body(_fail(request, errors.BadRequest(
                f"no byte of the range asked for is in the file ({size} bytes)"
            ), 416))
            return
        request.setHeader(
            b"content-disposition",
            b"attachment; filename*=UTF-8''" + quote(file.name, safe="").encode("ascii"),
        )
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"content-type", b"application/octet-stream")
        request.setHeader(b"accept-ranges", b"bytes")
        if wanted is None:
            length = size
            producer = static.NoRangeStaticProducer(request, opened)
        else:
            first, last = wanted
            length = last - first + 1
            request.setResponseCode(http.PARTIAL_CONTENT)
            request.setHeader(b"content-range", b"bytes %d-%d/%d" % (first, last, size))
            producer = static.SingleRangeStaticProducer(request, opened, first, length)
        request.setHeader(b"content-length", b"%d" % length)
        if request.method == b"HEAD":
            opened.close()
            request.finish()
            return
        self.realm.metrics.file_bytes_out["http"] += length
        producer.start()


class FilesResource(resource.Resource):
    """C{/files}: POST a file; C{/files/<id>}: fetch one."""

    def __init__(self, realm):
        super().__init__()
        self.realm = realm

    def getChild(self, name, request):
        if not name:
            return self
        return FileResource(self.realm, name.decode("ascii", "replace"))

    def render_POST(self, request):
        if request.user is None:  # reached by another path (/files//): its body was dropped
            return _fail(request, errors.BadRequest("post a file to /files?to=<user>&name=<name>"))
        answer = _Answer(request)
        d = defer.maybeDeferred(self._upload, request.user, request)
        d.addCallback(answer.body)
        d.addErrback(answer.failure)
        return server.NOT_DONE_YET

    def _upload(self, user, request):
        name, to, group_only = request.target  # checked before the body was read
        send = self.realm.send_group_file if group_only else self._send_to_user_or_group
        file = request.take_file()

        def stored(file_id, size):  # if the session still lives, now the body is in
            d = session_user(self.realm, request)
            return d.addCallback(lambda _: send(user, to, FileRef(name, file_id, size)))

        d = file.finish(stored)
        d.addCallback(wire.sent)
        d.addCallback(lambda reply: self._json(request, reply[: -len(wire.REPLY_END)]))
        return d

    @staticmethod
    def _json(request, body):
        request.setHeader(b"content-type", b"application/json")
        return body

    @defer.inlineCallbacks
    def _send_to_user_or_group(self, user, to, file):
        """?to= may name a group too (users first, as the chat's addresses do not say which)."""
        try:
            return (yield self.realm.send_file(user, to, file))
        except errors.NoSuchUser:
            pass
        try:
            return (yield self.realm.send_group_file(user, to, file))
        except errors.NoSuchGroup:
            raise errors.NoSuchUser(f"no user or group {to.name!r}") from None


class RootResource(resource.Resource):
    """C{/}: the web client (L{multirealm.web.page}); C{/files}: files."""

    def __init__(self, realm):
        super().__init__()
        self.realm = realm
        self.page = page.page()
        self.putChild(b"files", FilesResource(realm))

    def getChild(self, name, request):
        return self.page.getChild(name, request)  # b"" is index.html


class _WithoutQuery:
    """A request as the access log sees it: its URI without the query (a session id)."""

    def __init__(self, request):
        self._request = request
        self.uri = request.uri.split(b"?", 1)[0]

    def __getattr__(self, name):
        return getattr(self._request, name)


def _log_line(timestamp, request):
    """A line of the access log: the realm's name, then the combined log format."""
    realm = request.channel.site.realm.name
    return f"realm {realm} " + http.combinedLogFormatter(timestamp, _WithoutQuery(request))


def make_site(realm, limits, connections=None, reactor=None):
    """
    The C{server.Site} of a realm's HTTP port under L{Limits} C{limits},
    admitting connections through C{connections} (by default, a
    L{multirealm.connections.ConnectionLimits} of its own).
    """
    max_file_bytes = limits.max_file_bytes
    site = AdmittingSite(
        RootResource(realm), timeout=limits.idle_timeout,
        logFormatter=_log_line, reactor=reactor,
    )
    site.connections = connections or for_this_process(limits, reactor)
    site.header_timeout = limits.header_timeout
    site.requestFactory = UploadRequest
    site.realm = realm  # where UploadRequest puts bodies
    site.max_file_bytes = max_file_bytes
    site.displayTracebacks = False
    site.noisy = False
    return site
