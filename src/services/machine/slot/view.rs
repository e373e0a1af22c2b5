//! What the rest of the supervisor reads of a slot: its pids and groups,
//! its next deadline, whether it reached a goal, its status. Read-only:
//! every change of a slot is made by `Slot::on`.

use super::{CRASH_LOOP_AFTER, Goal, Intent, Life, Readying, Slot};
use crate::services::status::{Phase, ProgramStatus, Want};
use std::time::Instant;

impl Slot {
    pub(in crate::services::machine) fn deadline(&self) -> Option<Instant> {
        match self.life {
            Life::Backoff { until } => Some(until),
            Life::Running { ready, .. } => match ready {
                Readying::Grace(at) | Readying::CheckAt(at) => Some(at),
                Readying::Checking { deadline, .. } => deadline,
                Readying::Ready | Readying::Awaiting => None,
            },
            Life::Stopping { deadline, .. } | Life::Finishing { deadline, .. } => deadline,
            _ => None,
        }
    }

    /// The pid of `run` while it is alive.
    pub(in crate::services::machine) fn run_pid(&self) -> Option<i32> {
        match self.life {
            Life::Running { pid, .. } => Some(pid),
            Life::Stopping { run, .. } => run,
            _ => None,
        }
    }

    /// The group of a `run` that is running and did exec: it takes the
    /// signals moltd forwards.
    pub(in crate::services::machine) fn forwarded_to(&self) -> Option<i32> {
        match self.life {
            Life::Running {
                pid,
                exec_failed: false,
                ..
            } => Some(pid),
            _ => None,
        }
    }

    /// The pid of `./check` while it runs.
    pub(in crate::services::machine) fn check_pid(&self) -> Option<i32> {
        match self.life {
            Life::Running {
                ready: Readying::Checking { pid, .. },
                ..
            } => pid,
            _ => None,
        }
    }

    /// The pid of `run` while it runs and may still say it is ready; a
    /// notification from it (or its group) is for this slot.
    pub(in crate::services::machine) fn awaiting_pid(&self) -> Option<i32> {
        match self.life {
            Life::Running {
                pid,
                exec_failed: false,
                ready,
            } if ready != Readying::Ready => Some(pid),
            _ => None,
        }
    }

    /// The pid of `finish` while it runs.
    pub(in crate::services::machine) fn finish_pid(&self) -> Option<i32> {
        match self.life {
            Life::Finishing { pid, .. } => pid,
            _ => None,
        }
    }

    /// The group of a `run` that has exited while its group lives on.
    pub(in crate::services::machine) fn lingering_group(&self) -> Option<i32> {
        match self.life {
            Life::Stopping {
                pgid, run: None, ..
            } => Some(pgid),
            _ => None,
        }
    }

    /// The group to KILL when a wait times out.
    pub(in crate::services::machine) fn group(&self) -> Option<i32> {
        match self.life {
            Life::Running { pid, .. } => Some(pid),
            Life::Stopping { pgid, .. } => Some(pgid),
            _ => None,
        }
    }

    pub(in crate::services::machine) fn is_down(&self) -> bool {
        self.life == Life::Down
    }

    pub(in crate::services::machine) fn is_running(&self) -> bool {
        matches!(self.life, Life::Running { .. })
    }

    /// Running and ready: what `sv -w up` and the update wait for.
    pub(in crate::services::machine) fn is_ready(&self) -> bool {
        matches!(
            self.life,
            Life::Running {
                ready: Readying::Ready,
                ..
            }
        )
    }

    pub(in crate::services::machine) fn reached(&self, goal: Goal) -> bool {
        goal.reached(self.is_ready(), self.is_down(), self.starts)
    }

    pub(in crate::services::machine) fn status(&self, now: Instant) -> ProgramStatus {
        let (phase, pid) = match self.life {
            Life::Down => (Phase::Down, None),
            Life::Backoff { .. } if self.quick_deaths >= CRASH_LOOP_AFTER => {
                (Phase::CrashLoop, None)
            }
            Life::Backoff { .. } => (Phase::Backoff, None),
            Life::Starting => (Phase::Running, None),
            Life::Running { pid, .. } => (Phase::Running, Some(pid)),
            Life::Stopping { pgid, run, .. } => (Phase::Stopping, Some(run.unwrap_or(pgid))),
            Life::Finishing { pid, .. } => (Phase::Finishing, pid),
        };
        ProgramStatus {
            phase,
            pid,
            secs: now.saturating_duration_since(self.since).as_secs(),
            normally_up: !self.part.down,
            want: if self.intent == Intent::Up {
                Want::Up
            } else {
                Want::Down
            },
            ready: self.is_ready(),
            paused: self.paused,
            got_term: self.got_term,
            restarts: self.starts.saturating_sub(1),
            last_exit: self.last_exit,
        }
    }
}
