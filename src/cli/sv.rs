//! The `sv` client (moltd invoked as `sv`, or `moltd sv ...`) and
//! `moltd status`.
//!
//! `sv` follows runit's sv(8): the same verbs (only the first letter counts,
//! except for the LSB words), the same output lines, `-v`, `-w SEC` and
//! `SVWAIT`, and the same exit codes (the number of services that failed or
//! timed out, at most 99; 100 for bad usage), so scripts written for runit
//! work unchanged. It talks to moltd over the control socket instead of
//! runsv's named pipes. runit's sv runs a service's `./check` itself; here
//! PID 1 runs it, as one of the ways a service becomes ready, and a wait for
//! a service to be up (`up`, `start`, the restarts, `check`, `term` and
//! `kill`) ends when it is ready: what `check` meant, for every service.

use super::{Env, write_err, write_out};
use crate::control::{UpdateReply, UpdateRequest};
use crate::logging::Escaped;
use crate::services::DEFAULT_SVWAIT;
use crate::services::client::{ClientError, Control};
use crate::services::control::{Answer, Op, Request};
use crate::services::status::{self, Status};
use crate::update::status::Status as UpdateStatus;
use lexopt::prelude::*;
use nix::libc;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

pub const USAGE: &str = "usage: sv [-v] [-w sec] command service ...\n\n";
/// runit's exit code for bad usage.
const USAGE_CODE: i32 = 100;
/// runit caps the count of failed services here.
const MAX_FAILED: i32 = 99;

/// When a verb reports back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Report {
    /// Print the status line (`status`).
    Status,
    /// Print nothing, unless `-v` or `-w` asks to wait (for the plain
    /// signals the wait is over at once: runit's `ok:` and the status).
    IfVerbose,
    /// Always wait and report (the LSB verbs).
    Always,
}

/// What a verb does and how it reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Verb {
    op: Op,
    report: Report,
    kill_on_timeout: bool,
}

/// Maps an `sv` command word to what it does, runit's way: the LSB words are
/// matched whole, everything else by its first letter.
fn verb(word: &str) -> Option<Verb> {
    let make = |op, report| Verb {
        op,
        report,
        kill_on_timeout: false,
    };
    let forced = |op| Verb {
        op,
        report: Report::Always,
        kill_on_timeout: true,
    };
    let restart = Op::Restart {
        only_if_running: false,
    };
    let signal = |s| make(Op::Signal(s), Report::IfVerbose);
    Some(match word {
        "start" => make(Op::Up, Report::Always),
        "stop" | "shutdown" => make(Op::Down, Report::Always),
        "reload" => make(Op::Signal(libc::SIGHUP), Report::Always),
        "restart" => make(restart, Report::Always),
        "try-restart" => make(
            Op::Restart {
                only_if_running: true,
            },
            Report::Always,
        ),
        "check" => make(Op::Check, Report::Always),
        "force-stop" | "force-shutdown" => forced(Op::Down),
        "force-reload" | "force-restart" => forced(restart),
        _ => match word.chars().next()? {
            's' => make(Op::Status, Report::Status),
            'u' => make(Op::Up, Report::IfVerbose),
            'd' | 'x' | 'e' => make(Op::Down, Report::IfVerbose),
            'o' => make(Op::Once, Report::IfVerbose),
            't' => signal(libc::SIGTERM),
            'c' => signal(libc::SIGCONT),
            'p' => signal(libc::SIGSTOP),
            'h' => signal(libc::SIGHUP),
            'a' => signal(libc::SIGALRM),
            'i' => signal(libc::SIGINT),
            'q' => signal(libc::SIGQUIT),
            '1' => signal(libc::SIGUSR1),
            '2' => signal(libc::SIGUSR2),
            'k' => signal(libc::SIGKILL),
            _ => return None,
        },
    })
}

/// A parsed `sv` command line.
#[derive(Debug, PartialEq, Eq)]
struct Invocation {
    verb: Verb,
    /// The services as the user wrote them, for the output.
    services: Vec<String>,
    request: Request,
}

/// Reads seconds the way SVWAIT and `-w` are given.
fn parse_seconds(text: &str) -> Option<Duration> {
    text.parse().ok().map(Duration::from_secs)
}

/// The name the supervisor knows a service by: `web` for `web`, `web/`,
/// `./web` or `/etc/service/web`, `web/log` for its log sub-service, and
/// `web/next` (written so, not as a path: no folder holds it) for the
/// second generation an update's overlap runs beside it.
fn service_name(arg: &str) -> String {
    let parts: Vec<&str> = arg
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    match parts[..] {
        [.., parent, "log"] => format!("{parent}/log"),
        [service, "next"] if !arg.starts_with('/') => format!("{service}/next"),
        [.., last] => last.to_owned(),
        [] => arg.to_owned(),
    }
}

