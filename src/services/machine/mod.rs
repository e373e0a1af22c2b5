//! The supervisor's decisions: a state machine with no syscalls.
//!
//! [`Supervisor::step`] takes the current time and one [`Event`] (a process
//! exited, a signal arrived, the directory changed, a client asked for
//! something, time passed) and returns the [`Action`]s to carry out. The
//! event loop in `runner.rs` does the I/O and feeds back what happened, so
//! every rule here is checked by table tests without starting a process.
//!
//! Four machines make it up, one file each:
//!
//! - `slot`: each supervised program (`run`, and `log/run` if there is
//!   one) is a `Slot` that goes round one cycle; its states × events table
//!   is written once, in that module's doc, and one `match` follows it:
//!
//!   ```text
//!   Down/Backoff -> Starting -> Running -> (Stopping) -> (Finishing) -> Down/Backoff
//!   ```
//!
//!   `Stopping` lasts until every process of the program's group is gone,
//!   not just `run`: a new `run` never starts beside leftovers of the old
//!   one. Everything that can hang (a group ignoring the down-signal, a
//!   `finish` that never ends) has a deadline of SVWAIT, after which its
//!   group gets KILL, so one broken service never holds up the others or
//!   shutdown.
//! - `main_command`: the command of combined mode, which an update may
//!   hold (stop and start) without its exit ending moltd.
//! - `waiters`: control requests, carried out on the programs they name
//!   and answered when those reach their goal. Other modules drive services
//!   the way `sv` does: send [`Event::Command`] with their own client id and
//!   act on the [`Action::Reply`] addressed to it, which comes when the
//!   services are up or down (or the wait timed out).
//! - `definition`: the services a scan found, and what a new scan changes.
//!
//! This file routes each [`Event`] to them and holds what concerns them all:
//! signals to moltd and shutdown (in `shutdown`), and the exit.

mod definition;
mod frozen;
mod main_command;
mod shutdown;
mod slot;
#[cfg(test)]
mod tests;
mod waiters;

use super::control::{Answer, Request};
use super::scan::{Definition, Listing};
use super::status::Status;
use crate::init::policy::Forwarder;
use crate::signals;
use crate::sys::reap::ExitStatus;
use definition::Service;
use log::{info, trace, warn};
use main_command::{MainCommand, Reaped};
use slot::{Ctx, Intent, Slot, SlotEvent, StopHow};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use waiters::{Goal, Waiter};

pub use frozen::{FrozenSlot, check_frozen};
pub use shutdown::{not_forwarded_because, shutdown_code};

/// A program that ran at least this long was not crash-looping.
pub const STABLE: Duration = Duration::from_secs(10);
/// The minimum time between two starts of a program (runit's rule).
pub const MIN_RESTART: Duration = Duration::from_secs(1);
/// Quick deaths in a row after which an essential service has given up.
pub const GIVE_UP_AFTER: u32 = 5;
/// Quick deaths in a row from which a program counts as crash-looping.
pub const CRASH_LOOP_AFTER: u32 = 2;
/// moltd's exit code when an essential service stopped the container.
pub const ESSENTIAL_FAILED: i32 = 111;
/// A `finish` exit code that means "do not restart" (s6's convention).
pub const FINISH_NO_RESTART: i32 = 125;
/// The exit code runit reports to `finish` when `run` could not be started.
pub const COULD_NOT_START: i32 = 111;
/// How long to let a changing directory settle before reading it, so a
/// folder being copied in is seen whole.
pub const SCAN_SETTLE: Duration = Duration::from_millis(100);
/// The name the main command answers to in control requests and statuses.
/// Service folders starting with a dot are never read, so no service can
/// take it.
pub const MAIN_NAME: &str = ".main";

/// Tunables from the environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// How long a stopping group or a `finish` gets before KILL (SVWAIT).
    pub svwait: Duration,
    /// The longest restart delay of a crash-looping program.
    pub backoff_max: Duration,
    /// How long a program with no other way to say it is ready must stay
    /// up to count as ready (`MOLTD_READY_GRACE`).
    pub ready_grace: Duration,
}

/// `run` or its `log/run`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Which {
    Main,
    Log,
    /// A second generation of `run` beside the first (`NAME/next`).
    Next,
}

impl Which {
    /// The name a program goes by: `web`, `web/log`, `web/next`.
    pub fn label(self, service: &str) -> String {
        match self {
            Which::Main => service.to_owned(),
            Which::Log => format!("{service}/log"),
            Which::Next => format!("{service}/next"),
        }
    }

    /// The program `name` names, and its service.
    pub fn parse(name: &str) -> (&str, Which) {
        if let Some(service) = name.strip_suffix("/log") {
            (service, Which::Log)
        } else if let Some(service) = name.strip_suffix("/next") {
            (service, Which::Next)
        } else {
            (name, Which::Main)
        }
    }
}

