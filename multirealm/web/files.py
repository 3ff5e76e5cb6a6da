"""
Files over HTTP (docs/protocol.md, "Files over HTTP").

  - C{GET /files/<file_id>} with C{Authorization: Bearer <sessionid>} (or
    C{?session=<sessionid>} for a plain link): the file, served from disk
    by C{twisted.web.static.File} (a producer, C{Range} for resumed
    downloads), always as an attachment of type
    C{application/octet-stream} with C{nosniff}, so a browser never runs
    an uploaded page as one of the realm's.  401 without a valid session,
    403 for someone who may not fetch it, 404 for an unknown id.
  - C{POST /files?to=<user or group>&name=<filename>} (or C{?group=}) with
    the raw file as the body (not multipart: twisted.web would parse that
    whole in memory): the same rules, codes and JSON reply as C{sendfile}.
    A C{Content-Length} over the limit is refused before the body is
    kept (L{UploadRequest}).
  - C{GET /}: what this server is, and where its protocol is described.

Connections are admitted, and request headers timed, by
L{multirealm.web.admission.AdmittingSite}.

Access is checked by the core for every read (L{Realm.file_for}).
"""

import json
from urllib.parse import parse_qs, quote, urlsplit

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import http, resource, server, static

from multirealm import errors, wire
from multirealm.connections import for_this_process
from multirealm.names import check_filename
from multirealm.model import FileRef
from multirealm.web.admission import AdmittingSite

log = Logger()

_STATUS = {  # error code -> HTTP status
    "invalid_session": 401,
    "forbidden": 403,
    "no_such_file": 404,
    "no_such_user": 404,
    "no_such_group": 404,
    "file_too_large": 413,
    "rate_limited": 429,
    "unavailable": 503,
    "storage_full": 507,
    "internal": 500,
}


def _fail(request, error):
    """Answer a ChatError (or a Failure of one) as JSON with its HTTP status."""
    if not isinstance(error, errors.ChatError):
        log.failure("file request failed", error)
        error = errors.ChatError("internal error: the server logged it")
    request.setResponseCode(_STATUS.get(error.code, 400))
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(wire.error_reply(error)).encode("ascii")


def _token(request):
    header = (request.getHeader(b"authorization") or b"").decode("latin-1")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    session = _query(request).get("session")
    return session[0] if session else None


def _query(request):
    """
    The arguments of the URL's query only: never of a form body, which
    twisted.web would merge in (a page elsewhere could post a form that
    redirects a file).
    """
    query = urlsplit(request.uri).query.decode("utf-8", "replace")
    return parse_qs(query, keep_blank_values=True)


def _user(realm, request):
    """A Deferred of the user of the request's session (L{errors.InvalidSession})."""
    token = _token(request)
    if not token:
        return defer.fail(errors.InvalidSession("no session: send Authorization: Bearer <id>"))
    return defer.maybeDeferred(realm.sessions.user_of, token)


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
        d = _user(self.realm, request)
        d.addCallback(lambda user: self.realm.file_for(user, self.file_id))
        d.addCallback(self._serve, answer)
        d.addErrback(answer.failure)
        return server.NOT_DONE_YET

    def _serve(self, file, answer):
        if answer.gone:
            return
        request = answer.request
        try:
            path = self.realm.files.path(file.id)
        except FileNotFoundError:
            raise errors.NoSuchFile(f"no file {self.file_id!r}") from None
        request.setHeader(
            b"content-disposition",
            b"attachment; filename*=UTF-8''" + quote(file.name, safe="").encode("ascii"),
        )
        request.setHeader(b"x-content-type-options", b"nosniff")
        ranges = request.getHeader(b"range")
        if ranges is not None and b"," in ranges:
            # One range resumes a download; many (overlapping) would make a
            # small file a huge answer.
            request.requestHeaders.removeHeader(b"range")
        on_disk = static.File(path, defaultType="application/octet-stream")
        on_disk.type, on_disk.encoding = "application/octet-stream", None
        body = on_disk.render(request)  # Range, HEAD, a producer from disk
        if body is not server.NOT_DONE_YET:
            request.write(body)
            request.finish()


