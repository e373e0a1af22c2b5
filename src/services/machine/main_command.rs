//! The command of combined mode (`moltd --services DIR -- CMD`), or of
//! single-command mode with updates: [`MainCommand`].
//!
//! Its exit ends moltd with its status, except while an update holds it:
//! `Op::Down` (stop it: its stop signal and CONT, KILL after SVWAIT; down
//! once its group is gone) and `Op::Up` (start it again) hold it, and
//! `Op::Once` lets go (starting it if it is down), after which its exit ends
//! moltd again. A signal that stops the container lets go too.
//!
//! Two small enums say where it is: [`MainLife`] (starting, running,
//! exited with its group lingering, down) and [`Hold`] (whose its exit is,
//! and whether it is wanted down). Every combination of the two can occur.

use super::{Action, Goal, MAIN_NAME, describe};
use crate::init::policy::{self, Forwarder};
use crate::services::control::Op;
use crate::services::status::{Phase, ProgramStatus, Status, Want};
use crate::signals;
use crate::sys::reap::ExitStatus;
use log::{debug, info, warn};
use nix::libc;
use std::time::{Duration, Instant};

/// Where the main command is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum MainLife {
    /// [`Action::SpawnMain`] was issued; `Event::MainSpawned` comes next.
    Starting,
    Running,
    /// It exited with `code`, but its process group still has members.
    Lingering {
        code: i32,
    },
    /// It exited with `code` (or could not be started) and its group is gone.
    Down {
        code: i32,
    },
}

/// Whose the main command's exit is, and whether it is wanted down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Hold {
    /// Its exit ends moltd.
    Free,
    /// An update holds it up: its exit does not end moltd.
    Up,
    /// An update stopped it and holds it down.
    Down,
    /// Held down when a signal that stops the container (or an essential
    /// service giving up) let go: its exit ends moltd, and it is still
    /// shown as going down.
    Released,
}

impl Hold {
    fn held(self) -> bool {
        matches!(self, Hold::Up | Hold::Down)
    }

    fn wanted_down(self) -> bool {
        matches!(self, Hold::Down | Hold::Released)
    }

    /// Stopping the container wins over an update.
    fn let_go(self) -> Hold {
        if self.wanted_down() {
            Hold::Released
        } else {
            Hold::Free
        }
    }
}

/// What the reaping of a pid meant for the main command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reaped {
    /// Not the main command.
    Other,
    /// It exited while an update holds it.
    Held,
    /// It exited, and moltd ends with this code.
    Ends(i32),
}

#[derive(Debug)]
pub(super) struct MainCommand {
    forwarder: Forwarder,
    pub(super) life: MainLife,
    pub(super) hold: Hold,
    last_exit: Option<ExitStatus>,
    /// When to KILL it if it was asked to stop and has not.
    pub(super) deadline: Option<Instant>,
    starts: u32,
    since: Instant,
}

impl MainCommand {
    /// The main command, started the first time.
    pub(super) fn new(forwarder: Forwarder, now: Instant) -> MainCommand {
        MainCommand {
            forwarder,
            life: MainLife::Running,
            hold: Hold::Free,
            last_exit: None,
            deadline: None,
            starts: 1,
            since: now,
        }
    }

    pub(super) fn running(&self) -> bool {
        self.life == MainLife::Running
    }

    pub(super) fn is_down(&self) -> bool {
        matches!(self.life, MainLife::Down { .. })
    }

    /// Down and not held: moltd ends with this code.
    pub(super) fn let_go_while_down(&self) -> Option<i32> {
        match (self.life, self.hold.held()) {
            (MainLife::Down { code }, false) => Some(code),
            _ => None,
        }
    }

    /// The code it exited with, once it has (until it is started again).
    pub(super) fn exit_code(&self) -> Option<i32> {
        match self.life {
            MainLife::Lingering { code } | MainLife::Down { code } => Some(code),
            MainLife::Starting | MainLife::Running => None,
        }
    }

    /// Its group, while it may have members.
    pub(super) fn group(&self) -> Option<i32> {
        matches!(self.life, MainLife::Running | MainLife::Lingering { .. })
            .then(|| self.forwarder.child())
    }

    /// Its group, if it exited and the group still has members.
    pub(super) fn lingering_group(&self) -> Option<i32> {
        matches!(self.life, MainLife::Lingering { .. }).then(|| self.forwarder.child())
    }

    /// Its stop signal (as a forwarded TERM: to its group or to it alone),
    /// then CONT to its group; KILL after SVWAIT.
    fn stop(&mut self, now: Instant, svwait: Duration, actions: &mut Vec<Action>) {
        let term = self.forwarder.on_signal(libc::SIGTERM);
        push_forwarded(actions, term);
        actions.push(Action::Signal {
            target: -self.forwarder.child(),
            signal: libc::SIGCONT,
        });
        self.deadline = Some(now + svwait);
    }

    /// Shutdown begins while it runs: it is stopped like a service.
    pub(super) fn shut_down(&mut self, now: Instant, svwait: Duration, actions: &mut Vec<Action>) {
        if self.running() {
            self.hold = self.hold.let_go();
            self.stop(now, svwait, actions);
        }
    }

    /// A signal to moltd while it runs: forwarded as single-command mode
    /// does. Returns false if it does not run.
    pub(super) fn signal(&mut self, signal: i32, stops: bool, actions: &mut Vec<Action>) -> bool {
        if !self.running() {
            return false;
        }
        if stops {
            self.hold = self.hold.let_go();
        }
        let forwarded = self.forwarder.on_signal(signal);
        push_forwarded(actions, forwarded);
        true
    }

