"""
Request bodies on the HTTP port (L{UploadRequest}): only C{POST /files}
by a valid session keeps its body, streamed to disk as a chat upload's is;
every other body is read and dropped, never held.  The session of a
request (L{session_user}) is read here too, for uploads and downloads.
"""

import io
from urllib.parse import parse_qs, urlsplit

from twisted.internet import defer
from twisted.web import server

from multirealm import errors
from multirealm.core.incoming import IncomingFile
from multirealm.names import check_filename
from multirealm.web.status import status_of
from multirealm.logs import RealmLogger

# The paths that reach FilesResource.render_POST; any other body is dropped.
_UPLOAD_PATHS = frozenset({b"/files", b"/files/"})

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

log = RealmLogger()


def query(request):
    """
    The arguments of the URL's query only: never of a form body, which
    twisted.web would merge in (a page elsewhere could post a form that
    redirects a file).
    """
    return parse_qs(urlsplit(request.uri).query.decode("utf-8", "replace"), keep_blank_values=True)


def _token(request):
    header = (request.getHeader(b"authorization") or b"").decode("latin-1")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    session = query(request).get("session")
    return session[0] if session else None


def upload_target(realm, request):
    """
    (file name, recipient Address, whether it names a group only) of a
    C{POST /files} by its query, checked as C{sendfile} checks its words
    (before any of the body): L{errors.ChatError} if wrong.
    """
    args = {key: values[0] for key, values in query(request).items()}
    name = check_filename(args.get("name", ""))
    if "group" in args:
        return name, realm.address(args["group"], "group name"), True
    if "to" in args:
        return name, realm.address(args["to"]), False  # here, or on a peer: as sendfile
    raise errors.BadRequest("say who the file is for: ?to=<user> or ?group=<group>")


def session_user(realm, request):
    """A Deferred of the user of the request's session (L{errors.InvalidSession})."""
    token = _token(request)
    if not token:
        return defer.fail(errors.InvalidSession("no session: send Authorization: Bearer <id>"))
    return defer.maybeDeferred(realm.sessions.user_of, token)


class UploadRequest(server.Request):
    """
    A request that decides on its body before reading it.

    twisted.web calls L{gotLength} once the headers are in (the channel,
    L{multirealm.web.admission}, has given the request its method and URI
    by then), and answers C{Expect: 100-continue} right after it returns.
    For C{POST /files}, L{gotLength} takes the C{Expect} header away from
    twisted.web, refuses a C{Content-Length} over C{max_file_bytes} (413)
    at once, else stops reading the connection and looks the session up.
    An invalid one is refused (401) before any of the body is read (the
    channel's C{refuse}); a valid one gets its C{100 Continue}, its body
    goes to disk as it arrives (an L{IncomingFile}: a batch at a time in a
    thread, the connection not read meanwhile, held to C{max_file_bytes}:
    a chunked body past it is refused, 413, at once) and the resource runs
    with L{user} once the body is whole.  The body of any other request is
    dropped as it arrives.  The body is the file whatever its type; a
    multipart form is refused (415) before its body, never parsed.
    """

    user = None  # the user of a POST /files, once its session is known to be valid
    target = None  # its (file name, recipient, group only), read from its query
    _file = None  # the IncomingFile of a POST /files by a valid session
    _held = None  # body that came while the session was looked up (one read: reading stopped)
    _unprocessed = None  # (command, path, version) of a whole request waiting for its session
    _refused = False
    _holds = 0  # reasons reading is stopped: the session lookup, a batch being written

    def gotLength(self, length):
        self.content = io.BytesIO()  # stays empty: a body is dropped, or goes to the file
        self.notifyFinish().addBoth(self._ended)
        if self.method != b"POST" or self.uri.split(b"?", 1)[0] not in _UPLOAD_PATHS:
            return
        # twisted.web answers Expect: 100-continue after gotLength, whatever
        # becomes of the body: here it is sent only for a body that is kept.
        expects = self.requestHeaders.getRawHeaders(b"expect", [b""])[0].lower() == b"100-continue"
        self.requestHeaders.removeHeader(b"expect")
        kind = (self.requestHeaders.getRawHeaders(b"content-type") or [b""])[0].lower()
        if kind.startswith(b"multipart/form-data"):
            # twisted.web would parse a form whole in memory: refused before its body.
            self._refuse(415, errors.BadRequest(
                "send the file itself as the body (curl --data-binary @FILE),"
                " not a multipart form (curl -F)"
            ))
            return
        site = self.channel.site
        try:
            self.target = upload_target(site.realm, self)
        except errors.ChatError as e:
            self._refuse(status_of(e), e)
            return
        # Nothing on disk yet.
        file = IncomingFile(site.realm.files, site.max_file_bytes, site.realm.name)
        if length is not None:
            file.expect(length)
        if file.error is not None:
            self._refuse(413, file.error.value)
            return
        self._held = []
        self._hold()
        d = session_user(site.realm, self)
        d.addCallbacks(self._admit, self._refuse_session, callbackArgs=(file, expects),
                       errbackArgs=(site.realm,))
        d.addBoth(self._release)

    def _admit(self, user, file, expects):
        if self.channel is None:  # the client went away meanwhile
            return
        self.user, self._file = user, file
        if expects and self.clientproto == b"HTTP/1.1":
            self.channel.transport.write(_CONTINUE)
        held, self._held = self._held, None
        for data in held:
            self.handleContentChunk(data)
        if self._unprocessed is not None:
            server.Request.requestReceived(self, *self._unprocessed)

    def _refuse_session(self, failure, realm):
        if failure.check(errors.InvalidSession):
            self._refuse(401, failure.value)
        else:
            log.failure("a session could not be looked up", failure, realm=realm)
            self._refuse(503, errors.Unavailable("the session could not be checked: try again"))

    def _refuse(self, status, error):
        self._refused = True
        self._held = None
        if self.channel is not None:
            self.channel.refuse(status, error)

    def _hold(self):
        self._holds += 1
        if self._holds == 1:
            self.channel.transport.pauseProducing()

    def _release(self, result=None):
        self._holds -= 1
        if self._holds == 0 and self.channel is not None and not self._refused:
            transport = self.channel.transport
            if not transport.disconnecting:  # not timed out meanwhile
                transport.resumeProducing()
        return result  # a failure of _admit is logged, not swallowed

    def handleContentChunk(self, data):
        if self._held is not None:
            self._held.append(data)
            return
        if self._file is None:
            return  # not an upload, or refused: dropped
        writing = self._file.write(data)
        if writing is not None:  # read no more until this batch is written
            self._hold()
            writing.addCallback(self._release)
        elif self._file.error is not None and self._file.error.check(errors.FileTooLarge):
            self._refuse(413, self._file.error.value)  # a chunked body past the limit: no more of it

    def take_file(self):
        """The L{IncomingFile} of this request's body, for the upload to finish."""
        file, self._file = self._file, None
        return file

    def _ended(self, result):
        if self._file is not None:  # not taken, or the client went away first
            self._file.abort()

    def requestReceived(self, command, path, version):
        # The body is the file whatever type it claims (curl --data-binary
        # says application/x-www-form-urlencoded): twisted.web would parse
        # a form into args, reading it whole.
        self.requestHeaders.removeHeader(b"content-type")
        if self._refused:
            return  # answered already; the connection is closing
        if self._held is not None:  # the body came whole before its session was known
            self._unprocessed = (command, path, version)
            return
        super().requestReceived(command, path, version)
