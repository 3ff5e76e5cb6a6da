#!/usr/bin/env python3
"""
Load generator for the multirealm chat port (PROTOCOL.md §1), plain Python,
written to cost as little CPU per reply as it can.

Two subcommands:

  login  Open U connections to a realm; on connection i send
         ``register u<i> <pw>`` and ``auth u<i> <pw>`` (pipelined), collect
         the session ids, optionally keep every connection open and idle
         (``--hold``) until a line or EOF arrives on stdin (the driver
         measures the realm's memory meanwhile), then write the tokens to a
         JSON file.  This is setup, never measured.

  bench  Open N connections; connection i uses the session of user i and
         sends private messages (``send <token> u<i+1> <text>``) with K
         requests in flight (K=1: closed loop).  After a warm-up, it
         measures for a fixed duration: replies, OK vs errors, latency of
         every reply (time from the write of its request to the arrival of
         the chunk that completes it).  Then it stops sending and drains:
         every request sent must get exactly one reply; the ones that do
         not come within the drain timeout are reported as unanswered.

Machine-readable output goes to stdout: ``MEASURE_START`` and
``MEASURE_END`` lines when the measured window opens and closes (the
driver samples the server's CPU time at those moments), then one line
``RESULT {json}``.  Progress and problems go to stderr.

In the measured phase replies are not JSON-parsed: a reply is counted by
its ``\\r\\n\\r\\n`` end (handling an end split across chunks) and is OK if
it contains ``"status": "OK"``.  Only error replies are parsed, to count
their codes.  Everything goes to 127.0.0.1 only.
"""

import argparse
import json
import math
import resource
import selectors
import socket
import sys
import time
from collections import deque

DELIM = b"\r\n\r\n"
OK_MARK = b'"status": "OK"'
HOST = "127.0.0.1"
RECV_SIZE = 64 * 1024  # below glibc's mmap threshold: no mmap/munmap per recv
MAX_ERROR_SAMPLES = 5
MAX_ERRORS_PARSED = 2000

perf = time.perf_counter


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def log(*parts):
    print("loadgen:", *parts, file=sys.stderr, flush=True)


def emit(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def connect_all(port, count, timeout=30.0):
    """
    Open C{count} connections to 127.0.0.1:C{port}, blocking connects one
    after another (the server's accept backlog is small; a blocking
    connect simply waits out a dropped SYN), then make them non-blocking.
    """
    socks = []
    deadline = time.monotonic() + timeout
    for i in range(count):
        while True:
            try:
                s = socket.create_connection((HOST, port), timeout=max(1.0, deadline - time.monotonic()))
                break
            except OSError as e:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cannot open connection {i + 1} of {count}: {e}") from None
                time.sleep(0.05)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        socks.append(s)
    return socks


class ErrorTally:
    """Counts error replies by code; keeps a few whole replies as samples."""

    def __init__(self):
        self.codes = {}
        self.samples = []
        self.parsed = 0

    def add(self, complete):
        """C{complete}: bytes holding whole replies, some not OK."""
        for reply in complete.split(DELIM):
            if not reply or OK_MARK in reply:
                continue
            if self.parsed >= MAX_ERRORS_PARSED:
                self.codes["(not parsed)"] = self.codes.get("(not parsed)", 0) + 1
                continue
            self.parsed += 1
            try:
                code = json.loads(reply).get("code", "(no code)")
            except ValueError:
                code = "(not JSON)"
            first = code not in self.codes
            self.codes[code] = self.codes.get(code, 0) + 1
            if first and len(self.samples) < MAX_ERROR_SAMPLES:  # one sample per code
                self.samples.append(reply.decode("utf-8", "replace")[:300])


# -- login ---------------------------------------------------------------------


def login(args):
    users = [f"{args.prefix}{i}" for i in range(args.users)]
    t0 = perf()
    socks = connect_all(args.port, len(users), timeout=120)
    log(f"login: {len(socks)} connections open in {perf() - t0:.1f} s")
    sel = selectors.DefaultSelector()
    state = {}
    for s, user in zip(socks, users):
        request = f"register {user} {args.password}\r\nauth {user} {args.password}\r\n".encode()
        state[s] = {"user": user, "buf": b"", "replies": [], "out": request, "done": False}
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, state[s])
    done = 0
    deadline = perf() + args.timeout
    next_report = perf() + 5
    while done < len(socks):
        now = perf()
        if now > deadline:
            raise SystemExit(f"loadgen: login timed out: {done} of {len(socks)} users logged in")
        if now > next_report:
            log(f"login: {done}/{len(socks)} users logged in ({now - t0:.0f} s)")
            next_report = now + 5
        for key, mask in sel.select(timeout=1.0):
            s, st = key.fileobj, key.data
            if mask & selectors.EVENT_WRITE and st["out"]:
                try:
                    n = s.send(st["out"])
                except BlockingIOError:
                    n = 0
                st["out"] = st["out"][n:]
                if not st["out"]:
                    sel.modify(s, selectors.EVENT_READ, st)
            if mask & selectors.EVENT_READ:
                try:
                    data = s.recv(RECV_SIZE)
                except BlockingIOError:
                    continue
                if not data:
                    raise SystemExit(f"loadgen: server closed the connection of {st['user']}")
                if st["done"]:
                    continue  # nothing more is expected on this connection
                st["buf"] += data
                while DELIM in st["buf"]:
                    reply, st["buf"] = st["buf"].split(DELIM, 1)
                    st["replies"].append(json.loads(reply))
                if len(st["replies"]) >= 2:
                    register, auth = st["replies"][:2]
                    if register.get("status") != "OK" and register.get("code") != "user_exists":
                        raise SystemExit(f"loadgen: register {st['user']}: {register}")
                    if auth.get("status") != "OK" or "tokenid" not in auth:
                        raise SystemExit(f"loadgen: auth {st['user']}: {auth}")
                    st["token"] = auth["tokenid"]
                    st["done"] = True
                    done += 1
    elapsed = perf() - t0
    log(f"login: {done} users registered and logged in in {elapsed:.1f} s")
    tokens = [[st["user"], st["token"]] for st in (state[s] for s in socks)]
    if args.hold:
        # Every connection stays open and idle; the driver samples the
        # server's memory now and says when to let go (a line or EOF).
        emit(f"READY {done} {elapsed:.2f}")
        sys.stdin.readline()
    for s in socks:
        s.close()
    with open(args.out, "w") as f:
        json.dump(tokens, f)
    emit("RESULT " + json.dumps({"users": done, "login_seconds": round(elapsed, 2)}))


