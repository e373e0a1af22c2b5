"""Item 12: the requests clients lose, and the latency they gain, while the
app is updated again and again, and while it crashes again and again.

A load generator sends GET / without keep-alive at a fixed rate to the
payload app of feed.py and records each request's outcome (ok, refused,
reset, timeout) and its latency, counted from the moment it was due, so a
stalled port shows as latency rather than as fewer requests. Four setups:

* original order: bench/original-update.sh (stop, download, unpack, start)
  for updates; for crashes, runit's runsvdir, whose service folders the
  original container used;
* moltd today: `moltd --services`, the app binds its port itself (no
  `listen` file), MOLTD_STRATEGY=restart;
* restart, held socket: the same with a `listen` file;
* overlap, held socket: the same with MOLTD_STRATEGY=overlap.

Each update installs a new release, 1.0.1, 1.0.2, ... (each a whole tree,
as small as the app). Crashes come two ways: a KILL to the app, which takes
with it the connection it had accepted and not answered, and the app's own
exit between two requests (it answers `GET /crash`, then exits 1), as an
app that crashes on a bad input does.
"""

import asyncio
import http.client
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

from feed import build_release
from pid1 import Namespace, children, wait_for
from update import free_port, install, moltd_env, status_state

HERE = os.path.dirname(os.path.abspath(__file__))
OUTCOMES = ("ok", "refused", "reset", "timeout", "other")
# How long a request may take before it counts as timed out: longer than any
# restart delay of moltd (1 s here), so a queued request is not cut short.
TIMEOUT_S = 5
# The load before the first event; its latencies from 0.5 s to 0.5 s
# before the first event are the baseline (a request due just before the
# first event may be caught by it).
BASELINE_S = 3


class Load:
    """Sends GET / to 127.0.0.1:`port` at `rate` requests per second, each
    on a new connection, from an asyncio loop on a thread of its own."""

    def __init__(self, port, rate):
        self.port, self.rate = port, rate
        self.results = []  # (due, outcome, latency seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    async def _run(self):
        loop = asyncio.get_running_loop()
        start, sent, pending = loop.time(), 0, set()
        while not self._stop.is_set():
            due = start + sent / self.rate
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            task = asyncio.create_task(self._one(due))
            pending.add(task)
            task.add_done_callback(pending.discard)
            sent += 1
        await asyncio.gather(*pending)

    async def _one(self, due):
        try:
            outcome = await asyncio.wait_for(self._request(), TIMEOUT_S)
        except ConnectionRefusedError:
            outcome = "refused"
        except ConnectionResetError:
            outcome = "reset"
        except (asyncio.TimeoutError, TimeoutError):
            outcome = "timeout"
        except OSError:
            outcome = "other"
        self.results.append((due, outcome, time.monotonic() - due))

    async def _request(self):
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(b"GET / HTTP/1.0\r\n\r\n")
            answer = await reader.read()
        finally:
            writer.close()
        # An answer cut off (the app died with the connection accepted)
        # fails like a reset.
        head, _, body = answer.partition(b"\r\n\r\n")
        whole = head.startswith(b"HTTP/1.0 200") and f"Content-Length: {len(body)}".encode() in head
        return "ok" if whole else "reset"

    def version(self):
        """What the app answers (its version), or None."""
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT_S)
            conn.request("GET", "/")
            return conn.getresponse().read().decode()
        except (OSError, http.client.HTTPException):
            return None

    def stop(self):
        self._stop.set()
        self._thread.join()
        return self.results


def summary(results, since, until):
    """Outcome counts of the requests due in [since, until), and the
    latency percentiles (ms) of the answered ones."""
    chosen = [r for r in results if since <= r[0] < until]
    counts = {o: sum(1 for r in chosen if r[1] == o) for o in OUTCOMES}
    latencies = sorted(r[2] * 1000 for r in chosen if r[1] == "ok")
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else [0] * 99
    return {"requests": len(chosen), **counts, "p50_ms": quantiles[49], "p99_ms": quantiles[98],
            "max_ms": latencies[-1] if latencies else None}


