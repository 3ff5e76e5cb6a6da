"""
realms.ini, read once into validated frozen values (its keys: README.md).

Nothing else in the package reads the INI file: everything is asked of the
L{NetworkConfig} that L{load} returns.  Every error names the file, the
section and the key.
"""

import configparser
import ipaddress
import os
from types import MappingProxyType

import attrs

from multirealm.names import NAME_RULE, is_valid_name

DEFAULT_CONFIG = "realms.ini"


# --realm=all runs every realm of the file in one process.
ALL_REALMS = "all"


class ConfigError(Exception):
    """realms.ini is missing or wrong; the message says where."""


@attrs.frozen
class Limits:
    """Knobs shared by every realm of the network ([network] section)."""

    max_line_bytes: int = 65536
    max_file_bytes: int = 100 * 1024 * 1024
    history_limit: int = 1000
    # Token bucket per connection: a burst of this many requests, refilled
    # at this rate.  Generous, so pipelining programs are never refused.
    rate_limit_burst: int = 2000
    rate_limit_per_second: float = 1000.0
    session_days: float = 30.0
    # Replies are bounded in bytes, not only in entries: a history page is
    # cut at history_reply_bytes (with "more": true), a list page at
    # list_limit names; a connection is not read while more than
    # reply_buffer_bytes of its replies wait to be written, nor, once all
    # connections together hold realm_reply_buffer_bytes, while it has any.
    # Password hashes (register, auth) waiting or running for one client
    # address; the whole realm takes at most 1,024.
    hashes_per_address: int = 64
    # Registrations per client address: a burst, then so many an hour.
    registration_burst: int = 100
    registrations_per_hour: float = 100.0
    # Connections: closed after this long without a request (a ping
    # counts); at most so many at once from one address.
    # Groups: members at most, and groups one user may create.
    max_group_members: int = 1000
    max_groups_per_user: int = 100
    idle_timeout: float = 600.0
    connections_per_address: int = 100
    history_reply_bytes: int = 1024 * 1024
    list_limit: int = 1000
    reply_buffer_bytes: int = 4 * 1024 * 1024
    realm_reply_buffer_bytes: int = 64 * 1024 * 1024
    # Realm links: the longest wait between two attempts to reconnect.
    link_max_delay: float = 5.0
    # Live events waiting for one subscribed connection, at most: past it
    # the connection gets {"event": "overflow"} and no more events.
    event_buffer_bytes: int = 64 * 1024
    # Connections of the whole process, at most (0: its open-files limit
    # less a reserve, multirealm.connections.connection_budget).
    max_connections: int = 0
    # Seconds a new connection has to finish its TLS handshake, and an
    # HTTP request to finish its headers, whatever trickles in meanwhile.
    header_timeout: float = 30.0
    # Backlog of every listening port (0: the system's maximum, somaxconn).
    listen_backlog: int = 0


@attrs.frozen
class RealmConfig:
    name: str
    host: str
    chat_port: int
    realm_port: int
    http_port: int
    data_dir: str  # absolute
    peers: tuple  # names of the realms this one links to
    tls_port: int | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None


@attrs.frozen
class NetworkConfig:
    path: str
    secret: str
    limits: Limits
    realms: MappingProxyType  # name -> RealmConfig
    link_secrets: MappingProxyType  # frozenset({a, b}) -> secret

    def realm(self, name):
        try:
            return self.realms[name]
        except KeyError:
            known = ", ".join(sorted(self.realms)) or "none"
            raise ConfigError(
                f"{self.path}: no [realm:{name}] section (realms defined: {known})"
            ) from None

    def link_secret(self, a, b):
        return self.link_secrets.get(frozenset((a, b)), self.secret)


