#!/usr/bin/env python3
"""
Reconnect storm: N clients (default 10,000) reconnect at once to a realm
that has just restarted, each from one of many source addresses
(127.2.x.y, 50 clients each, so the per-address cap of 100 is in force
as in real life), and each logs in again with its stored session
(`mygroups <session>`: a database lookup, no password hash).

It prints, for each listen backlog (the default, the system's maximum,
then 50 as Twisted's default had it): the time until the realm has
accepted every connection (its open descriptors, sampled every 20 ms from
/proc: a SYN or handshake dropped by a full queue costs the client a 1 s,
then 3 s retransmit) and until every client has its OK (the realm has
read and answered it).  The realm runs on CPU 0, the load generator on CPU 1.  See
benchmarks/README.md.

    /path/to/venv/bin/python benchmarks/reconnect.py [--clients N]
"""

import argparse
import hashlib
import json
import os
import secrets
import selectors
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import (  # noqa: E402  (a script beside run.py, sharing its helpers)
    LOADGEN_CPU, PYTHON, SERVER_CPU, SETUP_CPUS, free_ports, kill_all, log, proc_cpu,
    raise_nofile, start, stop, wait_listening,
)

PER_SOURCE = 50
TIMEOUT = 120.0  # seconds the load generator waits for the last reply


def write_ini(folder, backlog):
    chat, realm, http = free_ports(3)
    path = os.path.join(folder, "realms.ini")
    with open(path, "w") as f:
        f.write(
            "[network]\nsecret = benchmark\n"
            + (f"listen_backlog = {backlog}\n" if backlog else "")
            + f"\n[realm:1]\nhost = 127.0.0.1\nchat_port = {chat}\nrealm_port = {realm}\n"
            f"http_port = {http}\ndata_dir = {os.path.join(folder, 'data')}\n"
        )
    return path, chat


def start_realm(folder, cpus, backlog=0):
    ini, port = write_ini(folder, backlog)
    log_path = os.path.join(folder, "twistd.log")
    proc = start(
        ["taskset", "-c", cpus, os.path.join(os.path.dirname(PYTHON), "twistd"), "-n",
         f"--pidfile={os.path.join(folder, 'twistd.pid')}", f"--logfile={log_path}",
         "multirealm", "--realm=1", f"--config={ini}"],
        cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_listening(port, proc, log_path)
    return proc, port, log_path


def ask(port, *lines):
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"".join(line.encode() + b"\r\n" for line in lines))
        data = b""
        while data.count(b"\r\n\r\n") < len(lines):
            data += s.recv(65536)
    return [json.loads(r) for r in data.split(b"\r\n\r\n")[:-1]]


def make_sessions(folder, count):
    """A realm with one user and C{count} stored sessions of it; their tokens."""
    proc, port, _ = start_realm(folder, SETUP_CPUS)
    ask(port, "register storm pw")  # the schema, and the sessions' user
    stop(proc)
    tokens = [secrets.token_urlsafe(32) for _ in range(count)]
    db = sqlite3.connect(os.path.join(folder, "data", "realm.sqlite3"))
    with db:
        db.executemany(
            "INSERT INTO sessions (token_hash, user, expires) VALUES (?, ?, ?)",
            [(hashlib.sha256(t.encode()).hexdigest(), "storm", time.time() + 86400)
             for t in tokens],
        )
    db.close()
    return tokens


