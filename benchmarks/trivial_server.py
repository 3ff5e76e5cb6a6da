#!/usr/bin/env python3
"""
The baseline for the benchmark: the least a Twisted line server can do.

A stock L{LineReceiver} on the default reactor (epoll on Linux, as under
twistd) that answers every request line with the same fixed reply, framed
like a realm's: ``{"status": "OK", "message": "Message Sent"}\\r\\n\\r\\n``.
No parsing, no session, no storage.  It shows what Twisted and Python cost
per request on this machine, so the realm's figures can be read as a ratio
to it.

    python trivial_server.py PORT
"""

import argparse
import resource

from twisted.internet import reactor
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver

REPLY = b'{"status": "OK", "message": "Message Sent"}\r\n\r\n'


class Trivial(LineReceiver):
    delimiter = b"\r\n"
    MAX_LENGTH = 65536

    def lineReceived(self, line):
        self.transport.write(REPLY)


def main():
    parser = argparse.ArgumentParser(description="Trivial fixed-reply line server (benchmark baseline).")
    parser.add_argument("port", type=int)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    factory = Factory.forProtocol(Trivial)
    reactor.listenTCP(args.port, factory, interface=args.host)
    reactor.run()


if __name__ == "__main__":
    main()