fn parse(args: Vec<OsString>, env: Env) -> Result<Invocation, String> {
    let mut verbose = false;
    let mut wait = match env("SVWAIT") {
        Some(text) => text
            .to_str()
            .and_then(parse_seconds)
            .ok_or_else(|| format!("bad SVWAIT {text:?}: expected whole seconds"))?,
        None => DEFAULT_SVWAIT,
    };
    let mut operands = Vec::new();
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Short('v') => verbose = true,
            Short('w') => {
                let value = parser.value().map_err(|e| e.to_string())?;
                wait = value
                    .to_str()
                    .and_then(parse_seconds)
                    .ok_or_else(|| format!("bad -w {value:?}: expected whole seconds"))?;
                verbose = true;
            }
            Value(value) => {
                operands.push(
                    value
                        .into_string()
                        .map_err(|v| format!("bad argument {v:?}"))?,
                );
                operands.extend(
                    parser
                        .raw_args()
                        .map_err(|e| e.to_string())?
                        .map(|a| a.to_string_lossy().into_owned()),
                );
            }
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    let Some((word, services)) = operands.split_first() else {
        return Err("no command given".into());
    };
    if services.is_empty() {
        return Err("no service given".into());
    }
    let verb = verb(word).ok_or_else(|| format!("unknown command {word:?}"))?;
    let waits = match verb.report {
        Report::Always => true,
        Report::IfVerbose => verbose,
        Report::Status => false,
    };
    let names: Vec<String> = services.iter().map(|s| service_name(s)).collect();
    if let Some(bad) = names.iter().find(|n| n.contains(['\t', '\n'])) {
        return Err(format!("bad service name {bad:?}"));
    }
    Ok(Invocation {
        verb,
        services: services.to_vec(),
        request: Request {
            op: verb.op,
            names,
            wait: waits.then_some(wait),
            kill_on_timeout: verb.kill_on_timeout,
        },
    })
}

/// runit's line for one service that could not be reached or found.
fn fail_line(shown: &str, why: &str) -> String {
    format!("fail: {shown}: {why}\n")
}

/// Turns the answers into runit's output and exit code.
fn report(invocation: &Invocation, answers: Result<Vec<Answer>, ClientError>) -> (String, i32) {
    let mut out = String::new();
    let mut failed = 0;
    let answers = match answers {
        Ok(answers) => answers,
        Err(err) => {
            for shown in &invocation.services {
                out.push_str(&fail_line(shown, &err.to_string()));
            }
            return (
                out,
                invocation.services.len().min(MAX_FAILED as usize) as i32,
            );
        }
    };
    for (shown, answer) in invocation.services.iter().zip(answers) {
        let line = |status: &Status| status.sv_line(shown);
        match answer {
            Answer::Unknown(_) => {
                failed += 1;
                out.push_str(&fail_line(
                    shown,
                    "unable to change to service directory: file does not exist",
                ));
            }
            Answer::Done(status) if invocation.verb.report == Report::Status => {
                out.push_str(&line(&status));
                out.push('\n');
            }
            Answer::Done(_) => {}
            Answer::Ok(status) => out.push_str(&format!("ok: {}\n", line(&status))),
            Answer::Timeout(status) => {
                failed += 1;
                out.push_str(&format!("timeout: {}\n", line(&status)));
            }
            Answer::Killed(status) => {
                failed += 1;
                out.push_str(&format!("kill: {}\n", line(&status)));
            }
        }
    }
    (out, failed.min(MAX_FAILED))
}

/// `sv ARGS...`: returns the exit code.
pub fn sv(args: Vec<OsString>, socket: PathBuf, env: Env) -> i32 {
    let parsed = parse(args, env).and_then(|i| Ok((i, super::client_control(socket, env)?)));
    let (invocation, control) = match parsed {
        Ok(parsed) => parsed,
        Err(problem) => {
            write_err(&format!("sv: {problem}\n{USAGE}"));
            return USAGE_CODE;
        }
    };
    let (out, code) = report(&invocation, control.ask(&invocation.request));
    write_out(&out);
    code
}

