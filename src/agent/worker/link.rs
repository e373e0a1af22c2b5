//! The worker's side of [`Payload`]: each call the updater makes becomes
//! messages to the agent's main thread, and so requests to PID 1 (control
//! requests for services, hooks PID 1 spawns and reaps). Apart from the
//! worker's loop, which only decides when the updater runs.

use super::{Link, START_WAIT, STOP_MARGIN, ToAgent, ToLoop, statuses};
use crate::services::control::{Answer, Op, Request};
use crate::services::machine::MAIN_NAME;
use crate::services::status::Phase as ServicePhase;
use crate::sys::reap::ExitStatus;
use crate::update::Payload;
use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

impl Payload for Link {
    fn replace_pid1(
        &mut self,
        request: &crate::control::SelfUpdate,
    ) -> Result<Result<String, String>, String> {
        self.send(ToLoop::SelfUpdate(request.clone()))?;
        match self.wait_for(None, |m| matches!(m, ToAgent::SelfUpdate(_)))? {
            Some(ToAgent::SelfUpdate(answer)) => Ok(answer),
            _ => Err("no answer from PID 1".into()),
        }
    }

    fn ready(&mut self) -> Result<Vec<String>, String> {
        if let Some(names) = &self.started {
            return Ok(names.clone());
        }
        self.send(ToLoop::Ready)?;
        // The answer to the hold of the main command.
        self.wait_for(None, |m| matches!(m, ToAgent::Answers(_)))?;
        let mut names = self.wanted_up()?;
        let parked = std::mem::take(&mut self.parked);
        self.start(&parked)?;
        names.extend(
            parked
                .into_iter()
                .filter(|n| !names.contains(n))
                .collect::<Vec<_>>(),
        );
        self.started = Some(names.clone());
        Ok(names)
    }

    fn stop(&mut self, names: Option<&[String]>) -> Result<Vec<String>, String> {
        let names: Vec<String> = match names {
            Some(names) => names.to_vec(),
            None => self.wanted_up()?,
        };
        if names.is_empty() {
            return Ok(names);
        }
        statuses(self.ask(Request {
            op: Op::Down,
            names: names.clone(),
            wait: Some(self.svwait + STOP_MARGIN),
            kill_on_timeout: true,
        })?)?;
        Ok(names)
    }

    fn start(&mut self, names: &[String]) -> Result<(), String> {
        if names.is_empty() {
            return Ok(());
        }
        statuses(self.ask(Request {
            op: Op::Up,
            names: names.to_vec(),
            wait: Some(START_WAIT),
            kill_on_timeout: false,
        })?)
        .map(drop)
    }

    fn overlap(&mut self, names: Option<&[String]>) -> Result<Vec<String>, String> {
        let names = match names {
            Some(names) => names.to_vec(),
            None => self.wanted_up()?,
        };
        if names.iter().any(|n| n == MAIN_NAME) {
            return Err(
                "the main command cannot run twice at once: MOLTD_STRATEGY=overlap needs the app in a service folder (or use restart)"
                    .into(),
            );
        }
        let next: Vec<String> = names.iter().map(|n| format!("{n}/next")).collect();
        if next.is_empty() {
            return Ok(next);
        }
        let started = self
            .ask(Request {
                op: Op::Overlap,
                names: next.clone(),
                wait: Some(START_WAIT),
                kill_on_timeout: false,
            })
            .and_then(statuses);
        if let Err(problem) = started {
            if let Err(also) = self.abandon(&next) {
                log::error!("cannot stop the second generation again: {also}");
            }
            return Err(problem);
        }
        Ok(next)
    }

    fn retire(&mut self, next: &[String]) -> Result<(), String> {
        let names = next
            .iter()
            .map(|n| n.strip_suffix("/next").unwrap_or(n).to_owned())
            .collect();
        statuses(self.ask(Request {
            op: Op::Retire,
            names,
            wait: Some(self.svwait + STOP_MARGIN),
            kill_on_timeout: true,
        })?)
        .map(drop)
    }

    fn abandon(&mut self, next: &[String]) -> Result<(), String> {
        statuses(self.ask(Request {
            op: Op::Down,
            names: next.to_vec(),
            wait: Some(self.svwait + STOP_MARGIN),
            kill_on_timeout: true,
        })?)
        .map(drop)
    }

    fn pids(&mut self, names: &[String]) -> Result<Vec<Option<i32>>, String> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let answers = self.ask(Request {
            op: Op::Status,
            names: names.to_vec(),
            wait: None,
            kill_on_timeout: false,
        })?;
        Ok(statuses(answers)?
            .into_iter()
            .map(|s| s.main.pid.filter(|_| s.main.phase == ServicePhase::Running))
            .collect())
    }

    /// `once` for the main command, if there is one: its exit ends moltd
    /// again.
    fn release(&mut self) -> Result<(), String> {
        let answers = self.ask(Request {
            op: Op::Once,
            names: vec![MAIN_NAME.to_owned()],
            wait: None,
            kill_on_timeout: false,
        })?;
        match answers.as_slice() {
            [Answer::Unknown(_)] => Ok(()),
            _ => statuses(answers).map(drop),
        }
    }

    fn run_hook(
        &mut self,
        command: &str,
        args: &[&str],
        cwd: Option<&std::path::Path>,
        timeout: Duration,
    ) -> Result<ExitStatus, String> {
        let args = args.iter().map(OsString::from).collect();
        self.run_shell(command, command, args, cwd, timeout)
    }

    fn run_check(
        &mut self,
        command: &str,
        output: &Path,
        timeout: Duration,
    ) -> Result<ExitStatus, String> {
        // PID 1 starts hooks with its own stdout and stderr: the shell
        // moves both to `output` first, then runs the command with no
        // arguments, as any hook.
        let script = format!("exec >>\"$1\" 2>&1 || exit 126\nshift\n{command}");
        self.run_shell(&script, command, vec![output.into()], None, timeout)
    }
}

impl Link {
    /// Runs `sh -c SCRIPT moltd ARGS...` through PID 1 and waits for it,
    /// in `cwd` (PID 1's own folder without one), killing its group after
    /// `timeout`; `command` names it in messages.
    fn run_shell(
        &mut self,
        script: &str,
        command: &str,
        args: Vec<OsString>,
        cwd: Option<&Path>,
        timeout: Duration,
    ) -> Result<ExitStatus, String> {
        let mut argv: Vec<OsString> = vec!["/bin/sh".into(), "-c".into(), script.into()];
        argv.push("moltd".into());
        argv.extend(args);
        let cwd = cwd.map(std::path::Path::to_path_buf);
        self.send(ToLoop::Hook { argv, cwd })?;
        let pid = match self.wait_for(None, |m| matches!(m, ToAgent::HookStarted(_)))? {
            Some(ToAgent::HookStarted(started)) => started?,
            _ => return Err("the hook was not started".into()),
        };
        let exited = |m: &ToAgent| matches!(m, ToAgent::HookExited { pid: p, .. } if *p == pid);
        let status = match self.wait_for(Some(Instant::now() + timeout), exited)? {
            Some(message) => message,
            None => {
                log::warn!(
                    "{command:?} still runs after {}s: killing it",
                    timeout.as_secs_f64()
                );
                self.send(ToLoop::KillHook(pid))?;
                self.wait_for(None, exited)?;
                return Err(format!(
                    "{command:?} timed out after {}s",
                    timeout.as_secs_f64()
                ));
            }
        };
        match status {
            ToAgent::HookExited { status, .. } => Ok(status),
            _ => Err("the hook vanished".into()),
        }
    }
}
