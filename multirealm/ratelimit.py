"""
A token bucket: the per-connection request rate limit.
"""


class TokenBucket:
    """
    Allows bursts of up to C{burst} requests, refilled at C{rate} a second.

    @param clock: an L{IReactorTime}; only C{seconds()} is used.
    """

    __slots__ = ("_rate", "_burst", "_clock", "_tokens", "_last")  # one per connection

    def __init__(self, rate, burst, clock):
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock.seconds()

    def allow(self):
        """Take a token if one is there; True if the request may go on."""
        now = self._clock.seconds()
        tokens = self._tokens + (now - self._last) * self._rate
        if not tokens <= self._burst:  # min() as a comparison (a call costs more), NaN too
            tokens = self._burst
        self._last = now
        if tokens >= 1:
            self._tokens = tokens - 1
            return True
        self._tokens = tokens
        return False