/// `moltd status [SERVICE...]`: the table of every service.
pub fn status(names: Vec<OsString>, control: &Control) -> i32 {
    let request = Request {
        op: Op::Status,
        names: names
            .iter()
            .map(|n| service_name(&n.to_string_lossy()))
            .collect(),
        wait: None,
        kill_on_timeout: false,
    };
    let answers = match control.ask(&request) {
        Ok(answers) => answers,
        Err(err) => return super::client_failed(&err, control),
    };
    let mut known = Vec::new();
    let mut code = 0;
    for answer in answers {
        match answer {
            Answer::Done(status) => known.push(status),
            Answer::Unknown(name) => {
                write_err(&format!("moltd: error: no service {name:?}\n"));
                code = 1;
            }
            _ => {}
        }
    }
    if names.is_empty() {
        known = with_second_generations(known, control);
    }
    write_out(&status::table(&known));
    if names.is_empty() {
        match control.ask_updater(UpdateRequest::Status, &mut |_| {}) {
            Ok(reply) => write_out(&update_summary(reply)),
            Err(err) => return super::client_failed(&err, control),
        }
    }
    code
}

/// `known` with, after each service, its second generation (`NAME/next`)
/// while an overlap runs one (or it is on its way). Asked for by name: the
/// list of every service holds the services alone, as the updater counts
/// on. An error here leaves the table as it was.
fn with_second_generations(known: Vec<Status>, control: &Control) -> Vec<Status> {
    let request = Request {
        op: Op::Status,
        names: known.iter().map(|s| format!("{}/next", s.name)).collect(),
        wait: None,
        kill_on_timeout: false,
    };
    // No names would ask for every service.
    let answers = if request.names.is_empty() {
        Vec::new()
    } else {
        control.ask(&request).unwrap_or_default()
    };
    let mut next: Vec<Status> = answers
        .into_iter()
        .filter_map(|answer| match answer {
            Answer::Done(status) if status.main.phase != status::Phase::Down => Some(status),
            _ => None,
        })
        .collect();
    let mut table = Vec::with_capacity(known.len() + next.len());
    for service in known {
        let label = format!("{}/next", service.name);
        table.push(service);
        if let Some(at) = next.iter().position(|s| s.name == label) {
            table.push(next.swap_remove(at));
        }
    }
    table
}

