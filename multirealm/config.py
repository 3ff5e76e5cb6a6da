"""
realms.ini, read once into validated frozen values (its keys: README.md).

Nothing else in the package reads the INI file: everything is asked of the
L{NetworkConfig} that L{load} returns.  Every error names the file, the
section and the key.
"""

import configparser
import difflib
import ipaddress
import math
import os
from types import MappingProxyType
from urllib.parse import urlsplit, urlunsplit

import attrs

from multirealm.names import NAME_RULE, is_valid_name

DEFAULT_CONFIG = "realms.ini"


# --realm=all runs every realm of the file in one process.
ALL_REALMS = "all"


class ConfigError(Exception):
    """realms.ini is missing or wrong; the message says where."""


def _limit(default, meaning, minimum, maximum=None):
    """
    One key of [network]: its default, the bounds a value must be within,
    and the one line that README.md and docs/protocol.md show for it.
    """
    return attrs.field(
        default=default, metadata={"meaning": meaning, "minimum": minimum, "maximum": maximum}
    )


@attrs.frozen
class Limits:
    """
    Knobs shared by every realm of the network: the optional keys of the
    [network] section, each declared once, here, and nowhere else.  The
    field's name is the key, its type (int or float) how the value is read:

        max_widgets: int = _limit(10, "most widgets of one user", minimum=1)

    The reader (with its errors) and the limits tables of README.md and
    docs/protocol.md follow; after a change, run python tools/limits_table.py.
    """

    max_line_bytes: int = _limit(
        65536, "longest request line; a longer one gets `line_too_long`", minimum=64)
    max_file_bytes: int = _limit(
        100 * 1024 * 1024, "largest file, decoded (`file_too_large`)", minimum=1)
    history_limit: int = _limit(
        1000, "most messages in one history reply", minimum=1)
    history_reply_bytes: int = _limit(
        1024 * 1024,
        "most bytes in one history reply (at least one message is always given)",
        minimum=1024)
    # A list request counts as list_limit x 40 bytes until answered (names
    # of at most 32 characters, quoted): 20,000 of them stay under 1 MiB.
    list_limit: int = _limit(
        1000, "most names in one `listusers` / `listgroups` reply, entries in one `conversations`",
        minimum=1, maximum=20_000)
    reply_buffer_bytes: int = _limit(
        4 * 1024 * 1024,
        "a connection is not read while more than this many bytes of its replies wait",
        minimum=1024)
    realm_reply_buffer_bytes: int = _limit(
        64 * 1024 * 1024,
        "once the whole realm holds this many bytes of waiting replies, no connection"
        " that has a reply waiting is read",
        minimum=1024)
    event_buffer_bytes: int = _limit(
        64 * 1024,
        "bytes of live events waiting for one subscribed connection; past it, one"
        ' `{"event": "overflow"}` and no more until it subscribes again',
        minimum=1024)
    # Generous, so that programs that pipeline are never refused.
    rate_limit_burst: int = _limit(
        2000, "per connection: requests in one burst (token bucket size; `rate_limited`)",
        minimum=1)
    rate_limit_per_second: float = _limit(
        1000.0, "per connection: steady request rate (the bucket's refill)", minimum=0.001)
    hashes_per_address: int = _limit(
        64,
        "password hashes (`register`, `auth`, `passwd`) waiting or running for one client address"
        " (`rate_limited`); the whole realm takes at most 1,024",
        minimum=1, maximum=1024)
    registration_burst: int = _limit(
        100, "registrations from one client address at once (`quota_exceeded`)", minimum=1)
    registrations_per_hour: float = _limit(
        100.0, "registrations from one client address, refilled at so many an hour",
        minimum=0.001)
    idle_timeout: float = _limit(
        600.0,
        "seconds without a request before a connection is closed (`ping` keeps it open)",
        minimum=1)
    session_days: float = _limit(
        30.0, "days a session id works after `auth`", minimum=0.001)
    max_group_members: int = _limit(
        1000, "members of one group, the creator included (`quota_exceeded`)", minimum=2)
    max_groups_per_user: int = _limit(
        100, "groups one user may create (`quota_exceeded`)", minimum=1)
    link_max_delay: float = _limit(
        5.0,
        "seconds at most between two attempts to reconnect a realm link (the backoff's"
        " cap; it resets once the link authenticates)",
        minimum=0.1, maximum=3600)
    connections_per_address: int = _limit(
        100,
        "connections open at once from one client address, on every port of the process"
        " together (`too_many_connections`; HTTP 503)",
        minimum=1)
    max_connections: int = _limit(
        0,
        "connections open at once in the whole process (`unavailable`; HTTP 503); 0 means"
        " the open-files limit (raised to the hard limit at start) less a quarter, and a"
        " larger value is lowered to that",
        minimum=0)
    header_timeout: float = _limit(
        30.0,
        "seconds an HTTP request has to send its headers (else 408), and a connection to"
        " `tls_port` its TLS handshake; a trickle does not extend it",
        minimum=1, maximum=3600)
    listen_backlog: int = _limit(
        0,
        "backlog of every listening port; 0 means the system's maximum"
        " (`/proc/sys/net/core/somaxconn`, which also caps any value: raise it where more"
        " clients than that may reconnect at once, benchmarks/README.md)",
        minimum=0)


