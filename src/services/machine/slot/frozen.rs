//! A slot written into PID 1's frozen state and read back by the program
//! that resumes it (see `services::reexec`): one record of space-separated
//! fields, times as signed nanoseconds from the moment of the freeze.
//!
//! Only a slot at rest is frozen: down, in backoff, or running (ready, or
//! on its way by a notification, a grace period or a `./check` due later).
//! A slot being started, stopped or finished, or running its `./check`,
//! has a child or a signal in flight whose outcome the other program could
//! not tie to it: the self-update is refused with that reason, to be tried
//! again a moment later.

use super::{Intent, Life, Readying, Slot};
use crate::services::scan::Part;
use crate::sys::reap::ExitStatus;
use std::time::{Duration, Instant};

/// `t` as signed nanoseconds from `base`.
fn offset(t: Instant, base: Instant) -> i128 {
    match t.checked_duration_since(base) {
        Some(after) => after.as_nanos() as i128,
        None => -((base - t).as_nanos() as i128),
    }
}

/// The inverse of [`offset`]; a time before the clock's start is the start.
fn at(base: Instant, offset: i128) -> Instant {
    let span = Duration::from_nanos(offset.unsigned_abs().min(u64::MAX as u128) as u64);
    match offset >= 0 {
        true => base + span,
        false => base.checked_sub(span).unwrap_or(base),
    }
}

impl Slot {
    /// The record of this slot, or what it is busy with.
    pub(in crate::services::machine) fn freeze(
        &self,
        base: Instant,
    ) -> Result<String, &'static str> {
        let life = match self.life {
            Life::Down => "down".to_owned(),
            Life::Backoff { until } => format!("backoff {}", offset(until, base)),
            Life::Running {
                pid,
                exec_failed,
                ready,
            } => {
                let ready = match ready {
                    Readying::Ready => "ready".to_owned(),
                    Readying::Awaiting => "awaiting".to_owned(),
                    Readying::Grace(t) => format!("grace {}", offset(t, base)),
                    Readying::CheckAt(t) => format!("check {}", offset(t, base)),
                    Readying::Checking { .. } => return Err("running its ./check"),
                };
                format!("running {pid} {} {ready}", u8::from(exec_failed))
            }
            Life::Starting => return Err("starting"),
            Life::Stopping { .. } => return Err("stopping"),
            Life::Finishing { .. } => return Err("running its ./finish"),
        };
        let intent = match self.intent {
            Intent::Up => "up",
            Intent::Down => "down",
            Intent::Once => "once",
        };
        let last_start = self
            .last_start
            .map_or("-".to_owned(), |t| offset(t, base).to_string());
        let last_exit = match self.last_exit {
            None => "-".to_owned(),
            Some(ExitStatus::Exited(code)) => format!("exit:{code}"),
            Some(ExitStatus::Signaled(signal)) => format!("signal:{signal}"),
        };
        Ok(format!(
            "{intent} {} {} {last_start} {last_exit} {} {} {} {life}",
            offset(self.since, base),
            self.starts,
            self.quick_deaths,
            u8::from(self.paused),
            u8::from(self.got_term),
        ))
    }

    /// The pid of `run` in a record of a running slot.
    pub(in crate::services::machine) fn frozen_pid(record: &str) -> Option<i32> {
        let fields: Vec<&str> = record.split(' ').collect();
        match fields.get(8..10) {
            Some(["running", pid]) => pid.parse().ok(),
            _ => None,
        }
    }

    /// A slot from its record, defined by `part` (read from its folder by
    /// the resuming program).
    pub(in crate::services::machine) fn thaw(
        part: Part,
        record: &str,
        base: Instant,
    ) -> Option<Slot> {
        let fields: Vec<&str> = record.split(' ').collect();
        let [
            intent,
            since,
            starts,
            last_start,
            last_exit,
            quick,
            paused,
            term,
            life @ ..,
        ] = fields.as_slice()
        else {
            return None;
        };
        let time = |text: &str| text.parse().ok().map(|n| at(base, n));
        let flag = |text: &str| match text {
            "0" => Some(false),
            "1" => Some(true),
            _ => None,
        };
        let life = match life {
            ["down"] => Life::Down,
            ["backoff", until] => Life::Backoff {
                until: time(until)?,
            },
            ["running", pid, failed, ready @ ..] => Life::Running {
                pid: pid.parse().ok().filter(|&p: &i32| p > 0)?,
                exec_failed: flag(failed)?,
                ready: match ready {
                    ["ready"] => Readying::Ready,
                    ["awaiting"] => Readying::Awaiting,
                    ["grace", t] => Readying::Grace(time(t)?),
                    ["check", t] => Readying::CheckAt(time(t)?),
                    _ => return None,
                },
            },
            _ => return None,
        };
        Some(Slot {
            intent: match *intent {
                "up" => Intent::Up,
                "down" => Intent::Down,
                "once" => Intent::Once,
                _ => return None,
            },
            part,
            life,
            since: time(since)?,
            starts: starts.parse().ok()?,
            last_start: match *last_start {
                "-" => None,
                t => Some(time(t)?),
            },
            last_exit: match last_exit.split_once(':') {
                None if *last_exit == "-" => None,
                Some(("exit", code)) => Some(ExitStatus::Exited(code.parse().ok()?)),
                Some(("signal", signal)) => Some(ExitStatus::Signaled(signal.parse().ok()?)),
                _ => return None,
            },
            quick_deaths: quick.parse().ok()?,
            paused: flag(paused)?,
            got_term: flag(term)?,
            last_problem: None,
        })
    }
}
