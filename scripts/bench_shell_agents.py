#!/usr/bin/env python3
"""Shell-agent episodes side by side: trawl and mini-swe-agent against the same scripted server.

Every episode has the same shape: the model (trawl-mock-server, replying after --delay-ms)
asks for `echo hi` --steps times, then submits. trawl runs its `swe` environment (a bundled
repository checked out per episode) with the `bash` scaffold on each sandbox; mini-swe-agent
2.4.6 runs its DefaultAgent with LitellmTextbasedModel on a LocalEnvironment (no isolation, no
evaluation), episodes in a thread pool as its batch runners do.

For each system and concurrency it reports model calls per second (and the share of the ideal
rate: every episode waiting only on the server, concurrency / delay), the CPU per model call of the system's own process and of the
whole machine (the scripted server's own CPU taken out), peak memory, and per-episode figures.
Run it on an otherwise idle machine; `scripts/bench-shell-agents.sh` builds and installs what
it needs and calls it.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICK = 100.0  # /proc counts CPU in USER_HZ ticks, always 100 a second


def machine_cpu():
    """CPU seconds the whole machine has spent, idle and iowait left out."""
    with open("/proc/stat") as f:
        v = [float(x) for x in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / TICK


def proc_cpu(pid, children=False):
    """CPU seconds of one live process (and, with `children`, its waited-for descendants)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    v = s[s.rfind(")") + 2 :].split()
    t = float(v[11]) + float(v[12])
    if children:
        t += float(v[13]) + float(v[14])
    return t / TICK


def proc_hwm_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Watch:
    """Polls a process for its own CPU and peak memory until it ends."""

    def __init__(self, pid):
        self.pid, self.cpu, self.hwm = pid, 0.0, 0
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop.is_set():
            c, h = proc_cpu(self.pid), proc_hwm_kib(self.pid)
            if c is not None:
                self.cpu = c
            if h is not None:
                self.hwm = max(self.hwm, h)
            time.sleep(0.1)

    def finish(self):
        self.stop.set()
        self.t.join()


