"""
L{IdleSweep}: one timer for the idle timeout of every connection of a
factory, never early, at most one sweep period late.
"""

from twisted.internet import task
from twisted.trial import unittest

from multirealm.chat.idle import IdleSweep


class Connection:
    """What the sweep needs of a connection: its idle_since, timeoutConnection."""

    def __init__(self, clock, sweep=None):
        self.clock = clock
        self.sweep = sweep
        self.timed_out = []

    def active(self):
        self.idle_since = self.clock.seconds()

    def timeoutConnection(self):
        self.timed_out.append(self.clock.seconds())
        if self.sweep is not None:
            self.sweep.remove(self)  # closed at once, as a client that reads nothing is


class IdleSweepTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1_700_000_000.7)  # not on a whole second
        self.start = self.clock.seconds()
        self.sweep = IdleSweep(self.clock, 60)

    def advance_to(self, offset):
        self.clock.advance(self.start + offset - self.clock.seconds())

    def test_never_early_and_at_most_one_period_late(self):
        connection = Connection(self.clock)
        self.sweep.add(connection)
        self.advance_to(59.99)
        self.assertEqual(connection.timed_out, [])
        for step in range(1, 101):  # a second, a hundredth at a time
            self.advance_to(59.99 + step / 100)
        (when,) = connection.timed_out
        self.assertGreaterEqual(when - self.start, 60)
        self.assertLessEqual(when - self.start, 61)

    def test_activity_restarts_it_without_touching_the_timer(self):
        connection = Connection(self.clock)
        self.sweep.add(connection)
        calls = self.clock.getDelayedCalls()
        self.advance_to(50)
        connection.active()
        self.assertEqual(self.clock.getDelayedCalls(), calls)
        self.advance_to(109.9)
        self.assertEqual(connection.timed_out, [])
        self.advance_to(111)
        self.assertEqual(len(connection.timed_out), 1)
        self.advance_to(500)
        self.assertEqual(len(connection.timed_out), 1)  # told once

    def test_many_connections_one_timer_that_stops_with_the_last(self):
        connections = [Connection(self.clock, self.sweep) for _ in range(100)]
        for connection in connections:
            self.sweep.add(connection)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        for connection in connections[:50]:
            self.sweep.remove(connection)  # they ended
        self.advance_to(30)
        for connection in connections[50:75]:
            connection.active()
        self.advance_to(61)
        self.assertEqual([bool(c.timed_out) for c in connections],
                         [False] * 75 + [True] * 25)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.advance_to(91)
        self.assertTrue(all(c.timed_out for c in connections[50:]))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_connection_removed_is_never_timed_out(self):
        first, second = Connection(self.clock), Connection(self.clock)
        self.sweep.add(first)
        self.sweep.add(second)
        self.sweep.remove(first)
        self.advance_to(120)
        self.assertEqual(first.timed_out, [])
        self.assertEqual(len(second.timed_out), 1)
        self.sweep.remove(second)  # it ends after it was told: nothing more to do
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_failure_in_one_timeout_stops_neither_the_others_nor_the_sweep(self):
        broken, first, later = (Connection(self.clock, self.sweep) for _ in range(3))

        def fails():
            raise ZeroDivisionError("a bug")

        broken.timeoutConnection = fails
        for connection in (broken, first):
            self.sweep.add(connection)
        self.advance_to(30)
        self.sweep.add(later)
        self.advance_to(61)
        self.assertEqual(len(first.timed_out), 1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.advance_to(91)
        self.assertEqual(len(later.timed_out), 1)

    def test_a_long_jump_of_the_clock(self):
        connection = Connection(self.clock, self.sweep)
        self.sweep.add(connection)
        self.advance_to(2 * 86400)
        self.assertEqual(len(connection.timed_out), 1)
