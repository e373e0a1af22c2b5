"""Item 10: what a huge release list costs PID 1. A loopback GitHub-shaped
feed serves 10 pages of 10,000 releases each (about 4 MB a page, under
moltd's 8 MiB page limit) with `Link` headers; `moltd --services` checks it
once, and the figures are PID 1's CPU time for that check, its peak RSS
(VmHWM), its RSS once the check is over (VmRSS) and the size of
`state.json`.

Two policies: a tag prefix that matches nothing (a typo in
MOLTD_TAG_PREFIX: moltd reads on through the pages looking for a release),
and every release eligible (the first page answers).

Usage: python3 bench/biglist.py [--moltd PATH] [--pages 10] [--per-page 10000]
(also run by bench/bench.py as item 10)
"""

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from pid1 import Namespace, service_dir, status_field, wait_for
from update import moltd_env

HERE = os.path.dirname(os.path.abspath(__file__))
TICKS = os.sysconf("SC_CLK_TCK")


class ListFeed:
    """Serves `pages` pages of `per_page` releases at /repos/acme/app/releases,
    newest first, each page built once up front; while `small` is set, only
    the newest release instead. `requests` counts the lists served."""

    def __init__(self, pages, per_page):
        self.small, self.requests = False, 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        total = pages * per_page
        self.pages = []
        for page in range(pages):
            releases = []
            for i in range(page * per_page, (page + 1) * per_page):
                tag = f"v1.{total - i}.0"
                name = f"app-{tag}-linux-amd64.tar.gz"
                releases.append({
                    "tag_name": tag, "draft": False, "prerelease": False,
                    "body": f"notes for {tag}", "html_url": f"{self.url}/releases/{tag}",
                    "assets": [{"name": name, "size": 1000,
                                "browser_download_url": f"{self.url}/dl/{tag}/{name}",
                                "url": f"{self.url}/assets/{tag}/{name}",
                                "digest": "sha256:" + f"{i:064x}"}],
                })
            self.pages.append(json.dumps(releases).encode())
            if page == 0:
                self.newest = json.dumps(releases[:1]).encode()
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _handler(self):
        feed = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                if not self.path.startswith("/repos/acme/app/releases"):
                    self.send_error(404)
                    return
                query = parse_qs(urlsplit(self.path).query)
                page = int(query.get("page", ["1"])[0])
                small = feed.small
                body = feed.newest if small else feed.pages[page - 1]
                feed.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", '"newest"' if small else f'"page-{page}"')
                if not small and page < len(feed.pages):
                    self.send_header("Link", f'<{feed.url}/repos/acme/app/releases?per_page=100&page={page + 1}>; rel="next"')
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_):
                pass

        return Handler

    def close(self):
        self._server.shutdown()
        self._server.server_close()


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def one_check(moltd, feed, tmp, env_extra):
    """PID 1's figures for the first check of `moltd --services` on `feed`."""
    env = moltd_env(feed, tmp, MOLTD_MODE="check", **env_extra)
    state = f"{tmp}/app/.moltd/state.json"
    with Namespace([moltd, "--services", service_dir(f"{tmp}/sv", 1)], [], env=env) as ns:
        wait_for(lambda: os.path.exists(state), timeout=300, what="the state file")
        # The check is over when PID 1 stops spending CPU.
        last = -1.0
        while (now := cpu_seconds(ns.pid)) != last:
            last = now
            time.sleep(1)
        return {"cpu_s": now, "hwm_kib": status_field(ns.pid, "VmHWM"),
                "rss_kib": status_field(ns.pid, "VmRSS"), "state_bytes": os.path.getsize(state)}


def big_list(moltd, tmp, pages=10, per_page=10_000):
    """{policy: figures} for the two policies."""
    feed = ListFeed(pages, per_page)
    try:
        results = {}
        for name, env in (("prefix matches nothing", {"MOLTD_TAG_PREFIX": "wbe-"}),
                          ("every release eligible", {})):
            run = f"{tmp}/{len(results)}"
            # The newest release is installed: a check finds nothing to do.
            os.makedirs(f"{run}/app/releases/v1.{pages * per_page}.0")
            os.symlink(f"releases/v1.{pages * per_page}.0", f"{run}/app/current")
            results[name] = one_check(moltd, feed, run, env)
            shutil.rmtree(run)
        return results
    finally:
        feed.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--moltd", default=os.path.join(HERE, "..", "target", "release", "moltd"))
    parser.add_argument("--pages", type=int, default=10)
    parser.add_argument("--per-page", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = big_list(os.path.abspath(args.moltd), tmp, args.pages, args.per_page)
    print("| policy | CPU s | peak RSS KiB | RSS after KiB | state.json bytes |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['cpu_s']:.2f} | {r['hwm_kib']:,} | {r['rss_kib']:,} | {r['state_bytes']:,} |")


if __name__ == "__main__":
    main()
