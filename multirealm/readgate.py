"""
The read gate of a connection: L{ReadGate}, shared by the chat and realm
protocols.

A protocol stops reading its connection for reasons of its own: the
transport's buffer is full, too many answers are pending, a file is being
written, a request must be done before the next is read.  The gate keeps
the reasons apart, pauses its line receiver at the first and resumes it
once the last is gone, with one set of rules:

  - C{hold(reason)} / C{release(reason)}: a reason is held or not;
    holding it again changes nothing, one release ends it;
  - C{hold_until(reason, deferred)}: held until C{deferred} fires, each
    such hold on its own: two on the same reason end when both have fired;
  - resuming hands on the lines already received, then reads the
    transport again; once the peer has ended its side (L{input_ended}),
    only the lines already received are handed on;
  - once the connection is closing (C{transport.disconnecting}) or lost
    (L{connection_lost}), nothing resumes: no line after a refusal, a
    C{quit} or an error is acted on.
"""

class ReadGate:
    """
    @param receiver: a L{twisted.protocols.basic.LineReceiver} (its
        C{paused}, C{pauseProducing}, C{resumeProducing}, C{dataReceived}
        and C{transport}).
    """

    # One per connection, most of them idle: slots, and no set or dict
    # until a reason is held.
    __slots__ = ("_receiver", "_held", "_until", "ended", "_lost")

    def __init__(self, receiver):
        self._receiver = receiver
        self._held = ()  # reasons held by hold(): a tuple of the few there are
        self._until = None  # reason -> Deferreds of hold_until not fired yet, while any
        self.ended = False  # the peer ended its side: nothing more to read
        self._lost = False

    def __contains__(self, reason):
        return reason in self._held or (self._until is not None and reason in self._until)

    def hold(self, reason):
        if reason not in self._held:
            self._held += (reason,)
        self._pause()

    def release(self, reason):
        if reason in self._held:
            self._held = tuple(held for held in self._held if held != reason)
        self._resume()

    def hold_until(self, reason, deferred):
        """
        Hold C{reason} until C{deferred} (with every callback already added
        to it) has fired; C{deferred}'s result passes through.
        """
        if self._until is None:
            self._until = {}
        self._until[reason] = self._until.get(reason, 0) + 1
        self._pause()

        def release(result):
            self._until[reason] -= 1
            if not self._until[reason]:
                del self._until[reason]
                if not self._until:
                    self._until = None
            self._resume()
            return result

        deferred.addBoth(release)

    def input_ended(self):
        """The peer half-closed: a release hands on the lines received, and reads no more."""
        self.ended = True

    def connection_lost(self):
        """The connection is gone: nothing resumes any more."""
        self._lost = True

    def _pause(self):
        receiver = self._receiver
        if not receiver.paused and not self._lost:
            receiver.pauseProducing()

    def _resume(self):
        receiver = self._receiver
        if self._held or self._until or not receiver.paused or self._lost:
            return
        transport = receiver.transport
        if transport is None or transport.disconnecting:
            return
        if self.ended:
            receiver.paused = False
            receiver.dataReceived(b"")
        else:
            receiver.resumeProducing()
