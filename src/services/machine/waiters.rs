//! What clients ask of services (`sv` and the updater alike) and the
//! [`Waiter`]s that wait for it: each request is carried out on every
//! program it names, then answered at once, or when every program reached
//! its [`Goal`] or the wait timed out (KILL on timeout if asked).

use super::slot::{Intent, Slot, SlotEvent, StopHow};
use super::{Action, ClientId, MAIN_NAME, Supervisor, Which};
use crate::services::control::{Answer, Op, Request};
use crate::services::status::Status;
use nix::libc;
use std::time::Instant;

/// What a client waits for, per service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Goal {
    Any,
    Up,
    Down,
    /// Running, started more than this many times in all.
    Restarted(u32),
    /// Its first generation gone, the second in its place.
    Retired,
}

impl Goal {
    /// Whether a program that is running and `ready`, or `down`, and was
    /// started `starts` times in all, has reached it.
    pub(super) fn reached(self, ready: bool, down: bool, starts: u32) -> bool {
        match self {
            Goal::Any => true,
            Goal::Up => ready,
            Goal::Down => down,
            Goal::Restarted(before) => ready && starts > before,
            // Known to the supervisor, which looks at the service as a whole.
            Goal::Retired => false,
        }
    }
}

#[derive(Debug)]
pub(super) struct Waiter {
    client: ClientId,
    targets: Vec<(String, Goal)>,
    pub(super) deadline: Instant,
    kill_on_timeout: bool,
}

impl Supervisor {
    /// The program `web`, `web/log` or `web/next` names.
    pub(super) fn slot(&self, name: &str) -> Option<&Slot> {
        let (service, which) = Which::parse(name);
        let service = self.services.get(service)?;
        match which {
            Which::Main => Some(&service.main),
            Which::Log => service.log.as_ref(),
            Which::Next => service.next.as_ref(),
        }
    }

    /// What `sv status` shows for `name`: a service, its log, or the main
    /// command.
    pub(super) fn status_of(&self, name: &str, now: Instant) -> Option<Status> {
        if let Some(main) = self.main.as_ref().filter(|_| name == MAIN_NAME) {
            return Some(main.status(now));
        }
        match Which::parse(name) {
            (service, which @ (Which::Log | Which::Next)) => Some(Status {
                name: name.to_owned(),
                main: self.slot(name)?.status(now),
                log: None,
                dir: Some(match which {
                    Which::Log => self.services.get(service)?.def.dir.join("log"),
                    _ => self.services.get(service)?.def.dir.clone(),
                }),
            }),
            (_, Which::Main) => {
                let service = self.services.get(name)?;
                Some(Status {
                    name: name.to_owned(),
                    main: service.main.status(now),
                    log: service.log.as_ref().map(|log| log.status(now)),
                    dir: Some(service.def.dir.clone()),
                })
            }
        }
    }

    /// Carries out a request and answers it, now or when its wait ends.
    pub(super) fn command(
        &mut self,
        now: Instant,
        client: ClientId,
        request: Request,
        actions: &mut Vec<Action>,
    ) {
        let names = if request.names.is_empty() && request.op == Op::Status {
            let main = self.main.as_ref().map(|_| MAIN_NAME.to_owned());
            main.into_iter()
                .chain(self.services.keys().cloned())
                .collect()
        } else {
            request.names.clone()
        };
        let mut targets = Vec::new();
        for name in names {
            let goal = self.apply(now, &name, request.op, actions);
            targets.push((name, goal.unwrap_or(Goal::Any)));
        }
        let waiter = Waiter {
            client,
            targets,
            deadline: now + request.wait.unwrap_or_default(),
            kill_on_timeout: request.kill_on_timeout,
        };
        if request.wait.is_none() {
            let answers = waiter
                .targets
                .iter()
                .map(|(name, _)| match self.status_of(name, now) {
                    Some(status) => Answer::Done(status),
                    None => Answer::Unknown(name.clone()),
                })
                .collect();
            actions.push(Action::Reply { client, answers });
        } else {
            self.waiters.push(waiter);
        }
    }

