"""
Membership changes across two realms as processes, killed (-9) mid-stream:
each change is applied once at the member realm, in order with the group's
messages around it.  Every wait is bounded; every process is killed at
cleanup.
"""

import os
import signal
import sqlite3

from tests.test_end_to_end import DEADLINE
from tests.test_federation_end_to_end import FederationTestCase, everything, wait_for


class MembershipRestartTests(FederationTestCase):
    NAMES = ("1", "2")
    COUNT = 500

    def stream(self, client, first, sig_process=None):
        """
        Pipeline C{COUNT} requests to group team (posts, and every tenth
        zed@2 added or removed in turn); the moment the first is answered,
        kill -9 C{sig_process}.  Every request must be answered OK.
        Returns what realm 2 must store, in order: (kind, text).
        """
        lines, expected = [], []
        for i in range(first, first + self.COUNT):
            if i % 10 == 5:
                change = ("addmember", "added") if (i // 10) % 2 == 0 else ("removemember", "removed")
                lines.append(f"{change[0]} - team zed@2")
                expected.append(("member", f"{change[1]} zed@2"))
            else:
                lines.append(f"sendgroup - team p{i}")
                expected.append(("group", f"p{i}"))
        client.sock.sendall("".join(line + "\r\n" for line in lines).encode())
        replies = [client.read()]
        if sig_process is not None:
            sig_process.send_signal(signal.SIGKILL)
            sig_process.communicate(timeout=DEADLINE)
        replies += [client.read() for _ in range(self.COUNT - 1)]
        self.assertEqual({r["status"] for r in replies}, {"OK"}, replies[:3])
        return expected

    def stored_at_two(self):
        """What realm 2 stored for team@1: (kind, text) of posts and changes, in its order."""
        db = sqlite3.connect(os.path.join(self.folder, "data", "realm2", "realm.sqlite3"))
        self.addCleanup(db.close)
        return db.execute(
            "SELECT kind, body FROM messages WHERE recipient = 'team@1'"
            " AND (kind = 'group' OR (kind = 'member' AND body NOT LIKE 'known %'))"
            " ORDER BY seq"
        ).fetchall()

    def test_every_change_is_applied_once_and_in_order_across_kill_9(self):
        one, alice = self.start("1")
        two, heru = self.start("2")
        alice.ask("register alice pw", "auth alice pw")
        heru.ask("register heru pw", "register zed pw")
        wait_for("the link", lambda: self.all_linked(alice))
        self.assertEqual(alice.ask("creategroup - team heru@2")["status"], "OK")
        # The member realm dies while the first changes stream to it.
        expected = self.stream(alice, 0, sig_process=two)
        two, heru = self.start("2")
        heru.ask("auth heru pw")
        wait_for("the link again", lambda: self.all_linked(alice))
        # The home dies while the next ones are still in its outbox.
        expected += self.stream(alice, self.COUNT)
        one.send_signal(signal.SIGKILL)
        one.communicate(timeout=DEADLINE)
        one, alice = self.start("1")
        posts = sum(1 for kind, _ in expected if kind == "group")
        wait_for(
            "every post at realm 2",
            lambda: len(everything(heru, "groupinbox - team@1")) >= posts,
            deadline=30,
        )
        alice.ask("auth alice pw")
        wait_for("an empty outbox",
                 lambda: alice.ask("listrealms")["realms"][0]["pending"] == 0)
        # Nothing was refused (a change stored twice would be), and realm 2
        # knows the membership the last change left.
        self.assertEqual([m for m in everything(alice, "inbox -") if "failed" in m], [])
        zed_in = expected[-1] if expected[-1][0] == "member" else [
            e for e in expected if e[0] == "member"][-1]
        self.assertEqual(
            heru.ask("groupinfo - team@1")["members"],
            ["alice@1", "heru"] + (["zed"] if zed_in[1].startswith("added") else []),
        )
        self.stop(two)
        self.assertEqual(self.stored_at_two(), expected)  # once each, in order


class ThreeRealmsInOneProcessTests(FederationTestCase):
    def test_members_change_across_three_realms_of_one_process(self):
        process, alice, heru, cy = self.three_linked_in_one_process()
        self.assertEqual(alice.ask("creategroup - team")["status"], "OK")
        alice.ask("sendgroup - team first")
        self.assertEqual(alice.ask("addmember - team heru@2 cy@3")["status"], "OK")

        def info(client):
            reply = client.ask("groupinfo - team@1")
            return reply.get("members")

        wait_for("the members at realm 3", lambda: info(cy) == ["alice@1", "cy", "heru@2"])
        wait_for("the members at realm 2", lambda: info(heru) == ["alice@1", "cy@3", "heru"])
        self.assertEqual([m["msg"] for m in heru.ask("groupinbox - team@1")["messages"]],
                         ["first"])
        self.assertEqual(alice.ask("removemember - team cy@3")["status"], "OK")
        wait_for("cy out at realm 3",
                 lambda: cy.ask("groupinbox - team@1").get("code") == "not_a_member")
        wait_for("cy out at realm 2", lambda: info(heru) == ["alice@1", "heru"])
        self.assertEqual(cy.ask("mygroups -")["groups"], [])
        log = self.stop(process)
        self.assertNotIn("Traceback", log)
