#!/usr/bin/env python3
"""
Live events over /ws against the chat port: the same realm, the same run.
The realm runs pinned to CPU 0, this script on CPU 1.

  1. Latency from `send` to the event: 1,000 users, each subscribed on
     one chat connection and on one WebSocket (1,000 of each kind, every
     one reading); messages at --rate a second, each to a random user,
     so every event goes out on both kinds at once.  p50/p99 of each kind
     and their ratio.  Half the users subscribe on the chat port first,
     half on /ws first, and each arrival is timed when the select that
     saw it returns, so neither kind is favoured by the order of writes or
     reads.
  2. The realm's CPU per event: --cpu-messages messages (in bursts of
     100) to the same users subscribed on the chat port only, then on
     /ws only, against the same with nobody subscribed; medians of
     --rounds rounds.
  3. Memory: a fresh realm, its RSS before and after --idle connections of
     one kind (each logged in and subscribed, then idle), per connection;
     once with chat connections, once (another fresh realm, the same
     database) with WebSockets.

The WebSocket client here is a few lines over a plain socket (handshake,
masked text frames with a zero key, unfragmented server frames), so that
both kinds cost this side the same: one selectors loop reads them all.

    /path/to/venv/bin/python benchmarks/ws_events.py [--users 1000] [--idle 1000]
"""

import argparse
import atexit
import base64
import json
import os
import re
import selectors
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import abuse  # noqa: E402  (a chat client, RSS)
import events  # noqa: E402  (logins, percentiles)
import run  # noqa: E402  (processes, pinning, loadgen)

END = b"\r\n\r\n"


def http_port(folder):
    """The http_port of the realms.ini that run.start_realm wrote in C{folder}."""
    with open(os.path.join(folder, "realms.ini")) as f:
        return int(re.search(r"^http_port = (\d+)$", f.read(), re.MULTILINE).group(1))


def text_frame(text):
    """A client's text frame: masked, with a zero key (the payload goes as it is)."""
    data = text.encode()
    size = len(data)
    if size < 126:
        head = bytes([0x81, 0x80 | size])
    else:
        head = bytes([0x81, 0x80 | 126]) + size.to_bytes(2, "big")
    return head + b"\0\0\0\0" + data


def server_messages(buffer):
    """The payloads of the whole frames at the start of C{buffer} (unfragmented), and the rest."""
    found = []
    while len(buffer) >= 2:
        size, start = buffer[1] & 0x7F, 2
        if size == 126:
            size, start = int.from_bytes(buffer[2:4], "big"), 4
        elif size == 127:
            size, start = int.from_bytes(buffer[2:10], "big"), 10
        if len(buffer) < start + size:
            break
        found.append(buffer[start : start + size])
        buffer = buffer[start + size :]
    return found, buffer


def open_websocket(port):
    """A blocking socket with a WebSocket to /ws open on it, and what came after the 101."""
    s = socket.create_connection(("127.0.0.1", port), 60)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    buffer = b""
    while END not in buffer:
        buffer += s.recv(4096)
    head, rest = buffer.split(END, 1)
    assert head.startswith(b"HTTP/1.1 101 "), head
    return s, rest


class Connection:
    """One subscribed connection of either kind, read by L{Listeners}."""

    __slots__ = ("kind", "user", "sock", "buffer")

    def __init__(self, kind, user, token, chat_port, web_port):
        self.kind, self.user = kind, user
        if kind == "chat":
            self.sock = socket.create_connection(("127.0.0.1", chat_port), 60)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.buffer = b""
            self.sock.sendall(f"subscribe {token}\r\n".encode())
        else:
            self.sock, self.buffer = open_websocket(web_port)
            self.sock.sendall(text_frame(f"subscribe {token}"))
        (reply,) = self.wait(1)
        assert reply.get("status") == "OK", reply

    def wait(self, count):
        """Block until C{count} replies or events came; return them."""
        got = []
        while len(got) < count:
            got += self.take()
            if len(got) < count:
                self.buffer += self.sock.recv(1 << 16)
        return got

    def take(self):
        """The whole replies and events in the buffer, parsed."""
        if self.kind == "chat":
            *items, self.buffer = self.buffer.split(END)
        else:
            items, self.buffer = server_messages(self.buffer)
        return [json.loads(item) for item in items]


