#!/usr/bin/env python3
"""Every benchmark of BENCHMARKS.md in one run: moltd beside tini, tini-static,
dumb-init, runsvdir and the original container's update order, each figure
the median of several runs. Prints a table (Markdown) and writes JSON.

Usage: bench/bench.py [--quick] [--moltd PATH] [--moltd-static PATH] [--json OUT] [...]
(bench/run.sh installs the peers, builds moltd and calls this.)
"""

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import biglist
import footprint
import loss
import reexec
import pid1
import update
from feed import Feed

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET = os.path.join(HERE, "..", "target")
SERVICES = 10


def machine():
    def first(path, key):
        return next((line.split(":", 1)[1].strip() for line in open(path) if line.startswith(key)), "?")

    cpu = first("/proc/cpuinfo", "model name")
    commit = subprocess.run(["git", "-C", HERE, "describe", "--always", "--dirty"],
                            capture_output=True, text=True).stdout.strip()
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
            "memory": first("/proc/meminfo", "MemTotal"), "moltd_commit": commit,
            "load_at_start": os.getloadavg()}


def sizes(args):
    """Item 6: bytes on disk of each binary."""
    files = {"moltd (dynamic)": args.moltd, "moltd (static)": args.moltd_static or "",
             f"moltd {args.baseline_label} (dynamic)": args.moltd_baseline or "",
             f"moltd {args.baseline_label} (static)": args.moltd_static_baseline or "",
             "tini": "/usr/bin/tini", "tini-static": "/usr/bin/tini-static",
             "dumb-init": "/usr/bin/dumb-init", "runsvdir": "/usr/bin/runsvdir", "runsv": "/usr/bin/runsv"}
    return {name: os.path.getsize(path) for name, path in files.items() if os.path.exists(path)}


def builds(args):
    """moltd's builds to measure, by name: the dynamic and static builds, and
    those of the baseline when given."""
    found = {"moltd": args.moltd, "moltd (static)": args.moltd_static,
             f"moltd {args.baseline_label}": args.moltd_baseline,
             f"moltd {args.baseline_label} (static)": args.moltd_static_baseline}
    return {name: path for name, path in found.items() if path}


def idle_window(args, inits, tmp, feed, archives):
    """Item 5: one window of --idle-seconds over every idle PID 1 at once:
    single-command mode, services mode, and the idle updater (PID 1, and the
    agent apart where a build has one)."""
    with contextlib.ExitStack() as stack:
        pids = pid1.idle_single_command(stack, inits, args.idle_seconds)
        for name, command in (("moltd --services", [args.moltd, "--services"]), ("runsvdir", ["runsvdir"])):
            folder = f"{tmp}/idle-{name[:5]}"
            ns = stack.enter_context(pid1.Namespace(command + [pid1.service_dir(f"{folder}/sv", SERVICES)], [],
                                                    env=pid1.own_control(folder)))
            pid1.services_up(ns.pid, SERVICES)
            pids[f"{name} ({SERVICES} services), PID 1"] = [ns.pid]
        helpers = pid1.supervisors(pids[f"runsvdir ({SERVICES} services), PID 1"][0])
        pids[f"runsvdir + its {len(helpers) - 1} runsv"] = helpers
        for i, (name, binary) in enumerate(builds(args).items()):
            pid, stop = update.updater_idle(binary, feed, f"{tmp}/idle-updater-{i}", archives["small"], SERVICES)
            stack.callback(stop)
            label = name.replace("moltd", f"moltd --services ({SERVICES} services) + updater idle", 1)
            pids[f"{label}, PID 1"] = [pid]
            agent = update.agent_of(pid)
            if agent:
                pids[f"{label}, agent"] = [agent]
        return pid1.idle_wakeups(pids, args.idle_seconds)


