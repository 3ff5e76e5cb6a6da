"""
Python's cyclic garbage collector, tuned for a server process (issue 18):
L{CollectorTuning}, a service of the C{twistd multirealm} process.

By default CPython runs a young collection whenever container objects
allocated outnumber those freed by 700, and promotes what survives.  A
realm under load has thousands of messages in flight (each a Message,
a Deferred, a reply slot), so young collections ran thousands of times a
second, promoted the messages in flight, and so set off full collections,
which walk every object of the process, Twisted's modules and the realm's
caches included: 19 full collections of 48 ms each in 8 s of pipelined
load, 17 % of the realm's CPU and most of its 99th-percentile latency
(benchmarks/README.md, "Issue 18").

Three changes, the first two as Instagram's and Synapse's servers make them:
  - once started, everything the process has built so far (modules, the
    configuration, the store's caches) is frozen: no collection walks it
    again (C{gc.freeze});
  - a young collection runs only after L{YOUNG} more allocations than
    frees: a message's objects are freed by their reference counts long
    before, so few survive to be promoted, and full collections are rare;
  - and at least every L{YOUNG_EVERY} seconds: cyclic garbage (and what
    it holds: a request line, say) never waits longer than that, however
    quiet the realm is after a burst.  (The hot paths make no cycles:
    tests/test_collector.py keeps a refused request and a refused message
    to that.)
"""

import gc

from twisted.application.service import Service
from twisted.internet import task

YOUNG = 50_000  # net allocations between young collections (CPython's default: 700)
THRESHOLDS = (YOUNG, 20, 10)  # young, then middle every 20 young, full every 10 middle
YOUNG_EVERY = 1.0  # seconds: a young collection at least this often


class CollectorTuning(Service):
    """
    Sets L{THRESHOLDS}, freezes the objects of start-up and collects the
    young generation every L{YOUNG_EVERY} seconds; undone when stopped.

    @param clock: an L{IReactorTime} (the reactor by default).
    """

    name = "collector-tuning"
    _before = None

    def __init__(self, clock=None):
        if clock is None:
            from twisted.internet import reactor as clock
        self._young = task.LoopingCall(gc.collect, 0)
        self._young.clock = clock

    def startService(self):
        Service.startService(self)
        self._before = gc.get_threshold()
        gc.set_threshold(*THRESHOLDS)
        gc.collect()  # what start-up left as garbage is not frozen with the rest
        gc.freeze()
        self._young.start(YOUNG_EVERY, now=False)

    def stopService(self):
        Service.stopService(self)
        if self._young.running:
            self._young.stop()
        if self._before is not None:
            gc.unfreeze()
            gc.set_threshold(*self._before)
            self._before = None
