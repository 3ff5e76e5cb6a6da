"""
realms.ini: the shipped file, defaults, and errors that name file, section
and key.
"""

import os
import runpy

import attrs
from twisted.trial import unittest

from multirealm import config

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHIPPED = os.path.join(ROOT, "realms.ini")

MINIMAL = """
[network]
secret = s3cret

[realm:a]
host = 127.0.0.1
chat_port = 1
realm_port = 2
http_port = 3
data_dir = data/a

[realm:b]
host = 127.0.0.1
chat_port = 4
realm_port = 5
http_port = 6
data_dir = /abs/b
"""


class ConfigTests(unittest.TestCase):
    def write(self, text):
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        path = os.path.join(folder, "realms.ini")
        with open(path, "w") as f:
            f.write(text)
        return path

    def assertConfigError(self, text, *fragments):
        path = self.write(text)
        error = self.assertRaises(config.ConfigError, config.load, path)
        for fragment in (path, *fragments):
            self.assertIn(fragment, str(error))
        return error

    def test_shipped_file_is_the_original_layout(self):
        network = config.load(SHIPPED)
        one, two = network.realm("1"), network.realm("2")
        self.assertEqual((one.chat_port, one.realm_port, one.http_port), (8889, 8890, 8000))
        self.assertEqual((two.chat_port, two.realm_port, two.http_port), (8888, 8891, 8001))
        self.assertEqual(one.peers, ("2",))
        self.assertEqual(one.data_dir, os.path.join(os.path.dirname(SHIPPED), "data", "realm1"))
        self.assertEqual(network.limits.max_line_bytes, 65536)
        self.assertEqual(network.limits.history_limit, 1000)

    def test_the_three_realm_example_links_every_pair(self):
        network = config.load(os.path.join(os.path.dirname(HERE), "examples", "three-realms.ini"))
        self.assertEqual(sorted(network.realms), ["1", "2", "3"])
        for name, realm in network.realms.items():
            self.assertEqual(set(realm.peers), {"1", "2", "3"} - {name})
        ports = [p for r in network.realms.values()
                 for p in (r.chat_port, r.realm_port, r.http_port)]
        self.assertEqual(len(set(ports)), 9)

    def test_defaults_and_relative_paths(self):
        path = self.write(MINIMAL)
        network = config.load(path)
        self.assertEqual(network.limits, config.Limits())
        self.assertEqual(network.realm("a").data_dir, os.path.join(os.path.dirname(path), "data", "a"))
        self.assertEqual(network.realm("b").data_dir, "/abs/b")
        self.assertEqual(network.link_secret("a", "b"), "s3cret")

    def test_values_are_frozen(self):
        network = config.load(self.write(MINIMAL))
        self.assertRaises(AttributeError, setattr, network.realm("a"), "chat_port", 9)
        with self.assertRaises(TypeError):
            network.realms["c"] = None

    def test_link_secret_per_pair(self):
        network = config.load(self.write(MINIMAL + "[link:b:a]\nsecret = pair\n"))
        self.assertEqual(network.link_secret("a", "b"), "pair")

    def test_peers_subset(self):
        text = MINIMAL.replace("data_dir = data/a", "data_dir = data/a\npeers = b")
        self.assertEqual(config.load(self.write(text)).realm("a").peers, ("b",))

    def test_missing_file(self):
        path = os.path.join(self.mktemp(), "realms.ini")
        error = self.assertRaises(config.ConfigError, config.load, path)
        self.assertIn(path, str(error))

    def test_bad_port_names_section_and_key(self):
        self.assertConfigError(
            MINIMAL.replace("chat_port = 4", "chat_port = lots"), "[realm:b]", "chat_port", "lots"
        )
        self.assertConfigError(
            MINIMAL.replace("chat_port = 4", "chat_port = 70000"), "[realm:b]", "chat_port"
        )

    def test_missing_key(self):
        self.assertConfigError(MINIMAL.replace("host = 127.0.0.1\nchat_port = 1", "chat_port = 1"),
                               "[realm:a]", "host", "missing")

    def test_bad_limit(self):
        self.assertConfigError(
            MINIMAL.replace("secret = s3cret", "secret = s\nhistory_limit = 0"),
            "[network]", "history_limit",
        )

    def test_limit_errors_give_the_bounds(self):
        for line, message in [
            ("max_line_bytes = 63", "[network] max_line_bytes: must be at least 64, got 63"),
            ("list_limit = 20001", "[network] list_limit: must be between 1 and 20000, got 20001"),
            ("idle_timeout = soon", "[network] idle_timeout: expected a number, got 'soon'"),
            # inf and nan pass every bound; an infinite rate made a NaN of
            # the token bucket (review).
            ("rate_limit_per_second = inf",
             "[network] rate_limit_per_second: expected a finite number, got 'inf'"),
            ("idle_timeout = nan", "[network] idle_timeout: expected a finite number, got 'nan'"),
        ]:
            error = self.assertConfigError(
                MINIMAL.replace("secret = s3cret", f"secret = s\n{line}"))
            self.assertTrue(str(error).endswith(message), str(error))

    def test_an_unknown_key_is_refused_with_the_closest_known_one(self):
        # A typo would otherwise leave the default silently in force.
        self.assertConfigError(
            MINIMAL.replace("secret = s3cret", "secret = s\nmax_line_byte = 100"),
            "[network] max_line_byte: unknown key: did you mean max_line_bytes?",
        )
        self.assertConfigError(
            MINIMAL.replace("chat_port = 4", "chat_port = 4\ntls_prot = 7"),
            "[realm:b] tls_prot: unknown key: did you mean tls_port?",
        )
        self.assertConfigError(
            MINIMAL + "[link:a:b]\nsecret = x\ncolour = blue\n",
            "[link:a:b] colour: unknown key: not a key of this section",
        )

    def test_metrics_allow_lists_addresses_and_networks(self):
        self.assertEqual(config.load(self.write(MINIMAL)).realm("a").metrics_allow,
                         config.METRICS_ALLOW_DEFAULT)  # loopback only
        path = self.write(MINIMAL.replace(
            "data_dir = data/a", "data_dir = data/a\nmetrics_allow = 10.0.0.5, 192.168.1.0/24 ::1"
        ))
        self.assertEqual(
            [str(n) for n in config.load(path).realm("a").metrics_allow],
            ["10.0.0.5/32", "192.168.1.0/24", "::1/128"],
        )
        for wrong in ("prometheus.example", "192.168.1.5/24", "10.0.0.0/33"):
            self.assertConfigError(
                MINIMAL.replace("data_dir = data/a", f"data_dir = data/a\nmetrics_allow = {wrong}"),
                "[realm:a] metrics_allow:", repr(wrong),
            )

    def test_web_origins_lists_origins(self):
        self.assertEqual(config.load(self.write(MINIMAL)).realm("a").web_origins, ())
        path = self.write(MINIMAL.replace("data_dir = data/a", "data_dir = data/a\n"
                                          "web_origins = https://Chat.example.org, http://10.0.0.5:8080"))
        self.assertEqual(config.load(path).realm("a").web_origins,
                         (("https", "chat.example.org", 443), ("http", "10.0.0.5", 8080)))
        for wrong in ("chat.example.org", "ftp://x.example", "https://x.example/page",
                      "https://x.example:99999"):
            self.assertConfigError(
                MINIMAL.replace("data_dir = data/a", f"data_dir = data/a\nweb_origins = {wrong}"),
                "[realm:a] web_origins:", repr(wrong),
            )

    def test_database_is_sqlite_or_a_postgresql_url(self):
        self.assertIsNone(config.load(self.write(MINIMAL)).realm("a").database)
        for text, expected in (("sqlite", None),
                               ("postgresql://chat@db.example:5432/realm1",
                                "postgresql://chat@db.example:5432/realm1")):
            path = self.write(MINIMAL.replace("data_dir = data/a",
                                              f"data_dir = data/a\ndatabase = {text}"))
            self.assertEqual(config.load(path).realm("a").database, expected)
        for wrong in ("mysql://x/y", "postgresql://db.example", "realm.sqlite3"):
            self.assertConfigError(
                MINIMAL.replace("data_dir = data/a", f"data_dir = data/a\ndatabase = {wrong}"),
                "[realm:a] database:", repr(wrong),
            )

    def test_a_database_password_is_never_shown(self):
        self.assertEqual(config.without_password("postgresql://chat:s3cret@db:5432/r1"),
                         "postgresql://chat:***@db:5432/r1")
        self.assertEqual(
            config.without_password("postgresql://chat@db/r1?sslmode=require&password=s3cret"),
            "postgresql://chat@db/r1?sslmode=require&password=***")
        error = self.assertRaises(config.ConfigError, config.load, self.write(
            MINIMAL.replace("data_dir = data/a", "data_dir = data/a\ndatabase = mysql://u:s3cret@x/y")))
        self.assertNotIn("s3cret", str(error))

    def test_unknown_peer(self):
        text = MINIMAL.replace("data_dir = data/a", "data_dir = data/a\npeers = z")
        self.assertConfigError(text, "[realm:a]", "peers", "z")

    def test_unknown_realm_is_named(self):
        network = config.load(self.write(MINIMAL))
        error = self.assertRaises(config.ConfigError, network.realm, "3")
        self.assertIn("[realm:3]", str(error))

    def test_bad_sections(self):
        self.assertConfigError(MINIMAL + "[bogus]\n", "[bogus]")
        self.assertConfigError(MINIMAL + "[link:a:zz]\nsecret = x\n", "[link:a:zz]")
        self.assertConfigError(MINIMAL.replace("[realm:b]", "[realm:b@d]"), "[realm:b@d]")
        # "all" is --realm=all, every realm of the file.
        self.assertConfigError(MINIMAL.replace("[realm:b]", "[realm:all]"), "--realm=all")
        self.assertConfigError("[realm:a]\nhost = x\n", "[network]")

    def test_not_ini(self):
        self.assertConfigError("this is not ini\n", "cannot read")


