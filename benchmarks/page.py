#!/usr/bin/env python3
"""
The web client in headless chromium against one realm (a twistd process):
a user with 200 conversations (each with the newest message from another
user) and one of them holding 1,000 messages.  Each figure is the median
(and the slowest) of a number of page loads, timed inside the page (a
MutationObserver installed before the page's scripts run):

  - connected: from the navigation's start to "Connected" (the WebSocket
    open), a reload with the session in sessionStorage;
  - listed: to the 200 conversations shown (subscribe, conversations,
    presence of 200 people);
  - opened: from the click on the 1,000-message conversation to its
    newest page shown (history_limit messages, 1,000 by default).

    /path/to/venv/bin/python benchmarks/page.py [--loads 10]

Needs Debian's chromium and chromium-driver, and selenium (the test extra).
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

PEERS = 200
MESSAGES = 1000

INI = """
[network]
secret = bench-secret
registrations_per_hour = 100000
registration_burst = 100000

[realm:1]
host = 127.0.0.1
chat_port = {chat}
realm_port = {realm}
http_port = {http}
data_dir = data
"""

# Times (performance.now()) at which the page reached each point.
OBSERVER = """
window.__bench = {};
new MutationObserver(() => {
  const b = window.__bench;
  const now = performance.now();
  const status = document.getElementById('status');
  if (!b.connected && status && status.dataset.state === 'connected') b.connected = now;
  const list = document.getElementById('conversations');
  if (!b.listed && list && list.children.length >= %d) b.listed = now;
  const log = document.getElementById('messages');
  if (b.clicked && !b.opened && log && log.children.length >= %d) b.opened = now;
}).observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
""" % (PEERS, MESSAGES)


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class Conn:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), 60)
        self.buffer = b""

    def ask(self, *lines):
        self.sock.sendall(b"".join(line.encode() + b"\r\n" for line in lines))
        replies = []
        while len(replies) < len(lines):
            while b"\r\n\r\n" not in self.buffer:
                self.buffer += self.sock.recv(1 << 20)
            reply, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            replies.append(json.loads(reply))
        return replies


def populate(port):
    """The user 'bench'; 200 peers who each wrote once, peer0 1,000 times."""
    conn = Conn(port)
    conn.ask("register bench pw")
    for n in range(PEERS):
        conn.ask(f"register peer{n} pw", f"auth peer{n} pw")
        count = MESSAGES if n == 0 else 1
        replies = conn.ask(*(f"send - bench message {i} from peer{n}" for i in range(count)))
        assert all(r["status"] == "OK" for r in replies), replies[0]


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1280,800"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": OBSERVER})
    return driver


def wait(driver, key, timeout=60):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = driver.execute_script(f"return window.__bench.{key}")
        if value:
            return value
        time.sleep(0.01)
    raise TimeoutError(key)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loads", type=int, default=10)
    opts = parser.parse_args(argv)
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    with tempfile.TemporaryDirectory(prefix="page-") as folder:
        chat, realm, http = free_ports(3)
        ini = os.path.join(folder, "realms.ini")
        with open(ini, "w") as f:
            f.write(INI.format(chat=chat, realm=realm, http=http))
        process = subprocess.Popen(
            [twistd, "-n", "--pidfile=", "multirealm", "--realm=1", f"--config={ini}"],
            cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        driver = None
        try:
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", chat)).close()
                    break
                except OSError:
                    time.sleep(0.05)
            populate(chat)
            driver = browser()
            driver.get(f"http://127.0.0.1:{http}/")
            wait(driver, "connected")
            driver.execute_script(
                "document.getElementById('username').value = 'bench';"
                "document.getElementById('password').value = 'pw';"
                "document.getElementById('login-form').requestSubmit();")
            wait(driver, "listed")
            figures = {"connected": [], "listed": [], "opened": []}
            for _ in range(opts.loads):
                driver.refresh()
                figures["connected"].append(wait(driver, "connected"))
                figures["listed"].append(wait(driver, "listed"))
                clicked = driver.execute_script(
                    "const b = [...document.querySelectorAll('#conversations button')]"
                    ".find((e) => e.dataset.key === 'private:peer0');"
                    "window.__bench.clicked = performance.now(); b.click();"
                    "return window.__bench.clicked;")
                figures["opened"].append(wait(driver, "opened") - clicked)
        finally:
            if driver:
                driver.quit()
            process.kill()
            process.wait()
    print(json.dumps({
        key: {"median_ms": round(statistics.median(values), 1), "max_ms": round(max(values), 1)}
        for key, values in figures.items()
    } | {"loads": opts.loads, "conversations": PEERS, "messages_opened": MESSAGES}))


if __name__ == "__main__":
    main()