    /// Carries out `op` on one program; returns what a waiting client waits
    /// for, or `None` if there is no such service.
    fn apply(
        &mut self,
        now: Instant,
        name: &str,
        op: Op,
        actions: &mut Vec<Action>,
    ) -> Option<Goal> {
        let may_start = self.shutdown.is_none();
        if let Some(main) = self.main.as_mut().filter(|_| name == MAIN_NAME) {
            return Some(main.apply(now, self.settings.svwait, may_start, op, actions));
        }
        let (service, which) = Which::parse(name);
        if op == Op::Overlap {
            return self.overlap(now, service, which, actions);
        }
        let slot = self.slot(name)?;
        let starts = slot.starts;
        let goal = match op {
            Op::Status => Goal::Any,
            Op::Up | Op::Once => Goal::Up,
            Op::Down => Goal::Down,
            // try-restart leaves a program that is not running alone.
            Op::Restart {
                only_if_running: true,
            } if !slot.is_running() => Goal::Any,
            // runit's sv: after term or kill, up again, unless it is meant
            // to stay down.
            Op::Signal(libc::SIGTERM | libc::SIGKILL) if slot.intent != Intent::Up => Goal::Down,
            Op::Signal(libc::SIGTERM | libc::SIGKILL) | Op::Restart { .. } => {
                Goal::Restarted(starts)
            }
            Op::Signal(_) => Goal::Any,
            Op::Check => match slot.intent {
                Intent::Up => Goal::Up,
                Intent::Down => Goal::Down,
                Intent::Once => Goal::Any,
            },
            Op::Overlap => Goal::Any,
            Op::Retire => match self.services.get(service) {
                Some(s) if which == Which::Main && s.next.is_some() => Goal::Retired,
                _ => Goal::Any,
            },
        };
        if goal == Goal::Retired {
            if let Some(s) = self.services.get_mut(service) {
                s.retiring = true;
            }
        }
        self.with_slot(now, service, which, actions, |slot, cx| match op {
            Op::Status | Op::Check | Op::Overlap => {}
            Op::Retire => {
                if goal == Goal::Retired {
                    slot.intent = Intent::Down;
                    slot.on(cx, SlotEvent::Stop(StopHow::Signal));
                }
            }
            Op::Up | Op::Once => {
                if !cx.may_start {
                    return;
                }
                slot.intent = if op == Op::Up {
                    Intent::Up
                } else {
                    Intent::Once
                };
                slot.quick_deaths = 0;
                slot.on(cx, SlotEvent::Start);
            }
            Op::Down => {
                slot.intent = Intent::Down;
                slot.on(cx, SlotEvent::Stop(StopHow::Signal));
            }
            Op::Signal(signal) => slot.on(cx, SlotEvent::Signal(signal)),
            Op::Restart { only_if_running } => {
                if (only_if_running && !slot.is_running()) || !cx.may_start {
                    return;
                }
                slot.intent = Intent::Up;
                slot.quick_deaths = 0;
                slot.on(cx, SlotEvent::Restart);
            }
        });
        Some(goal)
    }

    /// Starts a second generation of `service` (`NAME/next`), replacing
    /// one that is down; the goal is for it to be ready.
    fn overlap(
        &mut self,
        now: Instant,
        service: &str,
        which: Which,
        actions: &mut Vec<Action>,
    ) -> Option<Goal> {
        let s = self.services.get_mut(service)?;
        if which != Which::Next || s.removed {
            return None;
        }
        if s.next.as_ref().is_none_or(Slot::is_down) {
            let mut next = Slot::new(s.def.main.clone(), now);
            next.intent = Intent::Up;
            s.next = Some(next);
        }
        self.with_slot(now, service, which, actions, |slot, cx| {
            if cx.may_start {
                slot.intent = Intent::Up;
                slot.on(cx, SlotEvent::Start);
            }
        });
        Some(Goal::Up)
    }

    /// Whether each target reached its goal; a name that is gone has.
    fn reached(&self, name: &str, goal: Goal) -> bool {
        if goal == Goal::Retired {
            return self
                .services
                .get(name)
                .is_none_or(|s| !s.retiring && s.next.is_none());
        }
        match self.main.as_ref().filter(|_| name == MAIN_NAME) {
            Some(main) => main.reached(goal),
            None => self.slot(name).is_none_or(|slot| slot.reached(goal)),
        }
    }

    /// The group to KILL when a wait for `name` times out.
    fn group(&self, name: &str) -> Option<i32> {
        match self.main.as_ref().filter(|_| name == MAIN_NAME) {
            Some(main) => main.group(),
            None => self.slot(name)?.group(),
        }
    }

    /// Answers every client whose targets all reached their goals, or whose
    /// wait ran out.
    pub(super) fn answer_waiters(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let mut pending = std::mem::take(&mut self.waiters);
        pending.retain(|waiter| {
            let all_reached = waiter
                .targets
                .iter()
                .all(|(name, goal)| self.reached(name, *goal));
            let timed_out = waiter.deadline <= now;
            if !all_reached && !timed_out {
                return true;
            }
            let answers = waiter
                .targets
                .iter()
                .map(|(name, goal)| {
                    let Some(status) = self.status_of(name, now) else {
                        return Answer::Unknown(name.clone());
                    };
                    let reached = self.reached(name, *goal);
                    let group = self.group(name);
                    match (reached, waiter.kill_on_timeout, group) {
                        (true, _, _) => Answer::Ok(status),
                        (false, true, Some(pgid)) => {
                            actions.push(Action::Signal {
                                target: -pgid,
                                signal: libc::SIGKILL,
                            });
                            Answer::Killed(status)
                        }
                        (false, true, None) => Answer::Killed(status),
                        (false, false, _) => Answer::Timeout(status),
                    }
                })
                .collect();
            actions.push(Action::Reply {
                client: waiter.client,
                answers,
            });
            false
        });
        self.waiters.append(&mut pending);
    }
}
