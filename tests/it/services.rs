//! Service mode as PID 1 of a PID namespace: starting, restarting, stopping
//! and shutting down runit-style service folders, combined mode, hot-plugged
//! folders, and bad input.

use crate::util::{Mode, Moltd, Running, TestDir};
use nix::libc::*;
use std::fs;
use std::time::{Duration, Instant};

/// A `run` that notes each start in `starts` (in the test dir) and then
/// sleeps until stopped.
fn sleeper(dir: &TestDir, name: &str) {
    dir.script(
        &format!("svc/{name}/run"),
        &format!(
            "#!/bin/sh\necho $$ >> {}/{name}.starts\nexec sleep 1000\n",
            dir.path().display()
        ),
    );
}

fn services<'a>(dir: &'a TestDir) -> Moltd<'a> {
    Moltd::new(dir, Mode::Pid1).args(["--services", "svc"])
}

fn count_lines(dir: &TestDir, name: &str) -> usize {
    dir.read(name).lines().count()
}

/// How many live (not zombie) processes have `marker` in their command
/// line. Pids inside the namespace mean nothing out here, so processes are
/// found by a path of the test's own directory in their arguments.
fn processes_with(marker: &str) -> usize {
    let Ok(entries) = fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains(marker)
                && crate::util::process_state(pid).is_some_and(|state| state != 'Z')
        })
        .count()
}

/// A shell loop whose command line holds `marker`, for [`processes_with`].
fn marked_loop(marker: &str) -> String {
    format!("sh -c 'while :; do sleep 0.05; done' {marker}")
}

fn stop(mut moltd: Running, signal: i32) -> crate::util::Finished {
    moltd.signal(signal);
    moltd.wait()
}

#[test]
fn crashing_service_restarts_with_growing_delay_up_to_the_cap() {
    let dir = TestDir::new("backoff");
    dir.script(
        "svc/crash/run",
        &format!(
            "#!/bin/sh\ndate +%s.%N >> {}/crash.starts\nexit 1\n",
            dir.path().display()
        ),
    );
    let mut moltd = services(&dir).env("MOLTD_BACKOFF_MAX", "2").spawn();
    moltd.wait_for("five starts", || count_lines(&dir, "crash.starts") >= 5);
    // Between a start and its exit the service is simply running: wait for
    // the backoff that follows.
    moltd.wait_for("status to say crash-loop", || {
        dir.moltd_client(&["status"]).stdout.contains("crash-loop")
    });
    let finished = stop(moltd, SIGTERM);
    finished.expect_code(0);
    let times: Vec<f64> = dir
        .read("crash.starts")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // 1 s, then 2 s (doubling, capped at 2).
    if gaps[0] < 0.95 || gaps[1..4].iter().any(|&g| !(1.95..6.0).contains(&g)) {
        finished.fail(&format!("bad restart gaps {gaps:?}"));
    }
    if finished.stderr.matches("crash: crash-looping").count() != 1 {
        finished.fail("expected exactly one crash-looping line");
    }
}

#[test]
fn down_file_keeps_a_service_down_until_sv_up() {
    let dir = TestDir::new("down_file");
    sleeper(&dir, "lazy");
    dir.write("svc/lazy/down", "");
    sleeper(&dir, "eager");
    let mut moltd = services(&dir).spawn();
    moltd.wait_for_sv("eager", "run: eager:");
    let line = dir.sv(&["status", "lazy"]).stdout;
    assert!(line.starts_with("down: lazy: "), "{line}");
    assert!(!line.contains("normally up"), "{line}");
    assert_eq!(dir.read("lazy.starts"), "");
    let up = dir.sv(&["-v", "up", "lazy"]);
    assert_eq!(up.code, Some(0), "{up:?}");
    assert!(up.stdout.starts_with("ok: run: lazy: (pid "), "{up:?}");
    assert!(up.stdout.contains(", normally down"), "{up:?}");
    moltd.wait_for("lazy to start", || count_lines(&dir, "lazy.starts") == 1);
    stop(moltd, SIGTERM).expect_code(0);
}

