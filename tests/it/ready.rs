//! Readiness: a running service is ready when it says so (`READY=1` on
//! `NOTIFY_SOCKET`, a newline on its `notification-fd`), or else when it has
//! stayed up `MOLTD_READY_GRACE`; `sv -w up` waits for it and `moltd status`
//! shows it. (`./check`, the third way, is in `sv.rs`.)

use crate::sv::expect;
use crate::util::{Mode, Moltd, Running, TestDir};
use nix::libc::SIGTERM;
use std::time::{Duration, Instant};

/// The READY column of `web` in `moltd status`.
fn ready_column(dir: &TestDir) -> String {
    let table = dir.moltd_client(&["status", "web"]).stdout;
    let mut lines = table.lines();
    let header = lines.next().unwrap_or_default();
    let at = header.find("READY").expect("a READY column");
    let row = lines.next().unwrap_or_default();
    row.get(at..)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_default()
        .to_owned()
}

fn start(dir: &TestDir) -> Running<'_> {
    let mut moltd = Moltd::new(dir, Mode::Pid1)
        .args(["--services", "svc"])
        .spawn();
    moltd.wait_for_sv("web", "run: web: (pid ");
    moltd
}

/// A `notify` file: only `READY=1` on `NOTIFY_SOCKET` makes it ready, from
/// `run` or a process in its group (here a child of the shell `run`), not
/// from anyone else: a message from outside moltd's namespace (no pid moltd
/// can see) is dropped.
#[test]
fn notify_socket_ready_makes_a_service_ready() {
    let dir = TestDir::new("ready_notify");
    dir.write("svc/web/notify", "");
    dir.script(
        "svc/web/run",
        "#!/bin/sh\n\
         python3 -c '\n\
import os, socket, time\n\
while not os.path.exists(\"go\"): time.sleep(0.02)\n\
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
s.connect(os.environ[\"NOTIFY_SOCKET\"])\n\
s.send(b\"STATUS=warming up\\nREADY=1\\n\")\n\
time.sleep(1000)\n'\n",
    );
    let mut moltd = start(&dir);
    // Past the grace period: a notify service waits for its notification.
    expect(&dir.sv(&["-w", "2", "up", "web"]), 1, "timeout: run: web: ");
    assert_eq!(ready_column(&dir), "no");
    let stranger = std::os::unix::net::UnixDatagram::unbound().unwrap();
    stranger
        .send_to(b"READY=1", dir.join("notify.sock"))
        .expect("the notify socket takes anyone's datagrams");
    expect(&dir.sv(&["-w", "1", "up", "web"]), 1, "timeout: run: web: ");

    dir.write("svc/web/go", "");
    expect(
        &dir.sv(&["-w", "20", "up", "web"]),
        0,
        "ok: run: web: (pid ",
    );
    assert_eq!(ready_column(&dir), "yes");
    moltd.signal(SIGTERM);
    moltd.wait().expect_code(0);
}

/// A `notification-fd` file (s6): `run` gets a pipe as that descriptor, and
/// a newline on it makes the service ready, every start anew.
#[test]
fn notification_fd_newline_makes_a_service_ready() {
    let dir = TestDir::new("ready_fd");
    dir.write("svc/web/notification-fd", "5\n");
    dir.script(
        "svc/web/run",
        "#!/bin/sh\nwhile [ ! -e go ]; do sleep 0.02; done\necho >&5\nexec sleep 1000\n",
    );
    let mut moltd = start(&dir);
    expect(&dir.sv(&["-w", "2", "up", "web"]), 1, "timeout: run: web: ");
    assert_eq!(ready_column(&dir), "no");
    dir.write("svc/web/go", "");
    expect(
        &dir.sv(&["-w", "20", "up", "web"]),
        0,
        "ok: run: web: (pid ",
    );
    assert_eq!(ready_column(&dir), "yes");
    // The next start gets a fresh pipe and says it again.
    expect(
        &dir.sv(&["-w", "20", "restart", "web"]),
        0,
        "ok: run: web: ",
    );
    // A bad file is reported, and the notification is then the only way.
    dir.write("svc/db/notification-fd", "1\n");
    dir.script("svc/db/run", "#!/bin/sh\nexec sleep 1000\n");
    moltd.wait_for_sv("db", "run: db: (pid ");
    expect(&dir.sv(&["-w", "2", "up", "db"]), 1, "timeout: run: db: ");
    moltd.signal(SIGTERM);
    moltd
        .wait()
        .expect_code(0)
        .expect_stderr_contains("db: notification-fd holds \"1\", not a descriptor from 3 to 1023");
}

/// With no way to say it, a service is ready once it stayed up
/// `MOLTD_READY_GRACE`: a wait for it to be up ends no sooner.
#[test]
fn grace_period_makes_a_silent_service_ready() {
    let dir = TestDir::new("ready_grace");
    dir.script("svc/web/run", "#!/bin/sh\nexec sleep 1000\n");
    let mut moltd = Moltd::new(&dir, Mode::Pid1)
        .args(["--services", "svc"])
        .env("MOLTD_READY_GRACE", "3s")
        .spawn();
    moltd.wait_for_sv("web", "run: web: (pid ");
    let asked = Instant::now();
    expect(
        &dir.sv(&["-w", "20", "restart", "web"]),
        0,
        "ok: run: web: ",
    );
    let took = asked.elapsed();
    assert!(took >= Duration::from_secs(3), "ready after {took:?}");
    assert_eq!(ready_column(&dir), "yes");
    moltd.signal(SIGTERM);
    moltd.wait().expect_code(0);

    let bad = Moltd::new(&dir, Mode::Child)
        .args(["--services", "svc"])
        .env("MOLTD_READY_GRACE", "soon")
        .run();
    bad.expect_stderr_contains("bad MOLTD_READY_GRACE \"soon\"");
    assert_ne!(bad.code, Some(0), "{:?}", bad.stderr);
}

/// The update's start waits for readiness: a release whose service runs but
/// never says it is ready fails its health check and is rolled back to the
/// one before, which says it again.
#[test]
fn an_update_whose_service_never_becomes_ready_is_rolled_back() {
    use crate::apply::{moltd, wait_for_state};
    use crate::overlap::{Notifies, notifying_setup};
    let (dir, feed) = notifying_setup("ready_update", Notifies::Never);
    let mut running = moltd(&dir, &feed, Mode::Pid1).spawn();
    let doc = wait_for_state(&mut running, &dir, "rolled_back");
    let reason = doc["last_error"].as_str().unwrap_or("");
    if !reason.contains("release v3.0.0 failed its health check")
        || !reason.contains("web did not become ready in time")
    {
        running.fail(&format!("bad reason: {doc}"));
    }
    if doc["bad_releases"] != serde_json::json!(["v3.0.0"]) || doc["current"] != "v2.0.0" {
        running.fail(&format!("bad status: {doc}"));
    }
    assert_eq!(crate::overlap::versions(&dir), ["2.0.0", "3.0.0", "2.0.0"]);
    expect(&dir.sv(&["-w", "20", "up", "web"]), 0, "ok: run: web: ");
    running.signal(SIGTERM);
    running.wait().expect_code(0);
}
