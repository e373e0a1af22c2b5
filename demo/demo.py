#!/usr/bin/env python3
"""moltd's main job, offline and for real (README, "Try it"; run by demo/run.sh).

A loopback release feed shaped like GitHub's releases API (python's own HTTP
server on 127.0.0.1) is filled with real tar.gz releases of a tiny app, with
their SHA-256 in the API's `digest` field. moltd runs as PID 1 of a new PID
namespace, supervising one service that runs /app/current/bin/app, and:

1. installs v1.0.0 at first boot (nothing installed yet);
2. updates to v1.1.0 when it is published (download, verify, stop, switch,
   start, health gate);
3. tries v1.2.0, whose health check fails, and rolls back to v1.1.0;
4. shuts down cleanly on SIGTERM, exit code 0.

The app's port is held by moltd (the service's `listen` file) and passed to
each start of the app (LISTEN_FDS, systemd's protocol), so requests sent
every 2 ms during the update and the rollback are never refused: they wait
in the kernel's queue while no release runs.

Every wait is bounded; the demo exits 0 only if the whole story happened, so
CI runs it as a test (.ci/run). Usage: demo.py PATH_TO_MOLTD
"""

import functools
import hashlib
import http.server
import io
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request

# How long any one thing the demo waits for may take.
TIMEOUT = 60
# Seconds a stopping service gets (moltd's SVWAIT); shutdown must beat it.
SVWAIT = 3

# The app each release holds: serves its own www/ folder, so GET /version
# names the release that runs and GET /health is the health check moltd is
# given (MOLTD_HEALTH_URL). It serves on the socket moltd passes it
# (descriptor 3, when LISTEN_PID is its own pid), else it binds $PORT itself.
# On TERM it stops accepting and finishes the requests it accepted: what
# waits in the queue is the next release's.
APP = """#!/usr/bin/env python3
import functools, http.server, os, signal, socket, threading
www = os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "www")
class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
port = int(os.environ["PORT"])
server = http.server.ThreadingHTTPServer(
    ("127.0.0.1", port), functools.partial(Quiet, directory=www), bind_and_activate=False)
if os.environ.get("LISTEN_PID") == str(os.getpid()) and os.environ.get("LISTEN_FDS") == "1":
    server.socket.close()
    server.socket = socket.socket(fileno=3)
    how = "the socket moltd holds (LISTEN_FDS=1)"
else:
    server.server_bind()
    server.server_activate()
    how = "a socket of its own"
print("app", open(os.path.join(www, "version")).read().strip(), "serving on", how, flush=True)
server.daemon_threads = False
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
server.serve_forever()
server.server_close()
"""


# moltd's log lines of a check that finds nothing (one every second).
QUIET = ("for releases\n", ": info: no newer release", ": info: next check in")


def say(text):
    print(f"\n\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"\n==> {text}", flush=True)


class Failed(Exception):
    pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def release_archive(version, healthy):
    """A release as a pipeline would publish it: app-VERSION/bin/app,
    www/version and (when healthy) www/health, plus 1 MiB of data so the
    download has something to show."""
    buffer = io.BytesIO()
    top = f"app-{version}"
    files = {
        f"{top}/bin/app": (APP.encode(), 0o755),
        f"{top}/www/version": (f"{version}\n".encode(), 0o644),
        f"{top}/www/data.bin": (os.urandom(1 << 20), 0o644),
    }
    if healthy:
        files[f"{top}/www/health"] = (b"ok\n", 0o644)
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class Feed:
    """GitHub's `GET /repos/demo/app/releases` and the assets, as files
    under `root`, served by python's HTTP server on 127.0.0.1."""

    def __init__(self, root):
        self.root = root
        self.releases = []
        self.listing = os.path.join(root, "repos/demo/app/releases")
        os.makedirs(os.path.dirname(self.listing))

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, fmt, *args):
                # Release-list polls are frequent; show the downloads only.
                if "/dl/" in self.path:
                    print(f"    feed | {self.command} {self.path} -> {args[1]}", flush=True)

        self.server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=root)
        )
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.write_listing()

    def publish(self, version, healthy=True):
        tag = f"v{version}"
        name = f"app-{version}-linux-{platform.machine()}.tar.gz"
        data = release_archive(version, healthy)
        path = os.path.join(self.root, "dl", tag, name)
        os.makedirs(os.path.dirname(path))
        with open(path, "wb") as f:
            f.write(data)
        url = f"{self.url}/dl/{tag}/{name}"
        self.releases.insert(0, {
            "tag_name": tag,
            "draft": False,
            "prerelease": False,
            "body": f"app {version}" + ("" if healthy else " (its health check fails)"),
            "html_url": f"{self.url}/releases/{tag}",
            "assets": [{
                "name": name,
                "size": len(data),
                "browser_download_url": url,
                "url": url,
                "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
            }],
        })
        self.write_listing()
        print(f"    feed | published {tag}: {name}, {len(data)} bytes, "
              f"sha256 {hashlib.sha256(data).hexdigest()[:16]}...", flush=True)

    def write_listing(self):
        # Replaced atomically: a poll never reads half a listing.
        tmp = self.listing + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.releases, f)
        os.replace(tmp, self.listing)


