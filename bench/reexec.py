"""Item 13: PID 1 replaces itself again and again (issue 17).

moltd runs as PID 1 of `moltd --services` with 10 services: the payload
app of feed.py on a held socket (a `listen` file) under loss.py's load,
and 9 `sleep` services. `moltd self-update` then alternates two release
builds of the same tree, the second built with MOLTD_BUILD_VERSION (so it
says a newer version; going back is `--force`). Each self-update is over
when its client has the answer, which the new PID 1 gives once it resumed;
the next starts at once. Measured: whether every service kept its pid and
is `run` after every update, the requests the load lost, and the gap PID 1
logs at each resume: from the freeze of its state, just before `execve`,
to the new program's loop (during which nothing is reaped or forwarded).
"""

import os
import re
import shutil
import statistics
import subprocess
import sys
import time

from feed import build_release
from loss import Load, moltd_services, summary
from pid1 import Namespace, wait_for
from update import free_port, install

GAP = re.compile(r"resumed moltd (\S+) \(from (\S+)\): (\d+) programs kept, ([0-9.]+) ms from freeze to loop")


def statuses(moltd, control):
    """{service: (state, pid)} from `moltd status`."""
    out = subprocess.run([moltd, "--control", control, "status"], capture_output=True, text=True).stdout
    rows = [line.split() for line in out.splitlines()[1:]]
    return {row[0]: (row[1], row[3]) for row in rows if len(row) > 3}


def run(first, second, tmp, rounds, rate):
    """{"rounds", "failed_updates", "pids_changed", "not_run", "load", "gap_ms": {p50, p99, max}}."""
    os.makedirs(tmp)
    port = free_port()
    install(build_release(tmp, "1.0.0", None), f"{tmp}/app", "v1.0.0")
    services = moltd_services(tmp, port, True)
    for n in range(9):
        os.makedirs(f"{services}/idle{n}")
        with open(f"{services}/idle{n}/run", "w") as f:
            f.write("#!/bin/sh\nexec sleep 100000\n")
        os.chmod(f"{services}/idle{n}/run", 0o755)
    # Each build copied once: the self-update keeps its own copy anyway.
    builds = [shutil.copy(first, f"{tmp}/moltd-a"), shutil.copy(second, f"{tmp}/moltd-b")]
    control = f"{tmp}/control.sock"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MOLTD_", "SSL_CERT_", "GITHUB_", "GH_"))}
    env.update(MOLTD_APP_DIR=f"{tmp}/app", MOLTD_CONTROL=control, MOLTD_LOG="info")
    result = {"rounds": rounds, "failed_updates": [], "pids_changed": 0, "not_run": 0}
    with open(f"{tmp}/moltd.log", "w") as log, Namespace([builds[0], "--services", services], [], env=env,
                                                         stdout=log):
        wait_for(lambda: len(statuses(builds[0], control)) == 10
                 and all(s == "run" for s, _ in statuses(builds[0], control).values()), 30, "10 services")
        load = Load(port, rate)
        wait_for(lambda: load.version() is not None, 30, "the app")
        before = statuses(builds[0], control)
        began = time.monotonic()
        for n in range(rounds):
            target = builds[(n + 1) % 2]
            args = [builds[0], "--control", control, "self-update"] + (["--force"] if target == builds[0] else [])
            done = subprocess.run(args + [target], capture_output=True, text=True)
            if done.returncode != 0:
                result["failed_updates"].append(done.stderr.strip())
            now = statuses(builds[0], control)
            result["pids_changed"] += sum(1 for name, (_, pid) in before.items() if now.get(name, ("", ""))[1] != pid)
            result["not_run"] += sum(1 for state, _ in now.values() if state != "run")
        ended = time.monotonic()
        result["seconds"] = ended - began
        result["load"] = summary(load.stop(), began, ended)
    gaps = sorted(float(m.group(4)) for m in GAP.finditer(open(f"{tmp}/moltd.log").read()))
    quantiles = statistics.quantiles(gaps, n=100, method="inclusive") if len(gaps) > 1 else gaps * 99
    result["resumes"] = len(gaps)
    result["gap_ms"] = {"p50": quantiles[49], "p99": quantiles[98], "max": gaps[-1]} if gaps else None
    print(f"  self-updates: {result}", flush=True, file=sys.stderr)
    return result


def tables(r, rate):
    """Item 13 as Markdown."""
    e, g = r["load"], r["gap_ms"]
    return [f"### {r['rounds']} self-updates alternating two builds, 10 services, {rate:g} requests/s (item 13)", "",
            "| self-updates (failed) | resumes logged | service pids changed | not `run` after | requests | ok "
            "| refused / reset / timed out / other | gap freeze to loop p50 / p99 / max ms | seconds |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| {r['rounds']} ({len(r['failed_updates'])}) | {r['resumes']} | {r['pids_changed']} | {r['not_run']} "
            f"| {e['requests']:,} | {e['ok']:,} | {e['refused']} / {e['reset']} / {e['timeout']} / {e['other']} "
            f"| {g['p50']:.1f} / {g['p99']:.1f} / {g['max']:.1f} | {r['seconds']:.1f} |", ""]
