"""Updater benchmarks: idle updater memory (item 1), update downtime (7),
fetch pipeline throughput (8) and the cost of an idle poll (9), against the
loopback feed of feed.py.

The updater runs where a container runs it: inside `moltd --services`, which
`moltd update` asks (through the control socket) to check and apply: stage
while the app serves, then stop, switch `current`, start, health-check.
"""

import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import tarfile
import threading
import time

from feed import build_release, write_payload
from pid1 import Namespace, children, service_dir, services_up, status_field, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))


def install(archive, app_dir, tag):
    """Unpacks `archive` as releases/<tag> and points `current` at it, as an
    image shipping its first release would."""
    target = f"{app_dir}/releases/{tag}"
    os.makedirs(target)
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            member.name = member.name.split("/", 1)[1] if "/" in member.name else "."
            tar.extract(member, target, filter="tar")
    os.symlink(f"releases/{tag}", f"{app_dir}/current")


def moltd_env(feed, tmp, **extra):
    """The environment of a moltd that follows the feed, with state in `tmp`.
    Nothing of moltd's own configuration leaks in from the caller's shell:
    in particular SSL_CERT_FILE, which a developer's machine often sets to
    the system bundle, would add its certificates to moltd's trust store
    (about 450 KiB of heap for Debian's) and measure a setting the image
    does not have."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MOLTD_", "SSL_CERT_", "GITHUB_", "GH_"))}
    env.update(
        MOLTD_REPO="acme/app",
        GITHUB_API_URL=feed.url,
        MOLTD_APP_DIR=f"{tmp}/app",
        MOLTD_STATUS_FILE=f"{tmp}/status.json",
        MOLTD_CONTROL=f"{tmp}/control.sock",
        MOLTD_INTERVAL="1h",  # only the checks the benchmark asks for
        MOLTD_LOG="warn",
    )
    env.update(extra)
    return env


def status_state(tmp):
    try:
        return json.load(open(f"{tmp}/status.json")).get("state")
    except (OSError, ValueError):
        return None


def agent_of(pid):
    """The update agent: the child of `pid` (a PID 1 of moltd) whose command
    line is `moltd agent`, or None. Builds that run the updater inside PID 1
    have none, and then PID 1's figures include the updater's."""
    for child in children(pid):
        try:
            argv = open(f"/proc/{child}/cmdline", "rb").read().split(b"\0")
        except FileNotFoundError:
            continue
        if len(argv) > 1 and b"moltd" in os.path.basename(argv[0]) and argv[1] == b"agent":
            return child
    return None


def memory_kib(pid):
    """(VmRSS, RssAnon) of `pid`, or (None, None) for no process."""
    if pid is None:
        return None, None
    return status_field(pid, "VmRSS"), status_field(pid, "RssAnon")


def updater_idle(moltd, feed, tmp, small, services):
    """Starts PID 1 of `moltd --services` with `services` services and the
    updater configured, v1.0.0 installed and nothing newer on the feed;
    returns its host pid and a cleanup, once the first check is done (and
    the agent of builds that have one is up)."""
    install(small, f"{tmp}/app", "v1.0.0")
    feed.serve([("1.0.0", small)])
    env = moltd_env(feed, tmp, MOLTD_MODE="check")
    ns = Namespace([moltd, "--services", service_dir(f"{tmp}/sv", services)], [], env=env, cold=True)
    try:
        services_up(ns.pid, services)
        wait_for(lambda: status_state(tmp) == "idle", what="the first check")
    except BaseException:
        ns.__exit__()
        raise
    time.sleep(0.5)
    return ns.pid, ns.__exit__


def updater_idle_kib(moltd, feed, tmp, small, services):
    """{"pid1": (VmRSS, RssAnon), "agent": (VmRSS, RssAnon) or (None, None)}
    with the updater idle: one run."""
    pid, stop = updater_idle(moltd, feed, tmp, small, services)
    try:
        return {"pid1": memory_kib(pid), "agent": memory_kib(agent_of(pid))}
    finally:
        stop()
        shutil.rmtree(tmp)


def updater_idle_rss_kib(moltd, feed, tmp, small, services, runs):
    """Median VmRSS and RssAnon of PID 1, and of the agent (None without
    one), with the updater idle."""
    samples = [updater_idle_kib(moltd, feed, f"{tmp}/rss{i}", small, services) for i in range(runs)]
    return medians(samples)


def medians(samples):
    """The median of each figure of a list of {process: (VmRSS, RssAnon)};
    None where a process was missing from any sample."""
    def median(values):
        return None if None in values else statistics.median(values)

    return {process: {"kib": median([s[process][0] for s in samples]),
                      "anon_kib": median([s[process][1] for s in samples])}
            for process in samples[0]}


class Prober:
    """Asks the app on `port` for its version every few milliseconds; the
    downtime is the longest gap between two answers."""

    def __init__(self, port):
        self.port, self.answers, self._stop = port, [], False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=0.5)
                conn.request("GET", "/")
                version = conn.getresponse().read().decode()
                conn.close()
                self.answers.append((time.monotonic(), version))
            except (OSError, http.client.HTTPException):
                pass  # down, or went down while answering
            time.sleep(0.002)

    def wait_version(self, version, timeout):
        wait_for(lambda: self.answers and self.answers[-1][1] == version, timeout, f"app {version}")

    def stop(self):
        """Stops probing; returns the longest gap between answers, in seconds."""
        self._stop = True
        self._thread.join()
        times = [t for t, _ in self.answers]
        return max(b - a for a, b in zip(times, times[1:]))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def downtime_original(feed, tmp, archives):
    """The original container's order, bench/original-update.sh, in a PID
    namespace of its own: app v1 up, then stop, download, unpack, start v2."""
    port = free_port()
    install(archives["1.0.0"], f"{tmp}/app", "v1.0.0")
    feed.serve([("2.0.0", archives["2.0.0"]), ("1.0.0", archives["1.0.0"])])
    script = [os.path.join(HERE, "original-update.sh"), f"{tmp}/app", str(port), feed.asset_url("v2.0.0"), f"{tmp}/go"]
    with Namespace(["sh"], script, stdout=subprocess.DEVNULL):
        prober = Prober(port)
        prober.wait_version("1.0.0", 30)
        open(f"{tmp}/go", "w").close()
        prober.wait_version("2.0.0", 600)
        time.sleep(0.05)
        return prober.stop()


def downtime_moltd(moltd, feed, tmp, archives):
    """moltd as PID 1 of `--services` with the app as its one service: app v1
    up, v2 published, `moltd update` asks the supervisor to check and apply
    (stage while v1 serves, then stop, switch `current`, start, health)."""
    port = free_port()
    install(archives["1.0.0"], f"{tmp}/app", "v1.0.0")
    os.makedirs(f"{tmp}/sv/app")
    with open(f"{tmp}/sv/app/run", "w") as f:
        f.write(f"#!/bin/sh\nexec {tmp}/app/current/bin/app {port}\n")
    os.chmod(f"{tmp}/sv/app/run", 0o755)
    env = moltd_env(feed, tmp, MOLTD_MODE="stage", MOLTD_HEALTH_GRACE="1s",
                    MOLTD_HEALTH_URL=f"http://127.0.0.1:{port}/")
    feed.serve([("1.0.0", archives["1.0.0"])])
    with open(f"{tmp}/moltd.log", "w") as log, Namespace([moltd, "--services", f"{tmp}/sv"], [], env=env, stdout=log):
        prober = Prober(port)
        prober.wait_version("1.0.0", 30)
        # A long-running app: moltd never restarts a service sooner than 1 s
        # after its previous start, which would otherwise add to the downtime.
        time.sleep(1.5)
        feed.serve([("2.0.0", archives["2.0.0"]), ("1.0.0", archives["1.0.0"])])
        subprocess.run([moltd, "update"], env=env, check=True, stdout=subprocess.DEVNULL, timeout=600)
        prober.wait_version("2.0.0", 60)
        time.sleep(0.05)
        return prober.stop()


def timed(argv, env=None, shell=False):
    """Runs argv; returns (wall seconds, user+system CPU seconds of it and its children)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, shell=shell, executable="/bin/bash" if shell else None,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{argv} exited with {proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


def fetch_pipeline(moltds, feed, tmp, archive, runs):
    """Item 8: seconds to download, hash, gunzip and untar `archive` from
    loopback: moltd update --stage-only (each of `moltds`, by name),
    curl | tee >(sha256sum) | tar xz, and that plus sync (moltd syncs the
    file system before it renames)."""
    feed.serve([("2.0.0", archive)])
    url = feed.asset_url("v2.0.0")
    curl = f"curl -fsS {url} | tee >(sha256sum > {tmp}/sum) | tar xz -C {tmp}/out"
    commands = {name: lambda moltd=moltd: timed([moltd, "update", "--stage-only"], env=moltd_env(feed, tmp))
                for name, moltd in moltds.items()}
    commands.update({
        "curl|tar": lambda: timed(curl, shell=True),
        "curl|tar + sync": lambda: timed(curl + " && sync -f " + tmp, shell=True),
    })
    results = {name: [] for name in commands}
    names = list(commands)
    for i in range(runs):
        # Each round starts with the next pipeline, so none always goes first.
        for name in names[i % len(names):] + names[:i % len(names)]:
            run = commands[name]
            for leftover in ("app", "out"):
                shutil.rmtree(f"{tmp}/{leftover}", ignore_errors=True)
            os.makedirs(f"{tmp}/out")
            subprocess.run(["sync", "-f", tmp])  # start each from clean page cache writes
            results[name].append(run()[0])
    size = os.path.getsize(archive)
    return {name: {"s": statistics.median(v), "mb_per_s": size / statistics.median(v) / 1e6}
            for name, v in results.items()}


def idle_poll(moltd, feed, tmp, small, runs):
    """Item 9: bytes on the socket (both ways, counted by the feed) and CPU
    time of one check that finds nothing new: `moltd update --check` with the
    ETag of the previous check (a 304), beside the original container's
    unconditional `curl .../releases/latest`."""
    install(small, f"{tmp}/app", "v1.0.0")
    feed.serve([("1.0.0", small)])
    env = moltd_env(feed, tmp)
    check = [moltd, "update", "--check"]
    timed(check, env=env)  # the first check stores the list and its ETag
    latest = ["curl", "-fsS", "-o", "/dev/null", f"{feed.url}/repos/acme/app/releases/latest"]
    results = {}
    for name, argv in (("moltd (304)", check), ("curl latest (200)", latest)):
        samples = []
        for _ in range(runs):
            feed.reset_traffic()
            _, cpu = timed(argv, env=env)
            samples.append((sum(feed.traffic()), cpu))
        results[name] = {"bytes": statistics.median(b for b, _ in samples),
                         "cpu_ms": statistics.median(c for _, c in samples) * 1000}
    return results


def make_archives(tmp, sizes):
    """v1.0.0 and v2.0.0 with a payload of each size (MB), and a small v1.0.0
    with no payload ("small")."""
    archives = {}
    for mb in sizes:
        payload = f"{tmp}/payload-{mb}"
        write_payload(payload, mb * 1_000_000)
        for version in ("1.0.0", "2.0.0"):
            os.makedirs(f"{tmp}/{mb}/{version}")
            archives.setdefault(mb, {})[version] = build_release(f"{tmp}/{mb}/{version}", version, payload)
        os.remove(payload)
    os.makedirs(f"{tmp}/small")
    archives["small"] = build_release(f"{tmp}/small", "1.0.0", None)
    return archives

