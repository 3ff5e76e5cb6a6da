"""
What both engines of the store share: L{BatchingStore}, one database
thread with group commit.

Every operation runs on one database thread owned by the store, never on
the reactor thread, and returns a Deferred that fires on the reactor
thread once the operation's transaction has committed (group commit): the
thread takes every operation queued while it was busy, runs them in one
transaction, commits once, and then answers them all.  Under load many
messages share one fsync; when idle an operation commits at once.

Because one thread runs every operation in the order it was queued, a read
sees every write queued before it, and no result is revealed before the
write it depends on is durable.

An engine (L{multirealm.storage.store.SQLiteStore},
L{multirealm.storage.postgres.PostgresStore}) supplies the connection
(C{_db}, with the sqlite3 connection's C{execute}, C{executemany},
C{in_transaction} and C{total_changes}) and L{BatchingStore._begin},
L{BatchingStore._clean_error}, L{BatchingStore._close}.
"""

import queue
import threading
from time import monotonic, perf_counter

from twisted.internet import defer
from twisted.python.failure import Failure

from multirealm import errors
from multirealm.logs import RealmLogger
from multirealm.core.metrics import COMMIT_OPERATIONS, COMMIT_SECONDS, Histogram
from multirealm.model import Deliveries, Delivery, Sent
from multirealm.storage.queries import messages, received
from multirealm.storage.queries.common import ThreadCache


class _Operation:
    """
    One operation and who hears its result: its Deferred, or (the send
    path, L{BatchingStore.submit_then}) a plain callable, C{then}.
    """

    __slots__ = ("function", "args", "writes", "deferred", "then")

    def __init__(self, function, args, writes, then=None):
        self.function = function
        self.args = args
        self.writes = writes
        self.then = then
        self.deferred = defer.Deferred() if then is None else None


class _RunPart(_Operation):
    """One message of a run (L{_RUN_PARTS}), run alone in an isolated batch."""

    __slots__ = ("run",)

    def __init__(self, run, function, args):
        super().__init__(function, args, True, then=_ignore)
        self.run = run  # the run's own operation, answered with every part's result


# A run's operation -> the operation of one of its messages.  Both take
# (db, cache, realm, origin), then the run's messages or one message.
_RUN_PARTS = {
    messages.add_private_messages: messages.add_private_message,
    received.receive_private_messages: received.receive_private_message,
}


def _ignore(result):
    pass


def _split_runs(batch):
    """
    The batch with each run of private messages as one operation a message:
    run isolated, a message that fails (a bug, a text the engine refuses)
    fails alone, as it would have outside a run.
    """
    split = []
    for op in batch:
        part = _RUN_PARTS.get(op.function)
        if part is not None and op.args[-1]:
            cache, realm, origin, run = op.args
            split.extend(_RunPart(op, part, (cache, realm, origin, message)) for message in run)
        else:
            split.append(op)
    return split


def _joined_runs(results):
    """
    The results of L{_split_runs}' batch with each run's parts as one
    L{Sent}: a Delivery, a refusal (L{errors.ChatError}) or a Failure each.
    """
    joined, runs = [], {}
    for op, result in results:
        if type(op) is not _RunPart:
            joined.append((op, result))
            continue
        if type(result) is Failure and result.check(errors.ChatError):
            result = result.value  # a refusal, as a run gives it
        parts = runs.get(op.run)
        if parts is None:
            parts = runs[op.run] = []
            joined.append((op.run, parts))
        parts.append(result)
    return [(op, _run_result(result) if op in runs else result) for op, result in joined]


def _run_result(parts):
    """
    A run's answer: a L{Sent} of its parts' results, or the one Failure
    they all share when the isolated transaction failed as a whole (a
    full disk, a lost connection), as any operation of that batch gets it.
    """
    first = parts[0]
    if type(first) is Failure and all(part is first for part in parts):
        return first
    sent = Sent(parts)
    if any(type(part) is Failure for part in parts):
        sent.failed = True  # cleaned on the reactor thread (BatchingStore._answer)
    return sent


_STOP = object()

log = RealmLogger()


