//! How a slot's cycle ends: `run` reaped (a quick death or not, its group
//! stopped if it lingers), then the two shared endings of the table in the
//! module doc, "after `run`" (`finish`, if there is one) and "settle"
//! (backoff, giving up, a start again). Apart from [`Slot::on`], which only
//! dispatches to them.

use super::{Ctx, Intent, Life, Slot, stop_group};
use crate::services::machine::{
    Action, COULD_NOT_START, CRASH_LOOP_AFTER, FINISH_NO_RESTART, GIVE_UP_AFTER, MIN_RESTART,
    Program, STABLE, describe,
};
use crate::sys::reap::ExitStatus;
use log::{debug, info, warn};
use std::time::Duration;

impl Slot {
    /// `run` was reaped, while running or stopping.
    pub(super) fn run_exited(&mut self, cx: &mut Ctx, status: ExitStatus, group_alive: bool) {
        let (pgid, exec_failed, stopping) = match self.life {
            Life::Running {
                pid, exec_failed, ..
            } => (pid, exec_failed, None),
            Life::Stopping { pgid, deadline, .. } => (pgid, false, Some(deadline)),
            _ => return,
        };
        self.end_check(cx);
        // runit's convention: a run that could not be started "exited 111".
        let status = if exec_failed {
            ExitStatus::Exited(COULD_NOT_START)
        } else {
            status
        };
        self.last_exit = Some(status);
        match stopping {
            Some(_) => info!("{}: stopped ({})", cx.label, describe(status)),
            None => {
                let ran = self.last_start.map_or(Duration::ZERO, |t| cx.now - t);
                if ran < STABLE {
                    self.quick_deaths += 1;
                } else {
                    self.quick_deaths = 0;
                }
                if !exec_failed {
                    self.last_problem = None;
                }
                info!(
                    "{}: {} after {}s",
                    cx.label,
                    describe(status),
                    ran.as_secs()
                );
            }
        }
        if !group_alive {
            return self.after_run(cx, status);
        }
        let deadline = match stopping {
            Some(deadline) => deadline,
            None => {
                // Leftovers of a run that died on its own are stopped like a
                // service being stopped.
                debug!("{}: run exited, stopping the rest of its group", cx.label);
                stop_group(cx, pgid, self.part.down_signal);
                Some(cx.now + cx.settings.svwait)
            }
        };
        self.life = Life::Stopping {
            pgid,
            run: None,
            exit: Some(status),
            deadline,
        };
    }

    /// The whole group of `run` is gone: run `finish`, or settle.
    pub(super) fn after_run(&mut self, cx: &mut Ctx, exit: ExitStatus) {
        if !self.part.finish {
            return self.settle(cx, exit, None);
        }
        let (code, signal) = match exit {
            ExitStatus::Exited(code) => (code, 0),
            ExitStatus::Signaled(signal) => (-1, signal),
        };
        self.set_life(
            Life::Finishing {
                pid: None,
                exit,
                deadline: Some(cx.now + cx.settings.svwait),
            },
            cx.now,
        );
        cx.actions.push(Action::Spawn {
            service: cx.service.to_owned(),
            which: cx.which,
            program: Program::Finish { code, signal },
        });
    }

    /// The cycle is over: decide whether and when to start again.
    pub(super) fn settle(&mut self, cx: &mut Ctx, exit: ExitStatus, finish: Option<ExitStatus>) {
        self.set_life(Life::Down, cx.now);
        if finish == Some(ExitStatus::Exited(FINISH_NO_RESTART)) {
            info!(
                "{}: finish exited {FINISH_NO_RESTART}, not restarting",
                cx.label
            );
            self.intent = Intent::Down;
            cx.gave_up = true;
            return;
        }
        if self.intent == Intent::Once {
            self.intent = Intent::Down;
        }
        if self.intent != Intent::Up || !cx.may_start {
            return;
        }
        if self.quick_deaths >= GIVE_UP_AFTER {
            cx.gave_up = true;
        }
        let delay = match self.quick_deaths {
            0 => Duration::ZERO,
            n => (MIN_RESTART * 2u32.pow((n - 1).min(20))).min(cx.settings.backoff_max),
        };
        if self.quick_deaths == CRASH_LOOP_AFTER {
            warn!(
                "{}: crash-looping: {} times in a row within {}s of starting (last {}); \
                 restarting with a growing delay, up to {}s",
                cx.label,
                self.quick_deaths,
                STABLE.as_secs(),
                describe(exit),
                cx.settings.backoff_max.as_secs()
            );
        }
        self.start_soon(cx, delay);
    }
}