# -- bench ---------------------------------------------------------------------


class Conn:
    __slots__ = ("sock", "request", "tail", "sent", "inflight", "out", "replies")

    def __init__(self, sock, request):
        self.sock = sock
        self.request = request
        self.tail = b""
        self.sent = deque()  # send times of the requests in flight, oldest first
        self.inflight = 0
        self.out = b""  # bytes a short send left behind
        self.replies = 0


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    """Nearest-rank percentile of an ascending list."""
    rank = math.ceil(p / 100.0 * len(sorted_values))
    return sorted_values[max(0, min(len(sorted_values), rank) - 1)]


def bench(args):
    if args.tokens:
        with open(args.tokens) as f:
            tokens = json.load(f)
    else:
        # Servers that accept anything (the trivial baseline).
        tokens = [[f"{args.prefix}{i}", f"token{i}"] for i in range(max(args.connections + 1, 2))]
    if len(tokens) < 2 or len(tokens) < args.connections:
        raise SystemExit(f"loadgen: {len(tokens)} users for {args.connections} connections")
    text = "x" * args.message_bytes
    requests = []
    for i in range(args.connections):
        user, token = tokens[i]
        to = tokens[(i + 1) % len(tokens)][0] + (f"@{args.to_realm}" if args.to_realm else "")
        requests.append(f"send {token} {to} {text}\r\n".encode())

    t_connect = perf()
    socks = connect_all(args.port, args.connections)
    connect_seconds = perf() - t_connect
    sel = selectors.DefaultSelector()
    conns = []
    for s, request in zip(socks, requests):
        c = Conn(s, request)
        conns.append(c)
        sel.register(s, selectors.EVENT_READ, c)

    K = args.inflight
    latencies = []
    lat_append = latencies.append
    errors = ErrorTally()
    measuring = False
    ok_count = 0
    reply_count = 0
    sent_total = 0
    closed_by_server = 0
    max_requests = args.max_requests

    def write(c, n, now):
        nonlocal sent_total
        data = c.request * n
        if c.out:
            c.out += data
        else:
            try:
                w = c.sock.send(data)
            except BlockingIOError:
                w = 0
            if w < len(data):
                c.out = data[w:]
                sel.modify(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
        c.inflight += n
        sent_total += n
        for _ in range(n):
            c.sent.append(now)

    start = perf()
    for c in conns:
        write(c, K, perf())
    warm_end = start + args.warmup
    measure_end = warm_end + args.duration
    hard_end = measure_end + args.drain_timeout
    sending = True
    t_measure_start = t_measure_end = None
    cpu_start = cpu_end = None
    replies_at_start = ok_at_start = 0

    while True:
        now = perf()
        if sending:
            if not measuring and now >= warm_end:
                measuring = True
                t_measure_start = now
                cpu_start = time.process_time()
                replies_at_start, ok_at_start = reply_count, ok_count
                errors = ErrorTally()
                emit("MEASURE_START")
            if measuring and (now >= measure_end or sent_total >= max_requests):
                measuring = False
                sending = False
                t_measure_end = now
                cpu_end = time.process_time()
                measured_replies = reply_count - replies_at_start
                measured_ok = ok_count - ok_at_start
                measured_errors = errors
                emit("MEASURE_END")
                hard_end = now + args.drain_timeout
            timeout = 0.05
        else:
            if all(c.inflight == 0 for c in conns) or now >= hard_end:
                break
            timeout = 0.05
        for key, mask in sel.select(timeout):
            c = key.data
            if mask & selectors.EVENT_WRITE:
                try:
                    w = c.sock.send(c.out)
                except BlockingIOError:
                    w = 0
                c.out = c.out[w:]
                if not c.out:
                    sel.modify(c.sock, selectors.EVENT_READ, c)
            if not mask & selectors.EVENT_READ:
                continue
            try:
                data = c.sock.recv(RECV_SIZE)
            except BlockingIOError:
                continue
            except ConnectionError:
                data = b""
            t = perf()
            if not data:
                closed_by_server += 1
                sel.unregister(c.sock)
                c.sock.close()
                c.inflight = 0  # what it still owed is counted as unanswered below
                continue
            if c.tail:
                data = c.tail + data
            n = data.count(DELIM)
            if not n:
                c.tail = data
                continue
            end = data.rfind(DELIM) + 4
            if end == len(data):
                complete, c.tail = data, b""
            else:
                complete, c.tail = data[:end], data[end:]
            ok = complete.count(OK_MARK)
            reply_count += n
            ok_count += ok
            if ok != n:
                errors.add(complete)
            c.inflight -= n
            c.replies += n
            sent = c.sent
            if measuring:
                for _ in range(n):
                    lat_append(t - sent.popleft())
            else:
                for _ in range(n):
                    sent.popleft()
            if sending:
                write(c, n, t)

    unanswered = sum(c.inflight for c in conns)
    # A connection the server closed owed len(c.sent) replies.
    unanswered += sum(len(c.sent) for c in conns if c.sock.fileno() == -1)
    for c in conns:
        if c.sock.fileno() != -1:
            c.sock.close()

    if t_measure_end is None:
        raise SystemExit("loadgen: the measured phase never ended")
    window = t_measure_end - t_measure_start
    latencies.sort()
    ms = 1000.0
    result = {
        "connections": args.connections,
        "inflight": K,
        "warmup_s": args.warmup,
        "window_s": round(window, 3),
        "connect_s": round(connect_seconds, 3),
        "replies": measured_replies,
        "ok": measured_ok,
        "errors": measured_replies - measured_ok,
        "error_codes": measured_errors.codes,
        "error_samples": measured_errors.samples,
        "msgs_per_s": measured_replies / window if window > 0 else 0.0,
        "ok_per_s": measured_ok / window if window > 0 else 0.0,
        "latency_samples": len(latencies),
        "p50_ms": percentile(latencies, 50) * ms if latencies else None,
        "p90_ms": percentile(latencies, 90) * ms if latencies else None,
        "p99_ms": percentile(latencies, 99) * ms if latencies else None,
        "p999_ms": percentile(latencies, 99.9) * ms if latencies else None,
        "max_ms": latencies[-1] * ms if latencies else None,
        "deciles_ms": [round(percentile(latencies, q) * ms, 2) for q in (1, 10, 20, 30, 40, 60, 70, 80, 95, 97, 98)] if latencies else None,
        "sent_total": sent_total,
        "replies_total": reply_count,
        "ok_total": ok_count,
        "unanswered": unanswered,
        "closed_by_server": closed_by_server,
        "loadgen_cpu_s": round(cpu_end - cpu_start, 3),
        "loadgen_cpu_pct": round(100.0 * (cpu_end - cpu_start) / window, 1) if window > 0 else None,
    }
    emit("RESULT " + json.dumps(result))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("login", help="register and log in users (setup; optionally hold them idle)")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--users", type=int, required=True)
    p.add_argument("--prefix", default="u", help="user names are PREFIX0, PREFIX1, ...")
    p.add_argument("--password", default="bench-password")
    p.add_argument("--out", required=True, help="JSON file: [[user, token], ...]")
    p.add_argument("--hold", action="store_true", help="keep the connections open until stdin gets a line")
    p.add_argument("--timeout", type=float, default=900.0)

    p = sub.add_parser("bench", help="send private messages and measure")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--connections", "-n", type=int, required=True)
    p.add_argument("--inflight", "-k", type=int, default=1, help="requests in flight per connection (1 = closed loop)")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of load before measuring")
    p.add_argument("--drain-timeout", type=float, default=10.0,
                   help="after the window, seconds to wait for the replies still owed")
    p.add_argument("--max-requests", type=int, default=20_000_000, help="stop sending after this many")
    p.add_argument("--tokens", help="JSON file from 'login'; without it, fake tokens (trivial server)")
    p.add_argument("--prefix", default="u")
    p.add_argument("--message-bytes", type=int, default=32)
    p.add_argument("--to-realm", help="send to the same names on this realm (user@REALM)")

    args = parser.parse_args(argv)
    raise_nofile()
    if args.command == "login":
        login(args)
    else:
        if args.inflight < 1 or args.connections < 1:
            parser.error("--connections and --inflight must be at least 1")
        bench(args)


if __name__ == "__main__":
    main()