class MockServer:
    def __init__(self, binary, delay_ms, steps, fence, log):
        self.log = log
        self.p = subprocess.Popen(
            [binary, "--port", "0", "--delay-ms", str(delay_ms), "--shell-steps", str(steps),
             "--fence", fence, "--log", str(log)],
            stdout=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        if "listening on" not in line:
            raise SystemExit(f"the scripted server did not start: {line!r}")
        self.url = line.split("listening on", 1)[1].strip()

    def calls(self):
        """How many requests came, and the seconds from the first to the last."""
        try:
            with open(self.log) as f:
                ts = [json.loads(line)["t"] for line in f if line.strip()]
        except OSError:
            return 0, 0.0
        return len(ts), (max(ts) - min(ts)) if ts else 0.0

    def cpu(self):
        return proc_cpu(self.p.pid) or 0.0

    def close(self):
        self.p.terminate()
        self.p.wait()


def trawl_config(system, url, concurrency, episodes, steps, test_cmd, engine_calls=None):
    docker = f'{{ type = "docker", engine_calls = {engine_calls} }}' if engine_calls else '{ type = "docker" }'
    sandbox = {
        "trawl-namespaces": '{ type = "local", isolation = "namespaces" }',
        "trawl-process": '{ type = "local", isolation = "process" }',
        "trawl-docker": docker,
    }[system]
    samples = max(1, -(-episodes // 6))  # six bundled tasks
    return f"""name = "bench-{system}-{concurrency}"
seed = 1
samples = {samples}
concurrency = {concurrency}
episode_timeout_secs = 3600

[[environments]]
type = "swe"
sandbox = {sandbox}
limits = {{ wall_time_secs = 30 }}
{f'test_cmd = "{test_cmd}"' if test_cmd else ""}

[[scaffolds]]
type = "bash"
step_limit = {steps + 2}

[[models]]
type = "openai"
name = "scripted"
base_url = "{url}"
model = "default"
max_concurrency = {concurrency}
request_timeout_secs = 600

[models.sampling]
max_tokens = 64
"""




def run_trawl(args, system, url, concurrency, episodes, work):
    cfg = work / "bench.toml"
    cfg.write_text(trawl_config(system, url, concurrency, episodes, args.steps, args.test_cmd,
                                 args.docker_engine_calls))
    out = work / "run"
    cmd = [str(args.trawl), "run", str(cfg), "--out", str(out)]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(work / "trawl.log", "w"))
    return p


def run_mini(args, url, concurrency, episodes, work):
    cmd = [str(args.mini_python), str(ROOT / "scripts" / "bench_mini_driver.py"),
           "--base-url", url, "--episodes", str(episodes), "--concurrency", str(concurrency),
           "--steps", str(args.steps), "--workdir", str(work)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(work / "mini.log", "w"))


def one(args, system, concurrency):
    episodes = max(args.min_episodes, args.episodes_per_slot * concurrency)
    if system.startswith("trawl"):
        # The six tasks times whole samples.
        episodes = 6 * max(1, -(-episodes // 6))
    fence = "mswea_bash_command" if system == "mini-swe-agent" else "bash"
    work = Path(tempfile.mkdtemp(prefix=f"bench-{system}-{concurrency}-"))
    server = MockServer(args.mock_server, args.delay_ms, args.steps, fence, work / "requests.jsonl")
    try:
        cpu0, s0 = machine_cpu(), server.cpu()
        t0 = time.monotonic()
        if system == "mini-swe-agent":
            p = run_mini(args, server.url, concurrency, episodes, work)
        else:
            p = run_trawl(args, system, server.url, concurrency, episodes, work)
        w = Watch(p.pid)
        # Wait, then take the process's own CPU and its descendants' from wait4's usage.
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.monotonic() - t0
        w.finish()
        p.returncode = os.waitstatus_to_exitcode(status)
        machine = machine_cpu() - cpu0 - (server.cpu() - s0)
        calls, window = server.calls()
        # Requests come from the first call to the last; the last reply takes one more delay.
        window += args.delay_ms / 1000.0
        log = (work / ("mini.log" if system == "mini-swe-agent" else "trawl.log")).read_text()[-2000:]
        ok = p.returncode == 0
        own = w.cpu
        tree = usage.ru_utime + usage.ru_stime
        ideal = concurrency / (args.delay_ms / 1000.0)
        row = {
            "system": system, "concurrency": concurrency, "episodes": episodes,
            "exit": p.returncode, "calls": calls, "wall_s": round(wall, 2),
            "calls_per_s": round(calls / window, 1) if window else 0.0,
            "calls_per_s_whole_process": round(calls / wall, 1) if wall else 0.0,
            "ideal_calls_per_s": round(ideal, 1),
            "own_cpu_ms_per_call": round(own * 1000 / calls, 2) if calls else None,
            "process_tree_cpu_ms_per_call": round(tree * 1000 / calls, 2) if calls else None,
            "machine_cpu_ms_per_call": round(machine * 1000 / calls, 2) if calls else None,
            "peak_rss_mib": round(w.hwm / 1024, 1),
            "rss_kib_per_episode_in_flight": round(w.hwm / concurrency, 1),
        }
        if not ok:
            row["log_tail"] = log
        return row
    finally:
        server.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", default="trawl-namespaces,trawl-process,trawl-docker,mini-swe-agent")
    ap.add_argument("--concurrency", default="1,8,32,128,512")
    ap.add_argument("--delay-ms", type=int, default=250)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--min-episodes", type=int, default=8)
    ap.add_argument("--episodes-per-slot", type=int, default=2)
    ap.add_argument("--trawl", type=Path, default=ROOT / "target/release/trawl")
    ap.add_argument("--mock-server", type=Path, default=ROOT / "target/release/trawl-mock-server")
    ap.add_argument("--mini-python", type=Path, default=ROOT / "target/bench-venv/bin/python")
    ap.add_argument("--test-cmd", default=None,
                    help="the SWE harness's test command (default: its own pytest; `true` leaves pytest out of the evaluation)")
    ap.add_argument("--docker-engine-calls", type=int, default=None,
                    help="the docker sandbox's `engine_calls` (default: trawl's own, 16)")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    ap.add_argument("--keep", action="store_true", help="keep each run's folder")
    args = ap.parse_args()
    rows = []
    print("| system | concurrency | episodes | model calls | wall (process) | calls/s (first to last call) | % of ideal | calls/s (whole process) | own CPU/call | tree CPU/call | machine CPU/call | peak RSS | RSS per episode in flight |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for system in args.systems.split(","):
        for c in [int(x) for x in args.concurrency.split(",")]:
            r = one(args, system, c)
            rows.append(r)
            pct = 100.0 * r["calls_per_s"] / r["ideal_calls_per_s"]
            flag = "" if r["exit"] == 0 else f" (exit {r['exit']})"
            print(f"| {system}{flag} | {c} | {r['episodes']} | {r['calls']} | {r['wall_s']} s | {r['calls_per_s']} | {pct:.0f}% | {r['calls_per_s_whole_process']} "
                  f"| {r['own_cpu_ms_per_call']} ms | {r['process_tree_cpu_ms_per_call']} ms | {r['machine_cpu_ms_per_call']} ms "
                  f"| {r['peak_rss_mib']} MiB | {r['rss_kib_per_episode_in_flight']} KiB |", flush=True)
            if r["exit"] != 0:
                print(r.get("log_tail", ""), file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