def run(args, tmp):
    results = {"machine": machine(), "settings": vars(args).copy()}
    moltd = args.moltd
    inits = pid1.peers(moltd)
    supervisors = {"moltd": [moltd, "--services"]}
    for name, binary in builds(args).items():
        inits[name] = [binary, "--"]
        supervisors[name] = [binary, "--services"]
    supervisors["runsvdir"] = ["runsvdir"]

    def want(*items):
        return not args.only or bool(set(items) & set(args.only))

    # Items 12 and 13 take long (--loss-rounds x 8 events; --reexec-rounds
    # self-updates): only when asked for.
    def asked(item):
        return bool(args.only) and item in args.only

    if want(1, 2, 3, 4):
        step("items 1-4: single-command mode")
        results["single_command"] = pid1.single_command_rows(inits, args)
    if want(1):
        step("item 1: services mode RSS")
        results["services_rss_kib"] = {
            name: dict(zip(("pid1", "pid1_anon", "with_helpers"), pid1.services_rss_kib(command, SERVICES, args.runs)))
            for name, command in supervisors.items()
        }
    if want(6):
        results["binary_bytes"] = sizes(args)

    step("building release archives")
    archives = update.make_archives(tmp, args.payload_mb if want(7, 8) else [])
    feed = Feed()
    try:
        if want(1):
            step("item 1: idle updater RSS")
            results["updater_idle_rss_kib"] = {
                name: update.updater_idle_rss_kib(binary, feed, f"{tmp}/rss", archives["small"], SERVICES, args.runs)
                for name, binary in builds(args).items()}
        if want(11):
            step("item 11: PID 1 beside tini-static, idle with a release source")
            results["footprint"] = {"idle": footprint.idle(builds(args), feed, f"{tmp}/footprint", archives["small"],
                                                           args.runs)}
        if want(5):
            step(f"item 5: idle wake-ups over {args.idle_seconds} s")
            results["idle_wakeups"] = idle_window(args, inits, tmp, feed, archives)
        if want(9):
            step("item 9: idle poll")
            results["idle_poll"] = update.idle_poll(moltd, feed, f"{tmp}/poll", archives["small"], args.runs)
        if want(8):
            step("item 8: fetch pipeline")
            big = max(args.payload_mb)
            results["fetch_pipeline"] = update.fetch_pipeline(
                {name: binary for name, binary in builds(args).items() if "static" not in name},
                feed, f"{tmp}/fetch", archives[big]["2.0.0"], args.update_runs)
        if want(7):
            step(f"item 7: update downtime at {args.feed_rate} MB/s")
            feed.rate = args.feed_rate * 1e6
            results["downtime_s"] = downtime(args, tmp, feed, archives)
        if asked(12):
            step(f"item 12: requests lost during {args.loss_rounds} updates and crash restarts each")
            feed.rate = None
            results["loss"] = loss.run(moltd, feed, f"{tmp}/loss", args.loss_rounds, args.loss_rate)
        if asked(13):
            step(f"item 13: {args.reexec_rounds} self-updates alternating two builds")
            results["reexec"] = reexec.run(moltd, args.moltd_second, f"{tmp}/reexec", args.reexec_rounds,
                                           args.loss_rate)
    finally:
        feed.close()
    if want(10):
        step("item 10: a release list of 10 pages x 10,000 releases")
        results["big_list"] = biglist.big_list(moltd, f"{tmp}/biglist")
    if want(11):
        step("item 11: PID 1 before and after a check of a 10,000-release list")
        results.setdefault("footprint", {})["big_list"] = footprint.big_list(builds(args), f"{tmp}/footprint-list",
                                                                              args.runs)
    return results


