"""A loopback HTTP server shaped like GitHub's releases API, for the update
benchmarks, and the release archives it serves.

* `GET /repos/acme/app/releases[?...]`: the release list, with an ETag and a
  304 answer to a matching If-None-Match (what moltd polls).
* `GET /repos/acme/app/releases/latest`: the newest release (what the original
  container's loop asked for, with no ETag).
* `GET /dl/<tag>/<name>`: an asset, sent with sendfile at `rate` bytes per
  second (None: as fast as loopback goes).

One thread per connection and `Connection: close` after every answer, so a
connection's byte count is one request's cost. `traffic()` returns the bytes
received and sent since the last `reset_traffic()`.
"""

import base64
import functools
import hashlib
import io
import json
import os
import platform
import socketserver
import tarfile
import threading
import time

ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())

# The payload app: answers every GET with its version, so a prober can tell
# which release is up. It serves on the socket moltd holds for it (descriptor
# 3, when LISTEN_PID is its own pid), else binds the port itself with
# SO_REUSEADDR (Python's default for HTTPServer), so a new release binds it
# the moment the old one is gone; its own queue is as long as moltd's would
# be, so a burst is queued, not dropped. It says READY=1 on NOTIFY_SOCKET
# once it accepts. On TERM it stops accepting and answers what it accepted.
# GET /crash is the bad input of an app that crashes on one: it answers it,
# then exits 1 at once, leaving any connection still queued unaccepted.
APP = """#!/usr/bin/env python3
import http.server, os, signal, socket, sys, threading
here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
version = open(os.path.join(here, "VERSION"), "rb").read()
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"crashing" if self.path == "/crash" else version
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if self.path == "/crash":
            self.wfile.flush()
            os._exit(1)
    def log_message(self, *_):
        pass
class Server(http.server.HTTPServer):
    request_queue_size = socket.SOMAXCONN
server = Server(("127.0.0.1", int(sys.argv[1])), Handler, bind_and_activate=False)
if os.environ.get("LISTEN_PID") == str(os.getpid()) and os.environ.get("LISTEN_FDS") == "1":
    server.socket.close()
    server.socket = socket.socket(fileno=3)
else:
    server.server_bind()
    server.server_activate()
notify = os.environ.get("NOTIFY_SOCKET")
if notify:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(b"READY=1", "\\0" + notify[1:] if notify.startswith("@") else notify)
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
server.serve_forever(poll_interval=0.05)
"""

def asset_name(version):
    return f"app-{version}-linux-{ARCH}.tar.gz"


def write_payload(path, size):
    """`size` bytes of base64 text of random bytes: gzip shrinks it to about
    three quarters, so unpacking does real inflate work (unlike random bytes,
    which gzip stores)."""
    with open(path, "wb") as out:
        left = size
        while left:
            chunk = base64.b64encode(os.urandom(3 << 20))[:left]
            out.write(chunk)
            left -= len(chunk)


