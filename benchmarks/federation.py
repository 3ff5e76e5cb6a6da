#!/usr/bin/env python3
"""
Federation: two realms as two twistd processes, realm 1 pinned to CPU 0
(the core one realm gets in the other benchmarks), realm 2 to CPU 1 with
the load generator (--far-cpu 0 puts it on CPU 0 with realm 1 instead).

  1. Throughput, side by side in the same run: loadgen.py's pipelined load
     (100 connections x 8 in flight, as run.py's pipelined:100:8) for
     --seconds, first to users of realm 1 itself, then to the same names
     on realm 2.  "Acknowledged" is the OKs per second the load got;
     "delivered" the messages per second stored at realm 2 meanwhile (its
     database sampled through the measured window): equal when the link
     keeps up.  And the CPU each realm spent a message in that window
     (realm 1 alone in the first load; both realms in the second).
  2. Latency from send to stored at the far end, p50/p99: one message
     every 10 ms for a few seconds, the far database polled every 1 ms.
  3. Backlog: realm 2 stopped, BACKLOG messages queued for it, realm 2
     started: the time until all are stored there.

    /path/to/venv/bin/python benchmarks/federation.py [--seconds 10] [--backlog 100000] [--far-cpu 1]
"""

import argparse
import atexit
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (processes, ports, pinning)

REPLY_END = b"\r\n\r\n"
CONNECTIONS = 20  # the backlog's senders
IN_FLIGHT = 50
LOAD_CONNECTIONS = 100  # the throughput load: run.py's pipelined:100:8
LOAD_IN_FLIGHT = 8


def write_ini(folder):
    ports = run.free_ports(6)
    path = os.path.join(folder, "realms.ini")
    realms = "".join(
        f"\n[realm:{n}]\nhost = 127.0.0.1\nchat_port = {ports[3 * i]}\n"
        f"realm_port = {ports[3 * i + 1]}\nhttp_port = {ports[3 * i + 2]}\ndata_dir = data{n}\n"
        for i, n in enumerate(("1", "2"))
    )
    with open(path, "w") as f:
        f.write(
            "[network]\nsecret = benchmark\n"
            f"rate_limit_burst = {run.RATE_LIMIT}\nrate_limit_per_second = {run.RATE_LIMIT}\n"
            f"registration_burst = {run.RATE_LIMIT}\nconnections_per_address = 100000\n"
            "hashes_per_address = 1024\n"
            + realms
        )
    return path, {"1": ports[0], "2": ports[3]}