#[test]
fn finish_gets_runits_arguments() {
    let dir = TestDir::new("finish_args");
    let d = dir.path().display();
    // First exit 3, then die of USR1, then stay up.
    dir.script(
        "svc/f/run",
        &format!(
            "#!/bin/sh\nn=$(cat {d}/n 2>/dev/null || echo 0); echo $((n+1)) > {d}/n\n\
             case $n in 0) exit 3;; 1) kill -USR1 $$;; esac\nexec sleep 1000\n"
        ),
    );
    dir.script(
        "svc/f/finish",
        &format!("#!/bin/sh\necho \"$@\" >> {d}/finish.args\n"),
    );
    let mut moltd = services(&dir).spawn();
    moltd.wait_for_file("finish.args", "-1 10");
    moltd.wait_for_sv("f", "run: f:");
    assert_eq!(dir.read("finish.args"), "3 0\n-1 10\n");
    let finished = stop(moltd, SIGTERM);
    finished.expect_code(0);
    // Shutdown runs finish too: TERM killed run.
    assert_eq!(dir.read("finish.args"), "3 0\n-1 10\n-1 15\n");
}

#[test]
fn output_is_prefixed_and_log_service_gets_stdout_through_a_pipe() {
    let dir = TestDir::new("log_pipe");
    let d = dir.path().display();
    dir.script(
        "svc/web/run",
        "#!/bin/sh\necho to-log-1\necho to-stderr >&2\necho to-log-2\nexec sleep 1000\n",
    );
    dir.script(
        "svc/web/log/run",
        &format!("#!/bin/sh\necho logger-up\nexec cat >> {d}/web.log\n"),
    );
    dir.script("svc/plain/run", "#!/bin/sh\necho hello\nexec sleep 1000\n");
    let mut moltd = services(&dir).spawn();
    moltd.wait_for_file("web.log", "to-log-2");
    moltd.wait_for_file("moltd.stdout", "plain | hello");
    moltd.wait_for_file("moltd.stderr", "web | to-stderr");
    moltd.wait_for_file("moltd.stdout", "web/log | logger-up");
    let status = dir.sv(&["status", "web"]).stdout;
    assert!(status.contains("; run: log: (pid "), "{status}");
    // Restarting the service keeps the logger and its pipe.
    let restart = dir.sv(&["restart", "web"]);
    assert!(restart.stdout.starts_with("ok: run: web:"), "{restart:?}");
    moltd.wait_for("second lines in the log", || {
        dir.read("web.log").matches("to-log-2").count() == 2
    });
    let finished = stop(moltd, SIGTERM);
    finished.expect_code(0);
    assert!(!finished.stdout.contains("to-log"), "{}", finished.stdout);
}

#[test]
fn log_folder_added_to_a_running_service_gets_its_output_from_the_next_start() {
    let dir = TestDir::new("late_log");
    let d = dir.path().display();
    dir.script(
        "svc/web/run",
        "#!/bin/sh\necho hello from $$\nexec sleep 1000\n",
    );
    let mut moltd = services(&dir).spawn();
    let before = moltd.wait_for_sv("web", "run: web: (pid ");
    moltd.wait_for_file("moltd.stdout", "web | hello from");
    dir.script(
        "svc/web/log/run",
        &format!("#!/bin/sh\nexec cat >> {d}/web.log\n"),
    );
    // The log starts at once; run is left alone.
    let mut with_log = String::new();
    moltd.wait_for("web/log to start", || {
        with_log = dir.sv(&["status", "web"]).stdout;
        with_log.contains("; run: log: (pid ")
    });
    let pid = |line: &str| line.split(')').next().unwrap_or_default().to_owned();
    assert_eq!(pid(&with_log), pid(&before), "{before} / {with_log}");
    // `dir.read` gives "" for a file not there yet: wait until the log's
    // shell opened it, so that the check means run did not write into it.
    moltd.wait_for("web.log to be opened", || dir.join("web.log").exists());
    assert_eq!(dir.read("web.log"), "");
    // From its next start, run writes into the log.
    let restart = dir.sv(&["restart", "web"]);
    assert!(restart.stdout.starts_with("ok: run: web: "), "{restart:?}");
    moltd.wait_for_file("web.log", "hello from");
    assert_eq!(dir.read("moltd.stdout").matches("web | hello").count(), 1);
    stop(moltd, SIGTERM).expect_code(0);
}

