"""/conversations, unread counts kept from events, and /history marking what it shows read."""

import asyncio

from twisted.trial import unittest

from multirealm.client import render
from multirealm.client.app import Chat
from multirealm.client.commands import Action, UsageError, parse
from tests.client.test_chat import STAMP, TOKEN, Session, entry, type_lines

LISTED = {"status": "OK", "more": True, "conversations": [
    {"with": "team", "kind": "group", "unread": 0, "last": None},
    {"with": "heru@2", "kind": "private", "unread": 2,
     "last": dict(entry(7, sender="heru@2"), msg="see you")},
]}


class ConversationCommandTests(unittest.TestCase):
    def chat(self, answer):
        self.session = Session(answer)
        self.shown = []
        return Chat(self.session, self.shown.append)

    def events(self, chat, *items):
        """Each event handled as the session hands it over, with the requests it starts."""
        async def handling():
            for item in items:
                chat.event(item)
                await asyncio.gather(*chat.background)

        asyncio.run(handling())

    def test_the_list_shows_unread_counts_presence_and_how_to_page_on(self):
        failures = {"with": "@2", "kind": "private", "unread": 1,
                    "last": dict(entry(5, sender="@2"), msg="not delivered")}
        listed = dict(LISTED, conversations=LISTED["conversations"] + [failures])

        def answer(line, body, sink):
            if line.startswith("presence"):
                return {"status": "OK", "presence": {"heru@2": {"online": True, "last_seen": None}}}
            return listed

        chat = self.chat(answer)
        type_lines(chat, "/conversations", "/conversations heru@2")
        # People only are asked about: not a group, not a realm's failures.
        self.assertEqual(self.session.sent, [f"conversations {TOKEN}", f"presence {TOKEN} heru@2",
                                             f"conversations {TOKEN} heru@2",
                                             f"presence {TOKEN} heru@2"])
        when = render.clock(STAMP)
        self.assertEqual(self.shown[:4], [
            "#team: no message yet",
            f"● heru@2 (2 unread): [{when}] heru@2: see you",
            f"@2 (1 unread): [{when}] @2: not delivered",
            "(more: /conversations @2)",
        ])
        self.assertEqual(chat.prompt, "alice (3 unread)> ")  # 2 from heru@2, 1 failure

    def test_counts_follow_messages_one_s_own_and_read_events(self):
        relisted = dict(LISTED, conversations=[dict(LISTED["conversations"][1], unread=1)])
        answers = [LISTED, relisted]
        chat = self.chat(lambda line, body, sink: {"status": "OK", "presence": {}}
                         if line.startswith("presence") else answers.pop(0))
        type_lines(chat, "/conversations")
        news = dict(entry(8, sender="Heru@2"), msg="one more")
        self.events(chat, {"event": "message", "kind": "private", "message": news})
        self.assertEqual(chat.prompt, "alice (3 unread)> ")
        # Read on another device up to the last message known here: nothing to ask.
        self.events(chat, {"event": "read", "with": "heru@2", "up_to": news["id"]})
        self.assertEqual((chat.prompt, len(self.session.sent)), ("alice> ", 2))
        # Up to an older one: the realm is asked for the counts.
        self.events(chat, {"event": "message", "kind": "group",
                           "message": entry(9, sender="cy@3", to="team")},
                    {"event": "read", "with": "heru@2", "up_to": entry(7)["id"]})
        self.assertEqual(self.session.sent[2:], [f"conversations {TOKEN}"])
        self.assertEqual(chat.prompt, "alice (2 unread)> ")  # 1 in #team, 1 with heru@2
        # Sending reads the conversation.
        chat.session.answer = lambda line, body, sink: {"status": "OK", "id": "x",
                                                        "timestamp": STAMP}
        type_lines(chat, "/group team hi", "/msg heru@2 thanks")
        self.assertEqual(chat.prompt, "alice> ")

    def test_history_marks_the_newest_message_shown_read(self):
        history = {"status": "OK", "more": False,
                   "messages": [entry(1, sender="heru@2"), entry(2, sender="heru@2")]}
        chat = self.chat(lambda line, body, sink: history if "history" in line else
                         {"status": "OK", "message": "read"})
        type_lines(chat, "/history heru@2", "/history #team")
        self.assertEqual(self.session.sent, [
            f"history {TOKEN} private heru@2", f"markread {TOKEN} heru@2 {entry(2)['id']}",
            f"history {TOKEN} group team", f"markread {TOKEN} team {entry(2)['id']}",
        ])

    def test_parse(self):
        self.assertEqual(parse("/conversations"), Action("conversations", ()))
        self.assertEqual(parse("/conversations heru@2"), Action("conversations", ("heru@2",)))
        self.assertRaises(UsageError, parse, "/conversations a b")
        self.assertIsNone(render.event({"event": "read", "with": "heru", "up_to": "1"}, "alice"))