def storm(port, tokens):
    """
    The load generator: every client connects at once, then sends its
    `mygroups`.  Prints JSON: seconds until all connected, until all OK.
    """
    selector = selectors.DefaultSelector()
    print("go", flush=True)
    began = time.monotonic()
    clients = {}
    for i, token in enumerate(tokens):
        sock = socket.socket()
        sock.setblocking(False)
        source = i // PER_SOURCE
        sock.bind((f"127.2.{source // 250}.{source % 250 + 1}", 0))
        sock.connect_ex(("127.0.0.1", port))
        clients[sock] = [f"mygroups {token}\r\n".encode(), b""]
        selector.register(sock, selectors.EVENT_WRITE)
    issued = time.monotonic() - began  # the load generator's own speed
    connected = answered = 0
    last_connect = last_answer = None
    errors = {}
    while answered + sum(errors.values()) < len(tokens):
        if time.monotonic() - began > TIMEOUT:
            break
        for key, events in selector.select(1.0):
            sock = key.fileobj
            state = clients[sock]
            if events & selectors.EVENT_WRITE:
                error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error:
                    errors[os.strerror(error)] = errors.get(os.strerror(error), 0) + 1
                    selector.unregister(sock)
                    continue
                connected += 1
                last_connect = time.monotonic()
                sock.send(state[0])
                selector.modify(sock, selectors.EVENT_READ)
                continue
            try:
                data = sock.recv(65536)
            except OSError as e:
                data, errors[e.strerror] = b"", errors.get(e.strerror, 0) + 1
            state[1] += data
            if b"\r\n\r\n" in state[1] or not data:
                selector.unregister(sock)
                if b'"status": "OK"' in state[1]:
                    answered += 1
                    last_answer = time.monotonic()
                elif data:
                    code = json.loads(state[1].split(b"\r\n\r\n")[0]).get("code")
                    errors[code] = errors.get(code, 0) + 1
    result = {
        "clients": len(tokens), "connected": connected, "logged_in": answered,
        "connects_issued_s": round(issued, 3),
        "all_connected_s": round(last_connect - began, 3) if last_connect else None,
        "all_logged_in_s": round(last_answer - began, 3) if last_answer else None,
        "errors": errors,
    }
    for sock in clients:
        sock.close()
    print(json.dumps(result), flush=True)


class Accepts(threading.Thread):
    """Samples the realm's open descriptors until C{target} more than at start."""

    def __init__(self, pid, target):
        super().__init__(daemon=True)
        self.folder = f"/proc/{pid}/fd"
        self.base = len(os.listdir(self.folder))
        self.target = target
        self.began = None
        self.most = 0  # connections accepted at most, and when last more
        self.seconds = None
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set() and self.most < self.target:
            count = len(os.listdir(self.folder)) - self.base
            if self.began is not None and count > self.most:
                self.most, self.seconds = count, round(time.monotonic() - self.began, 3)
            time.sleep(0.02)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--backlogs", default="0,50", help="0: the realm's default")
    parser.add_argument("--storm", help=argparse.SUPPRESS)  # the load generator: PORT
    parser.add_argument("--tokens", help=argparse.SUPPRESS)  # ... and its sessions
    opts = parser.parse_args()
    limit = raise_nofile()
    if opts.storm:
        with open(opts.tokens) as f:
            return storm(int(opts.storm), f.read().split())
    if limit < opts.clients + 100:
        sys.exit(f"the open-files limit ({limit}) is below {opts.clients} clients")
    try:
        with tempfile.TemporaryDirectory(prefix="multirealm-storm-") as work:
            log(f"setup: one user, {opts.clients} stored sessions")
            tokens = os.path.join(work, "tokens")
            with open(tokens, "w") as f:
                f.write("\n".join(make_sessions(work, opts.clients)))
            for backlog in (int(b) for b in opts.backlogs.split(",")):
                proc, port, log_path = start_realm(work, SERVER_CPU, backlog)
                log(f"backlog {backlog or 'default'}: {opts.clients} clients reconnect at once")
                time.sleep(0.5)  # the realm closes wait_listening's probe
                accepts = Accepts(proc.pid, opts.clients)
                cpu = proc_cpu(proc.pid)
                accepts.start()
                loadgen = start(
                    ["taskset", "-c", LOADGEN_CPU, PYTHON, os.path.abspath(__file__),
                     "--storm", str(port), "--tokens", tokens],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                )
                loadgen.stdout.readline()  # "go": its clients start connecting now
                accepts.began = time.monotonic()
                out, err = loadgen.communicate(timeout=TIMEOUT + 60)
                accepts.done.set()
                accepts.join()
                cpu = proc_cpu(proc.pid) - cpu
                stop(proc)
                run = subprocess.CompletedProcess(loadgen.args, loadgen.returncode, out, err)
                if run.returncode:
                    sys.exit(f"load generator failed: {run.stderr}")
                result = json.loads(run.stdout)
                with open(log_path) as f:
                    logged = f.read()
                result["backlog"] = backlog or "default (somaxconn)"
                result["accepted"] = accepts.most
                result["accepted_s"] = accepts.seconds  # all of them, if accepted == clients
                result["realm_cpu_s"] = round(cpu, 2)
                result["emfile_logged"] = logged.count("Too many open files")
                print(json.dumps(result), flush=True)
    finally:
        kill_all()


if __name__ == "__main__":
    main()
