//! moltd under the name `tini`, held to what tini does. Every expected code,
//! stream and line here was recorded from Debian's tini 0.19.0
//! (`/usr/bin/tini`) run side by side with moltd, so a regression shows as a
//! diff against the real program.

use crate::util::{Mode, Moltd, TestDir, process_state};
use nix::libc::*;
use std::process::{Command, Stdio};

/// tini's warning when nothing will reap orphans, after its
/// `[WARN  tini (PID)] ` prefix.
const NOT_REAPING: &str = "Tini is not running as PID 1 and isn't registered as a child subreaper.\n\
     Zombie processes will not be re-parented to Tini, so zombie reaping won't work.\n\
     To fix the problem, use the -s option or set the environment variable TINI_SUBREAPER to \
     register Tini as a child subreaper, or run Tini as PID 1.\n";

#[test]
fn tini_posixly_correct_stops_options_at_the_program() {
    let dir = TestDir::new("tini_posixly_correct");
    // (POSIXLY_CORRECT, arguments, exit code, stderr), recorded from tini 0.19.
    let cases: [(Option<&str>, &[&str], i32, &str); 4] = [
        (Some("1"), &["-e", "1", "sh", "-c", "exit 1"], 0, ""),
        // Only its presence counts, as for glibc.
        (Some(""), &["-e", "1", "sh", "-c", "exit 1"], 0, ""),
        // Options after the program are the program's.
        (Some("1"), &["sh", "-c", "exit 3", "-v"], 3, ""),
        // Without it getopt permutes, and `-c` is tini's (unknown) option.
        (
            None,
            &["-e", "1", "sh", "-c", "exit 1"],
            1,
            "tini: invalid option -- 'c'\n",
        ),
    ];
    for (posixly_correct, args, code, stderr) in cases {
        let mut moltd = Moltd::new(&dir, Mode::Pid1).named("tini").args(args);
        if let Some(value) = posixly_correct {
            moltd = moltd.env("POSIXLY_CORRECT", value);
        }
        let finished = moltd.run();
        finished.expect_code(code);
        if !finished.stderr.contains(stderr) {
            finished.fail(&format!("stderr should contain {stderr:?}"));
        }
    }
    let echoed = |posixly_correct: bool| {
        let mut moltd = Moltd::new(&dir, Mode::Pid1)
            .named("tini")
            .args(["echo", "--", "-v"]);
        if posixly_correct {
            moltd = moltd.env("POSIXLY_CORRECT", "1");
        }
        moltd.run().stdout
    };
    // getopt keeps the `--` that follows the first operand when it stops
    // there, and eats it when it permutes.
    assert_eq!(echoed(true), "-- -v\n");
    assert_eq!(echoed(false), "-v\n");
}

/// The names tini 0.19 accepts for `-p`: its table, Linux's signals 1 to 31
/// less STKFLT, IO and PWR.
const TINI_P_ACCEPTS: [&str; 28] = [
    "SIGHUP",
    "SIGINT",
    "SIGQUIT",
    "SIGILL",
    "SIGTRAP",
    "SIGABRT",
    "SIGBUS",
    "SIGFPE",
    "SIGKILL",
    "SIGUSR1",
    "SIGSEGV",
    "SIGUSR2",
    "SIGPIPE",
    "SIGALRM",
    "SIGTERM",
    "SIGCHLD",
    "SIGCONT",
    "SIGSTOP",
    "SIGTSTP",
    "SIGTTIN",
    "SIGTTOU",
    "SIGURG",
    "SIGXCPU",
    "SIGXFSZ",
    "SIGVTALRM",
    "SIGPROF",
    "SIGWINCH",
    "SIGSYS",
];

/// Values tini 0.19 refuses for `-p`, each with exit code 1 and one FATAL
/// line on stderr.
const TINI_P_REFUSES: [&str; 15] = [
    "SIGSTKFLT",
    "SIGIO",
    "SIGPWR",
    "SIGPOLL",
    "SIGIOT",
    "SIGCLD",
    "SIGRTMIN",
    "SIG",
    "",
    "USR1",
    "sigusr1",
    "SigUsr1",
    "10",
    "SIGUSR1 ",
    "SIG10",
];

