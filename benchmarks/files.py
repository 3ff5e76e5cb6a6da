#!/usr/bin/env python3
"""
File transfer over the chat protocol: for files of 1, 10 and 100 MiB,
upload (sendfile, the original client's bytes) and download (getfile)
throughput, the realm's peak RSS over its RSS before, and the p99 of a
bystander's closed-loop sends meanwhile (what shows that a transfer does
not stall the realm).  The realm runs pinned to CPU 0, this script on CPU 1.

    /path/to/venv/bin/python benchmarks/files.py [--sizes 1,10,100]

The same file is also sent and fetched over HTTP (POST /files, then
GET /files/<id>), with its own bystander.
"""

import argparse
import atexit
import base64
import configparser
import http.client
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import abuse  # noqa: E402  (realm start, clients, bystander)
import run  # noqa: E402

MIB = 2**20


def transfer(port, http_port, pid, size):
    sender = abuse.login(port, f"s{size}")
    receiver = abuse.login(port, f"r{size}")
    bystander = abuse.Bystander(port, f"send - by{size} hi")
    abuse.login(port, f"by{size}").close()
    bystander.client.ask(f"auth by{size} pw")
    payload = os.urandom(size * MIB)
    encoded = base64.b64encode(payload)
    rss_before = abuse.peak_rss_mib(pid)[1]
    bystander.start()
    started = time.monotonic()
    sender.sock.sendall(f"sendfile - r{size} f{size}.bin \r\n\r\n".encode())
    view = memoryview(encoded)
    for at in range(0, len(encoded), 1 << 20):  # as a client streams it
        sender.sock.sendall(view[at : at + (1 << 20)])
    sender.sock.sendall(b"\r\n\r\n")
    sent = sender.read()
    upload_s = time.monotonic() - started
    assert b"Message Sent" in sent, sent[:200]
    (inbox,) = receiver.ask("inbox -")
    file_id = inbox.split(b'"file_id": "')[1].split(b'"')[0].decode()
    started = time.monotonic()
    (got,) = receiver.ask(f"getfile - {file_id}")
    download_s = time.monotonic() - started
    content = got.split(b'"content": "')[1].rsplit(b'"', 1)[0]
    assert base64.b64decode(content) == payload, "different bytes came back"
    http_figures = over_http(port, http_port, size, payload)
    bystander.stop()  # it sent all along, over the chat and the HTTP transfers
    for client in (sender, receiver):
        client.close()
    return {
        **http_figures,
        "size_mib": size,
        "upload_mib_s": round(size / upload_s, 1),
        "download_mib_s": round(size / download_s, 1),
        "realm_rss_before_mib": round(rss_before, 1),
        "realm_peak_rss_mib": round(abuse.peak_rss_mib(pid)[0], 1),
        "bystander_send": bystander.figures(),
    }


def over_http(chat_port, http_port, size, payload):
    """POST the file, then GET it back, over the realm's HTTP port."""
    sender = abuse.login(chat_port, f"hs{size}")
    receiver = abuse.login(chat_port, f"hr{size}")
    tokens = []
    for client, user in ((sender, f"hs{size}"), (receiver, f"hr{size}")):
        (reply,) = client.ask(f"auth {user} pw")
        tokens.append(json.loads(reply)["tokenid"])
    connection = http.client.HTTPConnection("127.0.0.1", http_port, timeout=120)
    started = time.monotonic()
    connection.request(
        "POST", f"/files?to=hr{size}&name=f{size}.bin", body=payload,
        headers={"Authorization": f"Bearer {tokens[0]}"},
    )
    answer = connection.getresponse()
    assert answer.status == 200, answer.read()[:200]
    answer.read()
    upload_s = time.monotonic() - started
    (inbox,) = receiver.ask("inbox -")
    file_id = json.loads(inbox)["messages"][0]["file_id"]
    started = time.monotonic()
    connection.request("GET", f"/files/{file_id}", headers={"Authorization": f"Bearer {tokens[1]}"})
    answer = connection.getresponse()
    got = answer.read()
    download_s = time.monotonic() - started
    assert got == payload, "different bytes came back over HTTP"
    connection.close()
    for client in (sender, receiver):
        client.close()
    return {"http_upload_mib_s": round(size / upload_s, 1),
            "http_download_mib_s": round(size / download_s, 1)}


def http_port_of(folder):
    """The HTTP port in the realms.ini that run.py wrote into C{folder}."""
    ini = configparser.ConfigParser()
    ini.read(os.path.join(folder, "realms.ini"))
    return int(ini["realm:1"]["http_port"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,10,100")
    opts = parser.parse_args(argv)
    atexit.register(run.kill_all)
    os.sched_setaffinity(0, {int(run.LOADGEN_CPU)})
    for size in (int(s) for s in opts.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix=f"files-{size}-") as folder:
            proc, port = abuse.start_realm(folder)
            try:
                print(transfer(port, http_port_of(folder), proc.pid, size), flush=True)
            finally:
                run.stop(proc)


if __name__ == "__main__":
    main()
