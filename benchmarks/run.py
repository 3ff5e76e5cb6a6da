#!/usr/bin/env python3
"""
Benchmark driver for multirealm: see benchmarks/README.md.

For each server (the trivial baseline, then a real realm under twistd) and
each configuration (mode, connections, requests in flight), it starts a
fresh server process pinned to CPU 0, runs loadgen.py pinned to CPU 1,
samples the server's memory and CPU time from /proc, stops the server, and
checks its log.  The realm's setup (registering and logging in every
benchmark user, which costs two scrypt hashes each) is done once, and is
the idle test: U connections each register and auth, stay idle, and the
realm's RSS is read.  The realm's database after setup is kept as a
template that every measured run starts from, so each realm run starts
with the same users and sessions and an otherwise empty message table.

    /tmp/venv/bin/python benchmarks/run.py            # full run, about 4-5 minutes
    /tmp/venv/bin/python benchmarks/run.py --quick    # smoke check, < 1 minute
"""

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PYTHON = sys.executable
SERVER_CPU = "0"
LOADGEN_CPU = "1"
SETUP_CPUS = "0,1"  # setup is not measured: let scrypt use both cores
PAGE_TICKS = os.sysconf("SC_CLK_TCK")
RATE_LIMIT = 1000000
DISTURBED_PCT = 15  # CPU of other processes, % of one core, that makes a run "disturbed"

# (mode, connections, in flight)
FULL_CONFIGS = [
    ("closed", 1, 1),
    ("closed", 10, 1),
    ("closed", 100, 1),
    ("closed", 200, 1),
    ("closed", 500, 1),
    ("pipelined", 1, 8),
    ("pipelined", 10, 8),
    ("pipelined", 100, 8),
    ("pipelined", 200, 8),
    ("pipelined", 500, 8),
]
QUICK_CONFIGS = [
    ("closed", 10, 1),
    ("closed", 100, 1),
    ("pipelined", 100, 8),
]

_children = []  # every Popen we started, killed at exit


def log(*parts):
    print(time.strftime("%H:%M:%S"), *parts, file=sys.stderr, flush=True)


# -- processes -----------------------------------------------------------------


def start(cmd, **kwargs):
    proc = subprocess.Popen(cmd, **kwargs)
    _children.append(proc)
    return proc


def stop(proc, timeout=20.0):
    """SIGTERM (a clean shutdown: the realm commits what is queued), then SIGKILL."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"pid {proc.pid} ignored SIGTERM for {timeout} s: SIGKILL")
            proc.kill()
            proc.wait()
    if proc in _children:
        _children.remove(proc)
    return proc.returncode


def kill_all():
    for proc in list(_children):
        try:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        except Exception as e:  # keep killing the others
            log(f"could not kill pid {proc.pid}: {e}")
        _children.remove(proc)


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_ports(count):
    socks = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def wait_listening(port, proc, log_path, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening; see {log_path}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server not listening on {port} after {timeout} s; see {log_path}")


# -- /proc ---------------------------------------------------------------------


def proc_status(pid):
    """VmRSS and VmHWM in MiB."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":")
                    out[key] = int(value.split()[0]) / 1024.0
    except OSError:
        pass
    return out


def proc_cpu(pid):
    """utime + stime of the whole process (every thread), seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / PAGE_TICKS


def thread_cpu(pid):
    """{thread name: utime + stime seconds} for every thread of the process."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                text = f.read()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        # Python 3.11 does not name OS threads: label the main thread; the
        # rest (the store's database thread, the idle hashing pool) share
        # the process's name.
        name = "reactor thread" if tid == str(pid) else "other threads (store DB thread)"
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / PAGE_TICKS
    return out


