"""
passwd end to end (twistd on free loopback ports, real sockets): the
other session ends at once, its subscribed connection gets no more
events, this one goes on, and the change survives kill -9.
"""

import signal

from tests.test_end_to_end import Connection, TwistdTestCase


class PasswdEndToEndTests(TwistdTestCase):
    def test_other_sessions_end_and_the_change_survives_kill_9(self):
        process, laptop = self.start_realm()
        phone, heru = Connection(self.ports["chat1"]), Connection(self.ports["chat1"])
        for connection in (laptop, phone, heru):
            self.addCleanup(connection.close)
        laptop.ask("register alice old", "register heru pw")
        token = laptop.ask("auth alice old")["tokenid"]
        heru.ask("auth heru pw")
        phone.ask("auth alice old", "subscribe -")
        laptop.ask("subscribe -")
        self.assertEqual(laptop.ask("passwd - old new")["status"], "OK")
        self.assertEqual(phone.ask("inbox -")["code"], "invalid_session")
        self.assertEqual(heru.ask("send - alice hi")["status"], "OK")
        # The event, pushed before heru's OK, is on the laptop's socket...
        self.assertEqual(laptop.read()["message"]["msg"], "hi")
        # ...and would be on the phone's before this reply.
        self.assertEqual(phone.ask("ping")["message"], "pong")
        self.assertEqual(laptop.ask("inbox -")["status"], "OK")
        self.stop(process, signal.SIGKILL)

        process, again = self.start_realm()
        self.addCleanup(again.close)
        self.assertEqual(again.ask("auth alice old")["code"], "bad_credentials")
        self.assertEqual(again.ask("auth alice new")["status"], "OK")
        self.assertEqual(again.ask(f"inbox {token}")["status"], "OK")
        log = self.stop(process)
        self.assertNotIn("Traceback", log)
