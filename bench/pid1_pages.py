"""Where PID 1's resident pages are, and the code order that keeps them few.

PID 1 runs `moltd --services` with 10 services (one of them prints a line
at each start) and a release source on the loopback feed, as in item 11.
`exercise` then puts it through the events of its life: a service killed
and restarted, `sv` requests (restart, down, up, status), `moltd status`,
an update check (frames to and from the agent), a service folder added
and removed.

* `where [--moltd PATH] [--symbols PATH]`: PID 1's resident KiB per kind of
  mapping (from /proc/PID/smaps) idle and after the events; with
  `--symbols`, an unstripped build of the same code (target/order's, see
  `order`), also the count of resident code pages and of the functions on
  them (/proc/PID/pagemap). A fault maps the 64 KiB window of cached pages
  around it, so resident pages come in windows.
* `order`: writes src/pid1.order, the functions PID 1 runs once start-up is
  over (std's, the crates' and glibc's included), in the order PID 1 first
  runs them: build.rs hands it to lld (`--symbol-ordering-file`), which puts
  them together at the start of `.text`, so PID 1's loop maps a few 64 KiB
  windows of code instead of most of them. Builds the static release build
  with `-C strip=none` in target/order (RUSTFLAGS are not part of the
  symbols' hashes, so the names are the shipped build's) and runs it as
  PID 1 under gdb (GDB_SCRIPT), from the end of start-up
  (`drop_start_up_pages`) through `exercise`. Rerun it after changing PID
  1's code or the release profile; a stale list is still correct (unknown
  names are skipped), only less tight.

Usage: python3 bench/pid1_pages.py where|order [...]; needs root.
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pid1
import update
from feed import Feed, build_release

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
STATIC = os.path.join(ROOT, "target", "x86_64-unknown-linux-gnu", "release", "moltd")
ORDER_BUILD = os.path.join(ROOT, "target", "order", "x86_64-unknown-linux-gnu", "release", "moltd")
SERVICES = 10


def services(root):
    svdir = pid1.service_dir(root, SERVICES)
    with open(f"{svdir}/s0/run", "w") as f:
        f.write("#!/bin/sh\necho started\nexec sleep 100000\n")
    return svdir


def sleeping(pid):
    return [c for c in pid1.children(pid) if os.path.exists(f"/proc/{c}") and pid1.comm(c) == "sleep"]


def exercise(moltd, pid, env, svdir, timeout=120):
    """The events of PID 1's life after start-up, each waited for: the
    agent's death and restart (its start, hello and welcome) included."""
    def client(*args):
        subprocess.run([moltd, *args], env=env, capture_output=True, timeout=timeout)

    before = set(sleeping(pid))
    os.kill(min(before), signal.SIGKILL)  # a service dies and is restarted
    pid1.wait_for(lambda: len(set(sleeping(pid)) - before) == 1, timeout, "a restart")
    for args in (["sv", "restart", "s1"], ["sv", "down", "s2"], ["sv", "up", "s2"], ["sv", "status", "s3"],
                 ["status"], ["update", "--check"]):
        client(*args)
    os.makedirs(f"{svdir}/new")
    with open(f"{svdir}/new/run", "w") as f:
        f.write("#!/bin/sh\nexec sleep 100000\n")
    os.chmod(f"{svdir}/new/run", 0o755)
    pid1.wait_for(lambda: len(sleeping(pid)) == SERVICES + 1, timeout, "the new service")
    shutil.rmtree(f"{svdir}/new")
    pid1.wait_for(lambda: len(sleeping(pid)) == SERVICES, timeout, "the removed service to stop")
    agent = update.agent_of(pid)
    os.kill(agent, signal.SIGKILL)
    pid1.wait_for(lambda: update.agent_of(pid) not in (None, agent), timeout, "the agent's restart")
    client("status")
    client("update", "--check")
    time.sleep(0.5)


def start(init, tmp, feed, small, cold=True):
    update.install(small, f"{tmp}/app", "v1.0.0")
    feed.serve([("1.0.0", small)])
    env = update.moltd_env(feed, tmp, MOLTD_MODE="check")
    svdir = services(f"{tmp}/sv")
    ns = pid1.Namespace(init + ["--services", svdir], [], env=env, cold=cold)
    return ns, env, svdir


