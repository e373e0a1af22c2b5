//! Service definitions: what a scan of the services directory found, held
//! as [`Service`]s, and how a new scan changes them (a new folder starts, a
//! changed one takes its new settings, a removed one is stopped, then
//! forgotten).

use super::slot::{Intent, Slot, SlotEvent, StopHow};
use super::{Action, Supervisor, Which};
use crate::services::scan::{Definition, Ignored, Listing, Part};
use log::{debug, info, warn};
use std::time::Instant;

/// A service folder and its programs.
#[derive(Debug)]
pub(super) struct Service {
    pub(super) def: Definition,
    pub(super) main: Slot,
    pub(super) log: Option<Slot>,
    /// A second generation of `run` (`NAME/next`), started beside `main`
    /// by an update's overlap: it becomes `main` once that is retired.
    pub(super) next: Option<Slot>,
    /// `main` is being retired: `next` takes its place once it is down.
    pub(super) retiring: bool,
    /// Its folder is gone: stop it, then forget it.
    pub(super) removed: bool,
    pub(super) log_input_closed: bool,
}

impl Service {
    /// `run`, then `log/run` if there is one, then a second `run`.
    pub(super) fn slots(&self) -> impl Iterator<Item = &Slot> {
        std::iter::once(&self.main)
            .chain(self.log.as_ref())
            .chain(self.next.as_ref())
    }

    /// `run` and `log/run` are both down.
    pub(super) fn all_down(&self) -> bool {
        self.slots().all(Slot::is_down)
    }
}

impl Supervisor {
    /// The services directory was read: define what is there, stop what
    /// is gone.
    pub(super) fn scanned(
        &mut self,
        now: Instant,
        listing: Result<Listing, String>,
        actions: &mut Vec<Action>,
    ) {
        let listing = match listing {
            Ok(listing) => {
                self.dir_problem = None;
                listing
            }
            Err(problem) => {
                if self.dir_problem.as_ref() != Some(&problem) {
                    warn!("{problem}");
                    self.dir_problem = Some(problem);
                }
                Listing::default()
            }
        };
        self.note_ignored(&listing.ignored);
        for def in &listing.services {
            self.define(now, def, actions);
        }
        let gone: Vec<String> = self
            .services
            .iter()
            .filter(|(name, s)| !s.removed && !listing.services.iter().any(|d| &d.name == *name))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            info!("{name}: folder removed, stopping it");
            if let Some(service) = self.services.get_mut(&name) {
                service.removed = true;
                service.main.intent = Intent::Down;
            }
            self.with_slot(now, &name, Which::Main, actions, |slot, cx| {
                slot.on(cx, SlotEvent::Stop(StopHow::Signal))
            });
        }
    }

    fn note_ignored(&mut self, ignored: &[Ignored]) {
        self.ignored
            .retain(|name, _| ignored.iter().any(|i| &i.name == name));
        for entry in ignored {
            if self.ignored.get(&entry.name) != Some(&entry.reason) {
                warn!("{}: not a service: {}", entry.name, entry.reason);
                self.ignored
                    .insert(entry.name.clone(), entry.reason.clone());
            }
        }
    }

    /// Adds a new service or updates a known one from its folder.
    fn define(&mut self, now: Instant, def: &Definition, actions: &mut Vec<Action>) {
        let problems = |part: &Option<Part>, label: &str, old: Option<&Part>| {
            let down_signal: fn(&Part) -> Option<&String> = |p| p.down_signal_problem.as_ref();
            let readiness: fn(&Part) -> Option<&String> = |p| p.readiness_problem.as_ref();
            for problem_of in [down_signal, readiness] {
                if let Some(problem) = part.as_ref().and_then(problem_of) {
                    if old.and_then(problem_of) != Some(problem) {
                        warn!("{label}: {problem}");
                    }
                }
            }
        };
        if let Some(problem) = &def.forward_signals_problem {
            let old = self.services.get(&def.name);
            if old.and_then(|s| s.def.forward_signals_problem.as_ref()) != Some(problem) {
                warn!("{}: {problem}", def.name);
            }
        }
        match self.services.get_mut(&def.name) {
            // A folder that came back while its old self is still stopping
            // is picked up by the scan that follows the forgetting.
            Some(service) if service.removed => {}
            Some(service) => {
                problems(&Some(def.main.clone()), &def.name, Some(&service.main.part));
                service.main.part = def.main.clone();
                if let Some(next) = &mut service.next {
                    next.part = def.main.clone();
                }
                let label = format!("{}/log", def.name);
                let mut log_appeared = false;
                match (&mut service.log, &def.log) {
                    (Some(slot), Some(part)) => {
                        problems(&def.log, &label, Some(&slot.part));
                        slot.part = part.clone();
                    }
                    // Started now; `run` keeps the output it has and writes
                    // into the log from its next start, rather than being
                    // restarted unasked.
                    (None, Some(part)) => {
                        problems(&def.log, &label, None);
                        info!(
                            "{label}: new log service; {} writes to it from its next start",
                            def.name
                        );
                        service.log = Some(Slot::new(part.clone(), now));
                        log_appeared = true;
                    }
                    // `run` writes into the log pipe: it stays until the
                    // folder is re-created.
                    (Some(_), None) => debug!(
                        "{}: log/ vanished; applies once the folder is re-created",
                        def.name
                    ),
                    (None, None) => {}
                }
                let log = service.def.log.clone().or(def.log.clone());
                service.def = Definition { log, ..def.clone() };
                if log_appeared {
                    self.start_if_wanted(now, &def.name, Which::Log, actions);
                }
            }
            None => {
                problems(&Some(def.main.clone()), &def.name, None);
                problems(&def.log, &format!("{}/log", def.name), None);
                info!("{}: new service", def.name);
                self.services.insert(
                    def.name.clone(),
                    Service {
                        def: def.clone(),
                        main: Slot::new(def.main.clone(), now),
                        log: def.log.clone().map(|part| Slot::new(part, now)),
                        next: None,
                        retiring: false,
                        removed: false,
                        log_input_closed: false,
                    },
                );
                for which in [Which::Log, Which::Main] {
                    self.start_if_wanted(now, &def.name, which, actions);
                }
            }
        }
    }

    /// The first start of a program just defined, unless it has a `down` file.
    fn start_if_wanted(
        &mut self,
        now: Instant,
        name: &str,
        which: Which,
        actions: &mut Vec<Action>,
    ) {
        self.with_slot(now, name, which, actions, |slot, cx| {
            if slot.intent == Intent::Up {
                slot.on(cx, SlotEvent::Start);
            }
        });
    }
}