class FilesResource(resource.Resource):
    """C{/files}: POST a file; C{/files/<id>}: fetch one."""

    def __init__(self, realm, max_file_bytes):
        super().__init__()
        self.realm = realm
        self.max_file_bytes = max_file_bytes

    def getChild(self, name, request):
        if not name:
            return self
        return FileResource(self.realm, name.decode("ascii", "replace"))

    def render_POST(self, request):
        if getattr(request, "form", False):
            request.setResponseCode(415)
            request.setHeader(b"content-type", b"application/json")
            return json.dumps(wire.error_reply(errors.BadRequest(
                "send the file itself as the body (application/octet-stream), not a form"
            ))).encode("ascii")
        answer = _Answer(request)
        d = _user(self.realm, request)
        d.addCallback(self._upload, request)
        d.addCallback(answer.body)
        d.addErrback(answer.failure)
        return server.NOT_DONE_YET

    @defer.inlineCallbacks
    def _upload(self, user, request):
        if getattr(request, "too_large", False):
            raise errors.FileTooLarge(f"files are at most {self.max_file_bytes} bytes")
        args = {key: values[0] for key, values in _query(request).items()}
        name = check_filename(args.get("name", ""))
        if "group" in args:
            group = self.realm.address(args["group"], "group name")
            send = self.realm.send_group_file
            to = group
        elif "to" in args:
            to = self.realm.address(args["to"])
            if to.realm != self.realm.name:
                raise errors.BadRequest(
                    "files to users of other realms need realm links, which are not built yet"
                )
            send = self.realm.send_file
        else:
            raise errors.BadRequest("say who the file is for: ?to=<user> or ?group=<group>")
        request.content.seek(0)
        try:
            incoming, size = yield self.realm.files.copy_in(request.content, self.max_file_bytes)
        except OverflowError:
            raise errors.FileTooLarge(f"files are at most {self.max_file_bytes} bytes") from None
        file = FileRef(name, incoming.id, size)
        try:
            try:
                delivery = yield send(user, to, file)
            except errors.NoSuchUser:
                if "group" in args:
                    raise
                # ?to= may name a group too (users first, as the chat's
                # addresses do not say which a name is).
                delivery = yield self.realm.send_group_file(user, to, file)
        except errors.NoSuchGroup:
            incoming.abort()
            raise errors.NoSuchUser(f"no user or group {to.name!r}") from None
        except Exception:
            incoming.abort()
            raise
        request.setHeader(b"content-type", b"application/json")
        return wire.sent(delivery)[: -len(wire.REPLY_END)]


class RootResource(resource.Resource):
    """C{/}: what this is."""

    def __init__(self, realm, max_file_bytes):
        super().__init__()
        self.realm = realm
        self.putChild(b"files", FilesResource(realm, max_file_bytes))

    def getChild(self, name, request):
        if not name:
            return self
        return resource.NoResource()

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return (
            f"multirealm: realm {self.realm.name} of a federated chat network.\n"
            "Chat on the realm's chat port with a line protocol (docs/protocol.md in the"
            " project). Here: GET /files/<file_id> with Authorization: Bearer <session id>,"
            " POST /files?to=<user>&name=<filename> with the file as the body.\n"
        ).encode("utf-8")


class _Discard:
    """A request body sink: the body of a refused upload is read, not kept."""

    def write(self, data):
        pass

    def seek(self, *args):
        pass

    def tell(self):
        return 0

    def read(self, *args):
        return b""

    def close(self):
        pass


class UploadRequest(server.Request):
    """
    A request whose body is not kept past the file limit: refused from its
    C{Content-Length} before any of it is kept, or, for a body without one
    (chunked), as soon as it grows past the limit; the rest is read and
    dropped, and the upload answers C{file_too_large}.  A form body is
    never parsed (L{FilesResource.render_POST} refuses it).
    """

    too_large = False
    _received = 0

    def _limit(self):
        return getattr(self.channel.site, "max_file_bytes", None)

    def gotLength(self, length):
        limit = self._limit()
        if length is not None and limit is not None and length > limit:
            self.too_large = True
            self.content = _Discard()
            return
        super().gotLength(length)

    def handleContentChunk(self, data):
        self._received += len(data)
        limit = self._limit()
        if not self.too_large and limit is not None and self._received > limit:
            self.too_large = True
            self.content.close()
            self.content = _Discard()
        super().handleContentChunk(data)

    form = False  # the body claimed to be a form: refused, never parsed

    def requestReceived(self, command, path, version):
        kind = (self.requestHeaders.getRawHeaders(b"content-type") or [b""])[0].lower()
        if kind.startswith((b"application/x-www-form-urlencoded", b"multipart/")):
            # twisted.web would parse it into args, reading it whole.
            self.form = True
            self.requestHeaders.removeHeader(b"content-type")
        super().requestReceived(command, path, version)


class _WithoutQuery:
    """A request as the access log sees it: its URI without the query (a session id)."""

    def __init__(self, request):
        self._request = request
        self.uri = request.uri.split(b"?", 1)[0]

    def __getattr__(self, name):
        return getattr(self._request, name)


def _log_line(timestamp, request):
    return http.combinedLogFormatter(timestamp, _WithoutQuery(request))


def make_site(realm, limits, connections=None, reactor=None):
    """
    The C{server.Site} of a realm's HTTP port under L{Limits} C{limits},
    admitting connections through C{connections} (by default, a
    L{multirealm.connections.ConnectionLimits} of its own).
    """
    max_file_bytes = limits.max_file_bytes
    site = AdmittingSite(
        RootResource(realm, max_file_bytes), timeout=limits.idle_timeout,
        logFormatter=_log_line, reactor=reactor,
    )
    site.connections = connections or for_this_process(limits, reactor)
    site.header_timeout = limits.header_timeout
    site.requestFactory = UploadRequest
    site.max_file_bytes = max_file_bytes
    site.displayTracebacks = False
    site.noisy = False
    return site
