//! Single-command mode as PID 1 and as a subreaper: exit codes, reaping,
//! signal forwarding, inherited signal state, job control, and the tini and
//! dumb-init personalities.

use crate::util::{Mode, Moltd, TestDir, process_state};
use nix::libc::*;

/// Signals that moltd forwards unchanged in every mode (1-31 minus KILL and
/// STOP, CHLD, the faults, and the job-control trio tested on their own),
/// plus a real-time one. TERM comes last: the recorder exits on it.
const FORWARDED: [i32; 21] = [
    SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGPIPE, SIGALRM, SIGSTKFLT, SIGCONT, SIGURG,
    SIGXCPU, SIGXFSZ, SIGVTALRM, SIGPROF, SIGWINCH, SIGIO, SIGPWR, 34, 40, 64, SIGTERM,
];

/// A bash script that appends the number of every signal it receives to the
/// file named by its first argument, says `ready` once its traps are set, and
/// exits 0 after TERM (or by itself after about two minutes).
const RECORDER: &str = r#"#!/bin/bash
out=$1
for s in 1 2 3 10 12 13 14 16 18 20 21 22 23 24 25 26 27 28 29 30 34 40 64; do
    trap "echo got $s >> $out" $s
done
trap "echo got 15 >> $out; exit 0" 15
echo ready >> $out
# Bounded, so a failed test leaves nothing behind for long; no command
# substitution, whose subshell would die of the signals under test.
i=0
while [ $i -lt 120 ]; do i=$((i + 1)); sleep 1 & wait $!; done
"#;

fn recorder(dir: &TestDir) -> String {
    dir.script("recorder.sh", RECORDER).display().to_string()
}

#[test]
fn exit_codes_pass_through_for_every_value() {
    let dir = TestDir::new("exit_codes");
    // Every code through a plain moltd, a sample through each personality as PID 1.
    for code in 0..=255 {
        Moltd::new(&dir, Mode::Child)
            .args(["sh", "-c", &format!("exit {code}")])
            .run()
            .expect_code(code);
    }
    for name in ["moltd", "tini", "dumb-init"] {
        for code in [0, 1, 2, 126, 127, 128, 255] {
            Moltd::new(&dir, Mode::Pid1)
                .named(name)
                .args(["--", "sh", "-c", &format!("exit {code}")])
                .run()
                .expect_code(code);
        }
    }
}

#[test]
fn child_killed_by_signal_gives_128_plus_n() {
    let dir = TestDir::new("killed_by_signal");
    let deadly = [
        SIGHUP, SIGINT, SIGQUIT, SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE, SIGKILL, SIGUSR1,
        SIGSEGV, SIGUSR2, SIGPIPE, SIGALRM, SIGTERM, SIGSTKFLT, SIGXCPU, SIGXFSZ, SIGVTALRM,
        SIGPROF, SIGIO, SIGPWR, SIGSYS, 40,
    ];
    for name in ["moltd", "tini", "dumb-init"] {
        for signal in deadly {
            let script = format!("ulimit -c 0; kill -{signal} $$");
            Moltd::new(&dir, Mode::Pid1)
                .named(name)
                .args(["--", "sh", "-c", &script])
                .run()
                .expect_code(128 + signal);
        }
    }
}

#[test]
fn tini_e_remaps_exit_codes_to_zero() {
    let dir = TestDir::new("tini_e");
    let run = |args: &[&str]| Moltd::new(&dir, Mode::Pid1).named("tini").args(args).run();
    run(&["-e", "3", "--", "sh", "-c", "exit 3"]).expect_code(0);
    run(&["-e", "3", "-e", "4", "--", "sh", "-c", "exit 4"]).expect_code(0);
    run(&["-e", "3", "--", "sh", "-c", "exit 5"]).expect_code(5);
    run(&["-e", "143", "--", "sh", "-c", "kill -TERM $$"]).expect_code(0);
    Moltd::new(&dir, Mode::Pid1)
        .args(["-e", "7", "sh", "-c", "exit 7"])
        .run()
        .expect_code(0);
}