def build_release(folder, version, payload):
    """`folder/<asset_name>`: app-<version>/{bin/app, VERSION, data/payload}
    (payload may be None). Returns the archive's path."""
    path = os.path.join(folder, asset_name(version))
    top = f"app-{version}"

    def add(tar, name, data, mode):
        info = tarfile.TarInfo(f"{top}/{name}")
        info.size, info.mode, info.mtime = len(data), mode, 1_700_000_000
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        add(tar, "bin/app", APP.encode(), 0o755)
        add(tar, "VERSION", version.encode(), 0o644)
        if payload:
            tar.add(payload, f"{top}/data/payload")
    return path


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class Feed:
    def __init__(self):
        self.releases = []  # newest first: (tag, archive path, sha256)
        self.rate = None
        self._lock = threading.Lock()
        self._traffic = [0, 0]
        self._active = 0  # connections being answered
        feed = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                with feed._lock:
                    feed._active += 1
                try:
                    feed._serve(self.request)
                finally:
                    with feed._lock:
                        feed._active -= 1

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self):
        self._server.shutdown()
        self._server.server_close()

    def serve(self, releases):
        """Publishes exactly `releases`, newest first: (version, archive) pairs."""
        listed = [(f"v{version}", archive, self._sha256(archive)) for version, archive in releases]
        with self._lock:
            self.releases = listed

    @functools.cache
    def _sha256(self, path):
        return sha256_file(path)

    def asset_url(self, tag):
        return f"{self.url}/dl/{tag}/{asset_name(tag[1:])}"

    def reset_traffic(self):
        with self._lock:
            self._traffic = [0, 0]

    def traffic(self):
        """(bytes received, bytes sent) since the last reset, once every
        answer in progress is counted (a client may exit before its
        connection's thread has counted)."""
        deadline = time.monotonic() + 5
        while self._active and time.monotonic() < deadline:
            time.sleep(0.001)
        with self._lock:
            return tuple(self._traffic)

    def _count(self, received, sent):
        with self._lock:
            self._traffic[0] += received
            self._traffic[1] += sent

    def _release_json(self, tag, archive, sha):
        return {
            "tag_name": tag,
            "draft": False,
            "prerelease": False,
            "body": f"notes for {tag}",
            "html_url": f"{self.url}/releases/{tag}",
            "assets": [{
                "name": os.path.basename(archive),
                "size": os.path.getsize(archive),
                "browser_download_url": self.asset_url(tag),
                "url": f"{self.url}/assets/{tag}",
                "digest": f"sha256:{sha}",
            }],
        }

    def _serve(self, sock):
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = sock.recv(65536)
            if not chunk:
                return
            request += chunk
        head = request.decode("latin-1").split("\r\n")
        path = head[0].split()[1]
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:] if h)}
        with self._lock:
            releases = list(self.releases)
        sent = 0
        if path.startswith("/repos/acme/app/releases/latest"):
            sent = self._answer(sock, 200, json.dumps(self._release_json(*releases[0])).encode())
        elif path.startswith("/repos/acme/app/releases"):
            body = json.dumps([self._release_json(*r) for r in releases]).encode()
            etag = '"%s"' % hashlib.sha256(body).hexdigest()[:16]
            if headers.get("if-none-match") == etag:
                sent = self._answer(sock, 304, b"", etag)
            else:
                sent = self._answer(sock, 200, body, etag)
        elif path.startswith("/dl/") and (found := [r for r in releases if self.asset_url(r[0]).endswith(path)]):
            sent = self._send_file(sock, found[0][1])
        else:
            sent = self._answer(sock, 404, b'{"message":"Not Found"}')
        self._count(len(request), sent)

    @staticmethod
    def _answer(sock, status, body, etag=None):
        head = f"HTTP/1.1 {status} X\r\nConnection: close\r\nContent-Length: {len(body)}\r\n"
        head += "Content-Type: application/json\r\n"
        if etag:
            head += f"ETag: {etag}\r\n"
        data = (head + "\r\n").encode() + body
        sock.sendall(data)
        return len(data)

    def _send_file(self, sock, archive):
        size = os.path.getsize(archive)
        head = f"HTTP/1.1 200 X\r\nConnection: close\r\nContent-Length: {size}\r\n"
        head = (head + "Content-Type: application/octet-stream\r\n\r\n").encode()
        sock.sendall(head)
        start, done = time.monotonic(), 0
        with open(archive, "rb") as f:
            try:
                while done < size:
                    if self.rate:
                        # Never ahead of rate: sleep until the bytes sent so far are due.
                        ahead = done / self.rate - (time.monotonic() - start)
                        if ahead > 0:
                            time.sleep(ahead)
                        done += sock.sendfile(f, done, min(256 << 10, size - done))
                    else:
                        done += sock.sendfile(f, done, size - done)
            except OSError:
                pass  # the client went away
        return len(head) + done