def machine_cpu():
    """(user+nice+system, steal) of the whole machine from /proc/stat, seconds."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (fields[0] + fields[1] + fields[2]) / PAGE_TICKS, fields[7] / PAGE_TICKS


class Sampler(threading.Thread):
    """Samples a process's VmRSS every C{interval} seconds until stopped."""

    def __init__(self, pid, interval=0.1):
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.max_rss = 0.0
        self.hwm = 0.0
        self._stop_event = threading.Event()

    def run(self):
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def sample(self):
        s = proc_status(self.pid)
        self.max_rss = max(self.max_rss, s.get("VmRSS", 0.0))
        self.hwm = max(self.hwm, s.get("VmHWM", 0.0))

    def stop(self):
        self._stop_event.set()
        self.join()
        self.sample()


# -- servers -------------------------------------------------------------------


def write_realms_ini(folder, data_dir, extra="", one_address_setup=True):
    """
    realms.ini of realm 1 on free ports; C{extra} is appended (more realms).
    With C{one_address_setup} the per-address limits are lifted: the setup
    registers and logs in every user from this one address.
    """
    chat, realm, http = free_ports(3)
    path = os.path.join(folder, "realms.ini")
    with open(path, "w") as f:
        f.write(
            "# Written by benchmarks/run.py for one benchmark run.\n"
            "[network]\n"
            "secret = benchmark\n"
            "# so high that the per-connection limiter never refuses benchmark load\n"
            f"rate_limit_burst = {RATE_LIMIT}\n"
            f"rate_limit_per_second = {RATE_LIMIT}\n"
            + (
                "# the setup registers and logs in every user from this one address\n"
                f"registration_burst = {RATE_LIMIT}\n"
                "hashes_per_address = 1024\n"
                "connections_per_address = 100000\n"
                if one_address_setup else ""
            )
            + "\n[realm:1]\n"
            "host = 127.0.0.1\n"
            f"chat_port = {chat}\n"
            f"realm_port = {realm}\n"
            f"http_port = {http}\n"
            f"data_dir = {data_dir}\n"
            + extra
        )
    return path, chat


def start_realm(run_dir, data_dir, cpus, extra="", one_address_setup=True):
    ini, port = write_realms_ini(run_dir, data_dir, extra, one_address_setup)
    log_path = os.path.join(run_dir, "twistd.log")
    cmd = [
        "taskset", "-c", cpus,
        os.path.join(os.path.dirname(PYTHON), "twistd"), "-n",
        f"--pidfile={os.path.join(run_dir, 'twistd.pid')}",
        f"--logfile={log_path}",
        "multirealm", "--realm=1", f"--config={ini}",
    ]
    with open(os.path.join(run_dir, "twistd.stderr"), "w") as err:
        proc = start(cmd, cwd=run_dir, stdout=subprocess.DEVNULL, stderr=err)
    wait_listening(port, proc, log_path)
    return proc, port, log_path


def start_trivial(run_dir):
    (port,) = free_ports(1)
    log_path = os.path.join(run_dir, "trivial.log")
    cmd = ["taskset", "-c", SERVER_CPU, PYTHON, os.path.join(HERE, "trivial_server.py"), str(port)]
    with open(log_path, "w") as out:
        proc = start(cmd, cwd=run_dir, stdout=out, stderr=subprocess.STDOUT)
    wait_listening(port, proc, log_path)
    return proc, port, log_path


# twistd stops cleanly on SIGTERM and then re-raises the signal on itself,
# so its exit status is -SIGTERM; the trivial server exits 0.
CLEAN_EXITS = (0, -signal.SIGTERM, None)

LOG_PROBLEMS = ("Traceback", "Unhandled", "request failed", "CRITICAL", "[ERROR]", "Error")


def log_problems(path):
    """Lines of a server log that look like trouble."""
    found = []
    try:
        with open(path, errors="replace") as f:
            for line in f:
                if any(word in line for word in LOG_PROBLEMS):
                    found.append(line.rstrip())
    except OSError:
        pass
    return found


# -- the loadgen ---------------------------------------------------------------


