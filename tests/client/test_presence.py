"""Presence marks in /who and /members, and presence events, in the terminal client."""

from twisted.trial import unittest

from multirealm.client import render
from multirealm.client.app import Chat
from tests.client.test_chat import STAMP, TOKEN, Session, type_lines

SEEN = "2026-12-06T04:37:11.123+00:00"


class PresenceMarkTests(unittest.TestCase):
    def chat(self, answer):
        self.session = Session(answer)
        self.shown = []
        return Chat(self.session, self.shown.append)

    def test_who_marks_who_is_online(self):
        states = {"alice": {"online": True, "last_seen": None},
                  "bob": {"online": False, "last_seen": SEEN},
                  "heru@2": {"online": False, "last_seen": None}}

        def answer(line, body, sink):
            if line.startswith("listusers"):
                realm = line.split(" ")[1:]
                return {"status": "OK", "users": ["heru"] if realm else ["alice", "bob"],
                        "more": False}
            asked = line.split(" ")[2:]
            return {"status": "OK", "presence": {name: states[name] for name in asked}}

        type_lines(self.chat(answer), "/who", "/who 2")
        self.assertEqual(self.session.sent, ["listusers", f"presence {TOKEN} alice bob",
                                             "listusers 2", f"presence {TOKEN} heru@2"])
        self.assertEqual(self.shown, [
            f"users: ● alice, ○ bob (seen {render.clock(SEEN)})",
            "users of realm 2: ○ heru",
        ])

    def test_who_asks_a_hundred_names_at_a_time_and_without_a_session_marks_nothing(self):
        names = [f"u{n}" for n in range(250)]

        def answer(line, body, sink):
            if line.startswith("listusers"):
                return {"status": "OK", "users": names, "more": False}
            return {"status": "OK", "presence": {n: {"online": True, "last_seen": None}
                                                 for n in line.split(" ")[2:]}}

        chat = self.chat(answer)
        type_lines(chat, "/who")
        self.assertEqual([len(line.split(" ")) - 2 for line in self.session.sent[1:]],
                         [100, 100, 50])
        self.assertEqual(self.shown[-1].count("●"), 250)
        self.session.token = None
        type_lines(chat, "/who")
        self.assertEqual(self.session.sent[-1], "listusers")
        self.assertNotIn("●", self.shown[-1])

    def test_members_are_marked(self):
        def answer(line, body, sink):
            if line.startswith("groupinfo"):
                return {"status": "OK", "group": "team", "owner": "alice",
                        "members": ["alice", "cy@3"]}
            return {"status": "OK", "presence": {"alice": {"online": True, "last_seen": None},
                                                 "cy@3": {"online": False, "last_seen": None}}}

        type_lines(self.chat(answer), "/members team")
        self.assertEqual(self.shown, ["#team (owner: you): ● you, ○ cy@3"])

    def test_presence_events_are_shown_as_they_come(self):
        event = {"event": "presence", "user": "heru@2", "online": True, "last_seen": None}
        self.assertEqual(render.event(event, "alice"), "● heru@2 is online")
        self.assertEqual(render.event(dict(event, online=False, last_seen=STAMP), "alice"),
                         "○ heru@2 went offline")