class Demo:
    def __init__(self, moltd, work):
        self.moltd = moltd
        self.work = work
        # The feed first: the app's free port is then not the feed's.
        self.feed = Feed(os.path.join(work, "feed"))
        self.port = free_port()
        self.status_file = os.path.join(work, "status.json")
        self.control = os.path.join(work, "control.sock")
        self.app_dir = os.path.join(work, "app")
        self.process = None
        self.shown = None
        self.seen = set()
        service = os.path.join(work, "service/app")
        os.makedirs(service)
        with open(os.path.join(service, "run"), "w") as f:
            f.write("#!/bin/sh\n# The payload: the release /app/current points to.\n"
                    'exec "$MOLTD_APP_DIR/current/bin/app"\n')
        os.chmod(os.path.join(service, "run"), 0o755)
        # moltd binds the app's port once and passes it to every start.
        with open(os.path.join(service, "listen"), "w") as f:
            f.write(f"tcp://127.0.0.1:{self.port}\n")

    def env(self):
        env = dict(os.environ)
        env.update({
            "MOLTD_REPO": "demo/app",
            "GITHUB_API_URL": self.feed.url,
            "MOLTD_APP_DIR": self.app_dir,
            "MOLTD_STATUS_FILE": self.status_file,
            "MOLTD_CONTROL": self.control,
            "MOLTD_INTERVAL": "1s",
            "MOLTD_JITTER": "0s",
            "MOLTD_HEALTH_URL": f"http://127.0.0.1:{self.port}/health",
            "MOLTD_HEALTH_GRACE": "2s",
            "MOLTD_HEALTH_TIMEOUT": "4s",
            "MOLTD_LOG": "info",
            "SVWAIT": str(SVWAIT),
            "PORT": str(self.port),
        })
        return env

    def start(self):
        command = ["unshare", "--user", "--map-root-user", "--pid", "--fork",
                   "--mount-proc", self.moltd, "--services", os.path.join(self.work, "service")]
        print("    $ " + " ".join(command), flush=True)
        self.process = subprocess.Popen(command, env=self.env(), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self.relay, daemon=True).start()

    def relay(self):
        """moltd's output (its log and the services' lines), indented; the
        three lines of every check that finds nothing new are left out."""
        for line in self.process.stdout:
            if not any(quiet in line for quiet in QUIET):
                print("    " + line, end="", flush=True)

    def status(self):
        try:
            with open(self.status_file) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def show(self, status):
        """One line per step the demo sees in the status document (not the
        checks that find nothing); remembers the states seen."""
        if status.get("state") in (None, "checking", "idle"):
            return
        self.seen.add(status["state"])
        key = (status.get("state"), status.get("target"), status.get("progress"))
        if key == self.shown:
            return
        self.shown = key
        progress = ""
        if status["state"] == "downloading" and status.get("bytes_total"):
            progress = f" {status.get('progress')}% of {status['bytes_total']} bytes"
        print(f"  status | {status['state']} (step {status['step']}/{status['total_steps']})"
              f"{progress}: {status['message']}", flush=True)

    def served(self):
        """The version the app answers with, or None."""
        try:
            url = f"http://127.0.0.1:{self.port}/version"
            with urllib.request.urlopen(url, timeout=2) as answer:
                return answer.read().decode().strip()
        except (OSError, urllib.error.URLError):
            return None

    def wait_for(self, what, condition):
        deadline = time.monotonic() + TIMEOUT
        while True:
            status = self.status()
            self.show(status)
            if condition(status):
                return status
            if self.process.poll() is not None:
                raise Failed(f"moltd exited ({self.process.returncode}) while waiting for {what}")
            if time.monotonic() > deadline:
                raise Failed(f"timed out after {TIMEOUT}s waiting for {what}; status: {status}")
            time.sleep(0.02)

    def expect_seen(self, *states):
        """The states that last long enough to be seen by polling (the
        health gate's grace, the second until the next check); the quicker
        steps are in moltd's log."""
        missing = [state for state in states if state not in self.seen]
        if missing:
            raise Failed(f"the status document never said {missing}; it said {sorted(self.seen)}")

    def expect_app(self, version):
        self.wait_for(f"the app to answer {version}", lambda _: self.served() == version)
        print(f"    demo | GET http://127.0.0.1:{self.port}/version -> {version}", flush=True)

    def load(self):
        """Sends GET /version without keep-alive every 2 ms until the
        returned stop() is called, which returns (answered, refused,
        failed)."""
        counts = {"answered": 0, "refused": 0, "failed": 0}
        stop = threading.Event()

        def send():
            while not stop.is_set():
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
                        s.sendall(b"GET /version HTTP/1.0\r\n\r\n")
                        answer = b""
                        while chunk := s.recv(4096):
                            answer += chunk
                    counts["answered" if answer.startswith(b"HTTP/1.0 200") else "failed"] += 1
                except ConnectionRefusedError:
                    counts["refused"] += 1
                except OSError:
                    counts["failed"] += 1
                time.sleep(0.002)

        thread = threading.Thread(target=send, daemon=True)
        thread.start()

        def finish():
            stop.set()
            thread.join()
            return counts["answered"], counts["refused"], counts["failed"]
        return finish

    def moltd_pid(self):
        """moltd's pid outside the namespace: the child of unshare."""
        children = f"/proc/{self.process.pid}/task/{self.process.pid}/children"
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            try:
                with open(children) as f:
                    pids = f.read().split()
                if pids:
                    return int(pids[0])
            except OSError:
                pass
            time.sleep(0.02)
        raise Failed("moltd did not start inside the namespace")

    def run(self):
        say("A release feed on loopback with v1.0.0; moltd starts as PID 1 with nothing installed")
        self.feed.publish("1.0.0")
        self.start()
        self.wait_for("v1.0.0 to be installed", lambda s: s.get("current") == "v1.0.0")
        self.expect_app("1.0.0")

        say("v1.1.0 is published: moltd downloads, verifies, switches and health-checks it,"
            " while a request every 2 ms goes to the app")
        finish_load = self.load()
        self.feed.publish("1.1.0")
        self.seen.clear()
        self.wait_for("the update to v1.1.0", lambda s: s.get("current") == "v1.1.0")
        self.expect_seen("health_check", "completed")
        self.expect_app("1.1.0")

        say("v1.2.0 is published, but its health check fails: moltd rolls back")
        self.feed.publish("1.2.0", healthy=False)
        self.seen.clear()
        status = self.wait_for("the rollback from v1.2.0",
                               lambda s: "v1.2.0" in s.get("bad_releases", []))
        self.expect_seen("health_check", "rolled_back")
        if status.get("current") != "v1.1.0":
            raise Failed(f"rolled back to {status.get('current')}, not v1.1.0")
        self.expect_app("1.1.0")
        print(f"    demo | last_error: {status['last_error']}")
        print(f"    demo | bad_releases: {status['bad_releases']} (never tried again automatically)")
        answered, refused, failed = finish_load()
        print(f"    demo | during the update and the rollback: {answered} requests answered,"
              f" {refused} refused, {failed} failed (moltd held the port)", flush=True)
        if refused or failed:
            raise Failed("requests were lost although moltd held the app's port")

        say("moltd status, through the control socket of the running moltd")
        out = subprocess.run([self.moltd, "status"], env=self.env(), capture_output=True,
                             text=True, timeout=TIMEOUT)
        print(out.stdout + out.stderr, end="", flush=True)
        if out.returncode != 0:
            raise Failed(f"moltd status exited {out.returncode}")

        say("SIGTERM to moltd (as docker stop sends it): every service stops, exit code 0")
        started = time.monotonic()
        os.kill(self.moltd_pid(), signal.SIGTERM)
        try:
            code = self.process.wait(timeout=SVWAIT + 5)
        except subprocess.TimeoutExpired:
            raise Failed("moltd did not exit after SIGTERM")
        took = time.monotonic() - started
        print(f"    demo | moltd exited with {code} after {took:.1f}s (SVWAIT is {SVWAIT}s)")
        if code != 0 or took >= SVWAIT:
            raise Failed(f"expected exit code 0 within {SVWAIT}s")
        if self.served() is not None:
            raise Failed("the app still answers after moltd exited")

    def stop(self):
        """After a failure: kill moltd, and with it its PID namespace."""
        if self.process and self.process.poll() is None:
            try:
                os.kill(self.moltd_pid(), signal.SIGKILL)
            except (Failed, OSError):
                pass
            try:
                self.process.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.feed.server.shutdown()


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: demo.py PATH_TO_MOLTD")
    moltd = os.path.abspath(sys.argv[1])
    work = tempfile.mkdtemp(prefix="moltd-demo-")
    demo = Demo(moltd, work)
    try:
        demo.run()
    except Failed as failure:
        print(f"\ndemo FAILED: {failure}", flush=True)
        sys.exit(1)
    finally:
        demo.stop()
        shutil.rmtree(work, ignore_errors=True)
    say("Done: installed v1.0.0, updated to v1.1.0, rolled back from v1.2.0, stopped cleanly")


if __name__ == "__main__":
    main()