/// The child makes `count` orphans (double-forked processes that exit at
/// once) and 20 that first report who adopted them. It then waits until every
/// report is in and no zombie child of its parent (moltd) is left, and exits
/// 0; it exits 1 if zombies stay or an orphan was adopted by someone else.
fn orphan_maker(count: usize) -> String {
    format!(
        r#"rm -f adopted
for i in $(seq {count}); do (sh -c 'exit 0' &); done
for i in $(seq 20); do
    (sh -c 'sleep 0.2; read -r l < /proc/$$/stat; set -- ${{l##*)}}; echo $2 >> adopted' &)
done
wait
for try in $(seq 400); do
    zombies=0
    for stat in /proc/[0-9]*/stat; do
        read -r l < "$stat" 2>/dev/null || continue
        set -- ${{l##*)}}
        [ "$1" = Z ] && [ "$2" = "$PPID" ] && zombies=$((zombies + 1))
    done
    reports=$(cat adopted 2>/dev/null | wc -l)
    if [ "$zombies" = 0 ] && [ "$reports" = 20 ]; then
        grep -v "^$PPID\$" adopted && {{ echo "adopted by someone else" >&2; exit 1; }}
        exit 0
    fi
    sleep 0.05
done
echo "$zombies zombies left, $reports reports" >&2
exit 1"#
    )
}

#[test]
fn hundreds_of_orphans_are_reaped_as_pid1() {
    let dir = TestDir::new("reap_pid1");
    for name in ["moltd", "tini", "dumb-init"] {
        Moltd::new(&dir, Mode::Pid1)
            .named(name)
            .args(["--", "sh", "-c", &orphan_maker(300)])
            .run()
            .expect_code(0);
    }
}

#[test]
fn hundreds_of_orphans_are_reaped_as_subreaper() {
    let dir = TestDir::new("reap_subreaper");
    Moltd::new(&dir, Mode::Child)
        .args(["sh", "-c", &orphan_maker(300)])
        .run()
        .expect_code(0);
    Moltd::new(&dir, Mode::Child)
        .named("tini")
        .args(["-s", "--", "sh", "-c", &orphan_maker(300)])
        .run()
        .expect_code(0);
}

/// Sends each of `signals` to moltd and waits until the recorder has logged
/// `expected` for it before sending the next.
fn send_and_expect(moltd: &mut crate::util::Running, out: &str, signals: &[(i32, i32)]) {
    for &(sent, expected) in signals {
        moltd.signal(sent);
        moltd.wait_for_file(out, &format!("got {expected}\n"));
    }
}

#[test]
fn every_forwardable_signal_reaches_the_child() {
    let dir = TestDir::new("forward_child");
    let recorder = recorder(&dir);
    let pairs: Vec<(i32, i32)> = FORWARDED.iter().map(|&s| (s, s)).collect();
    let modes: [(&str, &[&str]); 4] = [
        ("moltd", &[]),
        ("moltd", &["-c"]),
        ("tini", &["--"]),
        ("dumb-init", &["-c"]),
    ];
    for (name, flags) in modes {
        for mode in [Mode::Pid1, Mode::Child] {
            let out = format!("{name}{}-{}.log", flags.join(""), mode as u8);
            let mut moltd = Moltd::new(&dir, mode)
                .named(name)
                .args(flags)
                .args([&recorder, &out])
                .spawn();
            moltd.wait_for_file(&out, "ready");
            send_and_expect(&mut moltd, &out, &pairs);
            moltd.wait().expect_code(0);
        }
    }
}

#[test]
fn group_mode_forwards_every_signal_to_a_grandchild() {
    let dir = TestDir::new("forward_group");
    let recorder = recorder(&dir);
    // The direct child shrugs every signal off and runs the recorder in the
    // foreground (a background job would start with INT and QUIT ignored).
    let middle = format!(
        "for s in 1 2 3 10 12 13 14 15 16 18 23 24 25 26 27 28 29 30 34 40 64; do trap : $s; done\n\
         {recorder} grandchild.log"
    );
    let pairs: Vec<(i32, i32)> = FORWARDED.iter().map(|&s| (s, s)).collect();
    for name in ["moltd", "tini", "dumb-init"] {
        let flags: &[&str] = if name == "tini" { &["-g", "--"] } else { &[] };
        std::fs::remove_file(dir.join("grandchild.log")).ok();
        let mut moltd = Moltd::new(&dir, Mode::Pid1)
            .named(name)
            .args(flags)
            .args(["bash", "-c", &middle])
            .spawn();
        moltd.wait_for_file("grandchild.log", "ready");
        send_and_expect(&mut moltd, "grandchild.log", &pairs);
        moltd.wait().expect_code(0);
    }
}

#[test]
fn single_child_mode_does_not_reach_grandchildren() {
    let dir = TestDir::new("single_child");
    let recorder = recorder(&dir);
    // The child traps USR1 and exits 42 on it; its own child records.
    let middle =
        format!("trap 'exit 42' USR1\n{recorder} grandchild.log &\nwhile ! wait; do :; done");
    let mut moltd = Moltd::new(&dir, Mode::Pid1)
        .args(["-c", "bash", "-c", &middle])
        .spawn();
    moltd.wait_for_file("grandchild.log", "ready");
    moltd.signal(SIGUSR1);
    moltd.wait().expect_code(42);
    assert!(
        !dir.read("grandchild.log").contains("got 10"),
        "grandchild got USR1 in single-child mode"
    );
}

#[test]
fn rewrites_translate_and_drop_signals() {
    let dir = TestDir::new("rewrites");
    let recorder = recorder(&dir);
    for name in ["moltd", "dumb-init"] {
        let out = format!("{name}.log");
        let mut moltd = Moltd::new(&dir, Mode::Pid1)
            .named(name)
            .args(["-r", "10:12", "--rewrite", "1:0", "-r", "3:2"])
            .args([&recorder, &out])
            .spawn();
        moltd.wait_for_file(&out, "ready");
        // HUP is dropped: the next signal's line must be the only new one.
        moltd.signal(SIGHUP);
        send_and_expect(
            &mut moltd,
            &out,
            &[(SIGUSR1, SIGUSR2), (SIGQUIT, SIGINT), (SIGTERM, SIGTERM)],
        );
        moltd.wait().expect_code(0);
        let log = dir.read(&out);
        for absent in ["got 1\n", "got 10\n", "got 3\n"] {
            assert!(
                !log.contains(absent),
                "{name}: {absent:?} should not arrive:\n{log}"
            );
        }
    }
}

#[test]
fn fault_signals_sent_by_kill_neither_kill_moltd_nor_reach_the_child() {
    let dir = TestDir::new("faults");
    let recorder = recorder(&dir);
    // USR1 after the faults proves moltd still runs and that nothing else
    // arrived; as a plain child, an unblocked fault would have killed it.
    for mode in [Mode::Pid1, Mode::Child] {
        let out = format!("{}.log", mode as u8);
        let mut moltd = Moltd::new(&dir, mode).args([&recorder, &out]).spawn();
        moltd.wait_for_file(&out, "ready");
        for fault in [SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP, SIGSYS] {
            moltd.signal(fault);
        }
        send_and_expect(&mut moltd, &out, &[(SIGUSR1, SIGUSR1), (SIGTERM, SIGTERM)]);
        moltd.wait().expect_code(0);
        assert_eq!(
            dir.read(&out),
            "ready\ngot 10\ngot 15\n",
            "only USR1 and TERM may arrive"
        );
    }
}

/// The `SigBlk:` and `SigIgn:` lines of a /proc status text.
fn mask_lines(status: &str) -> String {
    status
        .lines()
        .filter(|l| l.starts_with("SigBlk") || l.starts_with("SigIgn"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn child_inherits_the_launchers_mask_and_ignored_signals() {
    let dir = TestDir::new("inherited_mask");
    // A launcher that blocks USR2 and INT, ignores QUIT, PIPE and USR1, records
    // its own state, then execs moltd.
    let launcher = dir.write(
        "launch.py",
        "import os, signal, sys\n\
         signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2, signal.SIGINT})\n\
         for s in (signal.SIGQUIT, signal.SIGPIPE, signal.SIGUSR1):\n    signal.signal(s, signal.SIG_IGN)\n\
         signal.signal(signal.SIGINT, signal.SIG_DFL)\n\
         open('launcher.status', 'w').write(open('/proc/self/status').read())\n\
         os.execv(sys.argv[1], sys.argv[1:])\n",
    );
    // dumb-init gives its child a clean state instead (tests/it/dumb_init.rs).
    for name in ["moltd", "tini"] {
        let program = dir.moltd_as(name);
        let child_status = format!("{name}.status");
        let mut launch = std::process::Command::new("python3")
            .current_dir(dir.path())
            .arg(&launcher)
            .arg(&program)
            .args(["--", "cp", "/proc/self/status", &child_status])
            .env("TINI_SUBREAPER", "1")
            .spawn()
            .expect("python3");
        crate::util::wait_child(&mut launch, "the launcher");
        let expected = mask_lines(&dir.read("launcher.status"));
        assert!(
            expected.contains("0000000000000802"),
            "launcher did not block as planned:\n{expected}"
        );
        assert_eq!(
            mask_lines(&dir.read(&child_status)),
            expected,
            "{name}'s child"
        );
    }
}

/// The `SigIgn:` mask of a /proc status text.
fn ignored_mask(status: &str) -> u64 {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .expect("SigIgn line");
    u64::from_str_radix(hex.trim(), 16).unwrap()
}

#[test]
fn regression_rust_runtime_sigpipe_ignore_does_not_leak_into_child() {
    let dir = TestDir::new("sigpipe");
    // std resets SIGPIPE to default for the processes it spawns, so moltd is
    // started with PIPE not ignored; Rust's own start-up would ignore it.
    let finished = Moltd::new(&dir, Mode::Child)
        .args(["cat", "/proc/self/status"])
        .run();
    finished.expect_code(0);
    if ignored_mask(&finished.stdout) & (1 << (SIGPIPE - 1)) != 0 {
        finished.fail("the child ignores SIGPIPE");
    }
}

#[test]
fn job_control_stops_child_then_moltd_and_cont_resumes_both() {
    let dir = TestDir::new("job_control");
    let recorder = recorder(&dir);
    for name in ["moltd", "dumb-init"] {
        let out = format!("{name}.log");
        let mut moltd = Moltd::new(&dir, Mode::Child)
            .named(name)
            .args([&recorder, &out])
            .spawn();
        moltd.wait_for_file(&out, "ready");
        let pid = moltd.moltd_pid();
        let child = child_pids(pid)[0];
        for signal in [SIGTSTP, SIGTTIN, SIGTTOU] {
            moltd.signal(signal);
            moltd.wait_for("the child to stop", || process_state(child) == Some('T'));
            moltd.wait_for("moltd to stop itself", || process_state(pid) == Some('T'));
            moltd.signal(SIGCONT);
            moltd.wait_for("moltd to continue", || process_state(pid) == Some('S'));
            moltd.wait_for_file(&out, "got 18");
            std::fs::write(dir.join(&out), "").unwrap();
            moltd.wait_for("the child to continue", || {
                process_state(child) != Some('T')
            });
        }
        moltd.signal(SIGTERM);
        moltd.wait().expect_code(0);
    }
}

#[test]
fn tini_forwards_tstp_without_stopping_and_drops_ttin_ttou() {
    let dir = TestDir::new("tini_job_control");
    let recorder = recorder(&dir);
    let mut moltd = Moltd::new(&dir, Mode::Child)
        .named("tini")
        .args(["-s", "--", &recorder, "out.log"])
        .spawn();
    moltd.wait_for_file("out.log", "ready");
    let pid = moltd.moltd_pid();
    moltd.signal(SIGTTIN);
    moltd.signal(SIGTTOU);
    send_and_expect(&mut moltd, "out.log", &[(SIGTSTP, SIGTSTP)]);
    assert_ne!(process_state(pid), Some('T'), "tini never stops itself");
    send_and_expect(&mut moltd, "out.log", &[(SIGTERM, SIGTERM)]);
    moltd.wait().expect_code(0);
    assert_eq!(dir.read("out.log"), "ready\ngot 20\ngot 15\n");
}

#[test]
fn group_gets_term_when_the_child_exits() {
    let dir = TestDir::new("term_on_exit");
    let recorder = recorder(&dir);
    let script = format!(
        "{recorder} grandchild.log &\nwhile ! grep -q ready grandchild.log 2>/dev/null; do sleep 0.01; done"
    );
    for name in ["moltd", "dumb-init"] {
        std::fs::remove_file(dir.join("grandchild.log")).ok();
        let moltd = Moltd::new(&dir, Mode::Child)
            .named(name)
            .args(["sh", "-c", &script])
            .spawn();
        let finished = moltd.wait();
        finished.expect_code(0);
        // The recorder, now an orphan elsewhere, logs TERM and exits.
        let deadline = std::time::Instant::now() + crate::util::TIMEOUT;
        while !dir.read("grandchild.log").contains("got 15") {
            if std::time::Instant::now() > deadline {
                finished.fail(&format!("{name}: the group never got TERM"));
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

/// The pids whose parent is `pid`.
fn child_pids(pid: i32) -> Vec<i32> {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    children
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn child_takes_over_the_terminal_and_the_handover_signals_are_not_forwarded() {
    let dir = TestDir::new("tty_handover");
    let recorder = recorder(&dir);
    // Under `script`, moltd leads a session with a terminal on stdin. Giving
    // it up makes the kernel send moltd HUP and CONT, which must not reach the
    // child; the child must end up owning the terminal, in the foreground.
    let child =
        format!("echo $PPID > moltd.pid; ps -o stat= -p $$ > stat.txt; exec {recorder} out.log");
    // `exec`: a shell that forks the last command (dash) would stay the
    // session leader, and moltd could not hand the terminal over.
    let command = format!(
        "exec {} -- sh -c '{child}'",
        crate::util::moltd_bin().display()
    );
    let mut script = crate::util::under_script(&dir, &command);
    crate::util::wait_until("the child to get ready", || {
        dir.read("out.log").contains("ready")
    });
    let moltd: i32 = dir.read("moltd.pid").trim().parse().unwrap();
    // Pending HUP would be read before USR1 (lower signals come first).
    unsafe { kill(moltd, SIGUSR1) };
    crate::util::wait_until("USR1 to arrive", || dir.read("out.log").contains("got 10"));
    unsafe { kill(moltd, SIGTERM) };
    assert!(crate::util::wait_child(&mut script, "script(1) to exit").success());
    assert_eq!(
        dir.read("out.log"),
        "ready\ngot 10\ngot 15\n",
        "no HUP or CONT may reach the child"
    );
    assert_eq!(
        dir.read("stat.txt").trim(),
        "Ss+",
        "session leader in the terminal's foreground"
    );
}

#[test]
fn regression_sigchld_ignored_at_start_does_not_hang_and_is_passed_on() {
    let dir = TestDir::new("sigchld_ignored");
    // With SIGCHLD ignored the kernel would reap the child for moltd and
    // never tell it; moltd must take SIGCHLD back and still pass the ignore on.
    let launcher = dir.write(
        "launch.py",
        "import os, signal, sys\n\
         signal.signal(signal.SIGCHLD, signal.SIG_IGN)\n\
         os.execv(sys.argv[1], sys.argv[1:])\n",
    );
    let launch = |name: &str, command: &[&str]| {
        let mut launch = std::process::Command::new("python3")
            .current_dir(dir.path())
            .arg(&launcher)
            .arg(dir.moltd_as(name))
            .arg("--")
            .args(command)
            .env("TINI_SUBREAPER", "1")
            .spawn()
            .expect("python3");
        crate::util::wait_child(&mut launch, &format!("{name} {command:?}")).code()
    };
    for name in ["moltd", "tini", "dumb-init"] {
        assert_eq!(launch(name, &["sh", "-c", "exit 3"]), Some(3), "{name}");
        // Read by the child itself: a shell in between may reset SIGCHLD.
        let status_file = format!("{name}.status");
        let copied = launch(name, &["cp", "/proc/self/status", &status_file]);
        assert_eq!(copied, Some(0), "{name}");
        let ignored = ignored_mask(&dir.read(&status_file)) & (1 << (SIGCHLD - 1));
        // dumb-init's child starts with SIGCHLD at its default action.
        let passed_on = name != "dumb-init";
        assert_eq!(ignored != 0, passed_on, "{name}'s child ignores SIGCHLD");
    }
}

#[test]
fn regression_sigpipe_from_moltds_own_log_write_is_not_forwarded() {
    let dir = TestDir::new("own_sigpipe");
    let recorder = recorder(&dir);
    // moltd -v logs to a stderr nobody reads: each line raises SIGPIPE on
    // moltd itself, which once went to the child (and with tini's wording
    // looped forever, starving reaping).
    for (name, flags) in [("moltd", &["-v"][..]), ("tini", &["-vvv", "-s", "--"][..])] {
        let out = format!("{name}.log");
        let mut moltd = Moltd::new(&dir, Mode::Child)
            .named(name)
            .args(flags)
            .args([&recorder, &out])
            .broken_output()
            .spawn();
        moltd.wait_for_file(&out, "ready");
        send_and_expect(&mut moltd, &out, &[(SIGUSR1, SIGUSR1), (SIGTERM, SIGTERM)]);
        moltd.wait().expect_code(0);
        assert_eq!(
            dir.read(&out),
            "ready\ngot 10\ngot 15\n",
            "{name}: no SIGPIPE may arrive"
        );
    }
}

/// The number of the system call a process sleeps in, from /proc.
fn sleeping_syscall(pid: i32) -> Option<i64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

#[test]
fn idle_moltd_sleeps_in_read_with_no_timer() {
    let dir = TestDir::new("idle");
    // The only way to sleep with no timeout in moltd's single-command mode is
    // read() on the signalfd; a periodic wake-up would need a timed call.
    #[cfg(target_arch = "x86_64")]
    const READ: i64 = 0;
    #[cfg(target_arch = "aarch64")]
    const READ: i64 = 63;
    let mut moltd = Moltd::new(&dir, Mode::Pid1).args(["sleep", "1000"]).spawn();
    let pid = moltd.moltd_pid();
    moltd.wait_for("moltd to sleep in read", || {
        !child_pids(pid).is_empty() && sleeping_syscall(pid) == Some(READ)
    });
    let timers = std::fs::read_to_string(format!("/proc/{pid}/timerslack_ns")).ok();
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|t| t.display().to_string())
        .collect();
    assert!(
        !fds.iter().any(|t| t.contains("timerfd")),
        "no timer may exist: {fds:?} {timers:?}"
    );
}

#[test]
fn tini_kill_process_group_variable_forwards_to_the_group() {
    let dir = TestDir::new("tini_group_env");
    let recorder = recorder(&dir);
    let middle = format!("trap : USR1 TERM\n{recorder} grandchild.log");
    let mut moltd = Moltd::new(&dir, Mode::Pid1)
        .named("tini")
        .env("TINI_KILL_PROCESS_GROUP", "1")
        .args(["--", "bash", "-c", &middle])
        .spawn();
    moltd.wait_for_file("grandchild.log", "ready");
    send_and_expect(
        &mut moltd,
        "grandchild.log",
        &[(SIGUSR1, SIGUSR1), (SIGTERM, SIGTERM)],
    );
    moltd.wait().expect_code(0);
}

#[test]
fn warn_on_reap_names_each_orphan() {
    let dir = TestDir::new("warn_on_reap");
    // The orphan records its pid; the child waits until /proc no longer has it
    // (reaped, not merely a zombie) before exiting.
    let child = "(sh -c 'echo $$ > orphan.pid' &); wait\n\
                 until [ -s orphan.pid ] && [ ! -e /proc/$(cat orphan.pid) ]; do sleep 0.01; done";
    for (name, flags, text) in [
        (
            "tini",
            &["-w", "--"][..],
            "[WARN  tini (1)] Reaped zombie process with pid=",
        ),
        ("moltd", &["-w", "--"][..], "moltd: warn: reaped orphan "),
    ] {
        std::fs::remove_file(dir.join("orphan.pid")).ok();
        let finished = Moltd::new(&dir, Mode::Pid1)
            .named(name)
            .args(flags)
            .args(["sh", "-c", child])
            .run();
        finished.expect_code(0).expect_stderr_contains(text);
        let orphan = dir.read("orphan.pid");
        finished.expect_stderr_contains(orphan.trim());
    }
}

#[test]
fn parent_death_signal_arrives_and_is_forwarded() {
    let dir = TestDir::new("pdeathsig");
    let recorder = recorder(&dir);
    // moltd's parent is a shell the test kills; -p turns that into USR1.
    let mut parent = std::process::Command::new("sh")
        .current_dir(dir.path())
        .args([
            "-c",
            &format!(
                "'{}' -p SIGUSR1 -- {recorder} out.log & echo $! > moltd.pid; wait",
                crate::util::moltd_bin().display()
            ),
        ])
        .spawn()
        .unwrap();
    crate::util::wait_until("the recorder", || dir.read("out.log").contains("ready"));
    let moltd: i32 = dir.read("moltd.pid").trim().parse().unwrap();
    parent.kill().unwrap();
    crate::util::wait_child(&mut parent, "the parent shell");
    crate::util::wait_until("USR1 from the parent's death", || {
        dir.read("out.log").contains("got 10")
    });
    unsafe { kill(moltd, SIGTERM) };
    crate::util::wait_until("TERM", || dir.read("out.log").contains("got 15"));
    crate::util::wait_until("moltd to exit", || {
        process_state(moltd).is_none_or(|s| s == 'Z')
    });
}

#[test]
fn file_without_shebang_runs_through_bin_sh() {
    let dir = TestDir::new("no_shebang");
    dir.script("plain-script", "echo ran with \"$@\"\n");
    for name in ["moltd", "tini", "dumb-init"] {
        Moltd::new(&dir, Mode::Pid1)
            .named(name)
            .args(["--", "./plain-script", "a", "b"])
            .run()
            .expect_code(0)
            .expect_stdout_contains("ran with a b");
    }
}
