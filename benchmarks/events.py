#!/usr/bin/env python3
"""
Live delivery: how soon a subscriber gets its event, and what subscribers
that never read cost everyone else.  The realm runs pinned to CPU 0, this
script on CPU 1.

  1. Latency from `send` to the recipient's event, p50/p99, with 100 and
     then 1,000 subscribed users (each message to a random one, 200/s).
  2. Fan-out: a group of 500 subscribed members; each post's latency to
     every member's event, p50/p99.
  3. 1,000 subscribers that never read, 10,000 messages sent to them
     (--rate a second): the realm's peak RSS, and the p99 of another
     user's `send` (closed loop), against the same on the idle realm and
     under the same flood to users nobody listens for.

    /path/to/venv/bin/python benchmarks/events.py
"""

import argparse
import atexit
import json
import os
import random
import selectors
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import abuse  # noqa: E402  (clients, bystander, RSS)
import run  # noqa: E402  (processes, pinning, loadgen)

END = b"\r\n\r\n"


class Subscribers(threading.Thread):
    """
    One connection per (user, token), each subscribed; a selectors loop
    notes when each event's text arrives (L{note}: message events; a
    subclass notes others).  With C{reading=False} the sockets are never
    read after subscribing (and have a small buffer).
    """

    def __init__(self, port, tokens, reading=True):
        super().__init__(daemon=True)
        self.arrived = {}  # (user, text) -> monotonic time
        self.events = 0
        self.stopping = threading.Event()
        self.selector = selectors.DefaultSelector()
        self.socks = []
        for user, token in tokens:
            s = socket.create_connection(("127.0.0.1", port), 60)
            if not reading:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(f"subscribe {token}\r\n".encode())
            buf = b""
            while END not in buf:
                buf += s.recv(4096)
            assert b'"OK"' in buf, buf
            s.setblocking(False)
            self.socks.append(s)
            if reading:  # what came with the OK stays to be read
                self.selector.register(s, selectors.EVENT_READ, [user, buf.split(END, 1)[1]])
        self.reading = reading

    def run(self):
        while self.reading and not self.stopping.is_set():
            for key, _ in self.selector.select(0.05):
                state = key.data
                try:
                    data = key.fileobj.recv(1 << 16)
                except BlockingIOError:
                    continue
                now = time.monotonic()
                state[1] += data
                while END in state[1]:
                    item, state[1] = state[1].split(END, 1)
                    self.note(state[0], json.loads(item), now)

    def note(self, user, event, now):
        """Event C{event} reached C{user}'s connection at C{now}."""
        if event.get("event") == "message":
            self.events += 1
            self.arrived[(user, event["message"].get("msg"))] = now

    def close(self):
        self.stopping.set()
        if self.is_alive():
            self.join(5)
        for s in self.socks:
            s.close()


def percentiles(values):
    values = sorted(values) or [float("nan")]

    def at(p):
        return round(values[min(len(values) - 1, int(len(values) * p))] * 1000, 2)

    return {"p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": at(1.0), "samples": len(values)}


def logins(folder, port, pid, count, prefix):
    path = os.path.join(folder, f"{prefix}.json")
    run.run_loadgen(["login", "--port", str(port), "--users", str(count), "--prefix", prefix,
                     "--out", path], pid, 900)
    with open(path) as f:
        return json.load(f)


def send_at_rate(port, sender_token, users, seconds, rate):
    """
    C{rate} messages a second to random C{users} for C{seconds}, then 2 s
    for the last events: {(user, text): when sent}.
    """
    sender = abuse.Client(port)
    sent = {}
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        user = random.choice(users)
        text = f"lat{n}"
        sent[(user, text)] = time.monotonic()
        (reply,) = sender.ask(f"send {sender_token} {user} {text}")
        assert b'"OK"' in reply, reply
        n += 1
        time.sleep(1 / rate)
    time.sleep(2)
    sender.close()
    return sent


def latency(port, sender_token, subscribers, users, seconds, rate=200):
    """Messages to random C{users}; latency to each one's event."""
    sent = send_at_rate(port, sender_token, users, seconds, rate)
    lost = [k for k in sent if k not in subscribers.arrived]
    return dict(percentiles([subscribers.arrived[k] - t for k, t in sent.items()
                             if k in subscribers.arrived]), sent=len(sent), lost=len(lost))


