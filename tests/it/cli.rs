//! Command lines and their answers: flags, bad input, and the exact lines
//! users grep for under each personality.

use crate::util::{Mode, Moltd, TestDir};

/// Where a text is expected.
enum Stream {
    Out,
    Err,
}
use Stream::*;

struct Case {
    name: &'static str,
    args: &'static [&'static str],
    code: i32,
    stream: Stream,
    text: &'static str,
}

const fn case(
    name: &'static str,
    args: &'static [&'static str],
    code: i32,
    stream: Stream,
    text: &'static str,
) -> Case {
    Case {
        name,
        args,
        code,
        stream,
        text,
    }
}

fn check(dir: &TestDir, cases: &[Case]) {
    for case in cases {
        let finished = Moltd::new(dir, Mode::Pid1)
            .named(case.name)
            .args(case.args)
            .run();
        finished.expect_code(case.code);
        match case.stream {
            Out => finished.expect_stdout_contains(case.text),
            Err => finished.expect_stderr_contains(case.text),
        };
    }
}

#[test]
fn moltd_answers_bad_input_with_one_line_and_the_anchor_codes() {
    let dir = TestDir::new("moltd_cli");
    dir.write("not-executable", "#!/bin/sh\n");
    std::fs::create_dir_all(dir.join("a-directory")).unwrap();
    check(
        &dir,
        &[
            case(
                "moltd",
                &["--services", "not-executable"],
                1,
                Err,
                "moltd: error: services directory",
            ),
            case(
                "moltd",
                &["-Z", "true"],
                1,
                Err,
                "moltd: error: invalid option '-Z'",
            ),
            case(
                "moltd",
                &["--bogus", "true"],
                1,
                Err,
                "moltd: error: invalid option '--bogus'",
            ),
            case(
                "moltd",
                &["-r", "15:99", "true"],
                1,
                Err,
                "moltd: error: bad rewrite \"15:99\"",
            ),
            case(
                "moltd",
                &["-e", "300", "true"],
                1,
                Err,
                "moltd: error: bad exit code \"300\"",
            ),
            case(
                "moltd",
                &["-p", "SIGFOO", "true"],
                1,
                Err,
                "moltd: error: bad signal \"SIGFOO\"",
            ),
            case(
                "moltd",
                &["-e"],
                1,
                Err,
                "moltd: error: missing argument for option '-e'",
            ),
            case(
                "moltd",
                &["no-such-command"],
                127,
                Err,
                "moltd: error: cannot run no-such-command: No such file or directory",
            ),
            case(
                "moltd",
                &["./not-executable"],
                126,
                Err,
                "moltd: error: cannot run ./not-executable: Permission denied",
            ),
            case("moltd", &["./a-directory"], 126, Err, "Permission denied"),
            case(
                "moltd",
                &["--version"],
                0,
                Out,
                concat!("moltd ", env!("CARGO_PKG_VERSION")),
            ),
            case(
                "moltd",
                &["-h"],
                0,
                Out,
                "Usage: moltd [OPTIONS] [--] COMMAND [ARGS...]",
            ),
            case("moltd", &["echo", "-v", "--help"], 0, Out, "-v --help"),
            case(
                "moltd",
                &["--", "-not-an-option"],
                127,
                Err,
                "cannot run -not-an-option",
            ),
        ],
    );
    let finished = Moltd::new(&dir, Mode::Pid1)
        .env("MOLTD_LOG", "loud")
        .args(["true"])
        .run();
    finished
        .expect_code(1)
        .expect_stderr_contains("moltd: error: bad MOLTD_LOG \"loud\"");
    assert_eq!(
        finished.stderr.lines().count(),
        1,
        "one line:\n{}",
        finished.stderr
    );
}

