//! The `sv` client against a running moltd: every verb's output lines and
//! exit codes, as runit's sv(8) documents them.

use crate::util::{Client, Mode, Moltd, TestDir};
use nix::libc::SIGTERM;

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
    expect(&dir.sv(&["pause", "web"]), 0, "");
    let paused = dir.sv(&["status", "web"]).stdout;
    assert!(paused.contains(", paused"), "{paused}");
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
        "#!/bin/sh\ntrap '' TERM\nwhile :; do sleep 0.05; done\n",
    );
    moltd.wait_for_sv("deaf", "run: deaf:");
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