def fan_out(port, tokens, subscribers, posts=50):
    owner = abuse.Client(port)
    token = tokens[0][1]
    members = " ".join(user for user, _ in tokens[1:])
    (reply,) = owner.ask(f"creategroup {token} crowd {members}")
    assert b'"OK"' in reply, reply
    waits = []
    for n in range(posts):
        text = f"fan{n}"
        started = time.monotonic()
        owner.ask(f"sendgroup {token} crowd {text}")
        time.sleep(0.1)
        waits += [started]
    time.sleep(3)
    owner.close()
    latencies = []
    missing = 0
    for n, started in enumerate(waits):
        for user, _ in tokens[1:]:
            got = subscribers.arrived.get((user, f"fan{n}"))
            if got is None:
                missing += 1
            else:
                latencies.append(got - started)
    return dict(percentiles(latencies), members=len(tokens) - 1, posts=posts, missing=missing)


def bystander_p99(port, token, to, seconds):
    watcher = abuse.Bystander(port, f"send {token} {to} still here")
    watcher.start()
    time.sleep(seconds)
    watcher.stop()
    return watcher.figures()


def flood_with_bystander(port, pid, sender, senders, users, rate, count=10_000):
    """
    C{count} messages to C{users} in turn, C{rate} a second (in bursts of
    100), while a bystander sends closed loop: its figures and the RSS.
    """
    rss_before = abuse.peak_rss_mib(pid)[1]
    watcher = abuse.Bystander(port, f"send {senders[1][1]} {senders[0][0]} still here")
    watcher.start()
    flood = abuse.Client(port)
    most = rss_before
    started = time.monotonic()
    for n in range(0, count, 100):
        flood.sock.sendall("".join(
            f"send {sender} {users[(n + i) % len(users)][0]} flood {n + i} {'x' * 100}\r\n"
            for i in range(100)
        ).encode())
        for _ in range(100):
            assert b'"OK"' in flood.read()
        most = max(most, abuse.peak_rss_mib(pid)[1])
        pause = started + (n + 100) / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    time.sleep(1)
    most = max(most, abuse.peak_rss_mib(pid)[1])
    watcher.stop()
    flood.close()
    figures = watcher.figures()
    return {"rss_before_mib": round(rss_before, 1), "rss_peak_mib": round(most, 1),
            "p99_ms": round(figures["p99_s"] * 1000, 2), "errors": figures["errors"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=2000.0,
                        help="messages a second sent to the silent subscribers")
    opts = parser.parse_args(argv)
    atexit.register(run.kill_all)
    run.raise_nofile()
    os.sched_setaffinity(0, {int(run.LOADGEN_CPU)})
    results = {}
    with tempfile.TemporaryDirectory(prefix="events-") as folder:
        proc, port, _ = run.start_realm(folder, os.path.join(folder, "data"), run.SERVER_CPU)
        users = logins(folder, port, proc.pid, 1000, "u")
        senders = logins(folder, port, proc.pid, 2, "s")
        crowd = logins(folder, port, proc.pid, 501, "g")
        sender = senders[0][1]
        idle = bystander_p99(port, senders[1][1], senders[0][0], opts.seconds)
        results["idle_bystander"] = idle
        for count in (100, 1000):
            subscribers = Subscribers(port, users[:count])
            subscribers.start()
            results[f"latency_{count}_subscribers"] = latency(
                port, sender, subscribers, [u for u, _ in users[:count]], opts.seconds
            )
            subscribers.close()
        members = Subscribers(port, crowd[1:])
        members.start()
        results["fan_out_500_members"] = fan_out(port, crowd, members)
        members.close()
        print(json.dumps(results), flush=True)

        # Subscribers that never read: 10 messages each, while a bystander
        # sends.  The same flood to users nobody listens for first: what
        # the flood itself costs the bystander, without any event.
        control = flood_with_bystander(port, proc.pid, sender, senders, crowd[1:], opts.rate)
        silent = Subscribers(port, users, reading=False)
        flooded = flood_with_bystander(port, proc.pid, sender, senders, users, opts.rate)
        silent.close()
        results = {"silent_subscribers": {
            "subscribers": len(users), "messages": 10_000, "rate_per_s": opts.rate,
            "rss_before_mib": control["rss_before_mib"],
            "rss_peak_mib": flooded["rss_peak_mib"],
            "bystander_p99_ms": flooded["p99_ms"],
            "bystander_p99_same_flood_no_subscriber_ms": control["p99_ms"],
            "idle_bystander_p99_ms": round(idle["p99_s"] * 1000, 2),
            "ratio_to_idle": round(flooded["p99_ms"] / (idle["p99_s"] * 1000), 2),
            "ratio_to_same_flood_unsubscribed": round(flooded["p99_ms"] / control["p99_ms"], 2),
            "bystander_errors": flooded["errors"] + control["errors"],
        }}
        print(json.dumps(results), flush=True)
        run.stop(proc)


if __name__ == "__main__":
    main()