#[test]
fn tini_name_speaks_like_tini() {
    let dir = TestDir::new("tini_cli");
    dir.write("not-executable", "#!/bin/sh\n");
    check(
        &dir,
        &[
            case(
                "tini",
                &[],
                1,
                Err,
                "Usage: tini [OPTIONS] PROGRAM -- [ARGS] | --version",
            ),
            case(
                "tini",
                &["-Z", "true"],
                1,
                Err,
                "tini: invalid option -- 'Z'",
            ),
            case("tini", &["--help"], 1, Err, "tini: invalid option -- '-'"),
            case(
                "tini",
                &["-e"],
                1,
                Err,
                "tini: option requires an argument -- 'e'",
            ),
            case(
                "tini",
                &["-e", "300", "true"],
                1,
                Err,
                "] Not a valid option for -e: 300",
            ),
            case("tini", &["-e", "abc", "true"], 1, Err, "[FATAL tini ("),
            case(
                "tini",
                &["-p", "SIGPWR", "true"],
                1,
                Err,
                "] Not a valid option for -p: SIGPWR",
            ),
            case(
                "tini",
                &["-p", "KILL", "true"],
                1,
                Err,
                "] Not a valid option for -p: KILL",
            ),
            case(
                "tini",
                &["no-such-command"],
                127,
                Err,
                "] exec no-such-command failed: No such file or directory",
            ),
            case(
                "tini",
                &["./not-executable"],
                126,
                Err,
                "] exec ./not-executable failed: Permission denied",
            ),
            case(
                "tini",
                &["/etc/passwd/x"],
                1,
                Err,
                "failed: Not a directory",
            ),
            case("tini", &["--version"], 0, Out, "tini version 0.19.0"),
            case(
                "tini",
                &["-h"],
                0,
                Out,
                "Usage: tini [OPTIONS] PROGRAM -- [ARGS] | --version",
            ),
            // getopt permutes: -v after the program is tini's, not echo's.
            case(
                "tini",
                &["echo", "-v", "hello"],
                0,
                Out,
                "[INFO  tini (1)] Spawned child process 'echo' with pid '2'",
            ),
            case(
                "tini",
                &["-vv", "--", "sh", "-c", "exit 3"],
                3,
                Out,
                "[INFO  tini (1)] Main child exited normally (with status '3')",
            ),
            case(
                "tini",
                &["-v", "--", "sh", "-c", "kill $$"],
                143,
                Out,
                "Main child exited with signal (with signal 'Terminated')",
            ),
        ],
    );
}

#[test]
fn tini_accepts_sig_prefixed_names_for_p() {
    let dir = TestDir::new("tini_p");
    let finished = Moltd::new(&dir, Mode::Pid1)
        .named("tini")
        .args(["-p", "SIGKILL", "true"])
        .run();
    finished.expect_code(0);
    if !finished.stderr.is_empty() {
        finished.fail("no output expected");
    }
}

#[test]
fn tini_warns_when_it_cannot_reap_unless_subreaper() {
    let dir = TestDir::new("tini_warning");
    let warning = "[WARN  tini (";
    let text = "Tini is not running as PID 1 and isn't registered as a child subreaper.\n\
                Zombie processes will not be re-parented to Tini, so zombie reaping won't work.\n\
                To fix the problem, use the -s option or set the environment variable TINI_SUBREAPER to \
                register Tini as a child subreaper, or run Tini as PID 1.\n";
    let plain = Moltd::new(&dir, Mode::Child)
        .named("tini")
        .args(["true"])
        .run();
    plain
        .expect_code(0)
        .expect_stderr_contains(warning)
        .expect_stderr_contains(text);
    for quiet in [
        Moltd::new(&dir, Mode::Child)
            .named("tini")
            .args(["-s", "true"])
            .run(),
        Moltd::new(&dir, Mode::Child)
            .named("tini")
            .env("TINI_SUBREAPER", "")
            .args(["true"])
            .run(),
        Moltd::new(&dir, Mode::Child)
            .named("tini")
            .env("TINI_VERBOSITY", "0")
            .args(["true"])
            .run(),
        Moltd::new(&dir, Mode::Pid1)
            .named("tini")
            .args(["true"])
            .run(),
    ] {
        quiet.expect_code(0);
        if quiet.stderr.contains(warning) {
            quiet.fail("no warning expected");
        }
    }
    // TINI_VERBOSITY replaces the -v count.
    let verbose = Moltd::new(&dir, Mode::Pid1)
        .named("tini")
        .env("TINI_VERBOSITY", "2")
        .args(["true"])
        .run();
    verbose
        .expect_code(0)
        .expect_stdout_contains("Spawned child process 'true'");
}

