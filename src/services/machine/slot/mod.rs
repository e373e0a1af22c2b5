//! The life of one supervised program (`run`, or `log/run`): a [`Slot`].
//!
//! Every change of a slot's [`Life`] goes through [`Slot::on`], one `match`
//! over (state, [`SlotEvent`]) that follows this table row by row. Every pair
//! not in it does nothing. "Settle" and "after `run`" are the two shared
//! endings, spelled out below the table.
//!
//! | state | event | actions | next state |
//! |---|---|---|---|
//! | Down, Backoff | Start, Restart | spawn `run` if runit's one-second rule and the backoff allow | Starting, or Backoff until then (Down if no starts are allowed) |
//! | Running | Stop(Signal), Restart | down-signal and CONT to its group | Stopping, KILL at SVWAIT |
//! | Running | Stop(CloseInput) | close the log pipe | Stopping, KILL at SVWAIT |
//! | Backoff | Stop(Signal) | | Down |
//! | Backoff | Stop(CloseInput) | close the log pipe | Down |
//! | any other | Stop(CloseInput) | close the log pipe | same |
//! | Running, Stopping with `run` alive | Signal(s) | `s` to `run` (STOP, CONT, TERM noted in its status) | same |
//! | Starting | RunSpawned: a pid | | Running, readying as its [`Readiness`] says |
//! | Starting | RunSpawned: exec failed in the child | | Running, never ready (its exit counts as 111) |
//! | Starting | RunSpawned: no child | a quick death, exit 111 | after `run` |
//! | Finishing | FinishSpawned: a child | | Finishing, with its pid |
//! | Finishing | FinishSpawned: no child | | settle |
//! | Running | Ready (a notification) | | Running, ready |
//! | Running, grace over | Tick | | Running, ready |
//! | Running, check due | Tick | spawn `./check` | Running, checking, KILL at [`CHECK_LIMIT`] |
//! | Running, checking | CheckSpawned: a pid | | same, with its pid |
//! | Running, checking | CheckSpawned: exec failed in the child | | same, with its pid (it exits 127) |
//! | Running, checking | CheckSpawned: no child | | Running, check due in [`CHECK_EVERY`] |
//! | Running, checking | CheckExited 0 | | Running, ready |
//! | Running, checking | CheckExited otherwise | | Running, check due in [`CHECK_EVERY`] |
//! | Running, checking, deadline passed | Tick | KILL the check's group | same, no deadline |
//! | Running | RunExited, group gone | count a quick death unless it ran [`STABLE`](super::STABLE) | after `run` |
//! | Running | RunExited, group alive | same count; down-signal and CONT to the group | Stopping (`run` gone), KILL at SVWAIT |
//! | Stopping | RunExited, group gone | | after `run` |
//! | Stopping | RunExited, group alive | | Stopping (`run` gone), same deadline |
//! | Stopping, `run` gone | GroupGone | | after `run` |
//! | Finishing | FinishExited | | settle |
//! | Backoff, time come | Tick | spawn `run` unless wanted down | Starting, or Down |
//! | Stopping, deadline passed | Tick | KILL the group | Stopping, no deadline |
//! | Finishing with a pid, deadline passed | Tick | KILL its group | Finishing, no deadline |
//!
//! Whenever Running is left, a `./check` still running is killed (its
//! group), and its exit is then nobody's.
//!
//! After `run` (its whole group is gone): with a `finish`, spawn
//! `./finish CODE SIGNAL` and go to Finishing (KILL at SVWAIT); else settle.
//!
//! Settle: Down. A `finish` that exited [`FINISH_NO_RESTART`](super::FINISH_NO_RESTART) gives up; a
//! program run once is now wanted down; one wanted up starts again (as
//! Start) after a delay that doubles with each quick death in a row, up to
//! the backoff cap; after [`GIVE_UP_AFTER`](super::GIVE_UP_AFTER) of them it has given up, which
//! stops the container if the service is essential.

mod end;
mod frozen;

use super::{
    Action, COULD_NOT_START, CRASH_LOOP_AFTER, Goal, MIN_RESTART, Program, Settings, SpawnFailure,
    Which, describe,
};
use crate::services::scan::{Part, Readiness};
use crate::signals;
use crate::sys::reap::ExitStatus;
use log::{debug, info, warn};
use nix::libc;
use std::time::{Duration, Instant};

/// The pause between two runs of a failing `./check`: a check is usually a
/// probe (a connect, a query), cheap enough to repeat a few times a second.
pub(super) const CHECK_EVERY: Duration = Duration::from_millis(200);
/// How long one run of `./check` may take before it counts as failed (and
/// is killed), so a hung probe does not hold readiness up for good.
pub(super) const CHECK_LIMIT: Duration = Duration::from_secs(5);