#[test]
fn group_ignoring_term_is_killed_after_svwait() {
    let dir = TestDir::new("svwait_kill");
    let d = dir.path().display();
    // run exits on TERM, but leaves a child in its group that ignores it.
    let marker = format!("{d}/stubborn-child");
    dir.script(
        "svc/stubborn/run",
        &format!(
            "#!/bin/sh
trap '' TERM
{} &
trap - TERM
exec sleep 1000
",
            marked_loop(&marker)
        ),
    );
    let mut moltd = services(&dir).env("SVWAIT", "2").spawn();
    moltd.wait_for("the child", || processes_with(&marker) == 1);
    moltd.wait_for_sv("stubborn", "run:");
    let started = Instant::now();
    let down = dir.sv(&["-w", "10", "down", "stubborn"]);
    let took = started.elapsed();
    assert_eq!(down.code, Some(0), "{down:?}");
    assert!(down.stdout.starts_with("ok: down: stubborn:"), "{down:?}");
    assert!(took >= Duration::from_millis(1900), "down after {took:?}");
    assert_eq!(processes_with(&marker), 0, "the child survived");
    let finished = stop(moltd, SIGTERM);
    finished.expect_code(0);
    finished.expect_stderr_contains("killing its process group");
}

#[test]
fn shutdown_stops_every_service_runs_finish_and_exits_by_signal() {
    for (signal, code) in [(SIGTERM, 0), (SIGINT, 130), (SIGQUIT, 131)] {
        let dir = TestDir::new("shutdown");
        let d = dir.path().display();
        sleeper(&dir, "a");
        sleeper(&dir, "b");
        dir.script(
            "svc/b/finish",
            &format!("#!/bin/sh\necho \"$@\" > {d}/b.finished\n"),
        );
        dir.script(
            "svc/deaf/run",
            "#!/bin/sh\ntrap '' TERM\ntouch trapped\nwhile :; do sleep 0.05; done\n",
        );
        dir.write("svc/quitter/down-signal", "QUIT\n");
        dir.script(
            "svc/quitter/run",
            &format!("#!/bin/sh\ntrap 'echo quit > {d}/quitter.got; exit 0' QUIT\ntouch trapped\nwhile :; do sleep 0.05; done\n"),
        );
        let mut moltd = services(&dir).env("SVWAIT", "1").spawn();
        for name in ["a", "b", "deaf", "quitter"] {
            moltd.wait_for_sv(name, "run:");
        }
        // A signal before a trap is set would end the script instead.
        for name in ["deaf", "quitter"] {
            let trapped = dir.join(&format!("svc/{name}/trapped"));
            moltd.wait_for(&format!("{name} to set its trap"), || trapped.exists());
        }
        let finished = stop(moltd, signal);
        finished.expect_code(code);
        assert_eq!(dir.read("b.finished"), "-1 15\n");
        assert_eq!(dir.read("quitter.got"), "quit\n");
    }
}

#[test]
fn combined_mode_exits_with_the_commands_status_after_stopping_services() {
    let dir = TestDir::new("combined");
    let d = dir.path().display();
    sleeper(&dir, "side");
    dir.script(
        "svc/side/finish",
        &format!("#!/bin/sh\necho done > {d}/side.finished\n"),
    );
    let wait_then_exit = format!("while [ ! -s {d}/side.starts ]; do sleep 0.01; done; exit 7");
    let finished = services(&dir)
        .args(["--", "sh", "-c", &wait_then_exit])
        .run();
    finished.expect_code(7);
    assert_eq!(dir.read("side.finished"), "done\n");

    // TERM goes to the command, whose status is moltd's.
    let dir = TestDir::new("combined_term");
    sleeper(&dir, "side");
    let mut moltd = services(&dir)
        .args(["sleep", "1000"])
        .env("MOLTD_SERVICES", "ignored-because-of-the-flag")
        .spawn();
    moltd.wait_for_sv("side", "run:");
    stop(moltd, SIGTERM).expect_code(128 + SIGTERM);
}

#[test]
fn essential_service_that_gives_up_stops_the_container() {
    // finish exiting 125 means "do not restart".
    let dir = TestDir::new("essential_125");
    sleeper(&dir, "other");
    dir.script("svc/db/run", "#!/bin/sh\nexit 2\n");
    dir.script("svc/db/finish", "#!/bin/sh\nexit 125\n");
    dir.write("svc/db/essential", "");
    let finished = services(&dir).run();
    finished.expect_code(111);
    finished.expect_stderr_contains("db: essential service gave up");

    // Crash-looping until it gives up, beside a main command.
    let dir = TestDir::new("essential_loop");
    dir.script("svc/db/run", "#!/bin/sh\nexit 2\n");
    dir.write("svc/db/essential", "");
    let finished = services(&dir)
        .env("MOLTD_BACKOFF_MAX", "1")
        .args(["--", "sleep", "1000"])
        .run();
    finished.expect_code(111);

    // Not essential: the same service keeps being restarted.
    let dir = TestDir::new("not_essential");
    dir.script("svc/db/run", "#!/bin/sh\nexit 2\n");
    dir.script("svc/db/finish", "#!/bin/sh\nexit 125\n");
    let mut moltd = services(&dir).spawn();
    moltd.wait_for_sv("db", "down: db:");
    assert!(!moltd.has_exited());
    stop(moltd, SIGTERM).expect_code(0);
}

