"""
The private PostgreSQL cluster of the tests: C{MULTIREALM_TEST_POSTGRES}
(a superuser conninfo, set by .ci/run), or the test is skipped.
"""

import os
import secrets

from twisted.trial.unittest import SkipTest

ENVIRONMENT = "MULTIREALM_TEST_POSTGRES"


def server():
    """The cluster's conninfo; L{SkipTest} when it is not set."""
    conninfo = os.environ.get(ENVIRONMENT)
    if not conninfo:
        raise SkipTest(f"{ENVIRONMENT} is not set: no PostgreSQL to test against")
    return conninfo


def database(testcase, prefix="procs"):
    """A new, empty database for C{testcase}, dropped at its cleanup: its URL."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    conninfo = server()
    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')

    def drop():
        with psycopg.connect(conninfo, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    testcase.addCleanup(drop)
    params = conninfo_to_dict(conninfo)
    params["dbname"] = name
    return "postgresql://{user}@{host}:{port}/{dbname}".format(**params)