# Operations that may leave their rows for the batch's end: their private
# messages' rows and conversations' counts wait in the thread's cache
# (messages.gather_message, messages.private_added), and they read no row
# that another one of them gathers (a message received checks the gathered
# ones too).  Before any other operation, and before the commit, the
# gathered rows are written (messages.write_gathered), so every reader
# sees them; in a batch run again in isolation, at the end of each
# operation, inside its savepoint.
_GATHERS = frozenset((
    messages.add_private_message, messages.add_private_messages, received.receive_message,
    received.receive_private_messages,
))


class _NeedsIsolation(Exception):
    """A batch must run again with a savepoint around each operation."""


class BatchingStore:
    """
    The database thread, group commit and answers of a store; an engine
    subclass opens C{self._db} and says how a transaction begins.
    """

    # Upper bound of operations in one transaction (a run of private
    # messages counts as its messages), so one huge burst does not hold
    # every reply back behind a single giant commit.  It is checked
    # between hand-overs: one reactor turn's operations are never split.
    MAX_BATCH = 2000

    # Waiting for the clients just answered (L{_run}): after a batch of at
    # least RETURNS_FROM operations (a run is one: one client's read), the
    # next one waits while fewer operations than the last batch's came in
    # since its answers went out: for RETURNS_GAP seconds at most between
    # two hand-overs, and RETURNS_WAIT in all.
    RETURNS_FROM = 64
    RETURNS_GAP = 0.0015
    RETURNS_WAIT = 0.003

    def __init__(self, realm, reactor, inline):
        """
        With C{inline}, every operation runs at once on the calling thread in
        a transaction of its own, and its Deferred has fired on return: for
        deterministic tests only (it blocks the caller).
        """
        self._reactor = reactor
        self.realm = realm
        self._inline = inline
        # What the database thread remembers between operations; only that
        # thread touches it (tests reach it through operations they submit).
        self.thread_cache = ThreadCache()
        self.commits = 0  # transactions committed: a figure for tests and tuning
        # Of each committed batch (metrics; written by the database thread only):
        self.commit_operations = Histogram(COMMIT_OPERATIONS)  # operations in it
        self.commit_seconds = Histogram(COMMIT_SECONDS)  # from BEGIN to COMMIT done
        self._report = None  # called with each operation's committed Deliveries
        self._full = False  # the disk was full at the last failure, and said so
        # (operations, weight, batches answered by then) of a turn each, then _STOP
        self._queue = queue.SimpleQueue()
        self._answered = 0  # batches answered (written by the reactor thread only)
        self._pending = []  # operations of this reactor turn
        self._pending_weight = 0  # what they count against MAX_BATCH past one each (runs)
        self._thread = None
        self._stop_waiters = []
        # Operations queued before start() wait for it; after stop() they fail.
        self._accepting = True

    # -- what an engine supplies ----------------------------------------------

    def _begin(self, writes, isolated):
        """
        Begin the transaction of a batch on C{self._db}; C{writes}: some
        operation writes; C{isolated}: it runs again, each operation in a
        savepoint.
        """
        raise NotImplementedError()

    def _commit(self):
        """Commit the batch's transaction; L{_NeedsIsolation} to run it again isolated."""
        self._db.execute("COMMIT")

    def _clean_error(self, failure):
        """The clean L{errors.ChatError} failure for C{failure} (a full disk...), or None."""
        return None

    def _close(self):
        self._db.close()

    # -- the database thread ------------------------------------------------

    def start(self):
        self._accepting = True
        if not self._inline:
            self._thread = threading.Thread(
                target=self._run, name=f"multirealm-store {self.realm}", daemon=True
            )
            self._thread.start()

    def stop(self):
        """
        Let the database thread finish every queued operation, then close.
        The returned Deferred fires once the database is closed; operations
        submitted from now on fail at once.
        """
        self._accepting = False
        if self._thread is None:  # inline, never started, or stopped
            self._close()
            return defer.succeed(None)
        waiter = defer.Deferred()
        if not self._stop_waiters:
            self._hand_over()
            self._queue.put(_STOP)
        self._stop_waiters.append(waiter)
        return waiter

    def _stopped(self):
        self._thread = None
        waiters, self._stop_waiters = self._stop_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def submit(self, function, *args, writes=True):
        """
        Run C{function(db, *args)} on the database thread inside the next
        batch's transaction; the Deferred fires with its result once
        committed.  C{writes=False} declares that it changes no row.  The
        L{multirealm.storage.queries} contract holds: refuse with a
        L{errors.ChatError} only before changing a row.
        """
        if not self._accepting:
            return defer.fail(errors.Unavailable("the realm is shutting down; try again"))
        operation = _Operation(function, args, writes)
        self._enqueue(operation)
        return operation.deferred

    def submit_then(self, then, function, *args, writes=True):
        """
        As L{submit}, but instead of a Deferred firing, C{then} is called
        once on the reactor thread with the result or a L{Failure}: the
        send path's one call a message in place of a Deferred and its
        callbacks (issue 18).  C{then} may be called before this returns.
        """
        if not self._accepting:
            then(Failure(errors.Unavailable("the realm is shutting down; try again")))
            return
        self._enqueue(_Operation(function, args, writes, then))

    def submit_run(self, then, weight, function, *args):
        """
        As L{submit_then}, for an operation that counts as C{weight}
        operations against L{MAX_BATCH} (a run: its messages).
        """
        if not self._inline:  # inline, each operation is its own batch
            self._pending_weight += weight - 1
        self.submit_then(then, function, *args)

    def _enqueue(self, operation):
        if self._inline:
            self._answer(self._run_batch([operation]))
            return
        # Operations of one reactor turn go to the database thread together,
        # at the start of the next turn: one hand-over, not one per request.
        self._pending.append(operation)
        if len(self._pending) == 1:
            self._reactor.callLater(0, self._hand_over)

    def _hand_over(self):
        if self._pending:
            pending, self._pending = self._pending, []
            self._queue.put((pending, len(pending) + self._pending_weight, self._answered))
            self._pending_weight = 0

    def _run(self):
        stopping = False
        ran = 0  # batches run
        last = 0  # the operations of the last one
        try:
            while not stopping:
                # Everything handed over while the last batch ran becomes
                # the next batch (group commit), up to about MAX_BATCH.
                batch, weight = [], 0
                returned = 0  # operations handed over after the last batch's answers
                deadline = None
                handed = self._queue.get()
                while True:
                    if handed is _STOP:
                        stopping = True
                        break
                    operations, handed_weight, answered = handed
                    batch.extend(operations)
                    weight += handed_weight
                    if answered >= ran:
                        returned += len(operations)
                    if weight >= self.MAX_BATCH:
                        break
                    try:
                        handed = self._queue.get_nowait()
                        continue
                    except queue.Empty:
                        pass
                    # The clients of a big batch, just answered, send their
                    # next requests: waiting a little for them makes one
                    # batch of what would be two (a commit, its fsync and
                    # the pages it writes shared by twice the messages).
                    # Without it a loaded realm's clients split into groups
                    # whose commits take turns, each waiting for the
                    # other's (benchmarks/README.md, "Issue 18, seventh
                    # session").  Clients that do not come back at once
                    # cost the batch RETURNS_GAP.  Operations, not their
                    # weight: one connection's run of many sends does
                    # not make the others wait.
                    if last < self.RETURNS_FROM or returned >= last:
                        break
                    now = monotonic()
                    if deadline is None:
                        deadline = now + self.RETURNS_WAIT
                    if now >= deadline:
                        break
                    try:
                        handed = self._queue.get(timeout=min(self.RETURNS_GAP, deadline - now))
                    except queue.Empty:
                        break
                if batch:
                    ran += 1
                    last = len(batch)
                    self._reactor.callFromThread(self._answer, self._run_batch(batch))
                # Nothing of it stays while the thread waits for the next
                # batch (its operations hold their messages and callers).
                batch = handed = operations = None
        finally:
            self._close()
            self._reactor.callFromThread(self._stopped)

    def _run_batch(self, batch):
        """
        Run operations in one transaction; return (operation, result) pairs.

        The batch first runs without savepoints: an operation refused with a
        L{errors.ChatError} before it changed any row leaves nothing to
        undo, which is how every operation here refuses.  Anything else (a
        refusal after a change, a bug, a disk error) rolls the transaction
        back and runs the batch again with each operation in a savepoint
        of its own, so one failure never undoes its neighbours.
        """
        try:
            return self._transaction(batch, isolated=False)
        except _NeedsIsolation:
            pass
        # Outside the except block: what the isolated run raises does not
        # carry the first run's exception (its frames, the whole batch).
        return _joined_runs(self._transaction(_split_runs(batch), isolated=True))

    def _transaction(self, batch, isolated):
        results = []
        started = perf_counter()
        cache = self.thread_cache
        try:
            self._begin(any(op.writes for op in batch), isolated)
            db = self._db
            for op in batch:
                if not isolated and op.function not in _GATHERS:
                    self._write_gathered(db)
                # Reads too: after an error PostgreSQL refuses every further
                # statement of the transaction until a rollback.
                if isolated:
                    db.execute("SAVEPOINT op")
                changes = db.total_changes
                gathered = len(cache.gathered_keys)
                try:
                    result = op.function(db, *op.args)
                    if isolated:
                        messages.write_gathered(db, cache)
                except Exception as e:
                    if not db.in_transaction:
                        # The whole transaction is gone (SQLite rolled it
                        # back on an I/O error, a full disk, no memory; the
                        # PostgreSQL connection was lost): what ran before
                        # is gone, and what follows must not run in
                        # autocommit.  The whole batch fails.
                        raise
                    if isolated:
                        db.execute("ROLLBACK TO op")
                        db.execute("RELEASE op")
                        cache.clear()  # it may name rows just undone
                    elif not (isinstance(e, errors.ChatError) and db.total_changes == changes
                              and len(cache.gathered_keys) == gathered):
                        raise _NeedsIsolation() from e
                    failure = Failure()
                    # Its traceback's frames hold the whole batch: without
                    # them, no cycle keeps the batch until a collection.
                    failure.cleanFailure()
                    results.append((op, failure))
                else:
                    if isolated:
                        db.execute("RELEASE op")
                    results.append((op, result))
            if not isolated:
                self._write_gathered(db)
            self._commit()
            self.commits += 1
            self.commit_operations.observe(len(batch))
            self.commit_seconds.observe(perf_counter() - started)
        except BaseException as e:
            cache.clear()
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            if isinstance(e, _NeedsIsolation):
                raise
            failure = Failure()
            failure.cleanFailure()  # its frames hold this one, and the batch: no cycle
            return [(op, failure) for op in batch]
        return results

    def _write_gathered(self, db):
        """
        Write the rows the batch's operations gathered; if that fails, the
        batch runs again isolated, each operation writing its own.
        """
        try:
            messages.write_gathered(db, self.thread_cache)
        except Exception as e:
            if not db.in_transaction:
                raise  # the whole batch fails (see _transaction)
            raise _NeedsIsolation() from e

    def report_deliveries_to(self, listener):
        self._report = listener

    def _answer(self, results):
        """
        On the reactor thread, after the commit: for each operation in
        order, report its new messages (one call for all of them: a run's
        are one), then answer it.  Reported just before its own answer,
        after the answers of the operations before it: a read answered in
        the batch never misses a message announced before it, and a
        client's replies and events keep the order the batch ran in.
        """
        self._answered += 1  # what is handed over from now on came after these answers
        report = self._report
        for op, result in results:
            kind = type(result)
            if kind is Failure:
                result = self._clean_error(result) or result
            else:
                if kind is Sent and result.failed:
                    # A run's messages that failed alone (its isolated pass):
                    # a full disk or a lost database is a clean refusal for
                    # each, as for a whole operation.
                    result = Sent([
                        self._clean_error(part) or part if type(part) is Failure else part
                        for part in result
                    ])
                else:
                    self._full = False
                if report is not None:
                    if kind is Delivery:
                        new = () if result.duplicate else (result,)
                    elif kind is Sent or kind is Deliveries:
                        # Not a refusal (a run's), nor a message received before.
                        new = [d for d in result if type(d) is Delivery and not d.duplicate]
                    else:
                        new = ()
                    if new:
                        try:
                            report(new)
                        except Exception:  # the answers go out whatever a listener does
                            log.failure("reporting stored messages failed", realm=self.realm)
            if op.then is not None:
                try:
                    op.then(result)
                except Exception:  # one answer that fails keeps no other from going out
                    log.failure("answering a stored operation failed", realm=self.realm)
            elif type(result) is Failure:
                op.deferred.errback(result)
            else:
                op.deferred.callback(result)