#[test]
fn folders_added_and_removed_while_running_are_picked_up() {
    let dir = TestDir::new("hotplug");
    fs::create_dir_all(dir.join("svc")).unwrap();
    let mut moltd = services(&dir).spawn();
    moltd.wait_for("the control socket", || dir.control_socket().exists());
    let marker = format!("{}/late-marker", dir.path().display());
    dir.script(
        "svc/late/run",
        &format!("#!/bin/sh\nexec {}\n", marked_loop(&marker)),
    );
    moltd.wait_for("late to start", || processes_with(&marker) == 1);
    // A folder whose run becomes executable only later.
    dir.write("svc/slow/run", "#!/bin/sh\nexec sleep 1000\n");
    moltd.wait_for_file(
        "moltd.stderr",
        "slow: not a service: its run file is not executable",
    );
    sleeper(&dir, "slow");
    moltd.wait_for_sv("slow", "run: slow:");
    fs::remove_dir_all(dir.join("svc/late")).unwrap();
    moltd.wait_for("late to be stopped", || processes_with(&marker) == 0);
    moltd.wait_for("late to be forgotten", || {
        dir.sv(&["status", "late"])
            .stdout
            .starts_with("fail: late:")
    });
    stop(moltd, SIGTERM).expect_code(0);
}

#[test]
fn a_hundred_services_start_and_stop() {
    let dir = TestDir::new("hundred");
    for i in 0..100 {
        dir.script(&format!("svc/s{i:03}/run"), "#!/bin/sh\nexec sleep 1000\n");
    }
    let mut moltd = services(&dir).spawn();
    moltd.wait_for("100 running services", || {
        dir.moltd_client(&["status"])
            .stdout
            .matches(" run ")
            .count()
            == 100
    });
    stop(moltd, SIGTERM).expect_code(0);
}

#[test]
fn bad_input_gives_one_line_and_the_rest_keeps_running() {
    let dir = TestDir::new("bad_input");
    sleeper(&dir, "good");
    dir.write("svc/noexec/run", "#!/bin/sh\nexec sleep 1000\n");
    dir.script("svc/spinner/run", "#!/bin/sh\nexit 1\n");
    dir.write("svc/garbled/down-signal", "FLY\n");
    sleeper(&dir, "garbled");
    dir.script("svc/badexec/run", "#!/nonexistent/interpreter\n");
    dir.script("svc/hangs/run", "#!/bin/sh\nexit 0\n");
    dir.script("svc/hangs/finish", "#!/bin/sh\nexec sleep 1000\n");
    let mut moltd = services(&dir)
        .env("MOLTD_BACKOFF_MAX", "1")
        .env("SVWAIT", "1")
        .spawn();
    moltd.wait_for_sv("good", "run: good:");
    moltd.wait_for_sv("garbled", "run: garbled:");
    moltd.wait_for_file("moltd.stderr", "spinner: crash-looping");
    moltd.wait_for_file("moltd.stderr", "badexec: cannot run ./run");
    moltd.wait_for_file(
        "moltd.stderr",
        "hangs: finish still running after 1s, killing its process group",
    );
    // The broken ones keep failing without more noise, and the good one is
    // undisturbed.
    moltd.wait_for("more spinner restarts", || {
        dir.moltd_client(&["status", "spinner"])
            .stdout
            .lines()
            .nth(1)
            .and_then(|row| row.split_whitespace().nth(5)?.parse::<u32>().ok())
            .is_some_and(|restarts| restarts >= 3)
    });
    assert_eq!(count_lines(&dir, "good.starts"), 1);
    let finished = stop(moltd, SIGTERM);
    finished.expect_code(0);
    for (line, count) in [
        ("noexec: not a service: its run file is not executable", 1),
        ("spinner: crash-looping", 1),
        (
            "garbled: down-signal holds \"FLY\", not a signal name or number; using TERM",
            1,
        ),
        ("badexec: cannot run ./run: No such file or directory", 1),
    ] {
        if finished.stderr.matches(line).count() != count {
            finished.fail(&format!("expected {count} line(s) {line:?}"));
        }
    }
}