/// The updater's part of `moltd status`: versions, state, progress, last
/// error, releases marked bad. Empty when no updater runs.
fn update_summary(reply: UpdateReply) -> String {
    let json = match reply {
        Ok(json) => json,
        Err(text) if text == crate::control::NOT_CONFIGURED => return String::new(),
        // The agent is down (or broken): say so rather than nothing.
        Err(text) => return format!("\nupdate: {}\n", Escaped(&text)),
    };
    let Ok(status) = serde_json::from_str::<UpdateStatus>(&json) else {
        return String::new();
    };
    // Tags and messages name releases and assets from the feed.
    let none = || "none".to_owned();
    // With updates off, nothing waits for a release.
    let first_boot = status.current.is_none() && status.suspended.is_none();
    let mut text = format!(
        "\nrelease: {} (previous: {})\nupdate: {}, step {}/{}",
        Escaped(&status.current.unwrap_or_else(none)),
        Escaped(&status.previous.unwrap_or_else(none)),
        status.state.name(),
        status.step,
        status.total_steps,
    );
    if let Some(progress) = status.progress {
        let _ = write!(text, ", {progress}%");
    }
    let _ = writeln!(text, ": {}", Escaped(&status.message));
    if first_boot {
        let _ = writeln!(
            text,
            "first boot: the services start once a release is installed"
        );
    }
    if let Some(available) = status.available {
        let _ = writeln!(text, "newer release: {}", Escaped(&available.tag));
    }
    if let Some(error) = status.last_error {
        let _ = writeln!(text, "last error: {}", Escaped(&error));
    }
    if let Some(why) = status.suspended {
        let _ = writeln!(text, "automatic updates suspended: {why}");
    }
    if let Some(rollout) = &status.rollout {
        let how = match rollout.wariness_configured {
            true => "MOLTD_ROLLOUT_WARINESS",
            false => "from the node id",
        };
        let _ = writeln!(
            text,
            "rollout: wariness {:.4} ({how}), node id {}",
            rollout.wariness,
            Escaped(&rollout.node_id)
        );
        for judged in &rollout.releases {
            let line = format!("{}: {}", judged.tag, judged.describe());
            let _ = writeln!(text, "  {}", Escaped(&line));
        }
        if let Some(why) = &rollout.leaving {
            let _ = writeln!(text, "  leaving: {}", Escaped(why));
        }
    }
    if !status.bad_releases.is_empty() {
        // Marks from MOLTD_SKIP say so: `moltd unmark` cannot clear them.
        let bad: Vec<String> = (status.bad_releases.iter())
            .map(|tag| match status.skipped_releases.contains(tag) {
                true => format!("{tag} (MOLTD_SKIP)"),
                false => tag.clone(),
            })
            .collect();
        let _ = writeln!(text, "bad releases: {}", Escaped(&bad.join(", ")));
    }
    text.push_str(&status.moltd.summary());
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::status::{Phase, ProgramStatus, Want};

    fn no_env(_: &str) -> Option<OsString> {
        None
    }

    fn parse_words(words: &[&str]) -> Result<Invocation, String> {
        parse(words.iter().map(OsString::from).collect(), &no_env)
    }

    #[test]
    fn verbs_follow_runit() {
        let table: [(&str, Option<Op>); 14] = [
            ("status", Some(Op::Status)),
            ("st", Some(Op::Status)),
            ("up", Some(Op::Up)),
            ("u", Some(Op::Up)),
            ("dow", Some(Op::Down)),
            ("exit", Some(Op::Down)),
            ("xyz", Some(Op::Down)),
            ("start", Some(Op::Up)),
            ("stop", Some(Op::Down)),
            ("check", Some(Op::Check)),
            ("cont", Some(Op::Signal(libc::SIGCONT))),
            ("1", Some(Op::Signal(libc::SIGUSR1))),
            ("restar", None),
            ("r", None),
        ];
        for (word, op) in table {
            assert_eq!(verb(word).map(|v| v.op), op, "{word}");
        }
        assert!(verb("force-stop").unwrap().kill_on_timeout);
        assert!(!verb("stop").unwrap().kill_on_timeout);
    }

    #[test]
    fn waiting_follows_v_w_and_svwait() {
        let quiet = parse_words(&["up", "web"]).unwrap();
        assert_eq!(quiet.request.wait, None);
        let verbose = parse_words(&["-v", "up", "web"]).unwrap();
        assert_eq!(verbose.request.wait, Some(DEFAULT_SVWAIT));
        let w = parse_words(&["-w", "3", "down", "web"]).unwrap();
        assert_eq!(w.request.wait, Some(Duration::from_secs(3)));
        // runit's `ok:` line for a plain signal comes from a wait that is
        // over at once.
        let hup = parse_words(&["-v", "hup", "web"]).unwrap();
        assert_eq!(hup.request.wait, Some(DEFAULT_SVWAIT));
        assert_eq!(parse_words(&["hup", "web"]).unwrap().request.wait, None);
        let env = |name: &str| (name == "SVWAIT").then(|| OsString::from("2"));
        let lsb = parse(vec!["stop".into(), "web".into()], &env).unwrap();
        assert_eq!(lsb.request.wait, Some(Duration::from_secs(2)));
        let bad_env = |name: &str| (name == "SVWAIT").then(|| OsString::from("soon"));
        assert!(parse(vec!["stop".into(), "web".into()], &bad_env).is_err());
    }

    #[test]
    fn bad_usage() {
        for words in [
            &[][..],
            &["up"],
            &["fly", "web"],
            &["-w", "x", "up", "web"],
            &["-z", "up", "web"],
        ] {
            assert!(parse_words(words).is_err(), "{words:?}");
        }
    }

    #[test]
    fn service_names_from_paths() {
        let table = [
            ("web", "web"),
            ("web/", "web"),
            ("./web", "web"),
            ("/etc/service/web", "web"),
            ("web/log", "web/log"),
            ("/etc/service/web/log/", "web/log"),
            ("web/next", "web/next"),
            ("/etc/service/next", "next"),
            ("/srv/next", "next"),
        ];
        for (arg, name) in table {
            assert_eq!(service_name(arg), name, "{arg}");
        }
    }

    #[test]
    fn report_lines_and_exit_codes() {
        let status = Status {
            name: "web".into(),
            main: ProgramStatus {
                phase: Phase::Down,
                pid: None,
                secs: 2,
                normally_up: true,
                want: Want::Down,
                ready: false,
                paused: false,
                got_term: false,
                restarts: 0,
                last_exit: None,
            },
            log: None,
            dir: None,
        };
        let invocation = parse_words(&["-v", "down", "web", "./db", "x", "y"]).unwrap();
        let answers = vec![
            Answer::Ok(status.clone()),
            Answer::Timeout(status.clone()),
            Answer::Unknown("x".into()),
            Answer::Killed(status.clone()),
        ];
        let (out, code) = report(&invocation, Ok(answers));
        assert_eq!(
            out,
            "ok: down: web: 2s, normally up\n\
             timeout: down: ./db: 2s, normally up\n\
             fail: x: unable to change to service directory: file does not exist\n\
             kill: down: y: 2s, normally up\n"
        );
        assert_eq!(code, 3);
        let quiet = parse_words(&["up", "web"]).unwrap();
        assert_eq!(
            report(&quiet, Ok(vec![Answer::Done(status)])),
            (String::new(), 0)
        );
    }
}