/// The program to start in a service folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    Run,
    /// `./finish CODE SIGNAL`, with runit's arguments.
    Finish {
        code: i32,
        signal: i32,
    },
    /// `./check`, runit's readiness probe, run while `run` is not ready.
    Check,
}

/// Who said it is ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notifier {
    /// A `READY=1` on `NOTIFY_SOCKET` from this process (of this group): it
    /// counts for the `run` that is the one or leads the other.
    Process { pid: i32, pgid: Option<i32> },
    /// A line on the notification fd of this program.
    Service { service: String, which: Which },
}

/// Why a program could not be started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpawnFailure {
    /// The child that failed to exec and will exit by itself, if fork worked.
    pub pid: Option<i32>,
    pub reason: String,
}

/// Something that happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The services directory was read.
    Scanned(Result<Listing, String>),
    /// Something changed in the services directory or a service folder.
    DirChanged,
    /// The outcome of an [`Action::Spawn`], fed back before any reaping.
    Spawned {
        service: String,
        which: Which,
        program: Program,
        result: Result<i32, SpawnFailure>,
    },
    /// A child was reaped; `group_alive` says whether its process group
    /// (which it led, if it was a service) still has members.
    Exited {
        pid: i32,
        status: ExitStatus,
        group_alive: bool,
    },
    /// A group from [`Supervisor::lingering_groups`] is now empty.
    GroupGone {
        pgid: i32,
    },
    /// The main command was started (the first time, or again after
    /// [`Action::SpawnMain`]), or could not be, with the code to report.
    MainSpawned(Result<Forwarder, i32>),
    /// A program said it is ready.
    Ready(Notifier),
    /// moltd received a signal (not CHLD).
    Signal(i32),
    Command {
        client: ClientId,
        request: Request,
    },
    /// Time passed; deadlines may have expired.
    Tick,
}

/// Who asked for an [`Event::Command`], and gets its [`Action::Reply`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ClientId {
    /// A control socket client, numbered by the runner.
    Socket(u64),
    /// The update agent, by the number of its life (a reply for an agent
    /// that died since is dropped, not given to the next one).
    Agent(u32),
}

/// Something for the event loop to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Read the services directory and send [`Event::Scanned`].
    Scan,
    /// Start a program and send [`Event::Spawned`] at once.
    Spawn {
        service: String,
        which: Which,
        program: Program,
    },
    /// `kill(target, signal)`: a pid, or minus a process group.
    Signal {
        target: i32,
        signal: i32,
    },
    /// Close moltd's write end of the service's log pipe, so `log/run` sees
    /// end of file once the service is gone.
    CloseLogInput {
        service: String,
    },
    /// The service is gone for good: release its pipes.
    Forget {
        service: String,
    },
    Reply {
        client: ClientId,
        answers: Vec<Answer>,
    },
    /// Start the main command again and send [`Event::MainSpawned`] at once.
    SpawnMain,
    /// Stop moltd until CONT (job control in combined mode).
    StopSelf,
    Exit(i32),
}

/// Everything the supervisor knows.
#[derive(Debug)]
pub struct Supervisor {
    settings: Settings,
    services: BTreeMap<String, Service>,
    ignored: BTreeMap<String, String>,
    dir_problem: Option<String>,
    main: Option<MainCommand>,
    /// The exit code, once shutdown has begun.
    shutdown: Option<i32>,
    exited: bool,
    scan_at: Option<Instant>,
    waiters: Vec<Waiter>,
}

fn describe(status: ExitStatus) -> String {
    match status {
        ExitStatus::Exited(code) => format!("exited with {code}"),
        ExitStatus::Signaled(signal) => format!("killed by {}", signals::name(signal)),
    }
}

impl Supervisor {
    /// A supervisor with no services yet; a main command joins with
    /// [`Event::MainSpawned`].
    pub fn new(settings: Settings) -> Supervisor {
        Supervisor {
            settings,
            services: BTreeMap::new(),
            ignored: BTreeMap::new(),
            dir_problem: None,
            main: None,
            shutdown: None,
            exited: false,
            scan_at: None,
            waiters: Vec::new(),
        }
    }

