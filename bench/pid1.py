#!/usr/bin/env python3
"""PID-1 benchmarks: moltd beside tini, dumb-init and (where it applies) no
init at all, each measured in the same run on the same machine.

Usage: bench/pid1.py [--moltd PATH] [--runs N] [--idle-seconds S] [--json OUT]

This covers single-command mode only; bench/bench.py (run by bench/run.sh)
uses these functions for every item of BENCHMARKS.md.

Each figure is the median of --runs runs. Every PID 1 runs in a fresh PID
namespace (unshare --pid --fork --mount-proc), as in a container.
"""

import argparse
import contextlib
import ctypes
import json
import os
import shutil
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
    """argv as PID 1 of a new PID namespace; if unshare dies, so does PID 1,
    and with it everything in the namespace."""
    return ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--"] + argv


def die_with_parent():
    """Popen's preexec_fn: SIGKILL when the harness dies, however it dies."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


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


def status_field(pid, field, task=None):
    for line in open(f"/proc/{pid}/task/{task or pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def children(pid):
    """Pids of all children of every thread of `pid`."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        found += [int(c) for c in open(f"/proc/{pid}/task/{task}/children").read().split()]
    return found


def comm(pid):
    return open(f"/proc/{pid}/comm").read().strip()


def wait_for(predicate, timeout=30, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


def switches(pid):
    """Context switches of every thread of `pid` so far."""
    return sum(
        status_field(pid, "voluntary_ctxt_switches", task) + status_field(pid, "nonvoluntary_ctxt_switches", task)
        for task in os.listdir(f"/proc/{pid}/task")
    )


def service_dir(root, count):
    """`count` runit-style services under `root`, each a `sleep`."""
    os.makedirs(root)
    for i in range(count):
        os.makedirs(f"{root}/s{i}")
        with open(f"{root}/s{i}/run", "w") as f:
            f.write("#!/bin/sh\nexec sleep 100000\n")
        os.chmod(f"{root}/s{i}/run", 0o755)
    return root


def supervisors(pid):
    """PID 1 and its helper processes that are not services (runsvdir's runsv)."""
    return [pid] + [c for c in children(pid) if comm(c) == "runsv"]


def services_rss_kib(supervisor, count, runs):
    """Idle VmRSS and RssAnon of PID 1, and VmRSS of PID 1 plus its runsv
    helpers, with `count` services up; `supervisor + [DIR]` is PID 1's command line."""
    pid1, anon, tree = [], [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            with Namespace(supervisor + [service_dir(f"{tmp}/sv", count)], [], env=own_control(tmp), cold=True) as ns:
                services_up(ns.pid, count)
                pid1.append(status_field(ns.pid, "VmRSS"))
                anon.append(status_field(ns.pid, "RssAnon"))
                tree.append(sum(status_field(p, "VmRSS") for p in supervisors(ns.pid)))
    return statistics.median(pid1), statistics.median(anon), statistics.median(tree)


def own_control(tmp):
    """The environment with a control socket in `tmp`: moltd --services
    listens on it as in a container, instead of finding the machine's
    /run/moltd taken."""
    return dict(os.environ, MOLTD_CONTROL=f"{tmp}/control.sock")


def services_up(pid, count):
    """Waits until `count` services' `sleep` runs under PID 1 (directly, or below runsv)."""
    def sleeping():
        below = children(pid)
        for c in list(below):
            if comm(c) == "runsv":
                below += children(c)
        return sum(comm(c) == "sleep" for c in below if os.path.exists(f"/proc/{c}")) >= count

    wait_for(sleeping, what=f"{count} services")
    time.sleep(0.5)  # let start-up allocations settle


def uncached(program):
    """Drops the file of `program` from the page cache, so that the next exec
    reads it from disk as on a host that has not run it yet. How many of a
    binary's file pages a process maps depends on how the page cache holds
    them: a page fault maps up to 64 KiB of cached neighbours, and a file
    just linked or copied is cached whole, so without this two copies of one
    build differ by hundreds of KiB. Pages that a running process maps stay."""
    fd = os.open(shutil.which(program), os.O_RDONLY)
    try:
        os.fsync(fd)  # dirty pages are not dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


class Namespace:
    """`init ARGV` as PID 1 of a new PID namespace; on exit, PID 1 is killed,
    which takes the whole namespace with it. `cold`: PID 1's binary is
    dropped from the page cache first (see `uncached`), for memory figures."""

    def __init__(self, init, argv, env=None, stdout=None, cold=False):
        if cold:
            uncached(init[0])
        self.proc = subprocess.Popen(in_namespace(init + argv), env=env, stdout=stdout, stderr=stdout,
                                     preexec_fn=die_with_parent)
        self.pid = init_pid(self.proc.pid)

    def __enter__(self):
        return self

    def __exit__(self, *_):
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def idle_rss_kib(init):
    """[(VmRSS, RssAnon)] of PID 1 with one child sleeping. RssAnon is the
    private part; the rest is file pages (binary, libc) shared with any other
    process mapping the same files."""
    with Namespace(init, ["sleep", "1000"], cold=True) as ns:
        wait_for_child(ns.pid)
        time.sleep(0.2)
        return [(status_field(ns.pid, "VmRSS"), status_field(ns.pid, "RssAnon"))]


# Makes `n` zombies at once and times PID 1 reaping them: a middle process
# forks n children that exit at once and holds them as zombies; when it exits
# they are all re-parented to PID 1 together. The clock runs from telling it
# to exit until PID 1 has no child left but this script (zombies are listed
# in /proc/1/task/1/children until reaped).
ORPHANS = r"""
import os, sys, time
n = int(sys.argv[1])
go_r, go_w = os.pipe()
middle = os.fork()
if middle == 0:
    for _ in range(n):
        if os.fork() == 0:
            os._exit(0)
    os.read(go_r, 1)
    os._exit(0)
held = f'/proc/{middle}/task/{middle}/children'
while len(open(held).read().split()) < n:
    time.sleep(0.01)
start = time.perf_counter()
os.write(go_w, b'x')
os.waitpid(middle, 0)
me = [str(os.getpid())]
while open('/proc/1/task/1/children').read().split() != me:
    time.sleep(0.0002)
print(time.perf_counter() - start)
"""


def reap_seconds(init, count):
    """[seconds] for PID 1 to reap `count` orphans re-parented at once."""
    out = subprocess.run(
        in_namespace(init + [sys.executable, "-c", ORPHANS, str(count)]),
        capture_output=True, text=True, check=True, preexec_fn=die_with_parent,
    ).stdout
    return [float(out.strip().splitlines()[-1])]


# The child answers each USR1 with a byte on the fifo. It takes USR1 with
# sigwait, not a handler: a handler that writes first and returns later can
# be re-entered by the next round's signal, and under load nests until
# Python's recursion limit.
ECHO = r"""
import os, signal, sys
fifo = sys.argv[1]
out = os.open(fifo, os.O_WRONLY)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
open(sys.argv[2], 'w').write('ready')
while True:
    signal.sigwait({signal.SIGUSR1})
    os.write(out, b'x')
"""


def signal_latency_us(init, rounds):
    """µs of each of `rounds` round trips: kill(PID 1, USR1) until the child
    answers (init None: kill the child directly)."""
    with tempfile.TemporaryDirectory() as tmp:
        fifo = os.path.join(tmp, "fifo")
        ready = os.path.join(tmp, "ready")
        os.mkfifo(fifo)
        argv = [sys.executable, "-c", ECHO, fifo, ready]
        with Namespace(init, argv) if init else subprocess.Popen(argv, preexec_fn=die_with_parent) as running:
            try:
                reader = os.open(fifo, os.O_RDONLY)
                while not os.path.exists(ready):
                    time.sleep(0.001)
                samples = []
                for _ in range(rounds):
                    start = time.perf_counter_ns()
                    os.kill(running.pid, signal.SIGUSR1)
                    if not os.read(reader, 1):
                        raise RuntimeError("the signalled child died")
                    samples.append((time.perf_counter_ns() - start) / 1000)
            finally:
                if not init:
                    running.kill()
            return samples


def startup_ms(init):
    """[ms] of `init true` in a new PID namespace, wall time; the namespace
    costs the same for every peer."""
    start = time.perf_counter()
    subprocess.run(in_namespace(init + ["true"]), check=True)
    return [(time.perf_counter() - start) * 1000]


def idle_wakeups(pids, seconds):
    """Context switches over the same `seconds` window of each entry, a list
    of pids (all threads, summed): every process is idle at once, so one
    window serves them all."""
    def total(group):
        return sum(switches(pid) for pid in group)

    before = {name: total(group) for name, group in pids.items()}
    time.sleep(seconds)
    return {name: total(group) - before[name] for name, group in pids.items()}


def interleaved(inits, runs, measure):
    """`runs` rounds, each measuring every init once in turn, so that a burst
    of background load lands on all of them alike; all samples by name."""
    samples = {name: [] for name in inits}
    for _ in range(runs):
        for name, init in inits.items():
            samples[name] += measure(init)
    return samples


def single_command_rows(inits, args):
    """Items 1 (single-command RSS) to 4 for each init, and the direct signal
    round trip; idle wake-ups are left to the caller's shared window."""
    with_direct = dict(inits, **{"direct (no init)": None})
    rss = interleaved(inits, args.runs, idle_rss_kib)
    reap = interleaved(inits, args.reap_runs, lambda init: reap_seconds(init, args.orphans))
    trips = interleaved(with_direct, args.runs, lambda init: signal_latency_us(init, args.rounds // args.runs))
    startup = interleaved(inits, args.runs * 10, startup_ms)
    rows = {}
    for name in with_direct:
        samples = sorted(trips[name])
        rows[name] = {"signal_median_us": statistics.median(samples),
                      "signal_p99_us": samples[int(len(samples) * 0.99) - 1]}
        if name in inits:
            rows[name].update(idle_rss_kib=statistics.median(r for r, _ in rss[name]),
                              idle_anon_kib=statistics.median(a for _, a in rss[name]),
                              reap_s=statistics.median(reap[name]),
                              startup_ms=statistics.median(startup[name]))
    return rows


def idle_single_command(stack, inits, seconds):
    """Starts `init sleep` for each init inside `stack`; returns [PID 1] by name."""
    pids = {}
    for name, init in inits.items():
        ns = stack.enter_context(Namespace(init, ["sleep", str(seconds + 600)]))
        wait_for_child(ns.pid)
        pids[name] = [ns.pid]
    return pids


def add_arguments(parser):
    parser.add_argument("--moltd", default=os.path.join(HERE, "..", "target", "release", "moltd"))
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (median)")
    parser.add_argument("--orphans", type=int, default=10000)
    parser.add_argument("--reap-runs", type=int, default=3, help="runs of the (slow) reaping figure")
    parser.add_argument("--rounds", type=int, default=2000, help="signal round trips, split over --runs")
    parser.add_argument("--idle-seconds", type=int, default=60)
    parser.add_argument("--json")


def main():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args()
    inits = peers(os.path.abspath(args.moltd))
    results = single_command_rows(inits, args)
    with contextlib.ExitStack() as stack:
        pids = idle_single_command(stack, inits, args.idle_seconds)
        for name, count in idle_wakeups(pids, args.idle_seconds).items():
            results[name]["idle_wakeups"] = count
    print(json.dumps(results, indent=2))
    if args.json:
        json.dump(results, open(args.json, "w"), indent=2)


if __name__ == "__main__":
    main()
