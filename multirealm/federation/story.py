"""
L{LinkStory}: when a realm link's lines are news.  Each side of each link
(our link to a peer, a peer's link to us) keeps one, so that a link that
keeps failing, or keeps being lost as soon as it is up (a peer that
refuses "not now" at once), writes one line when it starts failing, one
for each new reason and one when it is up again, not one an attempt (nor
one a turn of reasons that take turns, as strangers on the realm port can).
"""


class LinkStory:
    """
    @param clock: an L{IReactorTime}.
    """

    # A link lost within this many seconds of coming up, twice in a row or
    # more, counts as one more failed attempt: its up and down lines are
    # not said (the first is: a peer restarted soon after a link came up).
    STEADY_SECONDS = 10.0
    # The most reasons remembered as said while a link fails (the oldest forgotten).
    REASONS = 32

    def __init__(self, clock):
        self._clock = clock
        self._said = {}  # the reasons said while the link fails, oldest first
        self._failures = 0  # attempts failed since it was last up
        self._since = None  # when the first of them failed
        self._early = 0  # links lost within STEADY_SECONDS of coming up, in a row
        self._flapping = False  # links are lost as soon as up
        self._steady = None  # the call that says the link up once it stays

    def failed(self, why):
        """An attempt failed with C{why}: True if that is news (a line to say)."""
        self._failures += 1
        if self._since is None:
            self._since = self._clock.seconds()
        if why in self._said:
            return False
        self._said[why] = None
        if len(self._said) > self.REASONS:
            del self._said[next(iter(self._said))]
        return True

    def up(self, say_later):
        """
        The link authenticated: the note of its up line on the failures
        before ("" if none), and they end.  None while links keep being
        lost as soon as up: C{say_later(note)} is called instead if this one
        stays up L{STEADY_SECONDS}.
        """
        if not self._flapping:
            return self._recovered()
        self._steady = self._clock.callLater(self.STEADY_SECONDS, self._stayed, say_later)
        return None

    def down(self, seconds):
        """
        A link that was up C{seconds} is lost: True if that is a line of
        its own; False if it counts as one more failure (the caller calls
        L{failed} with L{lost_early} of its reason).
        """
        self.stop()
        self._early = self._early + 1 if seconds < self.STEADY_SECONDS else 0
        self._flapping = self._early > 1
        return not self._flapping

    def lost_early(self, why):
        """The failure a link lost within L{STEADY_SECONDS} of coming up counts as."""
        return f"lost within {self.STEADY_SECONDS:g} s of coming up: {why}"

    def stop(self):
        """No line is said later (the link is lost, or the realm stops)."""
        if self._steady is not None and self._steady.active():
            self._steady.cancel()
        self._steady = None

    def _stayed(self, say_later):
        self._steady, self._flapping, self._early = None, False, 0
        say_later(self._recovered())

    def _recovered(self):
        failures, since = self._failures, self._since
        self._failures, self._since = 0, None
        self._said.clear()
        if not failures:
            return ""
        return f" after {failures} failed attempts in {self._clock.seconds() - since:.0f} s"
