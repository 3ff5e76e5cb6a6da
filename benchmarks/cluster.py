#!/usr/bin/env python3
"""
One realm on SQLite, on PostgreSQL with one process, and on PostgreSQL with
two processes (SO_REUSEPORT), side by side with the trivial LineReceiver,
in one run (issue 17).  See benchmarks/README.md "Several processes".

Every server side (the realm processes and every PostgreSQL process) is
pinned to CPU 0 and the load generator to CPU 1, so throughput compares
what one core of server does; the CPU each part spends per message is
read from /proc (the realm's reactor and its threads, PostgreSQL's
backends and its WAL writer), which is what the projection to K machines
in the README is made from.

    MULTIREALM_TEST_POSTGRES=postgresql://... python benchmarks/cluster.py
    python benchmarks/cluster.py --only pipelined:200:8,closed:200 --duration 5

Without MULTIREALM_TEST_POSTGRES it starts a private cluster with
.ci/postgres (stopped at the end).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import run
from run import PYTHON, SERVER_CPU, log, proc_cpu, stop, wait_listening

ENGINES = ("trivial", "sqlite", "pg1", "pg2")


def psql(url, sql):
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", sql], check=True,
                   stdout=subprocess.DEVNULL)


def database_url(admin_url, name):
    base = admin_url.rsplit("/", 1)[0]
    return f"{base}/{name}"


def postgres_pids(admin_url):
    """Every process of the PostgreSQL cluster: the postmaster and its children."""
    out = subprocess.run(
        ["psql", "-tA", admin_url, "-c", "SELECT setting FROM pg_settings WHERE name = 'data_directory'"],
        check=True, capture_output=True, text=True).stdout.strip()
    with open(os.path.join(out, "postmaster.pid")) as f:
        postmaster = int(f.readline())
    pids = [postmaster]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == postmaster:
                pids.append(int(entry))
    return pids


def pin(pids, cpu):
    for pid in pids:
        subprocess.run(["taskset", "-p", "-c", cpu, str(pid)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)


class Realm:
    """realm 1 as one or two twistd processes on one port set."""

    def __init__(self, run_dir, data_dir, database=None):
        self.run_dir = run_dir
        os.makedirs(run_dir, exist_ok=True)
        extra = f"database = {database}\n" if database else ""
        self.ini, self.port = run.write_realms_ini(run_dir, data_dir)
        if extra:
            with open(self.ini, "a") as f:
                f.write(extra)
        self.processes = []

    def start(self, cpus):
        index = len(self.processes)
        log_path = os.path.join(self.run_dir, f"twistd-{index}.log")
        cmd = ["taskset", "-c", cpus, os.path.join(os.path.dirname(PYTHON), "twistd"), "-n",
               f"--pidfile={os.path.join(self.run_dir, f'twistd-{index}.pid')}",
               f"--logfile={log_path}", "multirealm", "--realm=1", f"--config={self.ini}"]
        with open(os.path.join(self.run_dir, f"twistd-{index}.stderr"), "w") as err:
            proc = run.start(cmd, cwd=self.run_dir, stdout=subprocess.DEVNULL, stderr=err)
        self.processes.append((proc, log_path))
        if index == 0:
            wait_listening(self.port, proc, log_path)
        else:
            time.sleep(3.0)  # it binds the same port: wait for its start-up to finish
            if proc.poll() is not None:
                raise RuntimeError(f"second process exited; see {log_path}")
        return proc

    def stop(self):
        codes = [stop(proc) for proc, _ in self.processes]
        problems = [line for _, path in self.processes for line in run.log_problems(path)]
        return codes, problems


def setup(work, engine, users, admin_url):
    """Register and log in the benchmark users once; (template, tokens)."""
    run_dir = os.path.join(work, f"setup-{engine}")
    if engine == "sqlite":
        template = os.path.join(run_dir, "data")
        realm = Realm(run_dir, template)
    else:
        template = f"bench_setup_{os.getpid()}"
        psql(admin_url, f"DROP DATABASE IF EXISTS {template}")
        psql(admin_url, f"CREATE DATABASE {template}")
        realm = Realm(run_dir, os.path.join(run_dir, "data"), database_url(admin_url, template))
    proc = realm.start(run.SETUP_CPUS)
    tokens = os.path.join(work, f"tokens-{engine}.json")
    run.run_loadgen(["login", "--port", str(realm.port), "--users", str(users), "--out", tokens],
                    proc.pid, timeout=1200)
    realm.stop()
    return template, tokens


def measured(work, engine, mode, connections, inflight, opts, template, tokens, admin_url):
    name = f"{engine}-{mode}-{connections}x{inflight}"
    run_dir = os.path.join(work, name)
    os.makedirs(run_dir)
    pg_pids = []
    if engine == "trivial":
        proc, port, log_path = run.start_trivial(run_dir)
        realm = None
        pids = [proc.pid]
    else:
        data_dir = os.path.join(run_dir, "data")
        database = None
        if engine == "sqlite":
            shutil.copytree(template, data_dir)
        else:
            database = f"bench_run_{os.getpid()}"
            psql(admin_url, f"DROP DATABASE IF EXISTS {database}")
            psql(admin_url, f"CREATE DATABASE {database} TEMPLATE {template}")
            database = database_url(admin_url, database)
        realm = Realm(run_dir, data_dir, database)
        proc = realm.start(SERVER_CPU)
        if engine == "pg2":
            realm.start(SERVER_CPU)
        port = realm.port
        pids = [p.pid for p, _ in realm.processes]
        if engine != "sqlite":
            pg_pids = postgres_pids(admin_url)
            pin(pg_pids, SERVER_CPU)

    def also():
        cpu = {f"realm{i}": proc_cpu(pid) or 0.0 for i, pid in enumerate(pids)}
        if pg_pids:
            cpu["postgres"] = sum(proc_cpu(pid) or 0.0 for pid in postgres_pids(admin_url))
        return cpu

    args = ["bench", "--port", str(port), "--connections", str(connections),
            "--inflight", str(inflight), "--duration", str(opts.duration),
            "--warmup", str(opts.warmup), "--drain-timeout", "10"]
    if engine != "trivial":
        args += ["--tokens", tokens]
    try:
        result, _, _ = run.run_loadgen(args, pids[0], opts.warmup + opts.duration + 130,
                                       also=also)
    finally:
        if realm is not None:
            codes, problems = realm.stop()
        else:
            codes, problems = [stop(proc)], run.log_problems(log_path)
    messages = result["msgs_per_s"] * result["window_s"]
    cpu = result.pop("also_cpu_s")
    result.update(engine=engine, mode=mode, exit_codes=codes, log_problems=problems[:5])
    result["realm_us_per_msg"] = round(
        1e6 * sum(v for k, v in cpu.items() if k.startswith("realm")) / messages, 1)
    result["postgres_us_per_msg"] = round(1e6 * cpu.get("postgres", 0.0) / messages, 1)
    result["cpu_s"] = cpu
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", type=run.parse_only,
                        default=[("pipelined", 200, 8), ("closed", 200, 1)])
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--json", help="also write every figure to this JSON file")
    opts = parser.parse_args(argv)
    engines = opts.engines.split(",")
    run.raise_nofile()
    admin_url = os.environ.get("MULTIREALM_TEST_POSTGRES")
    cluster_dir = None
    if admin_url is None and any(e.startswith("pg") for e in engines):
        cluster_dir = tempfile.mkdtemp(prefix="multirealm-bench-pg-")
        os.chmod(cluster_dir, 0o755)
        line = subprocess.run([os.path.join(run.REPO, ".ci", "postgres"), "start",
                               os.path.join(cluster_dir, "cluster")],
                              check=True, capture_output=True, text=True).stdout.strip()
        admin_url = line.split("=", 1)[1]
    work = tempfile.mkdtemp(prefix="multirealm-cluster-bench-")
    users = max(n for _, n, _ in opts.only) + 1
    results = []
    try:
        setups = {}
        for engine in engines:
            if engine == "trivial":
                continue
            kind = "sqlite" if engine == "sqlite" else "pg"
            if kind not in setups:
                log(f"setup {kind}: {users} users")
                setups[kind] = setup(work, kind, users, admin_url)
        for mode, n, k in opts.only:
            for engine in engines:
                template, tokens = setups.get(
                    "sqlite" if engine == "sqlite" else "pg", (None, None))
                log(f"run {engine} {mode} {n}x{k}")
                r = measured(work, engine, mode, n, k, opts, template, tokens, admin_url)
                results.append(r)
                log(f"  {r['msgs_per_s']:,.0f} msgs/s p99 {r['p99_ms']:.1f} ms "
                    f"realm {r['realm_us_per_msg']} us/msg postgres {r['postgres_us_per_msg']} us/msg")
    finally:
        run.kill_all()
        shutil.rmtree(work, ignore_errors=True)
        if admin_url is not None and cluster_dir is None:  # a server that stays: leave it clean
            for name in (f"bench_setup_{os.getpid()}", f"bench_run_{os.getpid()}"):
                psql(admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        if cluster_dir:
            subprocess.run([os.path.join(run.REPO, ".ci", "postgres"), "stop",
                            os.path.join(cluster_dir, "cluster")])
    print_table(results)
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


def print_table(results):
    print("| config | engine | msgs/s | × trivial | p50 ms | p99 ms | p99 × trivial"
          " | realm µs/msg | PostgreSQL µs/msg | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    trivial = {(r["mode"], r["connections"]): r for r in results if r["engine"] == "trivial"}
    for r in results:
        base = trivial.get((r["mode"], r["connections"]))
        ratio = f"{r['msgs_per_s'] / base['msgs_per_s']:.3f}" if base else "-"
        p99 = f"{r['p99_ms'] / base['p99_ms']:.1f}" if base and base["p99_ms"] else "-"
        print(f"| {r['mode']} {r['connections']}×{r['inflight']} | {r['engine']}"
              f" | {r['msgs_per_s']:,.0f} | {ratio} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {p99}"
              f" | {r['realm_us_per_msg']} | {r['postgres_us_per_msg']} | {r['errors']} |")


if __name__ == "__main__":
    sys.exit(main())