def run_loadgen(args_list, server_pid, timeout, on_line=None, stdin=None, also=None):
    """
    Run loadgen.py pinned to the loadgen CPU; sample the server meanwhile.
    Returns (result dict, server cpu seconds in the measured window, sampler).
    C{also}, if given, is called at both edges of the measured window and
    returns {label: CPU seconds} of more processes (another realm process,
    PostgreSQL); their differences are in the result's C{also_cpu_s}.
    """
    cmd = ["taskset", "-c", LOADGEN_CPU, PYTHON, os.path.join(HERE, "loadgen.py"), *args_list]
    proc = start(cmd, stdout=subprocess.PIPE, stdin=stdin, text=True, bufsize=1)
    sampler = Sampler(server_pid)
    sampler.start()
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    result = None
    cpu = {}
    try:
        for line in proc.stdout:
            line = line.rstrip("\n")
            if line in ("MEASURE_START", "MEASURE_END"):
                edge = "0" if line == "MEASURE_START" else "1"
                cpu["start" if edge == "0" else "end"] = proc_cpu(server_pid)
                cpu["threads" + edge] = thread_cpu(server_pid)
                cpu["machine" + edge] = machine_cpu()
                cpu["lg" + edge] = proc_cpu(proc.pid)
                cpu["t" + edge] = time.monotonic()
                if also is not None:
                    cpu["also" + edge] = also()
            elif line.startswith("RESULT "):
                result = json.loads(line[len("RESULT "):])
            elif on_line is not None:
                on_line(line, proc, sampler)
        proc.wait()
    finally:
        timer.cancel()
        sampler.stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc in _children:
            _children.remove(proc)
    if proc.returncode != 0 or result is None:
        raise RuntimeError(f"loadgen failed (exit {proc.returncode}): {' '.join(args_list)}")
    if "also1" in cpu:
        result["also_cpu_s"] = {
            label: round(seconds - cpu["also0"].get(label, 0.0), 3)
            for label, seconds in cpu["also1"].items()
        }
    server_cpu = None
    if cpu.get("start") is not None and cpu.get("end") is not None:
        window = cpu["t1"] - cpu["t0"]
        threads = {
            name: round(100.0 * (cpu["threads1"].get(name, 0.0) - cpu["threads0"].get(name, 0.0)) / window, 1)
            for name in cpu["threads1"]
        }
        # CPU time of everything else on the machine (other processes),
        # in % of one core: a sign of interference with the measurement.
        busy = cpu["machine1"][0] - cpu["machine0"][0]
        mine = (cpu["end"] - cpu["start"]) + (cpu["lg1"] - cpu["lg0"])
        other = {
            "other_cpu_pct": round(max(0.0, 100.0 * (busy - mine) / window), 1),
            "steal_pct": round(100.0 * (cpu["machine1"][1] - cpu["machine0"][1]) / window, 1),
        }
        server_cpu = (cpu["end"] - cpu["start"], window, {k: v for k, v in threads.items() if v > 0}, other)
    return result, server_cpu, sampler


# -- the realm setup and idle test ----------------------------------------------


