import os, shutil, sys, tempfile, time
import cluster, run
from run import SERVER_CPU

def ctx(pid):
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        d = {}
        for l in open(f"/proc/{pid}/task/{tid}/status"):
            if "ctxt" in l:
                k, v = l.split(":"); d[k] = int(v)
        f = open(f"/proc/{pid}/task/{tid}/stat").read().rsplit(")", 1)[1].split()
        d["utime"] = int(f[11]); d["stime"] = int(f[12])
        out[tid] = d
    return out

def main():
    only = run.parse_only(sys.argv[1] if len(sys.argv) > 1 else "pipelined:200:8")
    run.raise_nofile()
    work = tempfile.mkdtemp(prefix="mr-ctx-")
    try:
        users = max(n for _, n, _ in only) + 1
        template, tokens = cluster.setup(work, "sqlite", users, None)
        for mode, n, k in only:
            run_dir = os.path.join(work, f"{mode}{n}{k}"); data_dir = os.path.join(run_dir, "data")
            os.makedirs(run_dir); shutil.copytree(template, data_dir)
            realm = cluster.Realm(run_dir, data_dir); proc = realm.start(SERVER_CPU)
            marks = {}
            import subprocess
            perf=[None]
            def also():
                marks[len(marks)] = ctx(proc.pid)
                if perf[0] is None:
                    perf[0]=subprocess.Popen(["perf","stat","-p",str(proc.pid),"-e","syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto,syscalls:sys_enter_fdatasync,syscalls:sys_enter_pwrite64,syscalls:sys_enter_pread64","-o","/tmp/exp/perf-%s.txt"%mode])
                else:
                    perf[0].send_signal(2); perf[0].wait()
                return {}
            try:
                result, _, _ = run.run_loadgen(
                    ["bench", "--port", str(realm.port), "--connections", str(n), "--inflight", str(k),
                     "--duration", "5", "--warmup", "1", "--drain-timeout", "10", "--tokens", tokens]
                    ,
                    proc.pid, 70, also=also)
            finally:
                realm.stop()
            a, b = marks[0], marks[1]
            msgs = result["msgs_per_s"] * 5
            print(mode, n, k, f"{result['msgs_per_s']:,.0f} msgs/s", msgs); print(open("/tmp/exp/perf-%s.txt"%mode).read())
            for tid in b:
                if tid not in a: continue
                d = {key: b[tid][key] - a[tid][key] for key in b[tid]}
                if d["utime"] + d["stime"] < 5: continue
                print(f"  tid {tid}: vol/msg {d['voluntary_ctxt_switches']/msgs:.3f} nonvol/msg {d['nonvoluntary_ctxt_switches']/msgs:.3f}"
                      f" user {d['utime']*1e4/msgs:.2f}us sys {d['stime']*1e4/msgs:.2f}us")
    finally:
        run.kill_all(); shutil.rmtree(work, ignore_errors=True)
main()
