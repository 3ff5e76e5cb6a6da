"""
Each realm announces its users to its peers (listusers <realm>): those
registered before the link came up, those registered while it is up, in
frames of many names, never the same ones again once acknowledged.
"""

from twisted.trial import unittest

from multirealm import errors
from tests.helpers import InMemoryNetwork


class UserAnnouncementTests(unittest.TestCase):
    def setUp(self):
        self.net = InMemoryNetwork(self, names=("1", "2"))
        self.one, self.two = self.net.realms["1"], self.net.realms["2"]

    def users_of_two(self, after=None):
        return self.successResultOf(self.one.list_users(after, "2"))

    def test_users_registered_before_and_while_linked_are_listed(self):
        self.successResultOf(self.two.register("heru", "pw"))
        self.assertEqual(self.users_of_two(), ([], False))  # not linked yet
        self.net.connect_all()
        self.assertEqual(self.users_of_two(), (["heru"], False))
        self.successResultOf(self.two.register("bob", "pw"))
        self.net.flush()
        self.assertEqual(self.users_of_two(), (["bob", "heru"], False))

    def test_thousands_of_users_cross_in_a_few_frames_and_once(self):
        for n in range(1200):
            self.successResultOf(self.two._store.create_user(f"u{n:04}", "h", "t"))
        frames = []
        real_receive = self.one.receive_users

        def receive_users(origin, names):
            frames.append(len(names))
            return real_receive(origin, names)

        self.one.receive_users = receive_users
        self.net.connect("2", "1")
        self.net.flush()
        self.assertEqual(frames, [500, 500, 200])
        page, more = self.users_of_two()
        self.assertEqual((len(page), more), (1000, True))  # list_limit
        self.assertEqual(self.users_of_two("u0999"), ([f"u{n}" for n in range(1000, 1200)], False))
        # Acknowledged: a new link announces nothing again.
        self.assertEqual(self.successResultOf(self.two.users_to_announce("1", 10)), [])

    def test_bad_names_are_refused(self):
        self.failureResultOf(self.one.receive_users("2", ["ok", "not ok!"]), errors.InvalidName)
        self.failureResultOf(self.one.receive_users("9", ["ok"]), errors.NoSuchRealm)
        self.assertEqual(self.users_of_two(), ([], False))

    def test_an_acknowledgement_numbered_in_other_digits_is_a_stray(self):
        # int() reads "\u0663" as 3 and "\u00b2".isdigit() is true: neither is a
        # cursor, and neither may stop the link.
        self.net.connect_all()
        self.successResultOf(self.two.register("bob", "pw"))  # its frame is in flight
        link = self.net.queues["2", "1"].link
        for cursor in ("\u00b2", "\u0663"):
            link.dataReceived(f'{{"status": "OK", "id": "users-{cursor}"}}\r\n'.encode())
        self.assertFalse(link.transport.disconnecting)
        self.net.flush()
        self.assertEqual(self.users_of_two(), (["bob"], False))
        self.assertEqual(self.successResultOf(self.two.users_to_announce("1", 10)), [])
