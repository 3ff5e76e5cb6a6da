#!/usr/bin/env python3
"""
Conversations and read markers (issue 14), in process on the store's own
functions (no sockets: the database thread's work is what grows with the
history):

  1. A realm of --messages messages (default 1,000,000) written in bulk
     with SQL at schema step 9 (the step before conversations): user alice
     talks with --peers peers (default 9,900; one of them, u0, wrote her a
     twelfth of the private messages) and is in --groups groups (100) of
     50 members; the rest is other users talking among themselves.  Then
     the store opens it, which runs step 010: the time it takes to fill the
     counters from the history is the migration's cost.
  2. `conversations` for alice (peers + groups = 10,000 conversations):
     the store's query plus rendering and encoding the reply, p50/p99, for
     the first page and for pages after a random entry, at list_limit
     1,000 (the default) and 100.
  3. `markread`, each in a transaction of its own with its commit, every
     marker first put back to the start: to the last message (O(1)), and
     to a message in the middle of a private conversation, of a group, and
     of u0's (a third of the way: the range the marker passes is counted).
  4. With --send only: the send path's database-thread cost per message
     (thread CPU time, commit included, 75 messages a transaction as
     under load), before (schema step 9, no bookkeeping) and after,
     alternating rounds: private messages between local users, and posts
     to a group of 50 local members.  Run it on a quiet machine.

    /path/to/venv/bin/python benchmarks/conversations.py [--messages 1000000] [--queries 200]
    /path/to/venv/bin/python benchmarks/conversations.py --send [--rounds 5] [--batch 1600]
"""

import argparse
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from multirealm import wire  # noqa: E402
from multirealm.model import GROUP, PRIVATE, Message, MessageIds  # noqa: E402
from multirealm.names import Address  # noqa: E402
from multirealm.storage import schema  # noqa: E402
from multirealm.storage.queries import conversations, groups, messages  # noqa: E402
from multirealm.storage.queries.messages import peer_key  # noqa: E402
from multirealm.storage.queries.common import Later, ThreadCache  # noqa: E402

REALM = "1"
STAMP = "2026-12-06T00:00:00.000+00:00"
GROUP_SIZE = 50


def log(*parts):
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


def percentiles(samples):
    samples = sorted(samples)
    return (statistics.median(samples) * 1000,
            samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1000,
            samples[-1] * 1000)


def show(name, samples):
    p50, p99, most = percentiles(samples)
    log(f"{name}: p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {most:.2f} ms ({len(samples)} runs)")


def open_db(path):
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db