    /// Handles one event.
    pub fn step(&mut self, now: Instant, event: Event) -> Vec<Action> {
        let mut actions = Vec::new();
        match event {
            Event::Scanned(listing) => self.scanned(now, listing, &mut actions),
            Event::DirChanged => {
                self.scan_at.get_or_insert(now + SCAN_SETTLE);
            }
            Event::Spawned {
                service,
                which,
                program,
                result,
            } => {
                let event = match program {
                    Program::Run => SlotEvent::RunSpawned(result),
                    Program::Finish { .. } => SlotEvent::FinishSpawned(result),
                    Program::Check => SlotEvent::CheckSpawned(result),
                };
                self.with_slot(now, &service, which, &mut actions, |slot, cx| {
                    slot.on(cx, event)
                })
            }
            Event::Exited {
                pid,
                status,
                group_alive,
            } => self.exited(now, pid, status, group_alive, &mut actions),
            Event::GroupGone { pgid } => {
                if let Some(main) = &mut self.main {
                    main.group_gone(pgid);
                }
                if let Some((name, which)) = self.find(|slot| slot.lingering_group() == Some(pgid))
                {
                    self.with_slot(now, &name, which, &mut actions, |slot, cx| {
                        slot.on(cx, SlotEvent::GroupGone)
                    });
                }
            }
            Event::Ready(notifier) => self.ready(now, notifier, &mut actions),
            Event::MainSpawned(result) => self.main_spawned(now, result),
            Event::Signal(signal) => self.signal(now, signal, &mut actions),
            Event::Command { client, request } => self.command(now, client, request, &mut actions),
            Event::Tick => self.tick(now, &mut actions),
        }
        self.progress(now, &mut actions);
        actions
    }

    /// When the next deadline expires; `None` means sleep until an event.
    pub fn next_deadline(&self) -> Option<Instant> {
        let slots = self
            .services
            .values()
            .flat_map(Service::slots)
            .filter_map(Slot::deadline);
        slots
            .chain(self.scan_at)
            .chain(self.waiters.iter().map(|w| w.deadline))
            .chain(self.main.as_ref().and_then(|m| m.deadline))
            .min()
    }

    /// Groups whose `run` has exited but which still had members; the loop
    /// reports each one that empties with [`Event::GroupGone`].
    pub fn lingering_groups(&self) -> Vec<i32> {
        let main = self.main.as_ref().and_then(MainCommand::lingering_group);
        self.services
            .values()
            .flat_map(Service::slots)
            .filter_map(Slot::lingering_group)
            .chain(main)
            .collect()
    }

    /// Every service's status, for metrics and the health endpoint.
    pub fn statuses(&self, now: Instant) -> Vec<Status> {
        self.services
            .keys()
            .filter_map(|name| self.status_of(name, now))
            .collect()
    }

    /// The second generations (`NAME/next`) that run or are on their way
    /// and have not begun to take their service's place: what an overlap
    /// left when the agent driving it died.
    pub fn second_generations(&self) -> Vec<String> {
        (self.services.iter())
            .filter(|(_, s)| !s.retiring && s.next.as_ref().is_some_and(|n| !n.is_down()))
            .map(|(name, _)| Which::Next.label(name))
            .collect()
    }

    /// Shutdown has begun (a signal, or an essential service gave up).
    pub fn shutting_down(&self) -> bool {
        self.shutdown.is_some()
    }

    /// The definition of a service, for the loop to find its folder.
    pub fn definition(&self, name: &str) -> Option<&Definition> {
        self.services.get(name).map(|s| &s.def)
    }

    fn find(&self, mut matches: impl FnMut(&Slot) -> bool) -> Option<(String, Which)> {
        self.services.iter().find_map(|(name, service)| {
            if matches(&service.main) {
                Some((name.clone(), Which::Main))
            } else if service.log.as_ref().is_some_and(&mut matches) {
                Some((name.clone(), Which::Log))
            } else if service.next.as_ref().is_some_and(&mut matches) {
                Some((name.clone(), Which::Next))
            } else {
                None
            }
        })
    }

    /// Runs `f` on one slot with its context, then handles an essential
    /// service giving up.
    fn with_slot(
        &mut self,
        now: Instant,
        name: &str,
        which: Which,
        actions: &mut Vec<Action>,
        f: impl FnOnce(&mut Slot, &mut Ctx),
    ) {
        let Some(service) = self.services.get_mut(name) else {
            return;
        };
        let label = which.label(name);
        let mut cx = Ctx {
            now,
            settings: self.settings,
            label,
            service: name,
            which,
            may_start: self.shutdown.is_none() && !service.removed,
            actions,
            gave_up: false,
        };
        let slot = match which {
            Which::Main => &mut service.main,
            Which::Log | Which::Next => {
                let slot = match which {
                    Which::Log => &mut service.log,
                    _ => &mut service.next,
                };
                match slot {
                    Some(slot) => slot,
                    None => return,
                }
            }
        };
        f(slot, &mut cx);
        if !(cx.gave_up && service.def.essential && which == Which::Main) {
            return;
        }
        warn!("{name}: essential service gave up, stopping the container");
        slot.intent = Intent::Down;
        slot.on(&mut cx, SlotEvent::Stop(StopHow::Signal));
        self.begin_shutdown(now, ESSENTIAL_FAILED, actions);
    }