def realm_setup(work, users, idle_seconds):
    """
    Fresh realm; U connections each register + auth its own user, then all
    stay open and idle while the realm's RSS is sampled.  Returns (idle
    result, template data dir, tokens file).
    """
    run_dir = os.path.join(work, "realm-setup")
    os.makedirs(run_dir)
    data_dir = os.path.join(run_dir, "data")
    proc, port, log_path = start_realm(run_dir, data_dir, SETUP_CPUS)
    tokens = os.path.join(work, "tokens.json")
    idle = {"connections": users}
    start_rss = proc_status(proc.pid).get("VmRSS")

    def on_line(line, lg, sampler):
        if line.startswith("READY "):
            _, count, seconds = line.split()
            idle["logged_in"] = int(count)
            idle["login_s"] = float(seconds)
            log(f"idle test: {count} connections logged in ({seconds} s); idle for {idle_seconds} s")
            samples = []
            t_end = time.monotonic() + idle_seconds
            while time.monotonic() < t_end:
                samples.append(proc_status(proc.pid).get("VmRSS", 0.0))
                time.sleep(0.25)
            cpu0 = proc_cpu(proc.pid)
            time.sleep(1.0)
            idle["idle_cpu_pct"] = round(100.0 * (proc_cpu(proc.pid) - cpu0), 1)
            status = proc_status(proc.pid)
            idle["rss_idle_mib"] = status.get("VmRSS")
            idle["rss_idle_max_mib"] = max(samples + [status.get("VmRSS", 0.0)])
            idle["hwm_mib"] = status.get("VmHWM")
            lg.stdin.write("go\n")
            lg.stdin.flush()

    log(f"realm setup + idle test: registering and logging in {users} users (2 scrypt hashes each)")
    result, _, sampler = run_loadgen(
        ["login", "--port", str(port), "--users", str(users), "--out", tokens, "--hold"],
        proc.pid, timeout=1200, on_line=on_line, stdin=subprocess.PIPE,
    )
    alive = proc.poll() is None
    code = stop(proc)
    idle.update(
        rss_start_mib=start_rss,
        server_alive=alive,
        exit_code=code,
        log_problems=log_problems(log_path),
        log=log_path,
    )
    template = os.path.join(work, "template")
    shutil.copytree(data_dir, template)
    return idle, template, tokens


# -- one measured run -------------------------------------------------------------


def measured_run(work, server, mode, connections, inflight, opts, template, tokens, suffix=""):
    name = f"{server}-{mode}-{connections}x{inflight}{suffix}"
    run_dir = os.path.join(work, name)
    os.makedirs(run_dir)
    if server == "realm":
        data_dir = os.path.join(run_dir, "data")
        shutil.copytree(template, data_dir)
        proc, port, log_path = start_realm(run_dir, data_dir, SERVER_CPU)
    else:
        proc, port, log_path = start_trivial(run_dir)
    try:
        lg_args = [
            "bench", "--port", str(port), "--connections", str(connections),
            "--inflight", str(inflight), "--duration", str(opts.duration),
            "--warmup", str(opts.warmup), "--drain-timeout", str(opts.drain_timeout),
        ]
        if server == "realm":
            lg_args += ["--tokens", tokens]
        timeout = opts.warmup + opts.duration + opts.drain_timeout + 120
        result, server_cpu, sampler = run_loadgen(lg_args, proc.pid, timeout)
        alive = proc.poll() is None
    finally:
        code = stop(proc)
    if server == "realm":
        result["stored_messages"] = count_messages(os.path.join(data_dir, "realm.sqlite3"))
    result.update(
        server=server,
        mode=mode,
        server_alive=alive,
        exit_code=code,
        server_cpu_s=round(server_cpu[0], 2) if server_cpu else None,
        server_cpu_pct=round(100.0 * server_cpu[0] / server_cpu[1], 1) if server_cpu else None,
        server_thread_cpu_pct=server_cpu[2] if server_cpu else None,
        **(server_cpu[3] if server_cpu else {"other_cpu_pct": None, "steal_pct": None}),
        server_hwm_mib=round(sampler.hwm, 1),
        server_rss_max_mib=round(sampler.max_rss, 1),
        log_problems=log_problems(log_path),
        log=log_path,
    )
    return result


def count_messages(path):
    """Rows in the realm's message table after it stopped (None if unreadable)."""
    import sqlite3

    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return db.execute("SELECT count(*) FROM messages").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error as e:
        log(f"cannot count the messages in {path}: {e}")
        return None


