"""
Conversations, markread and the read event over real sockets: two realms
as processes (markers survive a restart), and three realms in one process
(--realm=all).  Every wait is bounded; every process is stopped at cleanup.
"""

from tests.test_federation_end_to_end import FederationTestCase, wait_for


def listed(client):
    """(with, kind, unread, last text) of each of the client's conversations."""
    reply = client.ask("conversations -")
    assert reply["status"] == "OK", reply
    return [(c["with"], c["kind"], c["unread"], c["last"] and c["last"]["msg"])
            for c in reply["conversations"]]


class TwoRealmsTests(FederationTestCase):
    NAMES = ("1", "2")

    def test_unread_counts_markread_and_the_read_event_across_a_restart(self):
        one, phone = self.start("1")
        two, heru = self.start("2")
        phone.ask("register alice pw", "auth alice pw")
        laptop = self.connect_when_up("1", one)
        laptop.ask("auth alice pw")
        heru.ask("register heru pw", "auth heru pw")
        wait_for("the link", lambda: self.all_linked(phone))
        self.assertEqual(phone.ask("creategroup - team heru@2")["status"], "OK")
        first = heru.ask("send - alice@1 one")["id"]
        heru.ask("send - alice@1 two")
        wait_for("the team at realm 2", lambda: heru.ask("mygroups -")["groups"] == ["team@1"])
        heru.ask("sendgroup - team@1 hello team")
        wait_for("both conversations at realm 1", lambda: listed(phone) == [
            ("team", "group", 1, "hello team"), ("heru@2", "private", 2, "two")])
        self.assertEqual(listed(heru), [("team@1", "group", 0, "hello team"),
                                        ("alice@1", "private", 0, "two")])
        phone.ask("subscribe -")
        laptop.ask("subscribe -")
        self.assertEqual(phone.ask(f"markread - heru@2 {first}"),
                         {"status": "OK", "message": f"read up to {first}"})
        self.assertEqual(laptop.read(), {"event": "read", "with": "heru@2", "up_to": first})
        self.assertEqual(listed(laptop)[1], ("heru@2", "private", 1, "two"))
        # The marker is durable: realm 1 stops and starts again.
        self.stop(one)
        one, alice = self.start("1")
        alice.ask("auth alice pw")
        self.assertEqual(listed(alice), [("team", "group", 1, "hello team"),
                                         ("heru@2", "private", 1, "two")])
        wait_for("the link again", lambda: self.all_linked(alice))
        alice.ask("send - heru@2 back")  # one's own message reads what came before
        self.assertEqual(listed(alice)[0], ("heru@2", "private", 0, "back"))
        wait_for("alice's answer at realm 2",
                 lambda: listed(heru)[0] == ("alice@1", "private", 1, "back"))


class ThreeRealmsInOneProcessTests(FederationTestCase):
    def test_conversations_across_three_realms_of_one_process(self):
        process, alice, heru, cy = self.three_linked_in_one_process()
        self.assertEqual(alice.ask("creategroup - team")["status"], "OK")
        self.assertEqual(alice.ask("addmember - team heru@2 cy@3")["status"], "OK")
        wait_for("team at realm 3", lambda: listed(cy) == [("team@1", "group", 0, None)])
        post = cy.ask("sendgroup - team@1 from three")["id"]
        cy.ask("send - heru@2 psst")
        # In the order they arrive: the post comes through its home, realm 1.
        wait_for("both at realm 2", lambda: sorted(listed(heru)) == [
            ("cy@3", "private", 1, "psst"), ("team@1", "group", 1, "from three")])
        wait_for("the post at realm 1",
                 lambda: listed(alice) == [("team", "group", 1, "from three")])
        self.assertEqual(heru.ask(f"markread - team@1 {post}")["status"], "OK")
        self.assertIn(("team@1", "group", 0, "from three"), listed(heru))
        self.assertEqual(listed(cy)[0], ("heru@2", "private", 0, "psst"))
        log = self.stop(process)
        self.assertNotIn("Traceback", log)
