"""
An in-memory L{IClusterBus}: the processes of a realm that share one
L{MemoryHub} hear each other at once, in one Python process (the tests'
"process A" and "process B").  A realm on SQLite has one process, and no
bus at all.
"""

from twisted.internet import defer
from zope.interface import implementer

from multirealm.core.interfaces import IClusterBus


class MemoryHub:
    """What joins the L{MemoryBus}es of one realm; it can lose payloads."""

    def __init__(self):
        self._buses = []
        self._drop = []  # prefixes of payloads to lose, once each

    def bus(self, process):
        """A bus for process C{process}."""
        return MemoryBus(self, process)

    def drop_next(self, prefix):
        """Lose the next payload that starts with C{prefix} (a missed notification)."""
        self._drop.append(prefix)

    def _send(self, sender, text):
        for prefix in self._drop:
            if text.startswith(prefix):
                self._drop.remove(prefix)
                return
        for bus in tuple(self._buses):
            if bus is not sender:
                bus.receiver.received(sender.process, text)


@implementer(IClusterBus)
class MemoryBus:
    MAX_BYTES = 7900

    def __init__(self, hub, process):
        self._hub = hub
        self.process = process
        self.receiver = None

    def start(self, receiver):
        self.receiver = receiver
        self._hub._buses.append(self)

    def publish(self, text):
        if len(text.encode("utf-8")) > self.MAX_BYTES:
            raise ValueError(f"a payload is at most {self.MAX_BYTES} bytes")
        self._hub._send(self, text)

    def stop(self):
        if self in self._hub._buses:
            self._hub._buses.remove(self)
        return defer.succeed(None)