class DefaultSecretTests(unittest.TestCase):
    def write(self, secret, host):
        folder = self.mktemp()
        os.makedirs(folder)
        path = os.path.join(folder, "realms.ini")
        with open(path, "w") as f:
            f.write(
                f"[network]\nsecret = {secret}\n\n"
                f"[realm:1]\nhost = {host}\nchat_port = 1\nrealm_port = 2\nhttp_port = 3\n"
                "data_dir = d1\n\n"
                "[realm:2]\nhost = 127.0.0.1\nchat_port = 4\nrealm_port = 5\nhttp_port = 6\n"
                "data_dir = d2\n"
            )
        return path

    def test_the_default_secret_is_fine_on_loopback(self):
        config.load(self.write("change-me", "127.0.0.1"))
        config.load(self.write("change-me", "::1"))

    def test_the_default_secret_is_refused_for_a_realm_others_can_reach(self):
        with self.assertRaises(config.ConfigError) as caught:
            config.load(self.write("change-me", "0.0.0.0"))
        self.assertIn("[network] secret", str(caught.exception))
        config.load(self.write("a-secret-of-our-own", "0.0.0.0"))


class LimitsDeclarationTests(unittest.TestCase):
    """
    Each limit is declared once, in L{config.Limits}: the reader and the
    documents follow from it.
    """

    maxDiff = None

    def load_with(self, key, value):
        folder = self.mktemp()
        os.makedirs(folder)
        path = os.path.join(folder, "realms.ini")
        with open(path, "w") as f:
            f.write(MINIMAL.replace("secret = s3cret", f"secret = s3cret\n{key} = {value}"))
        return config.load(path).limits

    def test_every_limit_is_declared_whole(self):
        for field in attrs.fields(config.Limits):
            meaning, low, high = (field.metadata.get(k) for k in ("meaning", "minimum", "maximum"))
            self.assertTrue(meaning, f"{field.name}: declare it with _limit(...)")
            self.assertIn(field.type, (int, float), field.name)
            self.assertIsInstance(field.default, field.type, field.name)
            self.assertLessEqual(low, field.default, field.name)
            if high is not None:
                self.assertLessEqual(field.default, high, field.name)

    def test_every_limit_is_read_within_its_bounds(self):
        for field in attrs.fields(config.Limits):
            low, high = field.metadata["minimum"], field.metadata["maximum"]
            for edge in (low, high):
                if edge is not None:
                    value = getattr(self.load_with(field.name, edge), field.name)
                    self.assertEqual((value, type(value)), (edge, field.type), field.name)
            too_low = low / 2 if field.type is float else low - 1
            error = self.assertRaises(config.ConfigError, self.load_with, field.name, too_low)
            self.assertIn(f"[network] {field.name}: must be", str(error))
            if high is not None:
                error = self.assertRaises(
                    config.ConfigError, self.load_with, field.name, high + 1)
                self.assertIn(f"[network] {field.name}: must be", str(error))

    def test_the_documents_list_every_limit(self):
        tool = runpy.run_path(os.path.join(ROOT, "tools", "limits_table.py"))
        for name in tool["DOCUMENTS"]:
            with open(os.path.join(ROOT, name), encoding="utf-8") as f:
                text = f.read()
            shown = text.partition(tool["BEGIN"])[2].partition(tool["END"])[0].strip()
            self.assertEqual(
                shown.splitlines(), tool["table"]().splitlines(),
                f"{name} differs from multirealm/config.py: run python tools/limits_table.py",
            )

    def test_the_shipped_file_shows_the_defaults(self):
        self.assertEqual(config.load(SHIPPED).limits, config.Limits())