# Who may read GET /metrics when [realm:NAME] metrics_allow does not say.
METRICS_ALLOW_DEFAULT = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


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
    metrics_allow: tuple = METRICS_ALLOW_DEFAULT  # ip_network values
    web_origins: tuple = ()  # more origins whose pages may open /ws: ("https", host, port)
    # None: SQLite in data_dir (one process); else a postgresql:// URL (libpq's
    # conninfo) that every process of the realm shares
    database: str | None = None


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

    def refuse_unknown(self, known):
        """A key that is not one of C{known} is a typo, not something to ignore."""
        for key in self.values:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"did you mean {close[0]}?" if close else "not a key of this section"
                raise self.error(key, f"unknown key: {hint} (README.md lists every key)")

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
        if not math.isfinite(value):  # inf and nan pass every comparison below
            raise self.error(key, f"expected a finite number, got {raw.strip()!r}")
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
    section.refuse_unknown({"secret", *(field.name for field in attrs.fields(Limits))})
    return Limits(**{
        field.name: section.number(
            field.name, field.default, kind=field.type,
            minimum=field.metadata["minimum"], maximum=field.metadata["maximum"],
        )
        for field in attrs.fields(Limits)
    })


_REALM_KEYS = frozenset({
    "host", "chat_port", "realm_port", "http_port", "data_dir", "peers",
    "tls_port", "tls_cert", "tls_key", "tls_ca", "metrics_allow", "web_origins", "database",
})


def _networks(section, key, default):
    """Addresses and networks (C{10.0.0.5 192.168.1.0/24 ::1}), space or comma separated."""
    text = section.optional_text(key)
    if text is None:
        return default
    networks = []
    for word in text.replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(word))
        except ValueError as e:
            raise section.error(
                key, f"{word!r} is not an IP address or network (such as 10.0.0.5 or"
                f" 192.168.1.0/24): {e}"
            ) from None
    return tuple(networks)


def _origins(section, key):
    """
    Origins (C{https://chat.example.org}, C{http://10.0.0.5:8080}), space
    or comma separated: (scheme, host, port) each, the port said or not.
    """
    origins = []
    for word in (section.optional_text(key) or "").replace(",", " ").split():
        try:
            url = urlsplit(word)
            scheme, host = url.scheme.lower(), url.hostname
            port = url.port or {"http": 80, "https": 443}.get(scheme)
        except ValueError:
            scheme = host = None
        if scheme not in ("http", "https") or not host or url.path.strip("/") or url.query:
            raise section.error(
                key, f"{word!r} is not an origin: write scheme://host[:port], such as"
                " https://chat.example.org"
            )
        origins.append((scheme, host, port))
    return tuple(origins)


def without_password(url):
    """A database URL as it may be shown: any password in it (user:PASSWORD@, ?password=) masked."""
    try:
        parts = urlsplit(url)
        query = "&".join(
            "password=***" if pair.partition("=")[0] == "password" else pair
            for pair in parts.query.split("&")
        ) if parts.query else ""
        netloc = parts.netloc
        if parts.password is not None:
            netloc = f"{parts.username}:***@{netloc.rpartition('@')[2]}"
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:
        return "(a URL that cannot be read)"


def _database(section, key):
    """
    None (SQLite, the default: C{sqlite} or no key) or a C{postgresql://}
    URL.  Its password is better given by libpq's C{PGPASSWORD} or
    C{PGPASSFILE} than written here.
    """
    text = section.optional_text(key)
    if text is None or text == "sqlite":
        return None
    try:
        url = urlsplit(text)
    except ValueError:
        url = None
    if url is None or url.scheme not in ("postgresql", "postgres") or not url.path.strip("/"):
        raise section.error(
            key, f"{without_password(text)!r} is neither sqlite nor a PostgreSQL URL: write"
            " postgresql://USER@HOST:PORT/DBNAME (the password from PGPASSWORD or PGPASSFILE)"
        )
    return text


def _read_realm(path, parser, section_name, name, folder, all_names):
    s = _Section(path, parser, section_name)
    s.refuse_unknown(_REALM_KEYS)
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
        metrics_allow=_networks(s, "metrics_allow", METRICS_ALLOW_DEFAULT),
        web_origins=_origins(s, "web_origins"),
        database=_database(s, "database"),
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
        link = _Section(path, parser, section)
        link.refuse_unknown({"secret"})
        link_secrets[frozenset(pair)] = link.text("secret")

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