def build(path, total, peers, group_count):
    """The realm's history at schema step 9, written in bulk."""
    db = open_db(path)
    schema.migrate(db, path, up_to=9, realm=REALM)
    others = max(peers, 2)
    users = ["alice"] + [f"u{k}" for k in range(others)]
    mailbox = {}

    def box(owner):
        number = mailbox.get(owner)
        if number is None:
            number = mailbox[owner] = len(mailbox) + 1
        return number

    groups_members = {
        g: ["alice"] + [f"u{(g * 49 + k) % peers}" for k in range(GROUP_SIZE - 1)]
        for g in range(group_count)
    }
    rows, timeline = [], []
    talks = 0
    for seq in range(1, total + 1):
        kind = PRIVATE
        r = seq % 10
        if r < 6:
            talks += 1
            peer = "u0" if talks % 12 == 1 else f"u{1 + talks % (peers - 1)}"
            sender, recipient = ("alice", peer) if seq % 3 == 0 else (peer, "alice")
        elif r < 8:
            g = seq % group_count
            members = groups_members[g]
            sender = "alice" if seq % 7 == 0 else members[1 + seq % (GROUP_SIZE - 1)]
            kind, recipient = GROUP, f"g{g}"
        else:
            a = seq % others
            sender, recipient = f"u{a}", f"u{(a * 13 + 1 + seq) % others}"
        rows.append((seq, REALM, f"{seq:032x}", kind, f"{sender}@{REALM}",
                     f"{recipient}@{REALM}", f"message {seq}", STAMP))
        if kind == GROUP:
            timeline.append((box(f"group:{recipient}@{REALM}"), seq))
        else:
            timeline.append((box(f"user:{sender}@{REALM}"), seq))
            if recipient != sender:
                timeline.append((box(f"user:{recipient}@{REALM}"), seq))
    db.execute("BEGIN")
    db.executemany("INSERT INTO users VALUES (?, 'h', ?)", [(u, STAMP) for u in users])
    db.executemany(
        "INSERT INTO messages (seq, origin, id, kind, sender, recipient, body, timestamp)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.executemany("INSERT INTO mailboxes VALUES (?, ?)", [(n, o) for o, n in mailbox.items()])
    db.executemany("INSERT INTO timeline VALUES (?, ?)", timeline)
    db.executemany("INSERT INTO groups VALUES (?, ?, ?)",
                   [(f"g{g}", f"alice@{REALM}", STAMP) for g in groups_members])
    db.executemany("INSERT INTO members VALUES (?, ?)", [
        (f"g{g}", f"{m}@{REALM}") for g, members in groups_members.items() for m in members
    ])
    db.executemany("INSERT INTO group_realms VALUES (?, ?, ?)",
                   [(f"g{g}", REALM, GROUP_SIZE) for g in groups_members])
    db.execute("COMMIT")
    db.close()


def migrate(path):
    db = open_db(path)
    start = time.perf_counter()
    versions = schema.migrate(db, path, realm=REALM)
    took = time.perf_counter() - start
    count = sum(db.execute(f"SELECT count(*) FROM {table} WHERE user = 'alice'").fetchone()[0]
                for table in ("private_conversations", "group_markers"))
    total = sum(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("private_conversations", "group_markers", "group_activity"))
    db.close()
    log(f"migration {versions}: {took:.1f} s; alice has {count} conversations,"
        f" {total} rows in all")


def list_latency(db, limit, queries):
    def page(after):
        start = time.perf_counter()
        found, more = conversations.conversations_of(db, REALM, "alice", after, limit, 1 << 20)
        wire.encode({"status": "OK", "conversations": [{
            "with": other.relative_to(REALM), "kind": kind,
            "last": None if last is None else last.to_wire(REALM), "unread": unread,
        } for other, kind, last, unread in found], "more": more})
        return time.perf_counter() - start, found

    _, everything = page(None)
    withs = [c[0] for c in everything]
    firsts = [page(None)[0] for _ in range(queries)]
    # Deeper pages: after an entry of the first page, and after ones further on.
    deeper = []
    for _ in range(queries):
        after = random.choice(withs)
        took, found = page(after)
        deeper.append(took)
        if found:
            withs.append(found[-1][0])
    show(f"conversations, first page of {limit}", firsts)
    show(f"conversations, a page of {limit} after a random entry", deeper)


def markread_costs(db, runs):
    # Everything unread: each marker back to the start, so that a marker
    # put in the middle counts as much as it can.
    cache = ThreadCache()

    def back_to_the_start():
        db.execute("UPDATE private_conversations SET read_seq = 0, read = 0 WHERE user = 'alice'")
        db.execute("UPDATE group_markers SET read_seq = 0, read = 0 WHERE user = 'alice'")

    back_to_the_start()
    me = f"alice@{REALM}"
    private_ids = {}
    for id, sender, recipient in db.execute(
        "SELECT m.id, m.sender, m.recipient FROM mailboxes b JOIN timeline t ON t.mailbox = b.id"
        " JOIN messages m ON m.seq = t.seq WHERE b.owner = ? ORDER BY t.seq",
        (f"user:{me}",),
    ):
        private_ids.setdefault(recipient if sender == me else sender, []).append(id)

    def group_ids(owner):
        return [id for (id,) in db.execute(
            "SELECT m.id FROM mailboxes b JOIN timeline t ON t.mailbox = b.id"
            " JOIN messages m ON m.seq = t.seq WHERE b.owner = ? ORDER BY t.seq", (owner,))]

    steps = []  # the longest step (transaction) of each markread

    def timed(other, message_id):
        """Every step in a transaction of its own, as the store runs them: the total."""
        total = longest = 0
        work = Later(conversations.mark_read, cache, REALM, "alice", other, message_id)
        while isinstance(work, Later):
            start = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            work = work.function(db, *work.args)
            db.execute("COMMIT")
            took = time.perf_counter() - start
            total, longest = total + took, max(longest, took)
        assert work[1]
        steps.append(longest)
        return total

    def show_steps(name):
        show(f"{name}: its longest step", steps)
        steps.clear()

    peers = [p for (p,) in db.execute(
        "SELECT peer FROM private_conversations WHERE user = 'alice' AND peer != ?"
        " ORDER BY random() LIMIT ?", (f"u0@{REALM}", runs))]
    middle, last = [], []
    for peer in peers:
        ids = private_ids[peer]
        other = Address(*peer.split("@"))
        middle.append(timed(other, ids[len(ids) // 2]))
        last.append(timed(other, ids[-1]))
    show(f"markread, private (~{len(ids)} messages), marker at the start, to the middle", middle)
    show("markread, private, then to the last message", last)
    show_steps("markread, private, to the middle or the last")
    back_to_the_start()
    near = []
    for peer in peers:
        ids = private_ids[peer]
        other = Address(*peer.split("@"))
        timed(other, ids[len(ids) // 4])
        near.append(timed(other, ids[len(ids) // 4 + 5]))
    show("markread, private, five of the peer's messages past the marker", near)
    show_steps("markread, private, five past")
    owners = [o for (o,) in db.execute(
        "SELECT b.owner FROM group_markers g JOIN mailboxes b ON b.id = g.mailbox"
        " JOIN group_activity a ON a.mailbox = g.mailbox"
        " WHERE g.user = 'alice' ORDER BY random() LIMIT ?", (runs,))]
    middle, last = [], []
    for owner in owners:
        ids = group_ids(owner)
        other = Address(*owner[len("group:"):].split("@"))
        middle.append(timed(other, ids[len(ids) // 2]))
        last.append(timed(other, ids[-1]))
    show(f"markread, group (~{len(ids)} posts), to a post in the middle", middle)
    show("markread, group, then to the last post", last)
    steps.clear()
    ids = private_ids[f"u0@{REALM}"]
    took = timed(Address("u0", REALM), ids[len(ids) // 3])
    received, read = db.execute(
        "SELECT received, read FROM private_conversations WHERE user = 'alice' AND peer = ?",
        (peer_key(REALM, Address("u0", REALM)),)).fetchone()
    log(f"markread, u0's conversation ({len(ids)} messages), a third of the way from the start:"
        f" {took * 1000:.2f} ms (longest step {steps[-1] * 1000:.2f} ms),"
        f" {received - read} of {received} unread after it")


def send_cost(folder, rounds, per_round, batch=75, cache_mib=None):
    """
    Database-thread CPU per message, before (no counters kept) and after,
    on the same schema.
    """
    ids = MessageIds()
    users = [f"s{k}" for k in range(1000)]

    real = messages.private_added, conversations.group_posted, conversations.joined

    def bookkeeping(on):
        """The code before (off: no counters to keep) or after."""
        if on:
            messages.private_added, conversations.group_posted, conversations.joined = real
        else:
            messages.private_added = lambda cache, realm, delivery: delivery
            conversations.group_posted = conversations.joined = lambda *args: None

    def fresh(name, on):
        bookkeeping(on)
        path = os.path.join(folder, name)
        db = open_db(path)
        if cache_mib:
            db.execute(f"PRAGMA cache_size = -{cache_mib * 1024}")
        schema.migrate(db, path, realm=REALM)
        db.executemany("INSERT INTO users VALUES (?, 'h', ?)", [(u, STAMP) for u in users])
        cache = ThreadCache()
        db.execute("BEGIN")
        groups.create_group(db, cache, "team", Address(users[0], REALM),
                            [Address(u, REALM) for u in users[:GROUP_SIZE]], STAMP, 100)
        db.execute("COMMIT")
        return db, cache

    def round_(db, cache, kind):
        work = []
        for n in range(per_round):
            if kind == GROUP:
                sender, recipient = users[n % GROUP_SIZE], Address("team", REALM)
            elif kind == "pairs":  # run.py's load: 200 senders, each to the next one
                k = n % 200
                sender, recipient = users[k], Address(users[(k + 1) % 200], REALM)
            else:
                sender, recipient = random.sample(users, 2)
                recipient = Address(recipient, REALM)
            work.append(Message(
                ids.new(int(time.time() * 1000)), GROUP if kind == GROUP else PRIVATE,
                Address(sender, REALM), recipient, "hello there", STAMP,
            ))
        add = groups.add_group_message if kind == GROUP else messages.add_private_message
        start = time.thread_time()
        for first in range(0, len(work), batch):
            db.execute("BEGIN IMMEDIATE")
            for message in work[first:first + batch]:
                add(db, cache, REALM, REALM, message)
            messages.write_private_counts(db, cache)
            db.execute("COMMIT")
        return (time.thread_time() - start) / per_round * 1e6

    before = fresh("before.sqlite3", False)
    after = fresh("after.sqlite3", True)
    shown = {
        "pairs": "private, 200 senders each to the next (run.py's load)",
        "random": "private, random pairs of 1,000 users",
        GROUP: "group of 50 local members",
    }
    for kind in shown:
        results = {"before": [], "after": []}
        for _ in range(rounds):
            for name, (db, cache) in (("before", before), ("after", after)):
                bookkeeping(name == "after")
                results[name].append(round_(db, cache, kind))
        bookkeeping(True)
        b, a = statistics.median(results["before"]), statistics.median(results["after"])
        log(f"send path, {shown[kind]}:"
            f" before {b:.1f} µs, after {a:.1f} µs a message (+{(a - b) / b * 100:.0f} %);"
            f" rounds before {[round(x, 1) for x in results['before']]},"
            f" after {[round(x, 1) for x in results['after']]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--peers", type=int, default=9_900)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=20_000)
    parser.add_argument("--folder", default=None,
                        help="where the databases go (default: a temp folder)")
    parser.add_argument("--send", action="store_true", help="only the send path's cost (4.)")
    parser.add_argument("--batch", type=int, default=75,
                        help="messages a transaction in --send (run.py's pipelined load: about"
                             " 1600; its closed loop: about 150)")
    parser.add_argument("--cache-mib", type=int, default=None,
                        help="SQLite page cache for 4. (default: SQLite's, as the store uses)")
    args = parser.parse_args()
    folder = args.folder or tempfile.mkdtemp(prefix="conversations-bench-")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "realm.sqlite3")
    random.seed(14)
    if args.send:
        return send_cost(folder, args.rounds, args.per_round, batch=args.batch,
                         cache_mib=args.cache_mib)
    start = time.perf_counter()
    build(path, args.messages, args.peers, args.groups)
    log(f"built {args.messages} messages in {time.perf_counter() - start:.1f} s"
        f" ({os.path.getsize(path) / 2**20:.0f} MiB) in {folder}")
    migrate(path)
    db = open_db(path)
    for limit in (1000, 100):
        list_latency(db, limit, args.queries)
    markread_costs(db, min(args.queries, 100))
    db.close()


if __name__ == "__main__":
    main()
