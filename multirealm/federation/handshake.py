"""
The handshake that opens a realm link: each side proves it holds the
pair's shared secret without sending it (docs/protocol.md, "Realm port").

    initiator -> responder:  HELLO <initiator realm> <initiator nonce>
    responder -> initiator:  CHALLENGE <responder realm> <responder nonce> <responder proof>
    initiator -> responder:  PROOF <initiator proof>

A proof is HMAC-SHA256, keyed by the secret, over a label of its role,
both realm names and both nonces.  Both nonces are fresh for every
connection, so a proof recorded on one connection is worth nothing on
another (no replay); the role in the label means a side's own proof
cannot be reflected back at it.  Proofs are compared in constant time.
"""

import hashlib
import hmac
import re
import secrets

import attrs

_NONCE = re.compile(r"[0-9a-f]{32}")
_PROOF = re.compile(r"[0-9a-f]{64}")
_LABEL = "multirealm-link-v1"


class HandshakeError(ValueError):
    """A handshake line that is malformed."""


def new_nonce():
    return secrets.token_hex(16)


def proof(secret, role, initiator, responder, initiator_nonce, responder_nonce):
    """The proof of side C{role} ("initiator" or "responder") for this connection."""
    text = "|".join((_LABEL, role, initiator, responder, initiator_nonce, responder_nonce))
    return hmac.new(secret.encode("utf-8"), text.encode("utf-8"), hashlib.sha256).hexdigest()


def proves(expected, given):
    """True if C{given} is C{expected}, compared in constant time."""
    return hmac.compare_digest(expected.encode("ascii"), given.encode("ascii", "replace"))


def _words(line, verb, count):
    words = line.split(" ")
    if len(words) != count + 1 or words[0] != verb:
        raise HandshakeError(f"expected {verb} and {count} words")
    return words[1:]


@attrs.frozen
class Hello:
    realm: str
    nonce: str

    @classmethod
    def from_line(cls, line):
        realm, nonce = _words(line, "HELLO", 2)
        if not _NONCE.fullmatch(nonce):
            raise HandshakeError("a nonce is 32 hex digits")
        return cls(realm, nonce)

    def to_line(self):
        return f"HELLO {self.realm} {self.nonce}"


@attrs.frozen
class Challenge:
    realm: str
    nonce: str
    proof: str

    @classmethod
    def from_line(cls, line):
        realm, nonce, given = _words(line, "CHALLENGE", 3)
        if not (_NONCE.fullmatch(nonce) and _PROOF.fullmatch(given)):
            raise HandshakeError("a nonce is 32 hex digits, a proof 64")
        return cls(realm, nonce, given)

    def to_line(self):
        return f"CHALLENGE {self.realm} {self.nonce} {self.proof}"


@attrs.frozen
class Proof:
    proof: str

    @classmethod
    def from_line(cls, line):
        (given,) = _words(line, "PROOF", 1)
        if not _PROOF.fullmatch(given):
            raise HandshakeError("a proof is 64 hex digits")
        return cls(given)

    def to_line(self):
        return f"PROOF {self.proof}"