def app_pid(root):
    """The host pid of the payload app (`.../bin/app PORT`) among the
    descendants of `root`, or None."""
    for pid in children(root):
        try:
            argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            found = pid if any(a.endswith(b"/bin/app") for a in argv) else app_pid(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue
        if found:
            return found
    return None


class Releases:
    """Release archives 1.0.0, 1.0.1, ...: every update needs a newer tag."""

    def __init__(self, tmp, feed):
        self.tmp, self.feed, self.made = tmp, feed, []

    def version(self, n):
        return f"1.0.{n}"

    def archive(self, n):
        folder = f"{self.tmp}/rel-{n}"
        if not os.path.isdir(folder):
            os.makedirs(folder)
            build_release(folder, self.version(n), None)
        return f"{folder}/{os.listdir(folder)[0]}"

    def publish(self, n):
        self.feed.serve([(self.version(n), self.archive(n))])


def moltd_services(tmp, port, held):
    """The folder of `moltd --services`: the app as its one service, with a
    `listen` file when `held`."""
    os.makedirs(f"{tmp}/sv/app")
    with open(f"{tmp}/sv/app/run", "w") as f:
        f.write(f"#!/bin/sh\nexec {tmp}/app/current/bin/app {port}\n")
    os.chmod(f"{tmp}/sv/app/run", 0o755)
    if held:
        with open(f"{tmp}/sv/app/listen", "w") as f:
            f.write(f"tcp://127.0.0.1:{port}\n")
    return f"{tmp}/sv"


def measure(load, rounds, event):
    """Runs the load through a quiet baseline, then `rounds` calls of
    `event(n)`; returns the baseline's and the events' summaries."""
    start = time.monotonic()
    time.sleep(BASELINE_S)
    began = time.monotonic()
    for n in range(rounds):
        event(n)
    ended = time.monotonic()
    results = load.stop()
    return {"baseline": summary(results, start + 0.5, began - 0.5), "events": summary(results, began, ended),
            "seconds": ended - began}


def updates_moltd(moltd, feed, tmp, rounds, rate, held, strategy):
    """`rounds` updates by `moltd update`, each waited for until the status
    document says it completed."""
    port = free_port()
    releases = Releases(tmp, feed)
    install(releases.archive(0), f"{tmp}/app", f"v{releases.version(0)}")
    releases.publish(0)
    env = moltd_env(feed, tmp, MOLTD_MODE="stage", MOLTD_HEALTH_GRACE="1s", MOLTD_STRATEGY=strategy,
                    MOLTD_HEALTH_URL=f"http://127.0.0.1:{port}/")
    with open(f"{tmp}/moltd.log", "w") as log, \
            Namespace([moltd, "--services", moltd_services(tmp, port, held)], [], env=env, stdout=log):
        load = Load(port, rate)
        wait_for(lambda: load.version() == releases.version(0), 30, "the first release")

        def update(n):
            releases.publish(n + 1)
            subprocess.run([moltd, "update"], env=env, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=120)
            wait_for(lambda: load.version() == releases.version(n + 1) and status_state(tmp) == "completed",
                     120, f"update {n + 1}")
        try:
            return measure(load, rounds, update)
        finally:
            load.stop()


def updates_original(feed, tmp, rounds, rate):
    """`rounds` updates by bench/original-update.sh."""
    port = free_port()
    releases = Releases(tmp, feed)
    install(releases.archive(0), f"{tmp}/app", f"v{releases.version(0)}")
    go = f"{tmp}/go"
    script = [os.path.join(HERE, "original-update.sh"), f"{tmp}/app", str(port), "", go]
    with Namespace(["sh"], script, stdout=subprocess.DEVNULL):
        load = Load(port, rate)
        wait_for(lambda: load.version() == releases.version(0), 30, "the first release")

        def update(n):
            releases.publish(n + 1)
            with open(f"{go}.tmp", "w") as f:
                f.write(feed.asset_url(f"v{releases.version(n + 1)}"))
            os.rename(f"{go}.tmp", go)
            wait_for(lambda: load.version() == releases.version(n + 1), 120, f"update {n + 1}")
        try:
            return measure(load, rounds, update)
        finally:
            load.stop()


def crash_request(port):
    """`GET /crash`: the app answers it, then exits 1."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
    try:
        conn.request("GET", "/crash")
        conn.getresponse().read()
    finally:
        conn.close()


def crashes(init, tmp, port, rounds, rate, strategy="restart", how="kill"):
    """`rounds` crashes of the app under `init` (a supervisor's argv, already
    given its services): a KILL (`how` "kill") or the app's own exit after
    answering `GET /crash` ("self"). After each, the next app must answer,
    and then serve for a second before the next crash. "failed_in_flight"
    counts the failed requests that were under way at a crash (due before
    it, failed after it): with a KILL, those the killed process had taken."""
    kills = []
    with open(f"{tmp}/init.log", "w") as log, Namespace(init, [], env=init_env(tmp, strategy), stdout=log) as ns:
        load = Load(port, rate)
        wait_for(lambda: load.version() is not None and app_pid(ns.pid), 30, "the app")

        def crash(n):
            pid = app_pid(ns.pid)
            if how == "kill":
                kills.append(time.monotonic())
                os.kill(pid, signal.SIGKILL)
            else:
                crash_request(port)
                kills.append(time.monotonic())
            wait_for(lambda: app_pid(ns.pid) not in (None, pid) and load.version() is not None, 60,
                     f"the restart after crash {n + 1}")
            time.sleep(1)  # serving again, as an app does between two crashes
        try:
            row = measure(load, rounds, crash)
        finally:
            load.stop()
    row["failed_in_flight"] = sum(1 for due, outcome, took in load.results
                                  if outcome != "ok" and any(due <= k <= due + took for k in kills))
    return row


def init_env(tmp, strategy):
    """The environment of a supervisor measured for crashes: no MOLTD_*
    setting from the caller; the shortest restart delay moltd allows (1 s)
    instead of the doubling after quick deaths, as crashes here come every
    few seconds; its control socket in `tmp`; MOLTD_STRATEGY as the
    setup's, though it changes only updates."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOLTD_")}
    env.update(MOLTD_BACKOFF_MAX="1", MOLTD_CONTROL=f"{tmp}/control.sock", MOLTD_LOG="warn",
               MOLTD_STRATEGY=strategy)
    return env


def crashes_moltd(moltd, feed, tmp, rounds, rate, held, strategy, how):
    port = free_port()
    install(Releases(tmp, feed).archive(0), f"{tmp}/app", "v1.0.0")
    return crashes([moltd, "--services", moltd_services(tmp, port, held)], tmp, port, rounds, rate, strategy, how)


def crashes_runsvdir(feed, tmp, rounds, rate, how):
    port = free_port()
    install(Releases(tmp, feed).archive(0), f"{tmp}/app", "v1.0.0")
    return crashes(["runsvdir", moltd_services(tmp, port, False)], tmp, port, rounds, rate, how=how)


# The kinds of events item 12 measures, in its tables' order: the key in the
# results, and how a crash happens (None: updates).
KINDS = {"updates": None, "crashes": "kill", "self_crashes": "self"}


def run(moltd, feed, tmp, rounds, rate, kinds=tuple(KINDS)):
    """Item 12, for `kinds` (keys of KINDS): {kind: {setup: {"baseline",
    "events", "seconds"}}}."""
    # Up to rate x the longest stall connections are open at once.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    setups = {"moltd today (no listen file)": (False, "restart"),
              "restart, held socket": (True, "restart"),
              "overlap, held socket": (True, "overlap")}
    measures = {"updates": {"original order": lambda d: updates_original(feed, d, rounds, rate)}}
    for kind in ("crashes", "self_crashes"):
        measures[kind] = {"original (runsvdir)": lambda d, c=KINDS[kind]: crashes_runsvdir(feed, d, rounds, rate, c)}
    for name, (held, strategy) in setups.items():
        measures["updates"][name] = lambda d, h=held, s=strategy: updates_moltd(moltd, feed, d, rounds, rate, h, s)
        for kind in ("crashes", "self_crashes"):
            measures[kind][name] = lambda d, h=held, s=strategy, c=KINDS[kind]: crashes_moltd(
                moltd, feed, d, rounds, rate, h, s, c)
    measures = {kind: by_setup for kind, by_setup in measures.items() if kind in kinds}
    results = {}
    for kind, by_setup in measures.items():
        for name, measure_one in by_setup.items():
            folder = f"{tmp}/loss-{kind}-{len(results.get(kind, {}))}"
            os.makedirs(folder)
            results.setdefault(kind, {})[name] = row = measure_one(folder)
            print(f"  {kind}, {name}: {row}", flush=True, file=sys.stderr)
            shutil.rmtree(folder)
    return results