/// Whether moltd sleeps in `poll` with no timeout: nothing wakes it on a
/// timer. The third argument is poll's timeout (-1) or ppoll's timespec
/// pointer (NULL).
fn polls_forever(pid: i32) -> bool {
    let text = fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
    let fields: Vec<&str> = text.split_whitespace().collect();
    #[cfg(target_arch = "x86_64")]
    const POLL: (&str, &str) = ("7", "271");
    #[cfg(target_arch = "aarch64")]
    const POLL: (&str, &str) = ("", "73");
    match fields[..] {
        [nr, _, _, timeout, ..] if nr == POLL.0 => timeout.starts_with("0xffffffff"),
        [nr, _, _, timespec, ..] if nr == POLL.1 => timespec == "0x0",
        _ => false,
    }
}

#[test]
fn missing_services_directory_is_waited_for_without_a_timer() {
    let dir = TestDir::new("missing_dir");
    let missing = "moltd: warn: services directory";
    let mut moltd = Moltd::new(&dir, Mode::Pid1)
        .args(["--services", "late/svc"])
        .spawn();
    moltd.wait_for_file("moltd.stderr", "late/svc does not exist");
    let pid = moltd.moltd_pid();
    moltd.wait_for("moltd to sleep with no timeout", || polls_forever(pid));
    // A folder on the way first, then the directory with a service in it.
    fs::create_dir(dir.join("late")).unwrap();
    let d = dir.path().display();
    let web = format!("#!/bin/sh\necho $$ >> {d}/web.starts\nexec sleep 1000\n");
    dir.script("late/svc/web/run", &web);
    moltd.wait_for_sv("web", "run: web:");
    moltd.wait_for("moltd to sleep with no timeout", || polls_forever(pid));
    // Removed (a volume going away) and back: stopped, then started again.
    fs::remove_dir_all(dir.join("late/svc")).unwrap();
    moltd.wait_for_sv("web", "fail: web:");
    dir.script("late/svc/web/run", &web);
    moltd.wait_for("web to start again", || {
        count_lines(&dir, "web.starts") == 2
    });
    let finished = stop(moltd, SIGTERM);
    finished.expect_code(0);
    if finished.stderr.matches(missing).count() != 2 {
        finished.fail("expected one line each time the directory was missing");
    }
    // Beside a command, the command runs meanwhile.
    let finished = services(&dir).args(["sh", "-c", "exit 4"]).run();
    finished.expect_code(4);
    finished.expect_stderr_contains(missing);
    // A path that is not a directory is a mistake, not something to wait for.
    dir.write("file", "");
    let finished = Moltd::new(&dir, Mode::Pid1)
        .args(["--services", "file"])
        .run();
    finished.expect_code(1);
    finished.expect_stderr_contains("moltd: error: services directory");
}

/// Whether one of `pid`'s inotify instances watches the inode of `path`
/// (`/proc/PID/fdinfo` lists each watch with its inode number in hex).
fn watches(pid: i32, path: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(inode) = fs::metadata(path).map(|m| format!("ino:{:x} ", m.ino())) else {
        return false;
    };
    fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|fd| {
            fs::read_to_string(fd.path()).is_ok_and(|info| {
                info.lines()
                    .any(|l| l.starts_with("inotify wd:") && l.contains(&inode))
            })
        })
}

#[test]
fn regression_renamed_parent_of_a_missing_services_directory_is_followed_anew() {
    let dir = TestDir::new("renamed_parent");
    let mut moltd = Moltd::new(&dir, Mode::Pid1)
        .args(["--services", "late/svc"])
        .spawn();
    moltd.wait_for_file("moltd.stderr", "late/svc does not exist");
    let pid = moltd.moltd_pid();
    fs::create_dir(dir.join("late")).unwrap();
    moltd.wait_for("moltd to watch late/ and settle", || {
        watches(pid, &dir.join("late")) && polls_forever(pid)
    });
    // The watch follows the inode to late.old; the new late/ must be seen.
    fs::rename(dir.join("late"), dir.join("late.old")).unwrap();
    // Seen by the service starting, not by asking sv (a request names it).
    let started = dir.join("web.started");
    let run = format!("#!/bin/sh\ntouch {}\nexec sleep 1000\n", started.display());
    dir.script("late/svc/web/run", &run);
    moltd.wait_for("web to start", || started.exists());
    stop(moltd, SIGTERM).expect_code(0);
}

