"""
The unread count of each conversation, as the terminal client keeps it
between two C{conversations} replies (pure: no I/O): from the list, from
message events (one from someone else adds one, one's own reads the
conversation) and from the read events of this user's other devices.
Conversations are named as the client names them: C{heru@2}, C{#team}.
"""


class Unread:
    def __init__(self):
        self._counts = {}  # conversation, lower case -> [unread, id of its last message]

    def listed(self, entries):
        """The entries of a C{conversations} reply: counts as the realm keeps them."""
        for entry in entries:
            name = ("#" if entry.get("kind") == "group" else "") + str(entry.get("with"))
            last = entry.get("last") or {}
            self._counts[name.lower()] = [entry.get("unread", 0), last.get("id")]

    def message(self, kind, entry, me):
        """A message of C{kind} (an event's, or one's own just sent) was shown."""
        sender, to = str(entry.get("msg_from")), str(entry.get("msg_to"))
        own = me is not None and sender.lower() == me.lower()
        name = "#" + to if kind == "group" else (to if own else sender)
        count = self._counts.setdefault(name.lower(), [0, None])
        count[0] = 0 if own else count[0] + 1
        count[1] = entry.get("id")

    def read(self, conversation, up_to):
        """
        C{conversation} was read up to message C{up_to} (here or on another
        device): True if the count is known now, False if the realm must
        be asked (the message is not the last one this client knows).
        """
        for name in ("#" + conversation.lower(), conversation.lower()):
            count = self._counts.get(name)
            if count is not None and count[1] == up_to:
                count[0] = 0
                return True
        return False

    def count(self, conversation):
        return self._counts.get(conversation.lower(), [0])[0]

    def total(self):
        return sum(count for count, _ in self._counts.values())
