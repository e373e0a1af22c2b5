//! The `sv` client against a running moltd: every verb's output lines and
//! exit codes, as runit's sv(8) documents them.

use crate::util::{self, Client, Mode, Moltd, Running, TestDir};
use nix::libc::SIGTERM;
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

pub(crate) fn expect(client: &Client, code: i32, stdout_prefix: &str) {
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

/// A `check` that hangs holding a lock on `check.lock` (the test sees the
/// lock, not pids, which are the namespace's), once it wrote `hung`.
fn hung_check(dir: &TestDir) -> String {
    let d = dir.path().display();
    format!(
        "#!/bin/sh\nexec flock {d}/check.lock sh -c 'echo hung >> {d}/checks.hung; exec sleep 1000 >/dev/null 2>&1'\n"
    )
}

/// Whether no hung check holds `check.lock` any more.
fn check_gone(dir: &TestDir) -> bool {
    std::process::Command::new("flock")
        .args(["-n", "check.lock", "true"])
        .current_dir(dir.path())
        .status()
        .is_ok_and(|s| s.success())
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
/// PID 1 runs it in the service's folder while the service is not ready,
/// again until it passes, and kills one that hangs; every wait for up ends
/// when it passes, with runit's lines and exit codes.
#[test]
fn waits_for_up_end_when_the_check_script_passes() {
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
    // Waits for down and plain status are not held up by it.
    expect(&dir.sv(&["status", "web"]), 0, "run: web: ");
    expect(&dir.sv(&["-v", "down", "web"]), 0, "ok: down: web: ");

    // It becomes ready while a restart waits: ok, exit 0.
    fs::remove_file(dir.join("checks")).unwrap();
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

    // A check that hangs is killed (its group) after its 5 s, and run again.
    dir.script("svc/web/check", &hung_check(&dir));
    expect(
        &dir.sv(&["-w", "1", "restart", "web"]),
        1,
        "timeout: run: web: ",
    );
    moltd.wait_for_file("checks.hung", "hung");
    moltd.wait_for("the hung check to be killed", || check_gone(&dir));
    moltd.wait_for("the check to run again", || {
        dir.read("checks.hung").lines().count() >= 2
    });
    // One that cannot run: the wait times out, moltd says why.
    dir.script("svc/web/check", "#!/nonexistent/interpreter\n");
    expect(
        &dir.sv(&["-w", "2", "restart", "web"]),
        1,
        "timeout: run: web: ",
    );
    moltd.signal(SIGTERM);
    moltd
        .wait()
        .expect_code(0)
        .expect_stderr_contains("web: cannot run ./check: ");
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

/// A check still running when `run` goes is killed with it: it would probe
/// a service that is gone.
#[test]
fn a_check_running_when_the_service_stops_is_killed() {
    let dir = TestDir::new("sv_check_stopped");
    let mut moltd = checked_web(&dir, &hung_check(&dir));
    moltd.wait_for_file("checks.hung", "hung");
    assert!(!check_gone(&dir), "the check holds its lock");
    expect(&dir.sv(&["-v", "down", "web"]), 0, "ok: down: web: ");
    moltd.wait_for("the check to end with the service", || check_gone(&dir));
    moltd.signal(SIGTERM);
    moltd.wait().expect_code(0);
}
