//! The `sv` client against a running moltd: every verb's output lines and
//! exit codes, as runit's sv(8) documents them.

use crate::util::{self, Client, Mode, Moltd, Running, TestDir};
use nix::libc::{SIGINT, SIGTERM};
use std::fs;

/// A service that records every signal it gets in `NAME.signals` and exits
/// on TERM.
fn recorder(dir: &TestDir, name: &str) {
    let d = dir.path().display();
    dir.script(
        &format!("svc/{name}/run"),
        &format!(
            "#!/bin/bash\nout={d}/{name}.signals\n\
             for s in HUP INT ALRM QUIT USR1 USR2 CONT; do trap \"echo $s >> $out\" $s; done\n\
             trap 'echo TERM >> $out; exit 0' TERM\n\
             echo start >> $out\n\
             while :; do sleep 0.05; done\n"
        ),
    );
}

fn expect(client: &Client, code: i32, stdout_prefix: &str) {
    assert_eq!(client.code, Some(code), "{client:?}");
    assert!(
        client.stdout.starts_with(stdout_prefix),
        "expected {stdout_prefix:?}: {client:?}"
    );
}

#[test]
fn sv_verbs_print_runits_lines_and_exit_codes() {
    let dir = TestDir::new("sv_verbs");
    recorder(&dir, "web");
    dir.script("svc/web/log/run", "#!/bin/sh\nexec cat\n");
    recorder(&dir, "db");
    dir.write("svc/db/down", "");
    let mut moltd = Moltd::new(&dir, Mode::Pid1)
        .args(["--services", "svc"])
        .env("SVWAIT", "2")
        .spawn();
    moltd.wait_for_sv("web", "run: web:");
    moltd.wait_for_file("web.signals", "start");

    let status = dir.sv(&["status", "web", "db"]);
    assert_eq!(status.code, Some(0));
    let lines: Vec<&str> = status.stdout.lines().collect();
    assert!(lines[0].starts_with("run: web: (pid "), "{lines:?}");
    assert!(lines[0].contains("s; run: log: (pid "), "{lines:?}");
    assert!(
        lines[1].starts_with("down: db: ") && lines[1].ends_with('s'),
        "{lines:?}"
    );
    expect(&dir.sv(&["status", "web/log"]), 0, "run: web/log: (pid ");
    expect(&dir.sv(&["s", "svc/web/"]), 0, "run: svc/web/: (pid ");

    // Signals go to run; quiet unless they wait.
    for (verb, name) in [
        ("hup", "HUP"),
        ("interrupt", "INT"),
        ("alarm", "ALRM"),
        ("quit", "QUIT"),
        ("1", "USR1"),
        ("2", "USR2"),
        ("cont", "CONT"),
    ] {
        expect(&dir.sv(&[verb, "web"]), 0, "");
        moltd.wait_for_file("web.signals", &format!("{name}\n"));
    }
    // With -v runit's sv answers a plain signal with `ok:` and the status.
    expect(&dir.sv(&["-v", "hup", "web"]), 0, "ok: run: web: (pid ");
    expect(&dir.sv(&["pause", "web"]), 0, "");
    let paused = dir.sv(&["status", "web"]).stdout;
    assert!(paused.contains(", paused"), "{paused}");
    expect(&dir.sv(&["-v", "pause", "web"]), 0, "ok: run: web: (pid ");
    expect(&dir.sv(&["-v", "cont", "web"]), 0, "ok: run: web: (pid ");

    // term restarts it (want up); -v waits for the new run.
    let term = dir.sv(&["-v", "term", "web"]);
    expect(&term, 0, "ok: run: web: (pid ");
    let kill = dir.sv(&["kill", "web"]);
    expect(&kill, 0, "");
    moltd.wait_for("web to come back after kill", || {
        dir.read("web.signals").matches("start").count() == 3
    });

    // up / down / once / exit, and the LSB verbs.
    expect(&dir.sv(&["up", "db"]), 0, "");
    moltd.wait_for_sv("db", "run: db:");
    let down = dir.sv(&["-v", "down", "db"]);
    expect(&down, 0, "ok: down: db: ");
    expect(&dir.sv(&["-v", "once", "db"]), 0, "ok: run: db: (pid ");
    let once = dir.sv(&["status", "db"]).stdout;
    assert!(once.contains("normally down, want down"), "{once}");
    expect(&dir.sv(&["-v", "exit", "db"]), 0, "ok: down: db: ");
    expect(&dir.sv(&["start", "db"]), 0, "ok: run: db: (pid ");
    expect(&dir.sv(&["restart", "db"]), 0, "ok: run: db: (pid ");
    expect(&dir.sv(&["check", "db", "web"]), 0, "ok: run: db: (pid ");
    expect(&dir.sv(&["stop", "db"]), 0, "ok: down: db: ");
    expect(&dir.sv(&["check", "db"]), 0, "ok: down: db: ");
    expect(&dir.sv(&["force-restart", "db"]), 0, "ok: run: db: (pid ");
    expect(&dir.sv(&["force-stop", "db"]), 0, "ok: down: db: ");
    expect(&dir.sv(&["try-restart", "db"]), 0, "ok: down: db: ");
    expect(&dir.sv(&["reload", "web"]), 0, "ok: run: web: (pid ");

    // Failures count, one per service.
    let unknown = dir.sv(&["status", "nope", "web", "gone"]);
    assert_eq!(unknown.code, Some(2), "{unknown:?}");
    assert!(
        unknown.stdout.starts_with(
            "fail: nope: unable to change to service directory: file does not exist\n"
        ),
        "{unknown:?}"
    );
    // A stop that cannot finish in time: timeout, then force-stop's kill.
    dir.script(
        "svc/deaf/run",
        "#!/bin/sh\ntrap '' TERM\ntouch trapped\nwhile :; do sleep 0.05; done\n",
    );
    // Running is not enough: a TERM before the trap is set would end it.
    moltd.wait_for("deaf to ignore TERM", || {
        dir.join("svc/deaf/trapped").exists()
    });
    let timeout = dir.sv(&["-w", "1", "down", "deaf"]);
    expect(&timeout, 1, "timeout: run: deaf: (pid ");
    assert!(
        timeout.stdout.contains("want down, got TERM"),
        "{timeout:?}"
    );
    let forced = dir.moltd_client(&["sv", "-w", "0", "force-stop", "deaf"]);
    expect(&forced, 1, "kill: run: deaf: (pid ");
    moltd.wait_for_sv("deaf", "down: deaf:");

    // Bad usage is runit's 100.
    for args in [
        &["fly", "web"][..],
        &["status"],
        &[],
        &["-w", "x", "up", "web"],
    ] {
        let usage = dir.sv(args);
        assert_eq!(usage.code, Some(100), "{args:?}: {usage:?}");
        assert!(
            usage
                .stderr
                .contains("usage: sv [-v] [-w sec] command service ...")
        );
    }
    moltd.signal(SIGTERM);
    moltd.wait().expect_code(0);

    // Nobody listening: every service fails.
    let orphan = dir.sv(&["status", "web", "db"]);
    assert_eq!(orphan.code, Some(2), "{orphan:?}");
    assert!(
        orphan.stdout.starts_with("fail: web: moltd not running"),
        "{orphan:?}"
    );
}