def start(folder, ini, name, port, cpu=run.SERVER_CPU):
    log_path = os.path.join(folder, f"realm{name}.log")
    cmd = [
        "taskset", "-c", cpu,
        os.path.join(os.path.dirname(run.PYTHON), "twistd"), "-n",
        f"--pidfile={os.path.join(folder, f'realm{name}.pid')}", f"--logfile={log_path}",
        "multirealm", f"--realm={name}", f"--config={ini}",
    ]
    proc = run.start(cmd, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run.wait_listening(port, proc, log_path)
    return proc


class Conn:
    def __init__(self, port):
        import socket

        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.buffer = b""

    def ask(self, *lines):
        self.sock.sendall(b"".join(line.encode() + b"\r\n" for line in lines))
        return [json.loads(self.read()) for _ in lines]

    def read(self):
        while REPLY_END not in self.buffer:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk
        reply, self.buffer = self.buffer.split(REPLY_END, 1)
        return reply

    def replies(self, count):
        """Read C{count} replies; return how many were not OK."""
        bad = 0
        for _ in range(count):
            if b'"OK"' not in self.read():
                bad += 1
        return bad


def pipelined(port, token, to, count):
    """Send C{count} messages over CONNECTIONS connections; (seconds, errors)."""
    conns = [Conn(port) for _ in range(CONNECTIONS)]
    per = count // CONNECTIONS
    errors = [0]

    def drive(conn):
        sent = answered = 0
        while answered < per:
            burst = min(IN_FLIGHT - (sent - answered), per - sent)
            if burst:
                conn.sock.sendall(
                    "".join(f"send {token} {to} m{sent + i}\r\n" for i in range(burst)).encode()
                )
                sent += burst
            errors[0] += conn.replies(1)
            answered += 1

    started = time.monotonic()
    threads = [threading.Thread(target=drive, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    for c in conns:
        c.sock.close()
    return started, elapsed, errors[0], per * CONNECTIONS


def cpu_us_per_message(result, server_cpu, far="far"):
    """
    {realm: CPU microseconds a message} in the measured window: realm 1
    (C{server_cpu}, from run_loadgen) and, if sampled, realm 2.
    """
    seconds, window, _, _ = server_cpu
    rate = result["ok_per_s"] * window
    out = {"realm1": round(seconds * 1e6 / rate, 1)}
    if far in result.get("also_cpu_s", {}):
        out["realm2"] = round(result["also_cpu_s"][far] * 1e6 / rate, 1)
    return out


def throughput(folder, ports, pid, far_pid, far_db, opts):
    """
    The loadgen's pipelined load (CONNECTIONS x IN_FLIGHT, run.py's
    shape) for opts.seconds: first to users of realm 1 itself, then to the
    same names on realm 2.  Acknowledged msgs/s from the loadgen; delivered
    msgs/s from realm 2's database, sampled through the measured window;
    each realm's CPU a message meanwhile.
    """
    tokens = os.path.join(folder, "tokens.json")
    users = str(LOAD_CONNECTIONS + 1)
    run.run_loadgen(["login", "--port", str(ports["1"]), "--users", users, "--out", tokens],
                    pid, 600)
    run.run_loadgen(["login", "--port", str(ports["2"]), "--users", users, "--out",
                     os.path.join(folder, "far-tokens.json")], pid, 600)
    bench = ["bench", "--port", str(ports["1"]), "--tokens", tokens,
             "-n", str(LOAD_CONNECTIONS), "-k", str(LOAD_IN_FLIGHT),
             "--duration", str(opts.seconds), "--warmup", "1"]
    local, local_cpu, _ = run.run_loadgen(bench, pid, 600)
    samples = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            samples.append((time.monotonic(), stored_from(far_db)))
            stop.wait(0.1)

    sampler = threading.Thread(target=sample)
    started = time.monotonic()
    sampler.start()
    remote, remote_cpu, _ = run.run_loadgen(
        bench + ["--to-realm", "2"], pid, 600, also=lambda: {"far": run.proc_cpu(far_pid)}
    )
    stop.set()
    sampler.join()
    # The measured window: after the warm-up, for opts.seconds.
    window = [(t, n) for t, n in samples if started + 1.5 <= t <= started + 1 + opts.seconds]
    (t0, n0), (t1, n1) = window[0], window[-1]
    local_rate = local["ok_per_s"]
    delivered = (n1 - n0) / (t1 - t0)
    # What the link has not yet delivered drains before anything else is measured.
    drained = wait_stored(far_db, remote["ok_total"])
    return {
        "load": f"{LOAD_CONNECTIONS} connections x {LOAD_IN_FLIGHT} in flight, {opts.seconds} s",
        "backlog_drained_after_load_s": round(drained - started - 1 - opts.seconds, 2),
        "single_realm_msgs_per_s": round(local_rate),
        "cross_realm_acked_msgs_per_s": round(remote["ok_per_s"]),
        "cross_realm_delivered_msgs_per_s": round(delivered),
        "delivered_ratio_to_single_realm": round(delivered / local_rate, 2),
        "single_realm_cpu_us_per_msg": cpu_us_per_message(local, local_cpu),
        "cross_realm_cpu_us_per_msg": cpu_us_per_message(remote, remote_cpu),
        "errors": local["errors"] + remote["errors"],
    }


def stored_from(db_path, origin="1"):
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        return db.execute("SELECT count(*) FROM messages WHERE origin = ?", (origin,)).fetchone()[0]
    finally:
        db.close()


def wait_stored(db_path, total, timeout=600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(db_path) and stored_from(db_path) >= total:
            return time.monotonic()
        time.sleep(0.01)
    raise RuntimeError(f"{db_path}: not all {total} stored after {timeout} s")


def session(port, user):
    conn = Conn(port)
    conn.ask(f"register {user} pw")
    (reply,) = conn.ask(f"auth {user} pw")
    return conn, reply["tokenid"]


def wait_linked(conn):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        (reply,) = conn.ask("listrealms")
        if all(r["linked"] for r in reply["realms"]):
            return
        time.sleep(0.05)
    raise RuntimeError("the realms did not link")


def latency(port, token, db_path, seconds):
    """p50/p99 (ms) from sending to stored at the far end."""
    conn = Conn(port)
    sent, seen = {}, {}
    done = threading.Event()
    give_up = [float("inf")]  # when the poller stops waiting for stragglers
    base = stored_from(db_path)

    def poll():
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
        last = db.execute("SELECT max(seq) FROM messages").fetchone()[0] or 0
        while not done.is_set() or len(seen) < len(sent):
            for seq, body in db.execute(
                "SELECT seq, body FROM messages WHERE seq > ? AND origin = '1'", (last,)
            ):
                last = max(last, seq)
                seen.setdefault(body, time.monotonic())
            time.sleep(0.001)
            if time.monotonic() > give_up[0]:
                break
        db.close()

    poller = threading.Thread(target=poll)
    poller.start()
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        text = f"lat{n}"
        sent[text] = time.monotonic()
        conn.ask(f"send {token} heru@2 {text}")
        n += 1
        time.sleep(0.01)
    give_up[0] = time.monotonic() + 10
    done.set()
    poller.join()
    conn.sock.close()
    values = sorted((seen[t] - sent[t]) * 1000 for t in sent if t in seen)
    assert stored_from(db_path) - base >= len(values)

    def pct(p):
        return values[min(len(values) - 1, int(len(values) * p))]

    return {"messages": len(sent), "arrived": len(values), "p50_ms": round(pct(0.5), 2),
            "p99_ms": round(pct(0.99), 2), "max_ms": round(values[-1], 2)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds of load")
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--latency-seconds", type=float, default=5.0)
    parser.add_argument(
        "--far-cpu", default=run.LOADGEN_CPU,
        help="the CPU of realm 2: 1 (default) gives each realm a core, as two machines"
             " would (the load shares it); 0 puts both realms on one core",
    )
    opts = parser.parse_args(argv)
    atexit.register(run.kill_all)
    run.raise_nofile()
    os.sched_setaffinity(0, {int(run.LOADGEN_CPU)})
    with tempfile.TemporaryDirectory(prefix="federation-") as folder:
        ini, ports = write_ini(folder)
        one = start(folder, ini, "1", ports["1"])
        two = start(folder, ini, "2", ports["2"], opts.far_cpu)
        alice, token = session(ports["1"], "alice")
        session(ports["1"], "bob")
        session(ports["2"], "heru")
        wait_linked(alice)
        far_db = os.path.join(folder, "data2", "realm.sqlite3")

        figures = throughput(folder, ports, one.pid, two.pid, far_db, opts)
        print(json.dumps({"throughput": figures}), flush=True)

        print(json.dumps({"latency": latency(ports["1"], token, far_db, opts.latency_seconds)}),
              flush=True)

        # The backlog: realm 2 down, messages queued, realm 2 back.
        before = stored_from(far_db)
        run.stop(two)
        _, queued_s, errors, queued = pipelined(ports["1"], token, "heru@2", opts.backlog)
        restarted = time.monotonic()
        two = start(folder, ini, "2", ports["2"], opts.far_cpu)
        listening = time.monotonic()
        drained = wait_stored(far_db, before + queued)
        print(json.dumps({"backlog": {
            "messages": queued, "queued_in_s": round(queued_s, 2), "errors": errors,
            "drained_after_start_s": round(drained - restarted, 2),
            "drained_after_listening_s": round(drained - listening, 2),
            "msgs_per_s": round(queued / (drained - listening)),
        }}), flush=True)
        run.stop(one)
        run.stop(two)


if __name__ == "__main__":
    main()