class Listeners(threading.Thread):
    """Reads every connection in one selectors loop; notes when each event arrives."""

    def __init__(self, connections):
        super().__init__(daemon=True)
        self.arrived = {}  # (kind, user, text) -> monotonic time
        self.stopping = threading.Event()
        self.selector = selectors.DefaultSelector()
        self.connections = connections
        for connection in connections:
            connection.sock.setblocking(False)
            self.selector.register(connection.sock, selectors.EVENT_READ, connection)

    def run(self):
        while not self.stopping.is_set():
            ready = self.selector.select(0.05)
            now = time.monotonic()  # one time for the whole batch: no kind is read first
            for key, _ in ready:
                connection = key.data
                try:
                    connection.buffer += connection.sock.recv(1 << 16)
                except BlockingIOError:
                    continue
                for item in connection.take():
                    if item.get("event") == "message":
                        text = item["message"]["msg"]
                        self.arrived[(connection.kind, connection.user, text)] = now

    def close(self):
        self.stopping.set()
        if self.is_alive():
            self.join(5)
        for connection in self.connections:
            connection.sock.close()


def subscribe_both(users, chat_port, web_port):
    """A chat connection and a WebSocket for each user, in alternating order."""
    connections = []
    for n, (user, token) in enumerate(users):
        kinds = ("chat", "ws") if n % 2 == 0 else ("ws", "chat")
        connections += [Connection(kind, user, token, chat_port, web_port) for kind in kinds]
    return connections


def latency(chat_port, sender_token, listeners, users, seconds, rate):
    """Messages to random C{users}; each kind's latency to the event, and the ratio."""
    sent = events.send_at_rate(chat_port, sender_token, users, seconds, rate)
    figures = {}
    for kind in ("chat", "ws"):
        arrived = listeners.arrived
        waits = [arrived[(kind, *key)] - t for key, t in sent.items() if (kind, *key) in arrived]
        figures[kind] = dict(events.percentiles(waits), lost=len(sent) - len(waits))
    figures["ratio_p50"] = round(figures["ws"]["p50_ms"] / figures["chat"]["p50_ms"], 2)
    figures["ratio_p99"] = round(figures["ws"]["p99_ms"] / figures["chat"]["p99_ms"], 2)
    # The same event on both kinds: which came in a later select, and by how much.
    arrived = listeners.arrived
    gaps = [arrived[("ws", *key)] - arrived[("chat", *key)] for key in sent
            if ("ws", *key) in arrived and ("chat", *key) in arrived]
    figures["ws_later"] = sum(gap > 0 for gap in gaps)
    figures["chat_later"] = sum(gap < 0 for gap in gaps)
    figures["mean_gap_ms"] = round(sum(gaps) / max(1, len(gaps)) * 1000, 3)
    return figures


def cpu_per_message(pid, chat_port, web_port, sender, users, kind, count):
    """
    The realm's CPU (µs) per message sent, C{count} of them in bursts of
    100, to C{users} each subscribed on one connection of C{kind} (None:
    nobody subscribed, no event at all), once every event has come.
    """
    connections = [Connection(kind, user, token, chat_port, web_port)
                   for user, token in users] if kind else []
    listeners = Listeners(connections)
    listeners.start()
    client = abuse.Client(chat_port)
    names = [user for user, _ in users]
    before = run.proc_cpu(pid)
    for n in range(0, count, 100):
        client.sock.sendall("".join(
            f"send {sender} {names[(n + i) % len(names)]} cpu{n + i}\r\n" for i in range(100)
        ).encode())
        for _ in range(100):
            assert b'"OK"' in client.read()
    deadline = time.monotonic() + 60
    while kind and len(listeners.arrived) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    used = run.proc_cpu(pid) - before
    missing = count - len(listeners.arrived) if kind else 0
    client.close()
    listeners.close()
    return used / count * 1e6, missing


