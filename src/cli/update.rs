//! `moltd update`, `moltd rollback` and `moltd unmark`.
//!
//! When a supervisor is running (its control socket answers), the request
//! goes to it, so the running instance stops, switches and starts its own
//! services, and keeps the state it holds in memory true. Without one,
//! `moltd update` checks and stages from the command line, with the same
//! environment variables the supervisor reads, and `moltd unmark` edits the
//! state file (atomically) that the next start reads. Both first take
//! `supervisor.lock` (held by a running supervisor for its lifetime) and
//! refuse without it: `--stage-only`, `--watch` and a socket that is not
//! found never reach the supervisor, which may be running all the same.
//!
//! Recognised only as moltd's very first argument, so `moltd -- update` and
//! `moltd ./update` still run a program called update as PID 1.

use super::{Env, Outcome, write_err, write_out};
use crate::control::{UpdateReply, UpdateRequest};
use crate::services::client::{self, ClientError, Control};
use crate::update::{self, Config, Mode, Updater};
use lexopt::prelude::*;
use log::LevelFilter;
use std::ffi::OsString;
use std::path::PathBuf;

const HELP: &str = "\
Usage: moltd update [--check | --force | --stage-only] [--watch]
       moltd rollback
       moltd unmark TAG...

Looks for a newer release of the payload (`moltd help env` lists the
environment variables that say where and which). With a running
supervisor, asks it to check now and apply the release (stop, switch, start,
health check); `moltd rollback` asks it to go back to the previous release.
`moltd unmark TAG...` clears the bad mark a failed health check, a
rollback or a refused download left on TAG, so that it may be chosen again (then `moltd update`
retries it); without a supervisor it edits $MOLTD_APP_DIR/.moltd/state.json.

  --check        only report the newest eligible release
  --force        update even though the release was changed by hand
  --stage-only   download, verify and stage it here; print the staged folder
  --watch        keep checking on the schedule (SLEEP / MOLTD_INTERVAL)
  -h, --help     print this help and exit

Without a supervisor, MOLTD_MODE decides (check, or stage; switching needs
the supervisor). Progress is logged on stderr and written to MOLTD_STATUS_FILE.
A supervisor answers at once (MOLTD_CLIENT_TIMEOUT, default 5s), says what
it does, and the outcome is waited for up to MOLTD_CLIENT_WAIT (default 30m).
";

/// A parsed `moltd update` command.
#[derive(Debug, PartialEq, Eq)]
pub struct UpdateCommand {
    pub mode: Option<Mode>,
    pub force: bool,
    pub watch: bool,
    pub level: LevelFilter,
    pub socket: PathBuf,
}

/// Parses the arguments after `update`.
pub fn parse(args: impl IntoIterator<Item = OsString>, socket: PathBuf, env: Env) -> Outcome {
    // Steps are worth seeing here: info by default.
    let level = match super::moltd::log_level(0, env, LevelFilter::Info) {
        Ok(level) => level,
        Err(problem) => return usage_error(problem),
    };
    let mut command = UpdateCommand {
        mode: None,
        force: false,
        watch: false,
        level,
        socket,
    };
    // The flags `--check`, `--force` and `--stage-only` given, to refuse
    // two of them together: the help offers them as alternatives.
    let mut chosen = std::collections::BTreeSet::new();
    let mut parser = lexopt::Parser::from_args(args);
    loop {
        let arg = match parser.next() {
            Ok(Some(arg)) => arg,
            Ok(None) => break,
            Err(err) => return usage_error(err),
        };
        match arg {
            Long("check") => {
                command.mode = Some(Mode::Check);
                chosen.insert("check");
            }
            Long("force") => {
                command.force = true;
                chosen.insert("force");
            }
            Long("stage-only") => {
                command.mode = Some(Mode::Stage);
                chosen.insert("stage-only");
            }
            Long("watch") => command.watch = true,
            Short('h') | Long("help") => return Outcome::stdout(HELP),
            other => return usage_error(other.unexpected()),
        }
    }
    if let [first, second, ..] = chosen.into_iter().collect::<Vec<_>>()[..] {
        return usage_error(format!("--{first} and --{second} do not go together"));
    }
    // Forcing accepts a hand-edited tree in the running supervisor; a
    // local run never switches releases.
    if command.force && command.watch {
        return usage_error(
            "--force and --watch do not go together (--watch runs here; --force needs the running supervisor)",
        );
    }
    Outcome::Update(command)
}