#[test]
fn tini_p_takes_exactly_the_names_of_tinis_table() {
    let dir = TestDir::new("tini_p_table");
    for name in TINI_P_ACCEPTS {
        let finished = Moltd::new(&dir, Mode::Pid1)
            .named("tini")
            .args(["-p", name, "true"])
            .run();
        finished.expect_code(0);
        if !finished.stderr.is_empty() {
            finished.fail(&format!("-p {name} should be accepted silently"));
        }
    }
    for value in TINI_P_REFUSES {
        let finished = Moltd::new(&dir, Mode::Pid1)
            .named("tini")
            .args(["-p", value, "true"])
            .run();
        finished.expect_code(1);
        assert_eq!(
            finished.stderr,
            format!("[FATAL tini (1)] Not a valid option for -p: {value}\n"),
            "-p {value:?}"
        );
        assert_eq!(finished.stdout, "", "-p {value:?}");
    }
}

/// Runs moltd as `tini` through `python3`, which sets (1) or clears (0) the
/// child-subreaper bit and then execs: the bit survives exec, as it would
/// from any wrapper. Returns moltd's pid (the wrapper's), exit code and stderr.
fn tini_behind_subreaper_wrapper(
    dir: &TestDir,
    bit: u8,
    env: &[(&str, &str)],
    args: &[&str],
) -> (u32, Option<i32>, String) {
    const WRAPPER: &str = "import ctypes, os, sys\n\
        if ctypes.CDLL(None).prctl(36, int(sys.argv[1]), 0, 0, 0) != 0:\n\
        \x20   sys.exit('prctl(PR_SET_CHILD_SUBREAPER) failed')\n\
        os.execv(sys.argv[2], sys.argv[2:])\n";
    let child = Command::new("python3")
        .args(["-c", WRAPPER, &bit.to_string()])
        .arg(dir.moltd_as("tini"))
        .args(args)
        .env_remove("TINI_SUBREAPER")
        .env_remove("TINI_VERBOSITY")
        .env_remove("TINI_KILL_PROCESS_GROUP")
        .envs(env.iter().copied())
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs the wrapper");
    let pid = child.id();
    let output = child.wait_with_output().unwrap();
    (
        pid,
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The bit a wrapper sets, moltd's environment and arguments, and whether
/// tini warned.
type SubreaperCase = (
    u8,
    &'static [(&'static str, &'static str)],
    &'static [&'static str],
    bool,
);

#[test]
fn tini_not_pid1_warning_follows_the_subreaper_bit_a_wrapper_set() {
    let dir = TestDir::new("tini_subreaper_bit");
    // (bit set by the wrapper, environment, arguments, warned), recorded
    // from tini 0.19 behind the same wrapper.
    let cases: [SubreaperCase; 6] = [
        (1, &[], &["true"], false),
        (0, &[], &["true"], true),
        (0, &[], &["-s", "true"], false),
        (0, &[("TINI_SUBREAPER", "")], &["true"], false),
        (1, &[("TINI_VERBOSITY", "3")], &["true"], false),
        (0, &[("TINI_VERBOSITY", "0")], &["true"], false),
    ];
    for (bit, env, args, warned) in cases {
        let (pid, code, stderr) = tini_behind_subreaper_wrapper(&dir, bit, env, args);
        assert_eq!(code, Some(0), "bit {bit}, {env:?} {args:?}: {stderr}");
        let expected = if warned {
            format!("[WARN  tini ({pid})] {NOT_REAPING}")
        } else {
            String::new()
        };
        assert_eq!(stderr, expected, "bit {bit}, {env:?} {args:?}");
    }
}

/// A bash script that traps every signal from 1 to 31 that can be trapped
/// and that tini may pass on, plus real-time signal 34, and appends
/// `got N` for each to the file named by its first argument; exits 0 on TERM.
const RECORDER: &str = r#"#!/bin/bash
out=$1
for s in 1 2 3 4 5 6 7 8 10 11 12 13 14 16 18 20 21 22 23 24 25 26 27 28 29 30 31 34; do
    trap "echo got $s >> $out" $s
done
trap "echo got 15 >> $out; exit 0" 15
echo ready >> $out
i=0
while [ $i -lt 120 ]; do i=$((i + 1)); sleep 1 & wait $!; done
"#;

/// What tini 0.19 as PID 1 did with each signal sent to it from outside
/// (`kill` from the parent namespace), with `-s --` and the recorder as child.
const TINI_PASSES_ON: [i32; 19] = [
    SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGPIPE, SIGALRM, SIGSTKFLT, SIGCONT, SIGTSTP,
    SIGURG, SIGXCPU, SIGXFSZ, SIGVTALRM, SIGPROF, SIGWINCH, SIGIO, SIGPWR, 34,
];
/// Dropped: the faults, which tini leaves unblocked and so as PID 1 never
/// sees from outside, SIGCHLD, and the terminal's TTIN and TTOU.
const TINI_KEEPS: [i32; 10] = [
    SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE, SIGSEGV, SIGSYS, SIGCHLD, SIGTTIN, SIGTTOU,
];

#[test]
fn tini_signals_1_to_31_from_outside_as_recorded() {
    let dir = TestDir::new("tini_signals_recorded");
    let recorder = dir.script("recorder.sh", RECORDER).display().to_string();
    let mut moltd = Moltd::new(&dir, Mode::Pid1)
        .named("tini")
        .args(["-s", "--", &recorder, "out.log"])
        .spawn();
    moltd.wait_for_file("out.log", "ready");
    for signal in TINI_PASSES_ON {
        moltd.signal(signal);
        moltd.wait_for_file("out.log", &format!("got {signal}\n"));
    }
    // Each kept signal is followed by 34, which moltd reads after any lower
    // number and bash traps after any lower number: had the kept one been
    // passed on, it would show before the marker.
    for (round, signal) in TINI_KEEPS.into_iter().enumerate() {
        moltd.signal(signal);
        moltd.signal(34);
        // One 34 came with TINI_PASSES_ON.
        moltd.wait_for("the marker", || {
            dir.read("out.log").matches("got 34\n").count() == round + 2
        });
        if dir.read("out.log").contains(&format!("got {signal}\n")) {
            moltd.fail(&format!("signal {signal} reached the child"));
        }
    }
    // SIGSTOP stops tini itself; SIGCONT wakes it and is passed on.
    let pid = moltd.moltd_pid();
    moltd.signal(SIGSTOP);
    moltd.wait_for("tini to stop", || process_state(pid) == Some('T'));
    moltd.signal(SIGCONT);
    moltd.wait_for("SIGCONT to be passed on again", || {
        dir.read("out.log").matches("got 18\n").count() == 2
    });
    moltd.signal(SIGTERM);
    moltd.wait().expect_code(0);
    // SIGKILL ends it, and with it the namespace and the child.
    let mut killed = Moltd::new(&dir, Mode::Pid1)
        .named("tini")
        .args(["-s", "--", &recorder, "killed.log"])
        .spawn();
    killed.wait_for_file("killed.log", "ready");
    let pid = killed.moltd_pid();
    killed.signal(SIGKILL);
    killed.wait();
    assert_eq!(process_state(pid), None, "tini is gone");
}

/// tini 0.19's stdout as PID 1 for `sh -c 'exit 3'`, by verbosity level: one
/// line more per level, each with tini's prefix and pid.
const VERBOSE_EXIT_3: [&str; 6] = [
    "[INFO  tini (1)] Spawned child process 'sh' with pid '2'\n",
    "[DEBUG tini (1)] Received SIGCHLD\n",
    "[DEBUG tini (1)] Reaped child with pid: '2'\n",
    "[INFO  tini (1)] Main child exited normally (with status '3')\n",
    "[TRACE tini (1)] No child to wait\n",
    "[TRACE tini (1)] Exiting: child has exited\n",
];

#[test]
fn tini_verbose_lines_as_recorded() {
    let dir = TestDir::new("tini_verbose_recorded");
    let info = [VERBOSE_EXIT_3[0], VERBOSE_EXIT_3[3]].concat();
    let debug = VERBOSE_EXIT_3[..4].concat();
    let trace = VERBOSE_EXIT_3.concat();
    // (flags, TINI_VERBOSITY, stdout)
    let cases: [(&[&str], Option<&str>, &str); 7] = [
        (&[], None, ""),
        (&["-v"], None, &info),
        (&["-vv"], None, &debug),
        (&["-v", "-v", "-v"], None, &trace),
        (&["-vvv"], Some("0"), ""),
        (&[], Some("4"), &trace),
        (&["-w", "-vv"], None, &debug),
    ];
    for (flags, verbosity, stdout) in cases {
        let mut moltd = Moltd::new(&dir, Mode::Pid1)
            .named("tini")
            .args(flags)
            .args(["--", "sh", "-c", "exit 3"]);
        if let Some(level) = verbosity {
            moltd = moltd.env("TINI_VERBOSITY", level);
        }
        let finished = moltd.run();
        finished.expect_code(3);
        assert_eq!(
            finished.stdout, stdout,
            "{flags:?} TINI_VERBOSITY={verbosity:?}"
        );
        assert_eq!(
            finished.stderr, "",
            "{flags:?} TINI_VERBOSITY={verbosity:?}"
        );
    }
}

#[test]
fn tini_dies_of_fault_signals_from_kill_when_not_pid1() {
    let dir = TestDir::new("tini_faults_not_pid1");
    let recorder = dir.script("recorder.sh", RECORDER).display().to_string();
    // tini 0.19 leaves these unblocked with their default action: as a plain
    // process it died of each (its shell saw 128 + N), and its child lived on.
    for fault in [SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE, SIGSEGV, SIGSYS] {
        let out = format!("{fault}.log");
        let mut moltd = Moltd::new(&dir, Mode::Child)
            .named("tini")
            .args(["-s", "--", &recorder, &out])
            .spawn();
        moltd.wait_for_file(&out, "ready");
        let pid = moltd.moltd_pid();
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        moltd.signal(fault);
        let finished = moltd.wait();
        for child in children.split_whitespace() {
            // The orphan is no longer moltd's: end it here.
            let child = nix::unistd::Pid::from_raw(child.parse().unwrap());
            let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
        }
        assert_eq!(finished.signal, Some(fault), "tini dies of signal {fault}");
        assert!(
            !dir.read(&out).contains("got"),
            "signal {fault} reached the child"
        );
    }
}

#[test]
fn tini_e_values_are_read_like_tini() {
    let dir = TestDir::new("tini_e_values");
    // (-e value, the child's exit code, tini's exit code), recorded from
    // tini 0.19: it reads the value with strtol.
    let cases: [(&str, i32, i32); 8] = [
        (" +2", 2, 0),
        ("\t3", 3, 0),
        ("007", 7, 0),
        ("-0", 0, 0),
        ("", 0, 0),
        (" ", 0, 1),
        ("+-1", 1, 1),
        ("1 ", 1, 1),
    ];
    for (value, child, code) in cases {
        let finished = Moltd::new(&dir, Mode::Pid1)
            .named("tini")
            .args(["-e", value, "--", "sh", "-c", &format!("exit {child}")])
            .run();
        finished.expect_code(code);
        let stderr = if code == 1 {
            format!("[FATAL tini (1)] Not a valid option for -e: {value}\n")
        } else {
            String::new()
        };
        assert_eq!(finished.stderr, stderr, "-e {value:?}");
    }
}

#[test]
fn tini_e_remaps_exactly_the_codes_given_for_every_code() {
    let dir = TestDir::new("tini_e_every_code");
    // As tini's own suite checks it: with every other code remapped, each
    // code still comes through, and named alone it becomes 0. POSIXLY_CORRECT
    // lets the program's `-c` follow without `--`.
    for code in 0..=255 {
        let others: Vec<String> = (0..=255)
            .filter(|&other| other != code)
            .flat_map(|other| ["-e".to_string(), other.to_string()])
            .collect();
        Moltd::new(&dir, Mode::Child)
            .named("tini")
            .env("POSIXLY_CORRECT", "1")
            .args(["-s"])
            .args(&others)
            .args(["sh", "-c", &format!("exit {code}")])
            .run()
            .expect_code(code);
        Moltd::new(&dir, Mode::Child)
            .named("tini")
            .args(["-s", "-e", &code.to_string(), "--", "sh", "-c"])
            .args([format!("exit {code}")])
            .run()
            .expect_code(0);
    }
}
