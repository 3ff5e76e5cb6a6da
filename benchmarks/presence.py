#!/usr/bin/env python3
"""
Presence fan-out: a user with 1,000 subscribed contacts goes online (then
offline); the time from their `subscribe` (then from their connection
closing) until each contact's connection has the presence event: the
last one, and the median.  The contacts are 1,000 users who each share a
group of two with the user (so they are not each other's contacts).
Two realms as two twistd processes (realm 1 on CPU 0, realm 2 on CPU 1,
this script on CPU 1):

  1. here: the user and the contacts on realm 1;
  2. across the link: the user on realm 1, the contacts on realm 2.

The figures include the settle window (Presence.SETTLE_SECONDS, 0.3 s: a
change is announced once it has settled, so a user who flaps is
announced once) and, across the link, the batch window
(PeerPresence.BATCH_SECONDS, 0.1 s).

    /path/to/venv/bin/python benchmarks/presence.py [--contacts 1000]
"""

import argparse
import atexit
import json
import os
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import events  # noqa: E402  (logins)
import federation  # noqa: E402  (two realms)
import run  # noqa: E402  (processes, pinning)



class Contacts(events.Subscribers):
    """One subscribed connection per (user, token); notes when each presence event arrives."""

    def note(self, contact, event, now):
        # (contact, user, online) -> monotonic time
        if event.get("event") == "presence":
            self.arrived.setdefault((contact, event["user"], event["online"]), now)

    def wait(self, user, online, count, started, timeout=30.0):
        """Latencies of the C{count} contacts' events about C{user}, once all came (or timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = [t - started for (_, who, state), t in list(self.arrived.items())
                   if who == user and state == online]
            if len(got) >= count:
                break
            time.sleep(0.01)
        return got


def figures(latencies, count):
    values = sorted(latencies) or [float("nan")]
    return {"contacts": count, "got": len(latencies),
            "p50_ms": round(values[len(values) // 2] * 1000, 1),
            "last_ms": round(values[-1] * 1000, 1)}


def measure(star_port, star_token, shown, contacts, count):
    """The user subscribes, then closes: each change's fan-out figures."""
    star = socket.create_connection(("127.0.0.1", star_port), 60)
    started = time.monotonic()
    star.sendall(f"subscribe {star_token}\r\n".encode())
    online = figures(contacts.wait(shown, True, count, started), count)
    time.sleep(1)
    started = time.monotonic()
    star.close()
    offline = figures(contacts.wait(shown, False, count, started), count)
    return {"online": online, "offline": offline}


def setup_groups(port, tokens, star):
    """Each contact makes a group of two with C{star}: 1,000 pipelined creategroup."""
    conn = federation.Conn(port)
    lines = [f"creategroup {token} pair{n} {star}" for n, (_, token) in enumerate(tokens)]
    replies = conn.ask(*lines)
    bad = [r for r in replies if r["status"] != "OK"]
    assert not bad, bad[:3]
    conn.sock.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=1000)
    opts = parser.parse_args(argv)
    atexit.register(run.kill_all)
    run.raise_nofile()
    os.sched_setaffinity(0, {int(run.LOADGEN_CPU)})
    count = opts.contacts
    results = {}
    with tempfile.TemporaryDirectory(prefix="presence-") as folder:
        ini, ports = federation.write_ini(folder)
        one = federation.start(folder, ini, "1", ports["1"], run.SERVER_CPU)
        two = federation.start(folder, ini, "2", ports["2"], run.LOADGEN_CPU)
        stars = events.logins(folder, ports["1"], one.pid, 2, "star")
        federation.wait_linked(federation.session(ports["1"], "nobody")[0])

        here = events.logins(folder, ports["1"], one.pid, count, "c")
        setup_groups(ports["1"], here, stars[0][0])
        contacts = Contacts(ports["1"], here)
        contacts.start()
        time.sleep(2)  # their own changes settle
        results["here"] = measure(ports["1"], stars[0][1], stars[0][0], contacts, count)
        contacts.close()

        there = events.logins(folder, ports["2"], two.pid, count, "f")
        setup_groups(ports["2"], there, f"{stars[1][0]}@1")
        contacts = Contacts(ports["2"], there)
        contacts.start()
        time.sleep(2)
        results["across_the_link"] = measure(
            ports["1"], stars[1][1], f"{stars[1][0]}@1", contacts, count
        )
        contacts.close()
        print(json.dumps(results), flush=True)
        run.stop(one)
        run.stop(two)


if __name__ == "__main__":
    main()
