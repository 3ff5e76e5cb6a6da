#!/usr/bin/env python3
"""
The abuse benchmark: the three attacks of the hardening issue, each against
a fresh realm (twistd pinned to CPU 0; this script on CPU 1), each printing
the figures of its target.

  history    300 messages of 60,000 control characters (JSON writes each as
             six bytes) in alice's inbox.  Then: 4 connections pipeline 2,000
             "inbox -" each and never read; then 8 such connections; then one
             connection that reads while pipelining 1,000 "inbox -".  Target:
             the realm's peak RSS under 300 MiB, and a bystander's request
             answered in under 1 s throughout.
  auth       300 connections from 10 other addresses (127.0.0.10-19) each keep
             one wrong "auth" in flight, each for another account (so that
             no per-account throttle spares the realm the hash); once a second a fresh
             connection from 127.0.0.1 sends alice's right password.  Target:
             answered within about 1 s, never rate_limited.
  fanout     a group of 1,000 members (999 on two other realms); 4 connections
             each keep 50 "sendgroup" to it in flight; a bystander sends
             private messages closed loop.  Target: its p99 under 100 ms.

    /path/to/venv/bin/python benchmarks/abuse.py [--only history,auth,fanout] [--seconds 15]

Every connection is to 127.0.0.1; every loop is bounded in time; every
process started is stopped (SIGTERM, then SIGKILL) at exit.
"""

import argparse
import atexit
import os
import selectors
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the driver's process and /proc helpers)

REPLY_END = b"\r\n\r\n"
NOISE = "\x01" * 60_000


# Two more realms, never started: realm 1's peers, so that a group can have
# members on them.  The driver's realms.ini lifts the per-connection rate
# limit (the seeding pipelines fast); the per-address limits keep their
# defaults: they are part of what is measured.
PEERS = "".join(
    f"\n[realm:{n}]\nhost = 127.0.0.1\nchat_port = 0\nrealm_port = 0\nhttp_port = 0\n"
    f"data_dir = data{n}\n"
    for n in (2, 3)
)


def start_realm(folder):
    proc, port, _ = run.start_realm(
        folder, os.path.join(folder, "data1"), run.SERVER_CPU, PEERS, one_address_setup=False
    )
    return proc, port


def peak_rss_mib(pid):
    """(peak, current) RSS of the realm, MiB."""
    status = run.proc_status(pid)
    return status.get("VmHWM", 0.0), status.get("VmRSS", 0.0)


class Client:
    """A blocking connection: ask() sends lines and reads their replies."""

    def __init__(self, port, source="127.0.0.1", timeout=60.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout, (source, 0))
        self.buffer = b""

    def ask(self, *lines):
        self.sock.sendall(b"".join(line.encode() + b"\r\n" for line in lines))
        return [self.read() for _ in lines]

    def read(self):
        """One reply; linear in its length (a getfile reply may be 140 MB)."""
        if REPLY_END not in self.buffer:
            chunks, tail = [self.buffer], self.buffer[-3:]
            while True:
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    raise ConnectionError("closed")
                chunks.append(chunk)
                if REPLY_END in tail + chunk:
                    break
                tail = (tail + chunk)[-3:]
            self.buffer = b"".join(chunks)
        reply, self.buffer = self.buffer.split(REPLY_END, 1)
        return reply

    def close(self):
        self.sock.close()


class Bystander(threading.Thread):
    """Asks one cheap request in a closed loop until stopped; keeps the latencies."""

    def __init__(self, port, lines, pause=0.0):
        super().__init__(daemon=True)
        self.client = Client(port)
        self.lines = lines
        self.pause = pause
        self.latencies = []
        self.errors = []
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                (reply,) = self.client.ask(self.lines)
            except OSError as e:
                self.errors.append(repr(e))
                return
            self.latencies.append(time.monotonic() - started)
            if b'"OK"' not in reply:
                self.errors.append(reply[:200].decode(errors="replace"))
            if self.pause:
                self.stopping.wait(self.pause)

    def stop(self):
        self.stopping.set()
        self.join(70)
        self.client.close()

    def figures(self):
        values = sorted(self.latencies) or [float("nan")]
        p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
        return {"requests": len(self.latencies), "max_s": values[-1], "p99_s": p99,
                "errors": len(self.errors)}


def login(port, user, password="pw"):
    client = Client(port)
    client.ask(f"register {user} {password}")
    (reply,) = client.ask(f"auth {user} {password}")
    assert b'"OK"' in reply, reply
    return client


def watch_rss(pid, seconds, bystander=None, until=None):
    """Sample the realm's RSS for up to C{seconds}; return the largest VmRSS seen (MiB)."""
    deadline = time.monotonic() + seconds
    most = 0.0
    while time.monotonic() < deadline and not (until and until()):
        most = max(most, peak_rss_mib(pid)[1])
        time.sleep(0.2)
    return most


# -- the three attacks ---------------------------------------------------------


