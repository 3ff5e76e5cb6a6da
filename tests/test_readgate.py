"""
The read gate on its own: a line receiver over a StringTransport, held and
released for several reasons.
"""

from twisted.internet import defer
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from multirealm.framing import RequestLineReceiver
from multirealm.readgate import ReadGate


class Lines(RequestLineReceiver):
    def __init__(self):
        self.lines = []

    def lineReceived(self, line):
        self.lines.append(line)


class ReadGateTests(unittest.TestCase):
    def setUp(self):
        self.receiver = Lines()
        self.transport = StringTransport()
        self.receiver.makeConnection(self.transport)
        self.gate = ReadGate(self.receiver)

    def held_with_lines_waiting(self, *reasons):
        """Hold C{reasons}, then receive two lines: they wait."""
        for reason in reasons:
            self.gate.hold(reason)
        self.receiver.dataReceived(b"a\nb\n")
        self.assertEqual(self.receiver.lines, [])
        self.assertEqual(self.transport.producerState, "paused")

    def test_the_last_release_resumes_and_hands_on_the_lines_received(self):
        self.held_with_lines_waiting("disk", "pending", "disk")
        self.assertIn("disk", self.gate)
        self.gate.release("disk")  # held twice, released once: gone
        self.assertNotIn("disk", self.gate)
        self.assertEqual(self.receiver.lines, [])  # "pending" still holds
        self.gate.release("pending")
        self.assertEqual(self.receiver.lines, [b"a", b"b"])
        self.assertEqual(self.transport.producerState, "producing")

    def test_a_release_of_what_is_not_held_changes_nothing(self):
        self.gate.release("disk")
        self.receiver.dataReceived(b"a\n")
        self.assertEqual(self.receiver.lines, [b"a"])
        self.assertEqual(self.transport.producerState, "producing")

    def test_each_hold_until_on_the_same_reason_ends_on_its_own(self):
        first, second = defer.Deferred(), defer.Deferred()
        self.gate.hold_until("serial", first)
        self.gate.hold_until("serial", second)
        self.receiver.dataReceived(b"a\n")
        first.callback("result")
        self.assertIn("serial", self.gate)
        self.assertEqual(self.receiver.lines, [])  # the second is not done
        second.errback(ValueError())
        self.assertNotIn("serial", self.gate)
        self.assertEqual(self.receiver.lines, [b"a"])
        self.assertEqual(self.successResultOf(first), "result")  # results pass through
        self.failureResultOf(second, ValueError)

    def test_a_hold_until_of_a_fired_deferred_holds_nothing(self):
        self.gate.hold_until("serial", defer.succeed(None))
        self.receiver.dataReceived(b"a\n")
        self.assertEqual(self.receiver.lines, [b"a"])

    def test_after_a_half_close_only_the_lines_received_go_on(self):
        self.held_with_lines_waiting("serial")
        self.gate.input_ended()
        self.gate.release("serial")
        self.assertEqual(self.receiver.lines, [b"a", b"b"])
        self.assertEqual(self.transport.producerState, "paused")  # nothing more to read

    def test_nothing_resumes_once_the_connection_is_closing(self):
        self.held_with_lines_waiting("serial")
        self.transport.loseConnection()  # a refusal, a quit
        self.gate.release("serial")
        self.assertEqual(self.receiver.lines, [])
        self.assertEqual(self.transport.producerState, "paused")

    def test_nothing_resumes_once_the_connection_is_lost(self):
        self.held_with_lines_waiting("answers")
        self.gate.connection_lost()
        self.gate.release("answers")
        self.gate.hold("disk")
        self.gate.release("disk")
        self.assertEqual(self.receiver.lines, [])
