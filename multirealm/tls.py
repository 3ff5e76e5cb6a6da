"""
TLS for a realm (realms.ini C{tls_cert}, C{tls_key}, C{tls_ca}): the
endpoint descriptions it listens on, and the options its links use to
check a peer's certificate against the peer's configured host name
(service-identity does the matching, for a DNS name or an IP address).
"""

from twisted.internet import endpoints, ssl

from multirealm.config import ConfigError


def _read(path, what, realm):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"[realm:{realm}] {what}: cannot read {path}: {e.strerror}") from None


def check_files(realm):
    """
    Load C{realm}'s certificate, key and CA (a L{RealmConfig}) now, so a
    wrong file is one clear line at start: L{ConfigError} naming the key.
    """
    if realm.tls_cert is None:
        return
    try:
        ssl.PrivateCertificate.loadPEM(
            _read(realm.tls_key, "tls_key", realm.name)
            + b"\n" + _read(realm.tls_cert, "tls_cert", realm.name)
        )
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(
            f"[realm:{realm.name}] tls_cert / tls_key: not a PEM certificate and its key: {e}"
        ) from None
    if realm.tls_ca is not None:
        trust_root(realm)


def listen_description(host, port, realm, backlog):
    """The endpoint description of a TLS port of C{realm} on C{host}."""
    quote = endpoints.quoteStringArgument
    return (
        f"ssl:port={port}:interface={quote(host)}:backlog={backlog}"
        f":privateKey={quote(realm.tls_key)}:certKey={quote(realm.tls_cert)}"
    )


def server_options(realm):
    """
    The TLS options of C{realm}'s ports, as an C{ssl:} endpoint description
    makes them from the same files (for a port bound with SO_REUSEPORT).
    """
    certificate = ssl.PrivateCertificate.loadPEM(
        _read(realm.tls_cert, "tls_cert", realm.name)
        + b"\n" + _read(realm.tls_key, "tls_key", realm.name)
    )
    return ssl.CertificateOptions(
        privateKey=certificate.privateKey.original, certificate=certificate.original
    )


def trust_root(realm):
    """The certificates C{realm} trusts for its peers: its C{tls_ca}, else the system's."""
    if realm.tls_ca is None:
        return ssl.platformTrust()
    try:
        return ssl.Certificate.loadPEM(_read(realm.tls_ca, "tls_ca", realm.name))
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"[realm:{realm.name}] tls_ca: not a PEM certificate: {e}") from None


def client_options(realm, peer):
    """
    How C{realm} connects to a TLS C{peer}: its certificate must chain to
    C{realm}'s trust root and name C{peer.host}, or the link fails.
    """
    return ssl.optionsForClientTLS(peer.host, trustRoot=trust_root(realm))