def cpu_costs(pid, chat_port, web_port, sender, users, count, rounds):
    """Median CPU per message with no subscriber, chat subscribers, WebSocket subscribers."""
    runs = {None: [], "chat": [], "ws": []}
    missing = 0
    for _ in range(rounds):
        for kind in runs:
            used, lost = cpu_per_message(pid, chat_port, web_port, sender, users, kind, count)
            runs[kind].append(used)
            missing += lost
            time.sleep(1)  # the connections just closed go first
    median = {kind: sorted(values)[len(values) // 2] for kind, values in runs.items()}
    return {
        "messages": count, "rounds": rounds, "events_missing": missing,
        "us_per_message_no_event": round(median[None], 1),
        "us_per_event_chat": round(median["chat"] - median[None], 1),
        "us_per_event_ws": round(median["ws"] - median[None], 1),
        "all_us_per_message": {str(kind): [round(v, 1) for v in values]
                               for kind, values in runs.items()},
    }


def idle_memory(folder, data, kind, users):
    """
    A fresh realm on C{data}: its RSS before and after one idle, subscribed
    connection of C{kind} for each of C{users}.
    """
    run_dir = os.path.join(folder, f"idle-{kind}")
    os.makedirs(run_dir)
    proc, chat_port, log = run.start_realm(run_dir, data, run.SERVER_CPU)
    web_port = http_port(run_dir)
    # One connection of the kind first, so that what any first one sets up is in "before".
    warm = Connection(kind, users[0][0], users[0][1], chat_port, web_port)
    time.sleep(2)
    before = abuse.peak_rss_mib(proc.pid)[1]
    connections = [Connection(kind, user, token, chat_port, web_port) for user, token in users]
    time.sleep(3)
    after = abuse.peak_rss_mib(proc.pid)[1]
    for connection in connections + [warm]:
        connection.sock.close()
    run.stop(proc)
    return {"connections": len(users), "rss_before_mib": round(before, 1),
            "rss_after_mib": round(after, 1),
            "kib_per_connection": round((after - before) * 1024 / len(users), 1),
            "log_problems": run.log_problems(log)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1000,
                        help="subscribed users, each on one chat connection and one WebSocket")
    parser.add_argument("--idle", type=int, default=1000, help="idle connections of each kind")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=200.0, help="messages a second")
    parser.add_argument("--cpu-messages", type=int, default=20000,
                        help="messages sent to measure the CPU per event, each round")
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args(argv)
    atexit.register(run.kill_all)
    run.raise_nofile()
    os.sched_setaffinity(0, {int(run.LOADGEN_CPU)})
    results = {}
    with tempfile.TemporaryDirectory(prefix="ws-events-") as folder:
        data = os.path.join(folder, "data")
        proc, chat_port, log = run.start_realm(folder, data, run.SERVER_CPU)
        web_port = http_port(folder)
        count = max(opts.users, opts.idle)
        users = events.logins(folder, chat_port, proc.pid, count, "u")
        (sender,) = events.logins(folder, chat_port, proc.pid, 1, "s")
        listeners = Listeners(subscribe_both(users[: opts.users], chat_port, web_port))
        listeners.start()
        results["latency"] = dict(
            latency(chat_port, sender[1], listeners, [u for u, _ in users[: opts.users]],
                    opts.seconds, opts.rate),
            users=opts.users, rate_per_s=opts.rate,
        )
        listeners.close()
        results["cpu"] = cpu_costs(proc.pid, chat_port, web_port, sender[1],
                                   users[: opts.users], opts.cpu_messages, opts.rounds)
        run.stop(proc)
        results["log_problems"] = run.log_problems(log)
        print(json.dumps(results), flush=True)
        results = {f"idle_{kind}": idle_memory(folder, data, kind, users[: opts.idle])
                   for kind in ("chat", "ws")}
        results["idle_ratio"] = round(
            results["idle_ws"]["kib_per_connection"] / results["idle_chat"]["kib_per_connection"], 2
        )
        print(json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