/// moltd running one service, `web` (a sleep), whose `check` is `check`.
fn checked_web<'a>(dir: &'a TestDir, check: &str) -> Running<'a> {
    dir.script("svc/web/run", "#!/bin/sh\nexec sleep 1000\n");
    dir.script("svc/web/check", check);
    let mut moltd = Moltd::new(dir, Mode::Pid1)
        .args(["--services", "svc"])
        .spawn();
    moltd.wait_for_sv("web", "run: web:");
    moltd
}

/// runit's `./check`: a service counts as up only once its `check` exits 0.
/// sv runs it in the service's folder, again until it passes or the wait is
/// over, and kills one that outlives the wait.
#[test]
fn waits_for_up_run_the_check_script_until_it_passes() {
    let dir = TestDir::new("sv_check");
    let d = dir.path().display();
    // `ready` is relative: the check runs in the service folder.
    let mut moltd = checked_web(
        &dir,
        &format!("#!/bin/sh\necho checked >> {d}/checks\ntest -e ready\n"),
    );

    // Not ready: every waiting verb that wants it up times out.
    expect(
        &dir.sv(&["-w", "1", "up", "web"]),
        1,
        "timeout: run: web: (pid ",
    );
    let tries = dir.read("checks").lines().count();
    assert!(tries >= 2, "the check ran {tries} times in 1s");
    expect(
        &dir.sv(&["-w", "1", "check", "web"]),
        1,
        "timeout: run: web: ",
    );
    // Waits for down, and plain status, do not run it.
    fs::remove_file(dir.join("checks")).unwrap();
    expect(&dir.sv(&["status", "web"]), 0, "run: web: ");
    expect(&dir.sv(&["-v", "down", "web"]), 0, "ok: down: web: ");
    assert_eq!(dir.read("checks"), "");

    // It becomes ready while a restart waits: ok, exit 0.
    let mut restart = dir.sv_background(&["-w", "20", "restart", "web"]);
    moltd.wait_for_file("checks", "checked");
    dir.write("svc/web/ready", "");
    util::wait_child(&mut restart, "sv restart");
    let out = restart.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("ok: run: web: (pid "),
        "{out:?}"
    );
    expect(&dir.sv(&["start", "web"]), 0, "ok: run: web: (pid ");

    // A check that hangs is killed when the wait is over.
    dir.script(
        "svc/web/check",
        &format!("#!/bin/sh\necho $$ > {d}/check.pid\nexec sleep 1000\n"),
    );
    let started = std::time::Instant::now();
    expect(
        &dir.sv(&["-w", "1", "check", "web"]),
        1,
        "timeout: run: web: ",
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let pid = dir.read("check.pid");
    assert!(
        !std::path::Path::new(&format!("/proc/{}", pid.trim())).exists(),
        "check {pid} outlived sv"
    );
    // One that cannot run is a failure with the reason.
    dir.script("svc/web/check", "#!/nonexistent/interpreter\n");
    let broken = dir.sv(&["start", "web"]);
    expect(&broken, 1, "fail: web: cannot run ./check: ");
    moltd.signal(SIGTERM);
    moltd.wait().expect_code(0);
}