def tables(r, rounds, rate):
    """Item 12 as Markdown."""
    def three(row):
        return " / ".join(f"{row[q]:.1f}" for q in ("p50_ms", "p99_ms", "max_ms"))

    titles = {"updates": "updates", "crashes": "crash restarts (KILL)",
              "self_crashes": "crash restarts (the app exits 1 after answering GET /crash)"}
    out = []
    for kind in (k for k in KINDS if k in r):
        in_flight = kind != "updates"
        out += [f"### Requests lost during {rounds} {titles[kind]}, {rate:g} requests/s without keep-alive (item 12)",
                "", "| setup | requests | ok | refused | reset | timed out | other "
                + ("| of the failed, under way at a crash " if in_flight else "")
                + "| added p50 / p99 / max ms | during: p50 / p99 / max ms | baseline: p50 / p99 / max ms |",
                "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if in_flight else "")]
        for name, row in r[kind].items():
            e, b = row["events"], row["baseline"]
            added = {q: e[q] - b[q] for q in ("p50_ms", "p99_ms", "max_ms")}
            out.append(f"| {name} | {e['requests']:,} | {e['ok']:,} | {e['refused']:,} | {e['reset']:,} "
                       f"| {e['timeout']:,} | {e['other']:,} "
                       + (f"| {row.get('failed_in_flight', '-')} " if in_flight else "")
                       + f"| {three(added)} | {three(e)} | {three(b)} |")
        out.append("")
    return out
