"""/add, /remove, /members and the member event in the terminal client."""

from twisted.trial import unittest

from multirealm.client import render
from multirealm.client.app import Chat
from multirealm.client.commands import Action, UsageError, parse
from tests.client.test_chat import TOKEN, Session, type_lines


class MemberCommandTests(unittest.TestCase):
    def chat(self, answer):
        self.session = Session(answer)
        self.shown = []
        return Chat(self.session, self.shown.append)

    def type(self, chat, *lines):
        type_lines(chat, *lines)

    def test_add_remove_and_members_send_their_requests_and_say_what_happened(self):
        info = {"status": "OK", "group": "team", "owner": "alice", "members": ["alice", "cy@3"]}

        def answer(line, body, sink):
            return info if line.startswith("groupinfo") else {"status": "OK", "message": "ok"}

        chat = self.chat(answer)
        self.type(chat, "/add team heru@2 cy@3", "/remove #team heru@2", "/members #team")
        self.assertEqual(self.session.sent, [
            f"addmember {TOKEN} team heru@2 cy@3",
            f"removemember {TOKEN} team heru@2",
            f"groupinfo {TOKEN} team",
            f"presence {TOKEN} alice cy@3",
        ])
        self.assertEqual(self.shown, [
            "added to #team: heru@2, cy@3",
            "removed from #team: heru@2",
            "#team (owner: you): you, cy@3",
        ])

    def test_a_refusal_is_said_with_its_code(self):
        refused = {"status": "ERROR", "code": "forbidden", "message": "only alice adds"}
        chat = self.chat(lambda line, body, sink: refused)
        self.type(chat, "/add team cy")
        self.assertEqual(self.shown, ["error: only alice adds (forbidden)"])


class MemberParsingTests(unittest.TestCase):
    def test_parse(self):
        self.assertEqual(parse("/add team heru@2 cy"), Action("add", ("team", "heru@2", "cy")))
        self.assertEqual(parse("/remove team cy"), Action("remove", ("team", "cy")))
        self.assertEqual(parse("/members team@1"), Action("members", ("team@1",)))
        for line in ("/add team", "/remove", "/members"):
            self.assertRaises(UsageError, parse, line)

    def test_member_events(self):
        event = {"event": "member", "group": "team@1", "change": "added", "member": "heru",
                 "by": "alice@1"}
        self.assertEqual(render.event(event, "heru"), "alice@1 added you to #team@1")
        self.assertEqual(render.event(dict(event, change="removed"), "cy"),
                         "alice@1 removed heru from #team@1")
        self.assertEqual(render.event(dict(event, change="left", by="heru"), "cy"),
                         "heru left #team@1")
        self.assertEqual(render.event(dict(event, change="created", member="alice@1"), "heru"),
                         "alice@1 created #team@1")