/// Voluntary context switches of every thread of `pid`: how often
/// it woke up.
fn context_switches(pid: i32) -> u64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .flat_map(|task| {
            let status = fs::read_to_string(task.path().join("status")).unwrap_or_default();
            status
                .lines()
                // Wake-ups only: preemption on a loaded machine is not moltd's.
                .filter(|line| line.starts_with("voluntary_ctxt_switches:"))
                .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

#[test]
fn waiting_for_a_missing_directory_ignores_other_entries_of_its_parent() {
    let dir = TestDir::new("missing_dir_quiet");
    fs::create_dir(dir.join("parent")).unwrap();
    let mut moltd = Moltd::new(&dir, Mode::Pid1)
        .args(["--services", "parent/svc"])
        .spawn();
    moltd.wait_for_file(
        "moltd.stderr",
        "parent/svc does not exist; waiting for it to appear",
    );
    let pid = moltd.moltd_pid();
    moltd.wait_for("moltd to sleep with no timeout", || polls_forever(pid));
    // inotify cannot filter by name, so each entry made in the parent wakes
    // moltd once; it must go straight back to sleep, with no settle delay
    // and no rescan (a second wake-up each).
    const FILES: u64 = 20;
    let before = context_switches(pid);
    for i in 0..FILES {
        let seen = context_switches(pid);
        fs::write(dir.join(&format!("parent/file{i}")), "").unwrap();
        moltd.wait_for("moltd to take the event and sleep again", || {
            context_switches(pid) > seen && polls_forever(pid)
        });
    }
    let cost = context_switches(pid) - before;
    if cost > FILES + FILES / 2 {
        moltd.fail(&format!(
            "{cost} context switches for {FILES} unrelated files"
        ));
    }
    // The directory itself is still noticed.
    sleeper(&dir, "web");
    fs::rename(dir.join("svc"), dir.join("parent/svc")).unwrap();
    moltd.wait_for_sv("web", "run: web:");
    stop(moltd, SIGTERM).expect_code(0);
}

#[test]
fn services_directory_swapped_by_mv_is_followed() {
    let dir = TestDir::new("swapped_dir");
    sleeper(&dir, "old");
    sleeper(&dir, "both");
    let mut moltd = services(&dir).spawn();
    moltd.wait_for_sv("old", "run: old:");
    moltd.wait_for_sv("both", "run: both:");
    // The new directory: `both` again, `old` without its run, and `new`.
    fs::create_dir_all(dir.join("next/old")).unwrap();
    for name in ["both", "new"] {
        dir.script(&format!("next/{name}/run"), "#!/bin/sh\nexec sleep 1000\n");
    }
    fs::rename(dir.join("svc"), dir.join("svc.old")).unwrap();
    fs::rename(dir.join("next"), dir.join("svc")).unwrap();
    moltd.wait_for_sv("new", "run: new:");
    moltd.wait_for_sv("old", "fail: old:");
    moltd.wait_for_sv("both", "run: both:");
    // What changes from now on is in the swapped-in directory, and noticed
    // there; the old one is no longer followed.
    sleeper(&dir, "later");
    moltd.wait_for_sv("later", "run: later:");
    fs::remove_file(dir.join("svc/new/run")).unwrap();
    moltd.wait_for_sv("new", "fail: new:");
    stop(moltd, SIGTERM).expect_code(0);
}

#[test]
fn control_socket_is_private_and_subcommands_need_to_come_first() {
    let dir = TestDir::new("socket");
    sleeper(&dir, "a");
    let mut moltd = services(&dir).spawn();
    moltd.wait_for_sv("a", "run: a:");
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(dir.control_socket())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let table = dir.moltd_client(&["status"]);
    assert_eq!(table.code, Some(0));
    assert!(table.stdout.starts_with("SERVICE"), "{table:?}");
    let via_moltd = dir.moltd_client(&["sv", "status", "a"]);
    assert!(
        via_moltd.stdout.starts_with("run: a: (pid "),
        "{via_moltd:?}"
    );
    stop(moltd, SIGTERM).expect_code(0);
    // After `--`, `status` is a program like any other.
    dir.script("bin/status", "#!/bin/sh\nexit 42\n");
    let path = format!("{}:/usr/bin:/bin", dir.join("bin").display());
    Moltd::new(&dir, Mode::Pid1)
        .env("PATH", path)
        .args(["--", "status"])
        .run()
        .expect_code(42);
}