    fn exited(
        &mut self,
        now: Instant,
        pid: i32,
        status: ExitStatus,
        alive: bool,
        actions: &mut Vec<Action>,
    ) {
        if let Some(main) = &mut self.main {
            match main.reaped(now, self.settings.svwait, pid, status, alive, actions) {
                Reaped::Other => {}
                Reaped::Held => return,
                Reaped::Ends(code) => return self.begin_shutdown(now, code, actions),
            }
        }
        if let Some((name, which)) = self.find(|slot| slot.run_pid() == Some(pid)) {
            return self.with_slot(now, &name, which, actions, |slot, cx| {
                let event = SlotEvent::RunExited {
                    status,
                    group_alive: alive,
                };
                slot.on(cx, event)
            });
        }
        if let Some((name, which)) = self.find(|slot| slot.finish_pid() == Some(pid)) {
            return self.with_slot(now, &name, which, actions, |slot, cx| {
                slot.on(cx, SlotEvent::FinishExited(status))
            });
        }
        if let Some((name, which)) = self.find(|slot| slot.check_pid() == Some(pid)) {
            return self.with_slot(now, &name, which, actions, |slot, cx| {
                slot.on(cx, SlotEvent::CheckExited(status))
            });
        }
        trace!("reaped orphan {pid} ({})", describe(status));
    }

    /// A notification: for the program it names, or the `run` that sent it
    /// or leads the group of its sender. Others are dropped.
    fn ready(&mut self, now: Instant, notifier: Notifier, actions: &mut Vec<Action>) {
        let found = match notifier {
            Notifier::Service { service, which } => Some((service, which)),
            Notifier::Process { pid, pgid } => self.find(|slot| {
                slot.awaiting_pid()
                    .is_some_and(|run| run == pid || Some(run) == pgid)
            }),
        };
        match found {
            Some((name, which)) => self.with_slot(now, &name, which, actions, |slot, cx| {
                slot.on(cx, SlotEvent::Ready)
            }),
            None => trace!("a readiness notification for no program waiting for one"),
        }
    }

    fn tick(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if self.scan_at.is_some_and(|at| at <= now) {
            self.scan_at = None;
            actions.push(Action::Scan);
        }
        if let Some(main) = &mut self.main {
            main.tick(now, self.settings.svwait, actions);
        }
        let names: Vec<String> = self.services.keys().cloned().collect();
        for name in names {
            for which in [Which::Main, Which::Log, Which::Next] {
                self.with_slot(now, &name, which, actions, |slot, cx| {
                    slot.on(cx, SlotEvent::Tick)
                });
            }
        }
    }

    /// Follow-ups that depend on the state as a whole, after every event.
    fn progress(&mut self, now: Instant, actions: &mut Vec<Action>) {
        // Let go while down (its start failed, or it was still stopping).
        let gone = self.main.as_ref().and_then(MainCommand::let_go_while_down);
        if let Some(code) = gone {
            self.begin_shutdown(now, code, actions);
        }
        let stopping_all = self.shutdown.is_some();
        let names: Vec<String> = self.services.keys().cloned().collect();
        for name in names {
            let Some(service) = self.services.get_mut(&name) else {
                continue;
            };
            // The first generation is down: the second takes its place.
            if service.retiring && service.main.is_down() {
                if let Some(next) = service.next.take() {
                    info!("{name}: its second generation is now the service");
                    service.main = next;
                }
                service.retiring = false;
            }
            let leaving = stopping_all || service.removed;
            if leaving
                && service.main.is_down()
                && service.next.as_ref().is_none_or(Slot::is_down)
                && !service.log_input_closed
                && service.log.is_some()
            {
                service.log_input_closed = true;
                self.with_slot(now, &name, Which::Log, actions, |slot, cx| {
                    slot.intent = Intent::Down;
                    slot.on(cx, SlotEvent::Stop(StopHow::CloseInput));
                });
            }
            let service = &self.services[&name];
            if service.removed && service.all_down() {
                info!("{name}: removed");
                self.services.remove(&name);
                actions.push(Action::Forget { service: name });
                // The folder may have come back meanwhile.
                self.scan_at.get_or_insert(now);
            }
        }
        self.answer_waiters(now, actions);
        let main_done = self.main.as_ref().is_none_or(|m| !m.running());
        let services_down = self.services.values().all(Service::all_down);
        if let (Some(code), false, true, true) =
            (self.shutdown, self.exited, main_done, services_down)
        {
            self.exited = true;
            actions.push(Action::Exit(code));
        }
    }

    fn main_spawned(&mut self, now: Instant, result: Result<Forwarder, i32>) {
        match (&mut self.main, result) {
            (Some(main), result) => main.spawned(now, result),
            (None, Ok(forwarder)) => self.main = Some(MainCommand::new(forwarder, now)),
            (None, Err(_)) => {}
        }
    }
}