/// What a program should be doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Intent {
    Up,
    Down,
    /// Run, but do not restart.
    Once,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    Down,
    Backoff {
        until: Instant,
    },
    /// [`Action::Spawn`] was issued; [`SlotEvent::RunSpawned`] comes next.
    Starting,
    Running {
        pid: i32,
        exec_failed: bool,
        ready: Readying,
    },
    /// Waiting for the group `pgid` to empty; `run` is its pid while alive.
    Stopping {
        pgid: i32,
        run: Option<i32>,
        exit: Option<ExitStatus>,
        /// When to KILL the group; none once KILL was sent.
        deadline: Option<Instant>,
    },
    Finishing {
        pid: Option<i32>,
        exit: ExitStatus,
        deadline: Option<Instant>,
    },
}

/// Where a running program is on its way to being ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Readying {
    Ready,
    /// Until a notification comes (or for good: a `run` that failed to exec).
    Awaiting,
    /// Ready at this time, unless a notification comes first.
    Grace(Instant),
    /// `./check` is due at this time.
    CheckAt(Instant),
    /// `./check` runs: its pid once spawned, and when to KILL it.
    Checking {
        pid: Option<i32>,
        deadline: Option<Instant>,
    },
}

/// How a stop begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StopHow {
    /// The down-signal, then CONT, to the group.
    Signal,
    /// Close the log pipe: a logger stops at end of file, after writing out
    /// everything the service said.
    CloseInput,
}

/// What can happen to a slot: the columns of the table in the module doc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum SlotEvent {
    /// Start it unless it is already on its way (its intent is set first).
    Start,
    Stop(StopHow),
    /// Stop it if it runs (it comes back, being wanted up), else start it.
    Restart,
    /// `sv` sends a signal to `run`.
    Signal(i32),
    /// The outcome of the [`Action::Spawn`] of `run`.
    RunSpawned(Result<i32, SpawnFailure>),
    /// The outcome of the [`Action::Spawn`] of `finish`.
    FinishSpawned(Result<i32, SpawnFailure>),
    /// `run` said it is ready (`READY=1`, or a line on its notification fd).
    Ready,
    /// The outcome of the [`Action::Spawn`] of `./check`.
    CheckSpawned(Result<i32, SpawnFailure>),
    /// `./check` was reaped.
    CheckExited(ExitStatus),
    /// `run` was reaped.
    RunExited {
        status: ExitStatus,
        group_alive: bool,
    },
    /// The group of a `run` that has exited is now empty.
    GroupGone,
    /// `finish` was reaped.
    FinishExited(ExitStatus),
    /// Time passed; its deadline may have expired.
    Tick,
}

/// One supervised program and its history.
#[derive(Debug)]
pub(super) struct Slot {
    pub(super) part: Part,
    /// Changed only by [`Slot::on`].
    life: Life,
    since: Instant,
    pub(super) intent: Intent,
    pub(super) starts: u32,
    last_start: Option<Instant>,
    last_exit: Option<ExitStatus>,
    pub(super) quick_deaths: u32,
    paused: bool,
    got_term: bool,
    /// The last problem logged, so that a program failing the same way over
    /// and over says so once.
    last_problem: Option<String>,
}

/// What a slot needs from its surroundings.
pub(super) struct Ctx<'a> {
    pub(super) now: Instant,
    pub(super) settings: Settings,
    /// `web` or `web/log`, for messages.
    pub(super) label: String,
    pub(super) service: &'a str,
    pub(super) which: Which,
    /// New starts are allowed (no shutdown, folder not removed).
    pub(super) may_start: bool,
    pub(super) actions: &'a mut Vec<Action>,
    /// Set when an essential program gave up.
    pub(super) gave_up: bool,
}

impl Slot {
    pub(super) fn new(part: Part, now: Instant) -> Slot {
        Slot {
            intent: if part.down { Intent::Down } else { Intent::Up },
            part,
            life: Life::Down,
            since: now,
            starts: 0,
            last_start: None,
            last_exit: None,
            quick_deaths: 0,
            paused: false,
            got_term: false,
            last_problem: None,
        }
    }