def downtime(args, tmp, feed, archives):
    measure = {"original order": lambda d, a: update.downtime_original(feed, d, a)}
    for name, binary in builds(args).items():
        if "static" not in name:
            measure[name] = lambda d, a, binary=binary: update.downtime_moltd(binary, feed, d, a)
    table = {}
    for mb in args.payload_mb:
        for name, run in measure.items():
            samples = []
            for i in range(args.update_runs):
                folder = f"{tmp}/down-{name[:5]}-{mb}-{i}"
                os.makedirs(folder)
                samples.append(run(folder, archives[mb]))
                shutil.rmtree(folder)
            table.setdefault(name, {})[f"{mb} MB"] = statistics.median(samples)
            print(f"  {name}, {mb} MB: {samples}", file=sys.stderr, flush=True)
    return table


def step(what):
    print(f"[{time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)


def fmt(value, digits=1):
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:,.{digits}f}"


def esc(name):
    """A name as a Markdown table cell."""
    return name.replace("|", "\\|")


def table(r):
    """The results as Markdown tables, in the order of BENCHMARKS.md (only the
    sections that were run)."""
    s = r["settings"]
    out = []
    if "single_command" in r:
        out += ["### PID 1, single-command mode (items 1-4)", "",
                f"| init | idle RSS KiB | of it anonymous KiB | reap {s['orphans']:,} orphans ms "
                "| signal median µs | signal p99 µs | start-up ms |",
                "|---|---|---|---|---|---|---|"]
        for name, row in r["single_command"].items():
            out.append(f"| {name} | {fmt(row.get('idle_rss_kib'), 0)} | {fmt(row.get('idle_anon_kib'), 0)} "
                       f"| {fmt(row.get('reap_s') and row['reap_s'] * 1000)} "
                       f"| {fmt(row['signal_median_us'])} | {fmt(row['signal_p99_us'])} | {fmt(row.get('startup_ms'), 2)} |")
        out.append("")
    if "services_rss_kib" in r:
        out += [f"### Services mode, {SERVICES} services, and the idle updater (item 1)", "",
                "| supervisor | PID 1 RSS KiB | of it anonymous KiB | with its helper processes KiB |",
                "|---|---|---|---|"]
        for name, row in r["services_rss_kib"].items():
            out.append(f"| {name} | {fmt(row['pid1'], 0)} | {fmt(row['pid1_anon'], 0)} | {fmt(row['with_helpers'], 0)} |")
        for name, u in r["updater_idle_rss_kib"].items():
            agent = u["agent"]["kib"]
            out.append(f"| {name}, {SERVICES} services + updater idle | {fmt(u['pid1']['kib'], 0)} "
                       f"| {fmt(u['pid1']['anon_kib'], 0)} | {fmt(agent and u['pid1']['kib'] + agent, 0)} |")
        out.append("")
    if "idle_wakeups" in r:
        out += [f"### Idle wake-ups over {s['idle_seconds']} s (item 5)", "",
                "| process | context switches |", "|---|---|"]
        out += [f"| {name} | {fmt(count, 0)} |" for name, count in r["idle_wakeups"].items()] + [""]
    if "binary_bytes" in r:
        out += ["### Binary size (item 6)", "", "| binary | bytes |", "|---|---|"]
        out += [f"| {name} | {size:,} |" for name, size in r["binary_bytes"].items()] + [""]
    if "downtime_s" in r:
        sizes_mb = [f"{mb} MB" for mb in s["payload_mb"]]
        out += [f"### Update downtime, feed throttled to {s['feed_rate']:g} MB/s (item 7)", "",
                "| updater | " + " | ".join(f"{mb} payload, s" for mb in sizes_mb) + " |",
                "|---|" + "---|" * len(sizes_mb)]
        for name, row in r["downtime_s"].items():
            out.append(f"| {name} | " + " | ".join(fmt(row[mb], 3) for mb in sizes_mb) + " |")
        out.append("")
    if "fetch_pipeline" in r:
        out += [f"### Fetch pipeline, {max(s['payload_mb'])} MB payload from loopback (item 8)", "",
                "| pipeline | seconds | MB/s of archive |", "|---|---|---|"]
        out += [f"| {esc(name)} | {fmt(row['s'], 2)} | {fmt(row['mb_per_s'])} |"
                for name, row in r["fetch_pipeline"].items()] + [""]
    if "idle_poll" in r:
        out += ["### One idle poll, nothing new (item 9)", "",
                "| check | bytes on the socket | CPU ms |", "|---|---|---|"]
        out += [f"| {name} | {fmt(row['bytes'], 0)} | {fmt(row['cpu_ms'], 2)} |" for name, row in r["idle_poll"].items()]
        out += [""]
    if "footprint" in r:
        out += footprint.tables(r["footprint"])
    if "big_list" in r:
        out += ["### A release list of 10 pages x 10,000 releases, one check (item 10)", "",
                "| policy | CPU s | peak RSS KiB | RSS after KiB | state.json bytes |", "|---|---|---|---|---|"]
        out += [f"| {name} | {fmt(row['cpu_s'], 2)} | {fmt(row['hwm_kib'], 0)} | {fmt(row['rss_kib'], 0)} | "
                f"{fmt(row['state_bytes'], 0)} |" for name, row in r["big_list"].items()]
        out.append("")
    if "loss" in r:
        out += loss.tables(r["loss"], s["loss_rounds"], s["loss_rate"])
    if "reexec" in r:
        out += reexec.tables(r["reexec"], s["loss_rate"])
    return "\n".join(out).rstrip()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    pid1.add_arguments(parser)
    parser.add_argument("--moltd-static", default=os.path.join(TARGET, "x86_64-unknown-linux-gnu", "release", "moltd"),
                        help="the static build; empty to leave it out")
    parser.add_argument("--moltd-baseline", help="the dynamic build of another commit, measured beside (run.sh --baseline)")
    parser.add_argument("--moltd-static-baseline", help="the static build of that commit")
    parser.add_argument("--baseline-label", default="baseline", help="how the tables name the baseline builds")
    parser.add_argument("--update-runs", type=int, default=3, help="runs per figure of items 7 and 8")
    parser.add_argument("--payload-mb", type=int, nargs="+", default=[10, 200])
    parser.add_argument("--feed-rate", type=float, default=25, help="MB/s of the throttled feed (item 7)")
    parser.add_argument("--loss-rounds", type=int, default=100, help="updates, and crashes, per setup (item 12)")
    parser.add_argument("--loss-rate", type=float, default=500, help="requests per second of item 12's load")
    parser.add_argument("--reexec-rounds", type=int, default=100, help="self-updates of item 13")
    parser.add_argument("--moltd-second", default=os.path.join(TARGET, "bench-second", "release", "moltd"),
                        help="item 13: the same tree built with MOLTD_BUILD_VERSION=0.1.1 (run.sh builds it)")
    parser.add_argument("--quick", action="store_true", help="few runs, small payloads, 5 s idle window")
    parser.add_argument("--only", type=int, nargs="+", choices=range(1, 14), metavar="ITEM",
                        help="run only these items of BENCHMARKS.md (1-13; 12 and 13 only when named)")
    parser.set_defaults(json=os.path.join(TARGET, "bench-results.json"))
    args = parser.parse_args()
    if args.quick:
        args.runs, args.reap_runs, args.update_runs, args.orphans, args.rounds = 1, 1, 1, 1000, 200
        args.idle_seconds, args.payload_mb, args.loss_rounds, args.reexec_rounds = 5, [2, 20], 3, 4
    args.moltd = os.path.abspath(args.moltd)
    for build in ("moltd_static", "moltd_baseline", "moltd_static_baseline", "moltd_second"):
        setattr(args, build, getattr(args, build) and os.path.abspath(getattr(args, build)))

    # A TERM (timeout, kill) unwinds like Ctrl-C: every namespace is killed
    # and the temporary directory removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="moltd-bench-") as tmp:
        results = run(args, tmp)
    results["machine"]["load_at_end"] = os.getloadavg()
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)
    print(table(results))
    print(f"\nJSON: {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