fn usage_error(problem: impl std::fmt::Display) -> Outcome {
    Outcome::stderr(
        1,
        format!("moltd: error: {problem} (see 'moltd update --help')\n"),
    )
}

/// Parses the arguments after `unmark`: one or more tags.
pub fn parse_unmark(args: Vec<OsString>, socket: PathBuf) -> Outcome {
    let mut tags = Vec::new();
    for arg in args {
        match arg.to_str() {
            Some("-h" | "--help") => return Outcome::stdout(HELP),
            Some(flag) if flag.starts_with('-') => {
                return usage_error(format!("unexpected option {flag:?} for unmark"));
            }
            Some(tag) if !tag.is_empty() && !tag.chars().any(char::is_control) => {
                tags.push(tag.to_owned())
            }
            _ => return usage_error(format!("bad tag {arg:?}")),
        }
    }
    if tags.is_empty() {
        return usage_error("unmark needs the TAG of a release marked bad");
    }
    Outcome::Unmark { tags, socket }
}

/// `moltd unmark`: through the running supervisor, else in the state file.
/// Only when no supervisor can be listening (no socket, or nothing accepts
/// on it) and none holds `supervisor.lock` (its socket may be elsewhere):
/// one that holds the state in memory would undo the edit at its next save,
/// so any other failure to connect (permissions) is reported instead.
pub fn unmark(tags: &[String], control: &Control, env: Env) -> i32 {
    match control.ask_updater(UpdateRequest::Unmark(tags.to_vec()), &mut waiting(control)) {
        Ok(reply) => print_reply(reply),
        Err(ClientError::NotRunning(_)) => {
            let app = update::config::app_dir(env);
            let state_dir = update::config::state_dir(&app);
            let path = state_dir.join("state.json");
            // A supervisor behind a wrong MOLTD_CONTROL, or a local
            // `moltd update`, holds this lock and the state in memory.
            let reply = update::staging::manage(&app, &state_dir)
                .and_then(|_lock| {
                    let skip = update::config::skip(env);
                    update::state::State::unmark_file(&path, tags, skip)
                })
                .map(|()| {
                    format!(
                        "{} no longer marked bad in {}",
                        tags.join(", "),
                        path.display()
                    )
                })
                .map_err(|err| update::chain(&err));
            print_reply(reply)
        }
        Err(err @ (ClientError::Connect(_) | ClientError::PermissionDenied)) => {
            write_err(&format!(
                "moltd: error: {err} ({}); not editing the state file, which a running supervisor would overwrite (check MOLTD_CONTROL and run as the user moltd runs as)\n",
                control.socket.display()
            ));
            1
        }
        Err(err) => super::client_failed(&err, control),
    }
}

/// `moltd rollback`: only the running supervisor can do it.
pub fn rollback(control: &Control) -> i32 {
    match control.ask_updater(UpdateRequest::Rollback, &mut waiting(control)) {
        Err(err) => super::client_failed(&err, control),
        Ok(reply) => print_reply(reply),
    }
}

/// Tells the user what the supervisor took on, and how long the client
/// waits for its outcome.
pub(super) fn waiting(control: &Control) -> impl FnMut(&str) {
    let wait = control.wait.as_secs_f64();
    move |what| {
        write_err(&format!(
            "moltd: {what}; waiting up to {wait}s for the outcome ({})\n",
            client::WAIT_VAR
        ))
    }
}

pub(super) fn print_reply(reply: UpdateReply) -> i32 {
    match reply {
        Ok(text) => {
            write_out(&format!("{text}\n"));
            0
        }
        Err(text) => {
            write_err(&format!("moltd: error: {text}\n"));
            1
        }
    }
}

