#!/usr/bin/env python3
"""
Flame graphs of a realm under load (issue 18): a realm on SQLite pinned to
CPU 0, benchmarks/loadgen.py pinned to CPU 1, and py-spy recording the
realm's process (all its threads, or with --gil only the thread holding
the GIL) while the load runs.

    pip install py-spy
    python3 benchmarks/flame.py --out benchmarks/flamegraphs/before --only pipelined:200:8,closed:200

writes OUT-pipelined-200x8.svg (and -gil.svg) for each configuration and
prints each run's throughput.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

import cluster
import run
from run import SERVER_CPU, log


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="path prefix of the SVG files")
    parser.add_argument("--only", type=run.parse_only,
                        default=[("pipelined", 200, 8), ("closed", 200, 1)])
    parser.add_argument("--seconds", type=float, default=8.0, help="recorded seconds a run")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples a second")
    opts = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    os.makedirs(os.path.dirname(os.path.abspath(opts.out)), exist_ok=True)
    run.raise_nofile()
    work = tempfile.mkdtemp(prefix="multirealm-flame-")
    try:
        users = max(n for _, n, _ in opts.only) + 1
        template, tokens = cluster.setup(work, "sqlite", users, None)
        for mode, n, k in opts.only:
            for gil in (False, True):
                name = f"{mode}-{n}x{k}" + ("-gil" if gil else "")
                run_dir = os.path.join(work, name)
                data_dir = os.path.join(run_dir, "data")
                os.makedirs(run_dir)
                shutil.copytree(template, data_dir)
                realm = cluster.Realm(run_dir, data_dir)
                proc = realm.start(SERVER_CPU)
                svg = f"{opts.out}-{name}.svg"
                spy = run.start([py_spy, "record", "--pid", str(proc.pid), "--output", svg,
                                 "--rate", str(opts.rate), "--duration", str(int(opts.seconds)),
                                 "--threads", *(["--gil"] if gil else []), "--nonblocking"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    result, _, _ = run.run_loadgen(
                        ["bench", "--port", str(realm.port), "--connections", str(n),
                         "--inflight", str(k), "--duration", str(opts.seconds), "--warmup", "0.5",
                         "--drain-timeout", "10", "--tokens", tokens],
                        proc.pid, opts.seconds + 60)
                    spy.wait(timeout=60)
                finally:
                    realm.stop()
                log(f"{name}: {result['msgs_per_s']:,.0f} msgs/s, p99 {result['p99_ms']:.1f} ms"
                    f" -> {svg}")
    finally:
        run.kill_all()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
