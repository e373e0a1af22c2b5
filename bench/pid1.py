#!/usr/bin/env python3
"""PID-1 benchmarks: moltd beside tini, dumb-init and (where it applies) no
init at all, each measured in the same run on the same machine.

Usage: bench/pid1.py [--moltd PATH] [--runs N] [--idle-seconds S] [--json OUT]

Each figure is the median of --runs runs. Every PID 1 runs in a fresh PID
namespace (unshare --pid --fork --mount-proc), as in a container.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def peers(moltd):
    found = {"moltd": [moltd, "--"]}
    for name, path, args in [
        ("tini-static", "/usr/bin/tini-static", ["-s", "--"]),
        ("tini", "/usr/bin/tini", ["-s", "--"]),
        ("dumb-init", "/usr/bin/dumb-init", []),
    ]:
        if os.path.exists(path):
            found[name] = [path] + args
    return found


def in_namespace(argv):
    return ["unshare", "--pid", "--fork", "--mount-proc", "--"] + argv


def init_pid(unshare_pid, timeout=10):
    """Host pid of the namespace's PID 1 (the child of unshare)."""
    deadline = time.monotonic() + timeout
    path = f"/proc/{unshare_pid}/task/{unshare_pid}/children"
    while time.monotonic() < deadline:
        try:
            children = open(path).read().split()
            if children:
                return int(children[0])
        except FileNotFoundError:
            pass
        time.sleep(0.001)
    raise RuntimeError("PID 1 did not start")


def wait_for_child(pid, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = open(f"/proc/{pid}/task/{pid}/children").read().split()
        if children:
            return int(children[0])
        time.sleep(0.001)
    raise RuntimeError("child did not start")


def status_field(pid, field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class Namespace:
    """`init ARGV` as PID 1 of a new PID namespace; on exit, PID 1 is killed,
    which takes the whole namespace with it."""

    def __init__(self, init, argv):
        self.proc = subprocess.Popen(in_namespace(init + argv))
        self.pid = init_pid(self.proc.pid)

    def __enter__(self):
        return self

    def __exit__(self, *_):
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def idle_rss_kib(init, runs):
    values = []
    for _ in range(runs):
        with Namespace(init, ["sleep", "1000"]) as ns:
            wait_for_child(ns.pid)
            values.append(status_field(ns.pid, "VmRSS"))
    return statistics.median(values)


ORPHANS = r"""
import os, sys, time
n = int(sys.argv[1])
start = time.perf_counter()
for _ in range(n):
    pid = os.fork()
    if pid == 0:
        if os.fork() == 0:
            os._exit(0)
        os._exit(0)
    os.waitpid(pid, 0)
def zombies():
    count = 0
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                stat = open(f'/proc/{entry}/stat').read()
            except OSError:
                continue
            fields = stat.rsplit(')', 1)[1].split()
            if fields[0] == 'Z' and fields[1] == '1':
                count += 1
    return count
while zombies():
    time.sleep(0.001)
print(time.perf_counter() - start)
"""


def reap_seconds(init, runs, count):
    values = []
    for _ in range(runs):
        out = subprocess.run(
            in_namespace(init + [sys.executable, "-c", ORPHANS, str(count)]),
            capture_output=True, text=True, check=True,
        ).stdout
        values.append(float(out.strip().splitlines()[-1]))
    return statistics.median(values)


ECHO = r"""
import os, signal, sys
fifo = sys.argv[1]
out = os.open(fifo, os.O_WRONLY)
signal.signal(signal.SIGUSR1, lambda *_: os.write(out, b'x'))
open(sys.argv[2], 'w').write('ready')
while True:
    signal.pause()
"""


def signal_latency_us(init, rounds):
    """Median and p99 of kill(PID 1, USR1) until the child's handler answers."""
    with tempfile.TemporaryDirectory() as tmp:
        fifo = os.path.join(tmp, "fifo")
        ready = os.path.join(tmp, "ready")
        os.mkfifo(fifo)
        argv = [sys.executable, "-c", ECHO, fifo, ready]
        with Namespace(init, argv) if init else subprocess.Popen(argv) as running:
            reader = os.open(fifo, os.O_RDONLY)
            while not os.path.exists(ready):
                time.sleep(0.001)
            target = running.pid
            samples = []
            for _ in range(rounds):
                start = time.perf_counter_ns()
                os.kill(target, signal.SIGUSR1)
                os.read(reader, 1)
                samples.append((time.perf_counter_ns() - start) / 1000)
            if not init:
                running.kill()
            samples.sort()
            return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def startup_ms(init, runs):
    """Wall time of `init true` in a new PID namespace, minus nothing: the
    namespace cost is the same for every peer."""
    values = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(in_namespace(init + ["true"]), check=True)
        values.append((time.perf_counter() - start) * 1000)
    return statistics.median(values)


def idle_wakeups(init, seconds):
    def switches(pid):
        return status_field(pid, "voluntary_ctxt_switches") + status_field(pid, "nonvoluntary_ctxt_switches")

    with Namespace(init, ["sleep", str(seconds + 30)]) as ns:
        wait_for_child(ns.pid)
        before = switches(ns.pid)
        time.sleep(seconds)
        return switches(ns.pid) - before


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--moltd", default=os.path.join(HERE, "..", "target", "release", "moltd"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--orphans", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--idle-seconds", type=int, default=60)
    parser.add_argument("--json")
    args = parser.parse_args()

    results = {}
    inits = peers(os.path.abspath(args.moltd))
    for name, init in inits.items():
        row = {}
        row["idle_rss_kib"] = idle_rss_kib(init, args.runs)
        row["reap_s"] = reap_seconds(init, args.runs, args.orphans)
        row["signal_median_us"], row["signal_p99_us"] = signal_latency_us(init, args.rounds)
        row["startup_ms"] = startup_ms(init, args.runs * 10)
        row["idle_wakeups"] = idle_wakeups(init, args.idle_seconds)
        results[name] = row
        print(name, json.dumps(row), flush=True)
    direct = {}
    direct["signal_median_us"], direct["signal_p99_us"] = signal_latency_us(None, args.rounds)
    results["direct (no init)"] = direct
    print("direct", json.dumps(direct), flush=True)
    if args.json:
        json.dump(results, open(args.json, "w"), indent=2)


if __name__ == "__main__":
    main()