/// Runs the command; returns the exit code.
pub fn run(command: UpdateCommand, control: &Control) -> i32 {
    let local = command.watch || command.mode == Some(Mode::Stage);
    if !local {
        let request = match command.mode {
            Some(Mode::Check) => UpdateRequest::Check,
            _ => UpdateRequest::Apply {
                force: command.force,
            },
        };
        match control.ask_updater(request, &mut waiting(control)) {
            Ok(reply) => return print_reply(reply),
            Err(ClientError::NotRunning(_) | ClientError::Connect(_)) if !command.force => {}
            Err(err) => return super::client_failed(&err, control),
        }
    }
    let env = |name: &str| std::env::var_os(name);
    // `MOLTD_SELF_REPO` alone gives nothing to check for the app.
    let updater = Config::from_env(&env).and_then(|config| {
        config
            .app_source()
            .map(drop)
            .and_then(|()| Updater::new(config))
    });
    let mut updater = match updater {
        Ok(updater) => updater,
        Err(err) => {
            write_err(&format!("moltd: error: {}\n", update::chain(&err)));
            return 1;
        }
    };
    let mode = command.mode.unwrap_or(updater.config().mode);
    if mode == Mode::Auto {
        log::info!("no supervisor is running: staging only, it switches to the release");
    }
    if command.watch {
        updater.watch(mode);
    }
    match updater.run_once(mode) {
        Ok(ran) => {
            let current = ran.current.as_deref().unwrap_or("nothing installed");
            match (ran.staged, ran.newer) {
                (Some(path), _) => write_out(&format!("{}\n", path.display())),
                (None, Some(newer)) => {
                    let url = newer
                        .release
                        .url
                        .map(|u| format!(": {u}"))
                        .unwrap_or_default();
                    write_out(&format!(
                        "newer release {} available (current: {current}){url}\n",
                        newer.release.tag
                    ));
                }
                (None, None) => write_out(&format!("no newer release (current: {current})\n")),
            }
            0
        }
        // The reporter has logged the error with its causes.
        Err(_) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unmark(args: &[&str]) -> Outcome {
        let args = args.iter().map(OsString::from).collect();
        parse_unmark(args, PathBuf::from("/s"))
    }

    fn refused(outcome: Outcome, why: &str) {
        match outcome {
            Outcome::Exit { code, stderr, .. } => {
                assert_eq!(code, 1);
                assert!(stderr.contains(why), "{stderr}");
            }
            _ => panic!("accepted, expected {why:?}"),
        }
    }

    #[test]
    fn unmark_takes_tags_and_refuses_bad_ones() {
        match unmark(&["v3.0.0", "v2.0.0"]) {
            Outcome::Unmark { tags, .. } => assert_eq!(tags, ["v3.0.0", "v2.0.0"]),
            _ => panic!("tags refused"),
        }
        refused(unmark(&[]), "unmark needs the TAG");
        refused(unmark(&["-x"]), "unexpected option \"-x\"");
        refused(unmark(&[""]), "bad tag \"\"");
        refused(unmark(&["v1\tv2"]), "bad tag");
    }

    /// `moltd update --check --force` used to send a plain check, dropping
    /// `--force` without a word.
    #[test]
    fn update_refuses_flags_that_do_not_go_together() {
        let update = |args: &[&str]| {
            let args = args.iter().map(OsString::from);
            parse(args, PathBuf::from("/s"), &|_| None)
        };
        refused(
            update(&["--check", "--force"]),
            "--check and --force do not go together",
        );
        refused(
            update(&["--force", "--check"]),
            "--check and --force do not go together",
        );
        refused(
            update(&["--stage-only", "--force"]),
            "--force and --stage-only do not go together",
        );
        refused(
            update(&["--check", "--stage-only"]),
            "--check and --stage-only do not go together",
        );
        refused(
            update(&["--force", "--watch"]),
            "--force and --watch do not go together",
        );
        for fine in [
            &["--check", "--check", "--watch"][..],
            &["--force"],
            &["--stage-only", "--watch"],
        ] {
            assert!(matches!(update(fine), Outcome::Update(_)), "{fine:?}");
        }
    }
}