def kinds(pid, binary):
    """{kind: (Rss KiB, Anonymous KiB)} of `pid`'s mappings."""
    out, kind = {}, None
    for line in open(f"/proc/{pid}/smaps"):
        fields = line.split()
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            perms, path = fields[1], fields[5] if len(fields) > 5 else ""
            if os.path.basename(path) == os.path.basename(binary):
                kind = {"r-xp": "code", "r--p": "read-only data (or RELRO)", "rw-p": "data, bss"}[perms]
            else:
                kind = path or "anonymous (bss tail, ...)"
            out.setdefault(kind, [0, 0])
        elif fields[0] == "Rss:":
            out[kind][0] += int(fields[1])
        elif fields[0] == "Anonymous:":
            out[kind][1] += int(fields[1])
    return out


def resident_code(pid, binary, symbols):
    """The functions of `symbols` (an unstripped build of `binary`'s code) on
    the resident pages of `pid`'s code mapping, and the count of those pages."""
    start = offset = None
    for line in open(f"/proc/{pid}/maps"):
        fields = line.split()
        if fields[1] == "r-xp" and os.path.basename(fields[-1]) == os.path.basename(binary):
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            start, offset = lo, int(fields[2], 16)
            break
    text = subprocess.run(["readelf", "-lW", symbols], capture_output=True, text=True).stdout
    vaddr, foff = next((int(m[1], 16), int(m[0], 16)) for m in
                       re.findall(r"LOAD\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+).*R E", text))
    bias = start - offset + foff - vaddr  # load address of the file's address 0
    pages = []
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        f.seek(lo // 4096 * 8)
        data = f.read((hi - lo) // 4096 * 8)
    for i in range(len(data) // 8):
        if int.from_bytes(data[i * 8:i * 8 + 8], "little") >> 63:
            pages.append(lo - bias + i * 4096)
    names = []
    nm = subprocess.run(["nm", "-S", "--defined-only", symbols], capture_output=True, text=True).stdout
    for line in nm.splitlines():
        f = line.split()
        if len(f) == 4 and f[2] in "tTwW":
            a, size = int(f[0], 16), int(f[1], 16)
            if any(p < a + size and a < p + 4096 for p in pages):
                names.append(f[3])
    return len(pages), names


def report(pid, binary, symbols, label):
    print(f"{label}: VmRSS {pid1.status_field(pid, 'VmRSS')} KiB, RssAnon {pid1.status_field(pid, 'RssAnon')} KiB")
    for kind, (rss, anon) in sorted(kinds(pid, binary).items(), key=lambda kv: -kv[1][0]):
        if rss:
            print(f"  {rss:6,} KiB ({anon:,} anonymous)  {kind}")
    if symbols:
        count, names = resident_code(pid, binary, symbols)
        print(f"  code pages resident: {count}, functions on them: {len(names)}")


def where(args):
    with tempfile.TemporaryDirectory(prefix="moltd-pages-") as tmp:
        os.makedirs(f"{tmp}/small")
        small = build_release(f"{tmp}/small", "1.0.0", None)
        feed = Feed()
        try:
            ns, env, svdir = start([args.moltd], tmp, feed, small)
            with ns:
                pid1.services_up(ns.pid, SERVICES)
                pid1.wait_for(lambda: update.status_state(tmp) == "idle", what="the first check")
                time.sleep(0.5)
                report(ns.pid, args.moltd, args.symbols, "idle")
                exercise(args.moltd, ns.pid, env, svdir)
                report(ns.pid, args.moltd, args.symbols, "after the events")
        finally:
            feed.close()


# Run by gdb, which starts PID 1 (through unshare, following its fork) and
# stops it where its start-up ends (drop_start_up_pages' callback), then puts
# a breakpoint on every function of the binary (nm's list in $MOLTD_ORDER_NM)
# that writes the function's name to $MOLTD_ORDER_OUT the first time it runs,
# and lets PID 1 run on at full speed.
GDB_SCRIPT = """
import gdb, os
env = os.environ
out = open(env["MOLTD_ORDER_OUT"], "w")
class First(gdb.Breakpoint):
    def stop(self):
        out.write(self.symbol + "\\n")
        out.flush()
        self.enabled = False  # once is enough
        return False
for command in ("set pagination off", "set confirm off", "set startup-with-shell off",
                "set follow-fork-mode child", "catch exec", "run"):
    gdb.execute(command)
# PID 1 has just exec'd moltd: its own children are not followed.
gdb.execute("set follow-fork-mode parent")
gdb.execute("delete")
pid = gdb.selected_inferior().pid
bias = next(int(line.split("-")[0], 16) for line in open("/proc/%d/maps" % pid)
            if line.split()[2] == "00000000" and line.rstrip().endswith("/moltd"))
functions = [(int(a, 16) + bias, s) for a, s in (line.split() for line in open(env["MOLTD_ORDER_NM"]))]
marker = next(a for a, s in functions if "clean_image_ranges12first_object" in s)
gdb.Breakpoint("*0x%x" % marker, internal=True, temporary=True)
gdb.execute("continue")
# The drop throws away breakpoints written into the code pages it drops: a
# hardware one stops PID 1 at its loop's first poll, when the drop is done.
gdb.execute("thbreak *0x%x" % next(a for a, s in functions if s == "__libc_poll"))
gdb.execute("continue")
# The functions PID 1 is in run on without being entered again: the loop and
# what it called first, the callers of the loop (mostly start-up code) last;
# the drop's last steps ran after it, too.
frame, running = gdb.newest_frame(), []
while frame is not None:
    running += [s for a, s in functions if a <= frame.pc()][-1:]
    frame = frame.older()
loop = next(i for i, s in enumerate(running) if "6Runner3run" in s)
running[loop:loop] = [s for a, s in functions if "drop_start_up_pages" in s or s == "__madvise"]
loop = next(i for i, s in enumerate(running) if "6Runner3run" in s)
for symbol in reversed(running[:loop + 1]):
    out.write(symbol + "\\n")
with open(env["MOLTD_ORDER_OUT"] + ".last", "w") as last:
    last.write("".join(s + "\\n" for s in running[loop + 1:]))
breakpoints = []  # gdb calls stop() only while the Python object lives
for address, symbol in functions:
    if symbol not in running:
        breakpoints.append(First("*0x%x" % address, internal=True))
        breakpoints[-1].symbol = symbol
with open(env["MOLTD_ORDER_OUT"] + ".pid", "w") as f:
    f.write(str(pid))
gdb.execute("continue")
"""


def functions(binary):
    """(address, name) of every function of `binary`, once per address."""
    nm = subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True, check=True).stdout
    seen = {}
    for line in nm.splitlines():
        f = line.split()
        if len(f) == 3 and f[1] in "tTwWi" and int(f[0], 16) not in seen:
            seen[int(f[0], 16)] = f[2]
    return sorted(seen.items())


def order(args):
    flags = '-C target-feature=+crt-static --cfg getrandom_backend="linux_getrandom" -C strip=none'
    subprocess.run(["cargo", "build", "--release", "--quiet", "--target", "x86_64-unknown-linux-gnu"], check=True,
                   cwd=ROOT, env=dict(os.environ, RUSTFLAGS=flags, CARGO_TARGET_DIR=os.path.join(ROOT, "target", "order")))
    with tempfile.TemporaryDirectory(prefix="moltd-order-") as tmp:
        os.makedirs(f"{tmp}/small")
        small = build_release(f"{tmp}/small", "1.0.0", None)
        with open(f"{tmp}/nm", "w") as f:
            f.write("".join(f"{a:x} {n}\n" for a, n in functions(ORDER_BUILD)))
        with open(f"{tmp}/order.py", "w") as f:
            f.write(GDB_SCRIPT)
        feed = Feed()
        update.install(small, f"{tmp}/app", "v1.0.0")
        feed.serve([("1.0.0", small)])
        env = update.moltd_env(feed, tmp, MOLTD_MODE="check")
        svdir = services(f"{tmp}/sv")
        hits = f"{tmp}/hits"
        gdb = subprocess.Popen(["gdb", "-nx", "-batch", "-x", f"{tmp}/order.py", "--args",
                                *pid1.in_namespace([ORDER_BUILD, "--services", svdir])],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=dict(env, MOLTD_ORDER_NM=f"{tmp}/nm", MOLTD_ORDER_OUT=hits))
        try:
            pid1.wait_for(lambda: os.path.exists(f"{hits}.pid"), 600, "gdb's breakpoints")
            pid = int(open(f"{hits}.pid").read())
            pid1.services_up(pid, SERVICES)
            pid1.wait_for(lambda: update.status_state(tmp) == "idle", 120, "the first check")
            exercise(ORDER_BUILD, pid, env, svdir)
            os.kill(pid, signal.SIGKILL)
        finally:
            gdb.kill()
            gdb.wait()
            feed.close()
        names = [line.strip() for line in open(hits)] + [line.strip() for line in open(f"{hits}.last")]
    with open(os.path.join(ROOT, "src", "pid1.order"), "w") as f:
        f.write("".join(n + "\n" for n in names))
    print(f"src/pid1.order: {len(names)} functions", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("where")
    w.add_argument("--moltd", default=STATIC)
    w.add_argument("--symbols", help="an unstripped build of the same code (target/order's)")
    sub.add_parser("order")
    args = parser.parse_args()
    {"where": where, "order": order}[args.command](args)


if __name__ == "__main__":
    main()