# -- report ------------------------------------------------------------------------


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def table(results):
    base = {(r["mode"], r["connections"], r["inflight"]): r for r in results if r["server"] == "trivial"}
    head = ("| server | mode | conns | in flight | msgs/s | p50 ms | p99 ms | vs trivial "
            "| errors | unanswered | srv CPU s | srv CPU % | srv peak RSS MiB | loadgen CPU % | other CPU % |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        b = base.get((r["mode"], r["connections"], r["inflight"]))
        ratio = r["msgs_per_s"] / b["msgs_per_s"] if b and b["msgs_per_s"] else None
        lines.append(
            f"| {r['server']} | {r['mode']} | {r['connections']} | {r['inflight']} "
            f"| {r['msgs_per_s']:,.0f} | {fmt(r['p50_ms'], '.2f')} | {fmt(r['p99_ms'], '.2f')} "
            f"| {fmt(ratio, '.2f')} | {r['errors']} | {r['unanswered']} "
            f"| {fmt(r['server_cpu_s'], '.2f')} | {fmt(r['server_cpu_pct'], '.0f')} "
            f"| {r['server_hwm_mib']:.1f} | {fmt(r['loadgen_cpu_pct'], '.0f')} "
            f"| {fmt(r['other_cpu_pct'], '.0f')} |"
        )
    return "\n".join(lines)


def machine_info():
    def sh(cmd, cwd=None):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"

    lscpu = sh(["lscpu"]).splitlines()
    model = next((l.split(":", 1)[1].strip() for l in lscpu if l.startswith("Model name")), "?")
    hyper = next((l.split(":", 1)[1].strip() for l in lscpu if l.startswith("Hypervisor vendor")), None)
    commit = code_version()
    try:
        import twisted
        tw = twisted.__version__
    except ImportError:
        tw = "?"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": sh(["nproc"]),
        "cpu": model + (f" ({hyper} guest)" if hyper else ""),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "twisted": tw,
        "commit": commit,
    }


def code_version():
    """The commit, and a digest of the server code (multirealm/*.py) as it is on disk."""
    import hashlib

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=REPO, timeout=10).stdout.strip() or "?"
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "multirealm"], capture_output=True,
                               text=True, cwd=REPO, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "?", ""
    digest = hashlib.sha256()
    folder = os.path.join(REPO, "multirealm")
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            with open(os.path.join(folder, name), "rb") as f:
                digest.update(name.encode() + b"\0" + f.read())
    return f"{commit}{' + uncommitted changes in multirealm/' if dirty else ''} (code sha256 {digest.hexdigest()[:12]})"


# -- main --------------------------------------------------------------------------


