"""Item 11: PID 1's footprint beside tini-static's, with the update agent
apart (issue 13's figures).

* Idle: PID 1 of `moltd --services` with 10 services and a release source
  (the loopback feed, first check done), against tini-static as PID 1 of
  one `sleep`, in interleaved rounds. VmRSS and RssAnon (the private part)
  of PID 1, and of the agent (PID 1's child `moltd agent`) where the build
  has one; a build without one runs the updater inside PID 1.
* A 10,000-release list: the same PID 1, first check done on a list of one
  release, then the feed switches to biglist.py's hostile list (10 pages of
  10,000 releases, the newest one installed) and `moltd update --check` asks
  for a check; PID 1's VmRSS and RssAnon before and once every moltd process
  has stopped spending CPU, and the agent's.

Usage: python3 bench/footprint.py [--moltd PATH ...] [--runs N]
(also run by bench/bench.py as item 11)
"""

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time

import biglist
import pid1
import update

SERVICES = 10
TINI_STATIC = "/usr/bin/tini-static"


def idle(builds, feed, tmp, small, runs):
    """{name: {"pid1"|"agent": {"kib", "anon_kib"}}} for tini-static and each
    moltd build, `runs` interleaved rounds, medians."""
    samples = {"tini-static": []} | {name: [] for name in builds}
    for i in range(runs):
        (vmrss, anon), = pid1.idle_rss_kib([TINI_STATIC, "-s", "--"])
        samples["tini-static"].append({"pid1": (vmrss, anon), "agent": (None, None)})
        for name, binary in builds.items():
            samples[name].append(update.updater_idle_kib(binary, feed, f"{tmp}/idle-{i}", small, SERVICES))
    return {name: update.medians(s) for name, s in samples.items()}


def big_list_once(moltd, list_feed, tmp, newest):
    """PID 1's and the agent's (VmRSS, RssAnon) before and after one check of
    the big list, and the peak (VmHWM) of the process that parsed it; one run."""
    list_feed.small = True
    os.makedirs(f"{tmp}/app/releases/{newest}")
    os.symlink(f"releases/{newest}", f"{tmp}/app/current")
    env = update.moltd_env(list_feed, tmp, MOLTD_MODE="check")
    with pid1.Namespace([moltd, "--services", pid1.service_dir(f"{tmp}/sv", SERVICES)], [], env=env,
                        cold=True) as ns:
        pid1.services_up(ns.pid, SERVICES)
        pid1.wait_for(lambda: update.status_state(tmp) == "idle", what="the first check")
        time.sleep(0.5)
        agent = update.agent_of(ns.pid)
        before = {"pid1": update.memory_kib(ns.pid), "agent": update.memory_kib(agent)}
        list_feed.small = False
        requests = list_feed.requests
        client = subprocess.run([moltd, "update", "--check"], env=env, capture_output=True, text=True, timeout=300)
        if list_feed.requests == requests:
            raise RuntimeError(f"`moltd update --check` did not fetch the list: {client.stderr.strip()}")
        processes = [ns.pid] + ([agent] if agent else [])
        settle(processes)
        after = {"pid1": update.memory_kib(ns.pid), "agent": update.memory_kib(agent)}
        # The process that parsed the list: the agent, or PID 1 without one.
        peak = pid1.status_field(agent or ns.pid, "VmHWM")
    shutil.rmtree(tmp)
    return before, after, peak


def settle(pids, quiet=1.0, timeout=300):
    """Waits until none of `pids` has spent CPU for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() - since < quiet:
        if time.monotonic() > deadline:
            raise RuntimeError("moltd kept spending CPU")
        now = [biglist.cpu_seconds(pid) for pid in pids]
        if now != last:
            last, since = now, time.monotonic()
        time.sleep(0.05)


def big_list(builds, tmp, runs, pages=10, per_page=10_000):
    """{name: {"before"|"after": {"pid1"|"agent": {...}}, "parser_peak_kib"}}:
    medians of `runs` runs."""
    feed = biglist.ListFeed(pages, per_page)
    newest = f"v1.{pages * per_page}.0"
    try:
        results = {}
        for name, binary in builds.items():
            runs_of = [big_list_once(binary, feed, f"{tmp}/big-{i}", newest) for i in range(runs)]
            results[name] = {"before": update.medians([b for b, _, _ in runs_of]),
                             "after": update.medians([a for _, a, _ in runs_of]),
                             "parser_peak_kib": statistics.median(p for _, _, p in runs_of)}
        return results
    finally:
        feed.close()


def ratio(value, base):
    return None if value is None or not base else value / base


def tables(r):
    """Markdown tables of item 11's results `r` ({"idle", "big_list"})."""
    out = []
    if "idle" in r:
        tini = r["idle"]["tini-static"]["pid1"]
        out += [f"### PID 1 beside tini-static, {SERVICES} services and a release source (item 11)", "",
                "| process | VmRSS KiB | RssAnon KiB | VmRSS / tini-static's | RssAnon / tini-static's |",
                "|---|---|---|---|---|"]
        for name, row in r["idle"].items():
            for process in ("pid1", "agent"):
                m = row[process]
                if m["kib"] is None:
                    continue
                label = name if name == "tini-static" else f"{name}, {'PID 1' if process == 'pid1' else 'agent'}"
                out.append(f"| {label} | {m['kib']:,.0f} | {m['anon_kib']:,.0f} "
                           f"| {ratio(m['kib'], tini['kib']):.2f} | {ratio(m['anon_kib'], tini['anon_kib']):.2f} |")
        out.append("")
    if "big_list" in r:
        out += ["### PID 1 before and after a check of a 10,000-release list (item 11)", "",
                "| build | PID 1 VmRSS before KiB | after KiB | change KiB | PID 1 RssAnon before KiB | after KiB "
                "| agent VmRSS before KiB | after KiB | peak of the parser KiB |",
                "|---|---|---|---|---|---|---|---|---|"]
        for name, row in r["big_list"].items():
            b, a = row["before"], row["after"]
            agent = b["agent"]["kib"] is not None
            cell = (lambda v: f"{v:,.0f}" if v is not None else "-")
            out.append(f"| {name} | {cell(b['pid1']['kib'])} | {cell(a['pid1']['kib'])} "
                       f"| {a['pid1']['kib'] - b['pid1']['kib']:+,.0f} | {cell(b['pid1']['anon_kib'])} "
                       f"| {cell(a['pid1']['anon_kib'])} | {cell(b['agent']['kib'])} | {cell(a['agent']['kib'])} "
                       f"| {cell(row['parser_peak_kib'])}{'' if agent else ' (PID 1)'} |")
        out.append("")
    return out


def main():
    from feed import Feed
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--moltd", nargs="+", metavar="PATH",
                        default=[os.path.join(biglist.HERE, "..", "target", "x86_64-unknown-linux-gnu", "release", "moltd")])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    builds = {os.path.relpath(path): os.path.abspath(path) for path in args.moltd}
    results = {}
    with tempfile.TemporaryDirectory(prefix="moltd-bench-") as tmp:
        archives = update.make_archives(tmp, [])
        feed = Feed()
        try:
            results["idle"] = idle(builds, feed, tmp, archives["small"], args.runs)
        finally:
            feed.close()
        results["big_list"] = big_list(builds, tmp, max(1, args.runs // 2))
    print("\n".join(tables(results)).rstrip())


if __name__ == "__main__":
    main()
