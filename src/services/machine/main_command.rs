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

    /// Its record in a self-update's frozen state (see `super::frozen`):
    /// pid, starts, since, last exit; only while it runs, unheld.
    pub(super) fn freeze(&self, base: Instant) -> Result<String, &'static str> {
        if self.life != MainLife::Running || self.hold != Hold::Free || self.deadline.is_some() {
            return Err("held by an update, stopping or not running");
        }
        Ok(format!(
            "{} {} {} {}",
            self.forwarder.child(),
            self.starts,
            super::frozen::offset(self.since, base),
            super::frozen::encode_exit(self.last_exit)
        ))
    }

    /// The main command of a frozen record, running, forwarding by `rules`
    /// (the command line's, read again by the resuming program).
    pub(super) fn thaw(rules: policy::Rules, record: &str, base: Instant) -> Option<MainCommand> {
        let [pid, starts, since, last_exit] = record.split(' ').collect::<Vec<_>>()[..] else {
            return None;
        };
        Some(MainCommand {
            forwarder: Forwarder::new(rules, pid.parse().ok().filter(|&p: &i32| p > 1)?),
            life: MainLife::Running,
            hold: Hold::Free,
            last_exit: super::frozen::decode_exit(last_exit)?,
            deadline: None,
            starts: starts.parse().ok()?,
            since: super::frozen::at(base, since.parse().ok()?),
        })
    }

    /// Whether a record reads (the self-test's check).
    pub(super) fn frozen_reads(record: &str) -> bool {
        let rules = policy::Rules {
            delivery: policy::Delivery::Child,
            job_control: policy::JobControl::ForwardThenStop,
            rewrites: Vec::new(),
            success_codes: Vec::new(),
            term_group_on_exit: false,
            forward_faults: false,
        };
        MainCommand::thaw(rules, record, Instant::now()).is_some()
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
            // The main command has no second generation.
            Op::Status | Op::Check | Op::Restart { .. } | Op::Overlap | Op::Retire => Goal::Any,
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
        goal.reached(self.running(), self.is_down(), self.starts)
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
                // No way to say more: it is ready once it runs.
                ready: phase == Phase::Running,
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

#[cfg(test)]
mod tests {
    use super::super::tests::{
        SVWAIT, answers, exited, listing, main_command, request, settings, signal,
    };
    use super::super::{Action, ClientId, Event, MAIN_NAME, Supervisor};
    use crate::services::control::{Answer, Op, Request};
    use crate::services::status::{Phase, Want};
    use crate::sys::reap::ExitStatus;
    use nix::libc;
    use std::time::{Duration, Instant};

    /// A supervisor with only a main command, pid 50.
    fn with_main(t0: Instant) -> Supervisor {
        let mut sup = Supervisor::new(settings());
        sup.step(t0, Event::MainSpawned(Ok(main_command(50))));
        sup.step(t0, listing(&[]));
        sup
    }

    fn main_phase(sup: &Supervisor, now: Instant) -> (Phase, Option<i32>) {
        let status = sup.status_of(MAIN_NAME, now).unwrap().main;
        (status.phase, status.pid)
    }

    /// Restarts the held main command as pid `pid`.
    fn restart_main(sup: &mut Supervisor, now: Instant, pid: i32) -> Vec<Action> {
        let actions = sup.step(now, request(Op::Up, MAIN_NAME, Some(10)));
        assert_eq!(actions, vec![Action::SpawnMain]);
        sup.step(now, Event::MainSpawned(Ok(main_command(pid))))
    }

    #[test]
    fn main_command_stops_and_starts_for_an_update_without_exiting() {
        let t0 = Instant::now();
        let mut sup = with_main(t0);
        assert_eq!(main_phase(&sup, t0), (Phase::Running, Some(50)));
        // Down: TERM to its group (the forwarder's delivery), then CONT.
        assert_eq!(
            sup.step(t0, request(Op::Down, MAIN_NAME, Some(10))),
            vec![signal(-50, libc::SIGTERM), signal(-50, libc::SIGCONT)]
        );
        assert_eq!(main_phase(&sup, t0), (Phase::Stopping, Some(50)));
        // It exits, its group lingers: not down yet, and moltd stays.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            sup.step(t1, exited(50, ExitStatus::Signaled(libc::SIGTERM), true)),
            vec![]
        );
        assert_eq!(sup.lingering_groups(), vec![50]);
        assert_eq!(main_phase(&sup, t1), (Phase::Stopping, Some(50)));
        // Its group is gone: down, and the waiting client hears so.
        let actions = sup.step(t1, Event::GroupGone { pgid: 50 });
        assert!(
            matches!(answers(&actions)[..], [Answer::Ok(_)]),
            "{actions:?}"
        );
        assert_eq!(main_phase(&sup, t1), (Phase::Down, None));
        assert_eq!(sup.next_deadline(), None, "idle means no timer");
        // Up starts it again, in the same handler call as its pid arrives.
        let actions = restart_main(&mut sup, t1, 60);
        assert!(
            matches!(answers(&actions)[..], [Answer::Ok(_)]),
            "{actions:?}"
        );
        assert_eq!(main_phase(&sup, t1), (Phase::Running, Some(60)));
        // Once lets go: its exit ends moltd with its status again.
        sup.step(t1, request(Op::Once, MAIN_NAME, None));
        assert_eq!(
            sup.step(t1, exited(60, ExitStatus::Exited(3), false)),
            vec![signal(-60, libc::SIGTERM), Action::Exit(3)]
        );
    }

    #[test]
    fn held_main_command_that_exits_is_down_and_released_it_ends_moltd() {
        let t0 = Instant::now();
        let mut sup = with_main(t0);
        sup.step(t0, request(Op::Down, MAIN_NAME, Some(10)));
        sup.step(t0, exited(50, ExitStatus::Signaled(libc::SIGTERM), false));
        restart_main(&mut sup, t0, 60);
        // The new release dies at once: down, not the end of moltd.
        assert_eq!(
            sup.step(t0, exited(60, ExitStatus::Exited(1), false)),
            vec![]
        );
        assert_eq!(main_phase(&sup, t0), (Phase::Down, None));
        // Rolled back: started again and healthy, then released.
        restart_main(&mut sup, t0, 70);
        assert_eq!(sup.step(t0, request(Op::Once, MAIN_NAME, None)).len(), 1);
        // TERM while it runs is forwarded; its status is moltd's.
        assert_eq!(
            sup.step(t0, Event::Signal(libc::SIGTERM)),
            vec![signal(-70, libc::SIGTERM)]
        );
        let actions = sup.step(t0, exited(70, ExitStatus::Signaled(libc::SIGTERM), false));
        assert_eq!(actions.last(), Some(&Action::Exit(143)));
    }

    #[test]
    fn main_command_ignoring_its_stop_signal_is_killed_after_svwait() {
        let t0 = Instant::now();
        let mut sup = with_main(t0);
        sup.step(t0, request(Op::Down, MAIN_NAME, Some(20)));
        assert_eq!(sup.next_deadline(), Some(t0 + SVWAIT));
        assert_eq!(
            sup.step(t0 + SVWAIT, Event::Tick),
            vec![signal(-50, libc::SIGKILL)]
        );
        sup.step(t0 + SVWAIT, exited(50, ExitStatus::Signaled(9), false));
        assert_eq!(main_phase(&sup, t0 + SVWAIT), (Phase::Down, None));
        // TERM while it is down for an update: leave with the status it
        // stopped with.
        assert_eq!(
            sup.step(t0 + SVWAIT, Event::Signal(libc::SIGTERM)),
            vec![Action::Exit(137)]
        );
    }

    #[test]
    fn main_command_is_listed_first_and_a_failed_restart_when_released_ends_moltd() {
        let t0 = Instant::now();
        let mut sup = with_main(t0);
        let all = Event::Command {
            client: ClientId::Socket(9),
            request: Request {
                op: Op::Status,
                names: Vec::new(),
                wait: None,
                kill_on_timeout: false,
            },
        };
        match &answers(&sup.step(t0, all))[..] {
            [Answer::Done(status)] => assert_eq!(status.name, MAIN_NAME),
            other => panic!("{other:?}"),
        }
        sup.step(t0, request(Op::Down, MAIN_NAME, Some(10)));
        sup.step(t0, exited(50, ExitStatus::Exited(0), false));
        sup.step(t0, request(Op::Up, MAIN_NAME, Some(10)));
        assert_eq!(sup.step(t0, Event::MainSpawned(Err(1))), vec![]);
        assert_eq!(main_phase(&sup, t0), (Phase::Down, None));
        let actions = sup.step(t0, request(Op::Once, MAIN_NAME, None));
        assert_eq!(actions.first(), Some(&Action::SpawnMain));
        let actions = sup.step(t0, Event::MainSpawned(Err(2)));
        assert_eq!(actions, vec![Action::Exit(2)]);
    }

    #[test]
    fn letting_go_keeps_whether_it_is_wanted_down() {
        use super::Hold;
        let table = [
            (Hold::Free, Hold::Free),
            (Hold::Up, Hold::Free),
            (Hold::Down, Hold::Released),
            (Hold::Released, Hold::Released),
        ];
        for (hold, after) in table {
            assert_eq!(hold.let_go(), after, "{hold:?}");
            assert!(!after.held(), "{hold:?}");
            assert_eq!(after.wanted_down(), hold.wanted_down(), "{hold:?}");
        }
    }

    #[test]
    fn term_while_an_update_stops_it_lets_go_and_its_exit_ends_moltd() {
        let t0 = Instant::now();
        let mut sup = with_main(t0);
        sup.step(t0, request(Op::Down, MAIN_NAME, Some(10)));
        assert_eq!(
            sup.step(t0, Event::Signal(libc::SIGTERM)),
            vec![signal(-50, libc::SIGTERM)]
        );
        // Still shown going down, no longer held.
        let status = sup.status_of(MAIN_NAME, t0).unwrap().main;
        assert_eq!((status.phase, status.want), (Phase::Stopping, Want::Down));
        let actions = sup.step(t0, exited(50, ExitStatus::Signaled(libc::SIGTERM), false));
        assert_eq!(actions.last(), Some(&Action::Exit(143)));
    }
}