    /// A child was reaped: was it the main command?
    pub(super) fn reaped(
        &mut self,
        now: Instant,
        svwait: Duration,
        pid: i32,
        status: ExitStatus,
        group_alive: bool,
        actions: &mut Vec<Action>,
    ) -> Reaped {
        if !self.running() {
            return Reaped::Other;
        }
        let Some(code) = self.forwarder.on_exit(pid, status) else {
            return Reaped::Other;
        };
        self.last_exit = Some(status);
        self.since = now;
        if !self.hold.held() {
            info!("main command {}, stopping services", describe(status));
            self.life = MainLife::Down { code };
            self.deadline = None;
            let follow_up = self.forwarder.on_child_gone();
            push_forwarded(actions, follow_up);
            return Reaped::Ends(code);
        }
        // Held: it is down once its group is gone; leftovers are stopped
        // like a service's.
        info!("main command {}", describe(status));
        if !group_alive {
            self.life = MainLife::Down { code };
            self.deadline = None;
            return Reaped::Held;
        }
        self.life = MainLife::Lingering { code };
        if self.deadline.is_none() && !self.hold.wanted_down() {
            for signal in [libc::SIGTERM, libc::SIGCONT] {
                actions.push(Action::Signal {
                    target: -self.forwarder.child(),
                    signal,
                });
            }
            self.deadline = Some(now + svwait);
        }
        Reaped::Held
    }

    /// A lingering group emptied.
    pub(super) fn group_gone(&mut self, pgid: i32) {
        if let MainLife::Lingering { code } = self.life {
            if self.forwarder.child() == pgid {
                self.life = MainLife::Down { code };
                self.deadline = None;
            }
        }
    }

    /// Sends KILL if it was asked to stop SVWAIT ago.
    pub(super) fn tick(&mut self, now: Instant, svwait: Duration, actions: &mut Vec<Action>) {
        if self.deadline.is_some_and(|d| d <= now) {
            warn!(
                "main command still running after {}s, killing it",
                svwait.as_secs()
            );
            self.deadline = None;
            actions.push(Action::Signal {
                target: -self.forwarder.child(),
                signal: libc::SIGKILL,
            });
        }
    }

    /// A control request for [`MAIN_NAME`]; returns what a waiting client
    /// waits for.
    pub(super) fn apply(
        &mut self,
        now: Instant,
        svwait: Duration,
        may_start: bool,
        op: Op,
        actions: &mut Vec<Action>,
    ) -> Goal {
        match op {
            Op::Up | Op::Once => {
                self.hold = if op == Op::Up { Hold::Up } else { Hold::Free };
                if self.is_down() && may_start {
                    info!("main command: starting");
                    self.life = MainLife::Starting;
                    actions.push(Action::SpawnMain);
                }
                Goal::Up
            }
            Op::Down => {
                self.hold = Hold::Down;
                if self.running() && self.deadline.is_none() {
                    info!("main command: stopping");
                    self.stop(now, svwait, actions);
                }
                Goal::Down
            }
            Op::Signal(signal) => {
                if self.running() {
                    actions.push(Action::Signal {
                        target: self.forwarder.child(),
                        signal,
                    });
                }
                Goal::Any
            }
            Op::Status | Op::Check | Op::Restart { .. } => Goal::Any,
        }
    }

    /// It was started again after [`Action::SpawnMain`], or could not be.
    pub(super) fn spawned(&mut self, now: Instant, result: Result<Forwarder, i32>) {
        self.since = now;
        match result {
            Ok(forwarder) => {
                self.forwarder = forwarder;
                self.life = MainLife::Running;
                self.starts += 1;
            }
            Err(code) => {
                self.life = MainLife::Down { code };
                self.last_exit = Some(ExitStatus::Exited(code));
            }
        }
    }

    pub(super) fn reached(&self, goal: Goal) -> bool {
        match goal {
            Goal::Any => true,
            Goal::Up => self.running(),
            Goal::Down => self.is_down(),
            Goal::Restarted(starts) => self.running() && self.starts > starts,
        }
    }

    pub(super) fn status(&self, now: Instant) -> Status {
        let child = Some(self.forwarder.child());
        let (phase, pid) = match self.life {
            MainLife::Starting => (Phase::Running, None),
            MainLife::Running if self.hold.wanted_down() => (Phase::Stopping, child),
            MainLife::Running => (Phase::Running, child),
            MainLife::Lingering { .. } => (Phase::Stopping, child),
            MainLife::Down { .. } => (Phase::Down, None),
        };
        let want = if self.hold.wanted_down() {
            Want::Down
        } else {
            Want::Up
        };
        Status {
            name: MAIN_NAME.to_owned(),
            main: ProgramStatus {
                phase,
                pid,
                secs: now.saturating_duration_since(self.since).as_secs(),
                normally_up: true,
                want,
                paused: false,
                got_term: false,
                restarts: self.starts.saturating_sub(1),
                last_exit: self.last_exit,
            },
            log: None,
            dir: None,
        }
    }
}

/// Carries single-command mode's forwarding decisions over to this loop.
fn push_forwarded(actions: &mut Vec<Action>, forwarded: Vec<policy::Action>) {
    for action in forwarded {
        match action {
            policy::Action::Send { target, signal } => {
                actions.push(Action::Signal { target, signal })
            }
            policy::Action::StopSelf => actions.push(Action::StopSelf),
            policy::Action::Drop { signal, .. } => {
                debug!("not forwarding {}", signals::name(signal))
            }
        }
    }
}