def parse_only(text):
    """'closed:200,pipelined:200:8,idle' -> set of (mode, n, k) and 'idle'."""
    wanted = set()
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if item == "idle":
            wanted.add("idle")
            continue
        parts = item.split(":")
        mode = {"c": "closed", "closed": "closed", "p": "pipelined", "pipelined": "pipelined"}.get(parts[0])
        if mode is None or len(parts) not in (2, 3):
            raise argparse.ArgumentTypeError(f"bad --only item {item!r}: use closed:N, pipelined:N[:K] or idle")
        n = int(parts[1])
        k = 1 if mode == "closed" else (int(parts[2]) if len(parts) == 3 else 8)
        wanted.add((mode, n, k))
    return wanted


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke check: short runs, few configs (< 1 minute)")
    parser.add_argument("--duration", type=float, help="measured seconds per run (default 5, quick 2)")
    parser.add_argument("--warmup", type=float, help="seconds of load before measuring (default 1, quick 0.5)")
    parser.add_argument("--drain-timeout", type=float, default=10.0,
                        help="seconds to wait, after a run, for replies still owed")
    parser.add_argument("--only", type=parse_only,
                        help="comma-separated configs: closed:N, pipelined:N[:K], idle "
                             "(e.g. --only pipelined:200:8,closed:200)")
    parser.add_argument("--servers", default="trivial,realm", help="comma-separated: trivial, realm")
    parser.add_argument("--idle-connections", type=int, help="connections of the idle test (default 1000, quick 100)")
    parser.add_argument("--idle-seconds", type=float, default=3.0, help="how long they stay idle before RSS is read")
    parser.add_argument("--retries", type=int, default=2,
                        help=f"run a configuration again (up to this many times) when other processes "
                             f"used more than {DISTURBED_PCT}%% of a core during its window")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, databases)")
    parser.add_argument("--json", help="also write every figure to this JSON file")
    opts = parser.parse_args(argv)

    if opts.duration is None:
        opts.duration = 2.0 if opts.quick else 5.0
    if opts.warmup is None:
        opts.warmup = 0.5 if opts.quick else 1.0
    configs = QUICK_CONFIGS if opts.quick else FULL_CONFIGS
    do_idle = True
    if opts.only:
        extra = [c for c in opts.only if c != "idle" and c not in configs]
        configs = [c for c in configs if c in opts.only] + sorted(extra)
        do_idle = "idle" in opts.only
    servers = [s.strip() for s in opts.servers.split(",") if s.strip()]
    for s in servers:
        if s not in ("trivial", "realm"):
            parser.error(f"unknown server {s!r}")
    idle_connections = opts.idle_connections or (100 if opts.quick else 1000)
    needed_users = max([n + 1 for _, n, _ in configs] + [2])
    users = max(needed_users, idle_connections if do_idle else 0)

    nofile = raise_nofile()
    if nofile < max(users, needed_users) + 100:
        log(f"warning: open-files limit is {nofile}, low for {users} connections")
    for tool in ("taskset",):
        if shutil.which(tool) is None:
            parser.error(f"{tool} not found")
    if (os.cpu_count() or 1) < 2:
        parser.error("needs 2 CPUs: the server runs on CPU 0, the loadgen on CPU 1")

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    # Explicitly, SIGINT too: a shell starts background jobs with SIGINT
    # ignored, and Python then installs no handler of its own.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_term)

    info = machine_info()
    work = tempfile.mkdtemp(prefix="multirealm-bench-")
    log(f"work folder {work}")
    results = []
    idle = None
    failures = []
    try:
        template = tokens = None
        if "realm" in servers and (do_idle or configs):
            try:
                idle, template, tokens = realm_setup(work, users, opts.idle_seconds)
            except RuntimeError as e:
                log(f"FAILED: realm setup: {e}")
                failures.append(f"realm setup / idle test: {e}")
                servers = [s for s in servers if s != "realm"]
            if not do_idle:
                idle = None
        for server in servers:
            for mode, n, k in configs:
                log(f"run: {server} {mode} {n} connections x {k} in flight "
                    f"({opts.warmup} s warm-up, {opts.duration} s measured)")
                r = None
                for attempt in range(1 + opts.retries):
                    try:
                        got = measured_run(work, server, mode, n, k, opts, template, tokens,
                                           suffix=f"-try{attempt + 1}" if attempt else "")
                    except RuntimeError as e:
                        log(f"FAILED: {e}")
                        failures.append(f"{server} {mode} {n}x{k}: {e}")
                        break
                    got["attempts"] = attempt + 1
                    if r is None or (got["other_cpu_pct"] or 0) < (r["other_cpu_pct"] or 0):
                        r = got
                    r["attempts"] = attempt + 1
                    if (got["other_cpu_pct"] or 0) <= DISTURBED_PCT:
                        break
                    log(f"  disturbed: other processes used {got['other_cpu_pct']:.0f}% of a core; "
                        + ("running it again" if attempt < opts.retries else "keeping the least disturbed run"))
                if r is None:
                    continue
                results.append(r)
                log(f"  {r['msgs_per_s']:,.0f} msgs/s, p50 {fmt(r['p50_ms'], '.2f')} ms, "
                    f"p99 {fmt(r['p99_ms'], '.2f')} ms, errors {r['errors']}, unanswered {r['unanswered']}, "
                    f"server CPU {fmt(r['server_cpu_pct'], '.0f')}%, loadgen CPU {fmt(r['loadgen_cpu_pct'], '.0f')}%")
    except KeyboardInterrupt as e:
        log(f"interrupted ({e or 'Ctrl-C'}): stopping every process")
        failures.append(f"interrupted ({e or 'Ctrl-C'}): the results are partial")
    finally:
        kill_all()
        # Keep the logs and databases of a run that failed; not of an interrupted one.
        if not opts.keep and not [f for f in failures if not f.startswith("interrupted")]:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"work folder kept: {work}")

    info["commit_at_end"] = code_version()
    print_report(info, opts, results, idle, failures, users)
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump({"machine": info, "results": results, "idle": idle, "failures": failures}, f, indent=1)
    if any(f.startswith("interrupted") for f in failures):
        return 130
    return 1 if failures else 0