def history_attack(port, pid, seconds):
    alice = login(port, "alice")
    for start in range(0, 300, 50):
        replies = alice.ask(*[f"send - alice {n} {NOISE}" for n in range(start, start + 50)])
        assert all(b'"OK"' in r for r in replies)
    figures = {"seeded_messages": 300, "rss_after_seeding_mib": round(peak_rss_mib(pid)[1], 1)}

    def non_readers(count):
        socks = []
        for _ in range(count):
            client = login(port, f"x{len(socks)}{time.monotonic_ns()}")
            client.ask("auth alice pw")
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            client.sock.sendall(b"inbox -\r\n" * 2000)
            socks.append(client)
        return socks

    for count in (4, 8):
        bystander = Bystander(port, "listrealms", pause=0.05)
        bystander.start()
        attackers = non_readers(count)
        most = watch_rss(pid, seconds)
        bystander.stop()
        for client in attackers:
            client.close()
        figures[f"{count}_non_readers"] = {
            "max_rss_mib": round(most, 1), "bystander": bystander.figures()}
        time.sleep(1)

    # One that reads: 1,000 pipelined, all read.
    bystander = Bystander(port, "listrealms", pause=0.05)
    bystander.start()
    reader = Client(port)
    reader.ask("auth alice pw")
    reader.sock.sendall(b"inbox -\r\n" * 1000)
    done = threading.Event()
    got = []

    def read_all():
        try:
            for _ in range(1000):
                got.append(len(reader.read()))
        finally:
            done.set()

    threading.Thread(target=read_all, daemon=True).start()
    started = time.monotonic()
    most = watch_rss(pid, max(seconds, 60), until=done.is_set)
    bystander.stop()
    figures["1_reader_1000_inbox"] = {
        "replies": len(got), "largest_reply_bytes": max(got or [0]),
        "seconds": round(time.monotonic() - started, 1), "max_rss_mib": round(most, 1),
        "bystander": bystander.figures()}
    reader.close()
    figures["peak_rss_mib"] = round(peak_rss_mib(pid)[0], 1)
    return figures


def auth_attack(port, pid, seconds):
    login(port, "alice", "right").close()
    sel = selectors.DefaultSelector()
    attackers = []
    for n in range(300):
        source = f"127.0.0.{10 + n % 10}"
        sock = socket.create_connection(("127.0.0.1", port), 10, (source, 0))
        sock.setblocking(False)
        sock.sendall(b"auth alice wrong\r\n")
        sel.register(sock, selectors.EVENT_READ, [b""])
        attackers.append(sock)
    guesses = iter(range(10**9))
    codes = {}
    legit = []
    stop_at = time.monotonic() + seconds
    next_legit = time.monotonic() + 1.0
    while time.monotonic() < stop_at:
        for key, _ in sel.select(timeout=0.05):
            try:
                data = key.fileobj.recv(65536)
            except OSError:
                data = b""
            if not data:
                sel.unregister(key.fileobj)
                continue
            key.data[0] += data
            while REPLY_END in key.data[0]:
                reply, key.data[0] = key.data[0].split(REPLY_END, 1)
                code = reply.split(b'"code": "')[1].split(b'"')[0] if b'"code"' in reply else b"OK"
                codes[code.decode()] = codes.get(code.decode(), 0) + 1
                # keep one in flight, each time at another account
                key.fileobj.sendall(f"auth user{next(guesses)} wrong\r\n".encode())
        if time.monotonic() >= next_legit:
            next_legit += 1.0
            client = Client(port)
            started = time.monotonic()
            (reply,) = client.ask("auth alice right")
            legit.append((time.monotonic() - started, b'"OK"' in reply, reply[:120]))
            client.close()
    for sock in attackers:
        sock.close()
    return {
        "attacker_replies": codes,
        "legit_auths": len(legit),
        "legit_ok": sum(ok for _, ok, _ in legit),
        "legit_max_s": round(max((t for t, _, _ in legit), default=float("nan")), 3),
        "legit_refused": [r.decode(errors="replace") for _, ok, r in legit if not ok][:3],
        "peak_rss_mib": round(peak_rss_mib(pid)[0], 1),
    }


def fanout_attack(port, pid, seconds):
    owner = login(port, "owner")
    members = " ".join(f"m{n}@{2 + n % 2}" for n in range(999))
    (reply,) = owner.ask(f"creategroup - crowd {members}")
    assert b'"OK"' in reply, reply
    bystander_client = login(port, "quiet")
    bystander_client.close()
    bystander = Bystander(port, "send - quiet hello")
    bystander.client.ask("auth quiet pw")
    spammers = [login(port, f"s{n}") for n in range(4)]
    for client in spammers:
        client.ask("auth owner pw")
    stop_at = time.monotonic() + seconds
    sent = [0]

    def spam(client):
        client.sock.sendall(b"sendgroup - crowd spam\r\n" * 50)
        while time.monotonic() < stop_at:
            client.read()
            sent[0] += 1
            client.sock.sendall(b"sendgroup - crowd spam\r\n")
        for _ in range(50):
            client.read()

    threads = [threading.Thread(target=spam, args=(c,), daemon=True) for c in spammers]
    for t in threads:
        t.start()
    time.sleep(1)
    bystander.start()
    for t in threads:
        t.join(seconds + 60)
    bystander.stop()
    figures = bystander.figures()
    return {"group_messages_per_s": round(sent[0] / seconds), "bystander_send": figures,
            "peak_rss_mib": round(peak_rss_mib(pid)[0], 1)}


ATTACKS = {"history": history_attack, "auth": auth_attack, "fanout": fanout_attack}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="history,auth,fanout")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each attack phase")
    opts = parser.parse_args(argv)
    atexit.register(run.kill_all)
    run.raise_nofile()
    os.sched_setaffinity(0, {int(run.LOADGEN_CPU)})
    for name in opts.only.split(","):
        with tempfile.TemporaryDirectory(prefix=f"abuse-{name}-") as folder:
            proc, port = start_realm(folder)
            try:
                figures = ATTACKS[name](port, proc.pid, opts.seconds)
            except Exception as e:  # the realm gave way: say how, with what it used
                figures = {"attack_failed": repr(e)}
            figures["realm_peak_rss_mib"] = round(peak_rss_mib(proc.pid)[0], 1)
            started = time.monotonic()
            run.stop(proc)
            stopped = round(time.monotonic() - started, 2)
            print(f"{name}: {figures}")
            print(f"{name}: SIGTERM to exit {stopped} s")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