    /// Handles one event: the table in the module doc.
    pub(super) fn on(&mut self, cx: &mut Ctx, event: SlotEvent) {
        use SlotEvent as E;
        let now = cx.now;
        let expired = |deadline: Option<Instant>| deadline.is_some_and(|d| d <= now);
        match (self.life, event) {
            (Life::Down | Life::Backoff { .. }, E::Start | E::Restart) => {
                self.start_soon(cx, Duration::ZERO)
            }
            (Life::Running { pid, .. }, E::Stop(StopHow::Signal) | E::Restart) => {
                let signal = self.part.down_signal;
                debug!("{}: sending {}", cx.label, signals::name(signal));
                self.got_term = signal == libc::SIGTERM;
                stop_group(cx, pid, signal);
                self.stopping(cx, pid);
            }
            (Life::Running { pid, .. }, E::Stop(StopHow::CloseInput)) => {
                close_input(cx);
                self.stopping(cx, pid);
            }
            (Life::Backoff { .. }, E::Stop(how)) => {
                if how == StopHow::CloseInput {
                    close_input(cx);
                }
                self.set_life(Life::Down, cx.now);
            }
            (_, E::Stop(StopHow::CloseInput)) => close_input(cx),
            (
                Life::Running { pid, .. } | Life::Stopping { run: Some(pid), .. },
                E::Signal(signal),
            ) => {
                match signal {
                    libc::SIGSTOP => self.paused = true,
                    libc::SIGCONT => self.paused = false,
                    libc::SIGTERM => self.got_term = true,
                    _ => {}
                }
                cx.actions.push(Action::Signal {
                    target: pid,
                    signal,
                });
            }
            (Life::Starting, E::RunSpawned(result)) => self.run_spawned(cx, result),
            (Life::Running { .. }, E::Ready) => self.set_ready(cx, Readying::Ready),
            (
                Life::Running {
                    ready: Readying::Grace(at),
                    ..
                },
                E::Tick,
            ) if at <= now => self.set_ready(cx, Readying::Ready),
            (
                Life::Running {
                    ready: Readying::CheckAt(at),
                    ..
                },
                E::Tick,
            ) if at <= now => {
                let deadline = Some(now + CHECK_LIMIT);
                self.set_ready(
                    cx,
                    Readying::Checking {
                        pid: None,
                        deadline,
                    },
                );
                cx.actions.push(Action::Spawn {
                    service: cx.service.to_owned(),
                    which: cx.which,
                    program: Program::Check,
                });
            }
            (
                Life::Running {
                    ready: Readying::Checking { deadline, .. },
                    ..
                },
                E::CheckSpawned(result),
            ) => {
                let pid = result.or_else(|failure| {
                    self.complain(&cx.label, format!("cannot run ./check: {}", failure.reason));
                    failure.pid.ok_or(())
                });
                let next = match pid {
                    Ok(pid) => Readying::Checking {
                        pid: Some(pid),
                        deadline,
                    },
                    Err(()) => Readying::CheckAt(now + CHECK_EVERY),
                };
                self.set_ready(cx, next);
            }
            (
                Life::Running {
                    ready: Readying::Checking { .. },
                    ..
                },
                E::CheckExited(status),
            ) => {
                let next = match status {
                    ExitStatus::Exited(0) => Readying::Ready,
                    _ => Readying::CheckAt(now + CHECK_EVERY),
                };
                self.set_ready(cx, next);
            }
            (
                Life::Running {
                    ready:
                        Readying::Checking {
                            pid: Some(check),
                            deadline,
                        },
                    ..
                },
                E::Tick,
            ) if expired(deadline) => {
                let problem = format!(
                    "./check still running after {}s, killing it",
                    CHECK_LIMIT.as_secs()
                );
                self.complain(&cx.label, problem);
                cx.actions.push(Action::Signal {
                    target: -check,
                    signal: libc::SIGKILL,
                });
                let next = Readying::Checking {
                    pid: Some(check),
                    deadline: None,
                };
                self.set_ready(cx, next);
            }
            (Life::Finishing { exit, .. }, E::FinishSpawned(result)) => {
                let started = result.or_else(|failure| {
                    warn!("{}: cannot run ./finish: {}", cx.label, failure.reason);
                    failure.pid.ok_or(())
                });
                match started {
                    Ok(pid) => self.finish_started(pid),
                    Err(()) => self.settle(cx, exit, None),
                }
            }
            (
                Life::Running { .. } | Life::Stopping { .. },
                E::RunExited {
                    status,
                    group_alive,
                },
            ) => self.run_exited(cx, status, group_alive),
            (
                Life::Stopping {
                    run: None,
                    exit: Some(exit),
                    ..
                },
                E::GroupGone,
            ) => self.after_run(cx, exit),
            (Life::Finishing { exit, .. }, E::FinishExited(status)) => {
                debug!("{}: finish {}", cx.label, describe(status));
                self.settle(cx, exit, Some(status));
            }
            (Life::Backoff { until }, E::Tick) if until <= now => {
                if self.intent == Intent::Down {
                    self.set_life(Life::Down, cx.now);
                } else {
                    self.start(cx);
                }
            }
            (Life::Stopping { pgid, deadline, .. }, E::Tick) if expired(deadline) => {
                self.kill_late(cx, pgid, "still running after being told to stop")
            }
            (
                Life::Finishing {
                    pid: Some(pid),
                    deadline,
                    ..
                },
                E::Tick,
            ) if expired(deadline) => self.kill_late(cx, pid, "finish still running"),
            _ => {}
        }
    }