class _Section:
    """Typed reads of one INI section, with errors naming file/section/key."""

    def __init__(self, path, parser, name):
        self.path = path
        self.name = name
        self.values = parser[name] if parser.has_section(name) else {}

    def error(self, key, problem):
        return ConfigError(f"{self.path}: [{self.name}] {key}: {problem}")

    def text(self, key, default=None):
        value = self.values.get(key, default)
        if value is None or str(value).strip() == "":
            if default is not None:
                return default
            raise self.error(key, "missing")
        return str(value).strip()

    def optional_text(self, key):
        value = self.values.get(key)
        return value.strip() if value and value.strip() else None

    def number(self, key, default, kind=int, minimum=0, maximum=None):
        raw = self.values.get(key)
        if raw is None or raw.strip() == "":
            if default is None:
                raise self.error(key, "missing")
            return default
        try:
            value = kind(raw.strip())
        except ValueError:
            raise self.error(key, f"expected a number, got {raw.strip()!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum else f"at least {minimum}"
            raise self.error(key, f"must be {bound}, got {value}")
        return value

    def port(self, key, default=None):
        return self.number(key, default, minimum=0, maximum=65535)

    def path_under(self, key, folder):
        value = self.text(key)
        return os.path.normpath(os.path.join(folder, os.path.expanduser(value)))


def _read_limits(section):
    d = Limits()
    return Limits(
        max_line_bytes=section.number("max_line_bytes", d.max_line_bytes, minimum=64),
        max_file_bytes=section.number("max_file_bytes", d.max_file_bytes, minimum=1),
        history_limit=section.number("history_limit", d.history_limit, minimum=1),
        rate_limit_burst=section.number("rate_limit_burst", d.rate_limit_burst, minimum=1),
        rate_limit_per_second=section.number(
            "rate_limit_per_second", d.rate_limit_per_second, kind=float, minimum=0.001
        ),
        session_days=section.number("session_days", d.session_days, kind=float, minimum=0.001),
        hashes_per_address=section.number(
            "hashes_per_address", d.hashes_per_address, minimum=1, maximum=1024
        ),
        registration_burst=section.number("registration_burst", d.registration_burst, minimum=1),
        registrations_per_hour=section.number(
            "registrations_per_hour", d.registrations_per_hour, kind=float, minimum=0.001
        ),
        max_group_members=section.number("max_group_members", d.max_group_members, minimum=2),
        max_groups_per_user=section.number(
            "max_groups_per_user", d.max_groups_per_user, minimum=1
        ),
        idle_timeout=section.number("idle_timeout", d.idle_timeout, kind=float, minimum=1),
        connections_per_address=section.number(
            "connections_per_address", d.connections_per_address, minimum=1
        ),
        history_reply_bytes=section.number(
            "history_reply_bytes", d.history_reply_bytes, minimum=1024
        ),
        # 20,000 names of at most 32 characters stay within the 1 MiB
        # that a list request is counted as until answered.
        list_limit=section.number("list_limit", d.list_limit, minimum=1, maximum=20_000),
        reply_buffer_bytes=section.number("reply_buffer_bytes", d.reply_buffer_bytes, minimum=1024),
        realm_reply_buffer_bytes=section.number(
            "realm_reply_buffer_bytes", d.realm_reply_buffer_bytes, minimum=1024
        ),
        link_max_delay=section.number(
            "link_max_delay", d.link_max_delay, kind=float, minimum=0.1, maximum=3600
        ),
        event_buffer_bytes=section.number(
            "event_buffer_bytes", d.event_buffer_bytes, minimum=1024
        ),
        max_connections=section.number("max_connections", d.max_connections, minimum=0),
        header_timeout=section.number(
            "header_timeout", d.header_timeout, kind=float, minimum=1, maximum=3600
        ),
        listen_backlog=section.number("listen_backlog", d.listen_backlog, minimum=0),
    )


def _read_realm(path, parser, section_name, name, folder, all_names):
    s = _Section(path, parser, section_name)
    peers_text = s.optional_text("peers")
    if peers_text is None:
        peers = tuple(n for n in all_names if n != name)
    else:
        peers = tuple(p for p in peers_text.replace(",", " ").split())
        for peer in peers:
            if peer == name:
                raise s.error("peers", "a realm cannot be its own peer")
            if peer not in all_names:
                raise s.error("peers", f"unknown realm {peer!r}")
    tls_port = s.port("tls_port", default=-1)
    realm = RealmConfig(
        name=name,
        host=s.text("host"),
        chat_port=s.port("chat_port"),
        realm_port=s.port("realm_port"),
        http_port=s.port("http_port"),
        data_dir=s.path_under("data_dir", folder),
        peers=peers,
        tls_port=None if tls_port == -1 else tls_port,
        tls_cert=s.path_under("tls_cert", folder) if s.optional_text("tls_cert") else None,
        tls_key=s.path_under("tls_key", folder) if s.optional_text("tls_key") else None,
        tls_ca=s.path_under("tls_ca", folder) if s.optional_text("tls_ca") else None,
    )
    if realm.tls_port is not None and not (realm.tls_cert and realm.tls_key):
        raise s.error("tls_port", "needs tls_cert and tls_key too")
    if bool(realm.tls_cert) != bool(realm.tls_key):
        raise s.error("tls_cert" if realm.tls_key else "tls_key",
                      "tls_cert and tls_key go together")
    return realm


def load(path=DEFAULT_CONFIG):
    """
    Read and validate realms.ini.

    @raise ConfigError: naming the file, section and key that are wrong.
    """
    path = os.path.abspath(path)
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, configparser.Error) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    folder = os.path.dirname(path)

    if not parser.has_section("network"):
        raise ConfigError(f"{path}: missing [network] section")
    network = _Section(path, parser, "network")

    realm_sections = {}
    link_sections = []
    for section in parser.sections():
        kind, _, rest = section.partition(":")
        if section == "network":
            continue
        if kind == "realm" and rest:
            if not is_valid_name(rest):
                raise ConfigError(f"{path}: [{section}]: realm name must be {NAME_RULE}")
            if rest == ALL_REALMS:
                raise ConfigError(
                    f"{path}: [{section}]: '{ALL_REALMS}' is not a realm name:"
                    f" --realm={ALL_REALMS} runs every realm of the file"
                )
            realm_sections[rest] = section
        elif kind == "link" and rest:
            link_sections.append(section)
        else:
            raise ConfigError(
                f"{path}: [{section}]: unknown section (expected [network], "
                "[realm:NAME] or [link:A:B])"
            )
    if not realm_sections:
        raise ConfigError(f"{path}: no [realm:NAME] section")

    names = tuple(realm_sections)
    realms = {
        name: _read_realm(path, parser, section, name, folder, names)
        for name, section in realm_sections.items()
    }
    link_secrets = {}
    for section in link_sections:
        pair = section.split(":")[1:]
        if len(pair) != 2 or pair[0] == pair[1] or not set(pair) <= set(names):
            raise ConfigError(
                f"{path}: [{section}]: expected [link:A:B] naming two different "
                f"realms of this file ({', '.join(names)})"
            )
        link_secrets[frozenset(pair)] = _Section(path, parser, section).text("secret")

    config = NetworkConfig(
        path=path,
        secret=network.text("secret"),
        limits=_read_limits(network),
        realms=MappingProxyType(realms),
        link_secrets=MappingProxyType(link_secrets),
    )
    _refuse_default_secret(config)
    return config


DEFAULT_SECRET = "change-me"


def _is_loopback(host):
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _refuse_default_secret(config):
    """
    The shipped secret is public: it may link realms that listen on
    loopback addresses only, never a realm reachable from elsewhere.
    """
    for name, realm in config.realms.items():
        if _is_loopback(realm.host):
            continue
        for peer in realm.peers:
            if config.link_secret(name, peer) == DEFAULT_SECRET:
                where = f"[link:{name}:{peer}] secret" if frozenset((name, peer)) in (
                    config.link_secrets) else "[network] secret"
                raise ConfigError(
                    f"{config.path}: {where}: the default secret {DEFAULT_SECRET!r} links realm"
                    f" {name}, which listens on {realm.host} (not loopback): set a secret of"
                    " your own"
                )
