//! Single-command mode as PID 1 and as a subreaper: exit codes, reaping,
//! signal forwarding, inherited signal state, job control, and the tini and
//! dumb-init personalities.

use crate::util::{Mode, Moltd, TestDir, process_state};
use nix::libc::*;

/// Signals that moltd forwards unchanged in every mode (1-31 minus KILL and
/// STOP, CHLD, the faults, and the job-control trio tested on their own),
/// plus a real-time one. TERM comes last: the recorder exits on it.
const FORWARDED: [i32; 19] = [
    SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGPIPE, SIGALRM, SIGSTKFLT, SIGCONT, SIGURG,
    SIGXCPU, SIGXFSZ, SIGVTALRM, SIGPROF, SIGWINCH, SIGIO, SIGPWR, 40, SIGTERM,
];

/// A bash script that appends the number of every signal it receives to the
/// file named by its first argument, says `ready` once its traps are set, and
/// exits 0 after TERM.
const RECORDER: &str = r#"#!/bin/bash
out=$1
for s in 1 2 3 10 12 13 14 16 18 20 21 22 23 24 25 26 27 28 29 30 40; do
    trap "echo got $s >> $out" $s
done
trap "echo got 15 >> $out; exit 0" 15
echo ready >> $out
while :; do sleep 1 & wait $!; done
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