    fn set_life(&mut self, life: Life, now: Instant) {
        self.life = life;
        self.since = now;
    }

    /// Logs `problem` unless it is the one logged last.
    fn complain(&mut self, label: &str, problem: String) {
        if self.last_problem.as_ref() != Some(&problem) {
            warn!("{label}: {problem}");
            self.last_problem = Some(problem);
        }
    }

    fn start(&mut self, cx: &mut Ctx) {
        if !cx.may_start {
            return self.set_life(Life::Down, cx.now);
        }
        if self.starts > 0 {
            info!("{}: restarting", cx.label);
        }
        self.starts += 1;
        self.last_start = Some(cx.now);
        self.paused = false;
        self.got_term = false;
        self.set_life(Life::Starting, cx.now);
        cx.actions.push(Action::Spawn {
            service: cx.service.to_owned(),
            which: cx.which,
            program: Program::Run,
        });
    }

    /// Starts now if runit's one-second rule allows, else at the earliest.
    fn start_soon(&mut self, cx: &mut Ctx, delay: Duration) {
        let earliest = self.last_start.map_or(cx.now, |t| t + MIN_RESTART);
        let at = earliest.max(cx.now + delay);
        if at <= cx.now {
            self.start(cx);
        } else {
            self.set_life(Life::Backoff { until: at }, cx.now);
        }
    }

    /// Changes how far a running program is on its way to being ready.
    fn set_ready(&mut self, cx: &Ctx, next: Readying) {
        if let Life::Running { ready, .. } = &mut self.life {
            if next == Readying::Ready && *ready != Readying::Ready {
                debug!("{}: ready", cx.label);
            }
            *ready = next;
        }
    }

    /// Kills a `./check` that still runs, as Running is left: it would
    /// probe a program that is going away.
    fn end_check(&self, cx: &mut Ctx) {
        if let Life::Running {
            ready: Readying::Checking {
                pid: Some(check), ..
            },
            ..
        } = self.life
        {
            cx.actions.push(Action::Signal {
                target: -check,
                signal: libc::SIGKILL,
            });
        }
    }

    /// A running program was told to stop.
    fn stopping(&mut self, cx: &mut Ctx, pid: i32) {
        self.end_check(cx);
        // Still counted as up, with the time since its start.
        self.life = Life::Stopping {
            pgid: pid,
            run: Some(pid),
            exit: None,
            deadline: Some(cx.now + cx.settings.svwait),
        };
    }

    fn run_spawned(&mut self, cx: &mut Ctx, result: Result<i32, SpawnFailure>) {
        let failure = match result {
            Ok(pid) => {
                debug!("{}: started as pid {pid}", cx.label);
                let ready = match self.part.readiness {
                    Readiness::Notify | Readiness::Fd(_) => Readying::Awaiting,
                    Readiness::Check => Readying::CheckAt(cx.now),
                    Readiness::Grace => Readying::Grace(cx.now + cx.settings.ready_grace),
                };
                self.life = Life::Running {
                    pid,
                    exec_failed: false,
                    ready,
                };
                return;
            }
            Err(failure) => failure,
        };
        self.complain(&cx.label, format!("cannot run ./run: {}", failure.reason));
        match failure.pid {
            Some(pid) => {
                self.life = Life::Running {
                    pid,
                    exec_failed: true,
                    ready: Readying::Awaiting,
                }
            }
            None => {
                self.quick_deaths += 1;
                self.last_exit = Some(ExitStatus::Exited(COULD_NOT_START));
                self.after_run(cx, ExitStatus::Exited(COULD_NOT_START));
            }
        }
    }

    fn finish_started(&mut self, started: i32) {
        if let Life::Finishing { pid, .. } = &mut self.life {
            *pid = Some(started);
        }
    }

    /// A deadline passed: KILL `group`, once.
    fn kill_late(&mut self, cx: &mut Ctx, group: i32, what: &str) {
        if let Life::Stopping { deadline, .. } | Life::Finishing { deadline, .. } = &mut self.life {
            *deadline = None;
        }
        warn!(
            "{}: {what} after {}s, killing its process group",
            cx.label,
            cx.settings.svwait.as_secs()
        );
        cx.actions.push(Action::Signal {
            target: -group,
            signal: libc::SIGKILL,
        });
    }
}

/// The down-signal, then CONT, to the group `pgid`.
fn stop_group(cx: &mut Ctx, pgid: i32, signal: i32) {
    for signal in [signal, libc::SIGCONT] {
        cx.actions.push(Action::Signal {
            target: -pgid,
            signal,
        });
    }
}

fn close_input(cx: &mut Ctx) {
    cx.actions.push(Action::CloseLogInput {
        service: cx.service.to_owned(),
    });
}

#[cfg(test)]
mod tests;
mod view;