def print_report(info, opts, results, idle, failures, users):
    out = []
    out.append(f"# multirealm benchmark, {info['date']}")
    out.append("")
    out.append(f"- machine: {info['nproc']} CPUs, {info['cpu']}, Linux {info['kernel']}, "
               f"Python {info['python']}, Twisted {info['twisted']}")
    out.append(f"- code: commit {info['commit']}")
    if info.get("commit_at_end") and info["commit_at_end"] != info["commit"]:
        out.append(f"- WARNING: the server code changed during the benchmark; at the end: {info['commit_at_end']}")
    out.append(f"- server pinned to CPU {SERVER_CPU} (taskset), load generator to CPU {LOADGEN_CPU}: "
               "they share this machine, one core each")
    out.append(f"- {opts.warmup} s warm-up, then {opts.duration} s measured per run; a fresh server process per run")
    out.append(f"- realm: rate_limit_burst = rate_limit_per_second = {RATE_LIMIT} in its realms.ini, "
               "so the limiter never refuses benchmark load; SQLite WAL, synchronous=FULL, group commit")
    out.append("- request: `send <token> u<i+1> <32 bytes of text>`; connection i is user u<i>")
    out.append("")
    if results:
        out.append(table(results))
        out.append("")
    split = [r for r in results if r["server"] == "realm" and r.get("server_thread_cpu_pct")]
    if split:
        out.append("Realm CPU by thread during the measured window (% of one core; both threads share CPU 0):")
        for r in split:
            parts = ", ".join(f"{name} {pct:.0f}%" for name, pct in
                              sorted(r["server_thread_cpu_pct"].items(), key=lambda kv: -kv[1]))
            out.append(f"- {r['mode']} {r['connections']}x{r['inflight']}: {parts}")
        out.append("")
    if idle:
        ok = idle.get("rss_idle_mib") is not None and idle["rss_idle_mib"] < 100
        out.append(
            f"Idle test: {idle.get('logged_in', 0)} of {idle['connections']} connections registered + "
            f"logged in (auth) in {idle.get('login_s', 0):.0f} s (setup, realm on CPUs {SETUP_CPUS}), then idle "
            f"{opts.idle_seconds:.0f} s: realm RSS {fmt(idle.get('rss_idle_mib'), '.1f')} MiB "
            f"(max sampled while idle {fmt(idle.get('rss_idle_max_mib'), '.1f')} MiB; "
            f"peak VmHWM incl. login {fmt(idle.get('hwm_mib'), '.1f')} MiB; "
            f"at start {fmt(idle.get('rss_start_mib'), '.1f')} MiB; "
            f"CPU while idle {fmt(idle.get('idle_cpu_pct'), '.0f')}%) -> "
            f"{'meets' if ok else 'MISSES'} the < 100 MiB target"
        )
        out.append("")
    # Targets.
    realm = {(r["mode"], r["connections"], r["inflight"]): r for r in results if r["server"] == "realm"}
    checks = []
    head = realm.get(("pipelined", 200, 8))
    if head:
        checks.append(f"durable private messages, 200 connections x 8 in flight: {head['ok_per_s']:,.0f} OK/s "
                      f"(target >= 30,000): {'MET' if head['ok_per_s'] >= 30000 else 'NOT MET'}")
    c200 = realm.get(("closed", 200, 1))
    if c200 and c200["p99_ms"] is not None:
        checks.append(f"p99 closed loop, 200 connections: {c200['p99_ms']:.2f} ms (target <= 20 ms): "
                      f"{'MET' if c200['p99_ms'] <= 20 else 'NOT MET'}")
    if idle and idle.get("rss_idle_mib") is not None:
        checks.append(f"RSS, {idle['connections']} idle logged-in connections: {idle['rss_idle_mib']:.1f} MiB "
                      f"(target < 100 MiB): {'MET' if idle['rss_idle_mib'] < 100 else 'NOT MET'}")
    if checks:
        out.append("Targets:")
        out.extend(f"- {c}" for c in checks)
        out.append("")
    # Problems.
    problems = []
    for r in results:
        tag = f"{r['server']} {r['mode']} {r['connections']}x{r['inflight']}"
        if r["errors"]:
            problems.append(f"{tag}: {r['errors']} error replies {r['error_codes']}; e.g. {r['error_samples'][:2]}")
        if r["unanswered"]:
            problems.append(f"{tag}: {r['unanswered']} requests never answered (of {r['sent_total']} sent)")
        if r["replies_total"] + r["unanswered"] != r["sent_total"]:
            problems.append(f"{tag}: sent {r['sent_total']}, got {r['replies_total']} replies")
        stored = r.get("stored_messages")
        if r["server"] == "realm" and stored is not None and stored != r["ok_total"]:
            problems.append(f"{tag}: {r['ok_total']} OK replies but {stored} messages in the database "
                            "after a clean stop")
        if r["closed_by_server"]:
            problems.append(f"{tag}: the server closed {r['closed_by_server']} connections")
        if not r["server_alive"]:
            problems.append(f"{tag}: the server died during the run (exit {r['exit_code']}); log {r['log']}")
        elif r["exit_code"] not in CLEAN_EXITS:
            problems.append(f"{tag}: the server exited with {r['exit_code']} on SIGTERM; log {r['log']}")
        if r["log_problems"]:
            problems.append(f"{tag}: {len(r['log_problems'])} suspicious log lines, first: {r['log_problems'][0]}")
        if r.get("attempts", 1) > 1:
            problems.append(f"{tag}: run {r['attempts']} times because other processes used the CPU; "
                            f"the table shows the least disturbed run")
        if r.get("other_cpu_pct") and r["other_cpu_pct"] > DISTURBED_PCT:
            problems.append(f"{tag}: other processes used {r['other_cpu_pct']:.0f}% of a core during the "
                            f"window (steal {r['steal_pct']:.0f}%): the figures may be disturbed")
        if r["loadgen_cpu_pct"] and r["loadgen_cpu_pct"] > 90:
            problems.append(f"{tag}: loadgen at {r['loadgen_cpu_pct']:.0f}% CPU: it may be the bottleneck here")
    if idle:
        if not idle["server_alive"]:
            problems.append(f"idle test: the realm died (exit {idle['exit_code']}); log {idle['log']}")
        elif idle["exit_code"] not in CLEAN_EXITS:
            problems.append(f"idle test: the realm exited with {idle['exit_code']} on SIGTERM; log {idle['log']}")
        if idle["log_problems"]:
            problems.append(f"idle test: {len(idle['log_problems'])} suspicious log lines, "
                            f"first: {idle['log_problems'][0]}")
    problems += [f"FAILED {f}" for f in failures]
    out.append("Problems seen: " + ("none" if not problems else ""))
    out.extend(f"- {p}" for p in problems)
    print("\n".join(out), flush=True)


if __name__ == "__main__":
    sys.exit(main())