/// runit's sv.c runs `./check` also when `-v term` and `-v kill` wait for
/// the service to be up again.
#[test]
fn term_and_kill_waits_run_the_check_script() {
    let dir = TestDir::new("sv_check_term");
    let mut moltd = checked_web(&dir, "#!/bin/sh\ntest -e ready\n");
    // Each stop is a quick death (a second of backoff); `up` forgets them.
    for verb in ["term", "kill"] {
        expect(&dir.sv(&["-w", "3", verb, "web"]), 1, "timeout: run: web: ");
        expect(&dir.sv(&["up", "web"]), 0, "");
    }
    dir.write("svc/web/ready", "");
    for verb in ["term", "kill"] {
        expect(&dir.sv(&["-v", verb, "web"]), 0, "ok: run: web: (pid ");
        expect(&dir.sv(&["up", "web"]), 0, "");
    }
    moltd.signal(SIGTERM);
    moltd.wait().expect_code(0);
}

/// A check is in sv's process group, as in runit: a Ctrl-C on a waiting sv
/// ends the check too instead of leaving it behind.
#[test]
fn interrupting_sv_ends_its_check() {
    let dir = TestDir::new("sv_check_interrupted");
    let d = dir.path().display();
    // Not on sv's stderr: one left behind would hold the test's output.
    let mut moltd = checked_web(
        &dir,
        &format!("#!/bin/sh\necho $$ > {d}/check.pid\nexec sleep 1000 >/dev/null 2>&1\n"),
    );
    let mut sv = dir.sv_background(&["-w", "60", "check", "web"]);
    moltd.wait_for_file("check.pid", "\n");
    let pid: i32 = dir.read("check.pid").trim().parse().unwrap();
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { nix::libc::kill(-(sv.id() as i32), SIGINT) }, 0);
    util::wait_child(&mut sv, "sv check");
    moltd.wait_for("the check to end with sv", || {
        util::process_state(pid).is_none_or(|state| state == 'Z')
    });
    moltd.signal(SIGTERM);
    moltd.wait().expect_code(0);
}