#[test]
fn dumb_init_name_speaks_like_dumb_init() {
    let dir = TestDir::new("dumb_init_cli");
    check(
        &dir,
        &[
            case("dumb-init", &[], 1, Err, "dumb-init: no command to run\n"),
            case(
                "dumb-init",
                &["-Z", "true"],
                1,
                Err,
                "dumb-init: invalid option -- 'Z'",
            ),
            case(
                "dumb-init",
                &["--bogus", "true"],
                1,
                Err,
                "dumb-init: unrecognized option '--bogus'",
            ),
            case(
                "dumb-init",
                &["-r"],
                1,
                Err,
                "dumb-init: option requires an argument -- 'r'",
            ),
            case(
                "dumb-init",
                &["-r", "15:99", "true"],
                1,
                Err,
                "dumb-init: -r wants two signal numbers as s:r",
            ),
            case(
                "dumb-init",
                &["-r", "10:12x", "sh", "-c", "exit 6"],
                6,
                Err,
                "",
            ),
            case(
                "dumb-init",
                &["-r", "abc", "true"],
                1,
                Err,
                "s from 1 to 31 and r from 0 to 31",
            ),
            case(
                "dumb-init",
                &["no-such-command"],
                2,
                Err,
                "[dumb-init] no-such-command: No such file or directory",
            ),
            case("dumb-init", &["-V"], 0, Err, "dumb-init v1.2.5"),
            case("dumb-init", &["--version"], 0, Err, "dumb-init v1.2.5"),
            case(
                "dumb-init",
                &["-h"],
                0,
                Err,
                "Usage: dumb-init [option] command [[arg] ...]",
            ),
            // Options stop at the first operand.
            case(
                "dumb-init",
                &["echo", "-v", "--rewrite=1:2"],
                0,
                Out,
                "-v --rewrite=1:2",
            ),
            case(
                "dumb-init",
                &["-v", "true"],
                0,
                Err,
                "[dumb-init] Child spawned with PID 2.",
            ),
            case(
                "dumb-init",
                &["--verbose", "sh", "-c", "exit 4"],
                4,
                Err,
                "[dumb-init] Child exited with status 4. Goodbye.",
            ),
        ],
    );
    let debug = Moltd::new(&dir, Mode::Pid1)
        .named("dumb-init")
        .env("DUMB_INIT_DEBUG", "1")
        .args(["true"])
        .run();
    debug
        .expect_code(0)
        .expect_stderr_contains("[dumb-init] Child spawned with PID 2.");
}

#[test]
fn process_groups_and_sessions_match_each_personality() {
    let dir = TestDir::new("sessions");
    // Prints "pid pgid sid" of the child, from inside the namespace.
    let probe = [
        "sh",
        "-c",
        "read -r l < /proc/$$/stat; set -- ${l##*)}; echo $$ $3 $4",
    ];
    let run = |name: &str, flags: &[&str], env: Option<(&str, &str)>| {
        let mut moltd = Moltd::new(&dir, Mode::Pid1)
            .named(name)
            .args(flags)
            .args(["--"])
            .args(probe);
        if let Some((key, value)) = env {
            moltd = moltd.env(key, value);
        }
        let finished = moltd.run();
        finished.expect_code(0);
        finished.stdout.trim().to_owned()
    };
    assert_eq!(run("moltd", &[], None), "2 2 2", "own session");
    assert_eq!(run("dumb-init", &[], None), "2 2 2", "own session");
    assert_eq!(
        run("tini", &[], None),
        "2 2 0",
        "own group in tini's session"
    );
    assert_eq!(
        run("moltd", &["-c"], None),
        "2 2 0",
        "own group in moltd's session"
    );
    assert_eq!(
        run("dumb-init", &["-c"], None),
        "2 0 0",
        "shares everything"
    );
    assert_eq!(
        run("dumb-init", &[], Some(("DUMB_INIT_SETSID", "0"))),
        "2 0 0",
        "shares everything"
    );
}
