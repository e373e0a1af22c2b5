//! The supervisor written into PID 1's frozen state and taken back by the
//! program that resumes it (see `services::reexec`).
//!
//! What is written is each program's slot (`slot::frozen` has its record);
//! the definitions are not: the resuming program reads the folders again,
//! which it would do anyway, so a folder changed during the exec is seen
//! as changed. A supervisor with work in flight (a main command, shutdown,
//! a waiting `sv -w`, an overlap or a removed folder being stopped, a slot
//! not at rest) is not frozen: the reason is the self-update's refusal.

use super::definition::Service;
use super::slot::Slot;
use super::{Supervisor, Which};
use crate::services::scan::Listing;
use std::collections::BTreeMap;
use std::time::Instant;

/// One program's record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrozenSlot {
    pub service: String,
    pub which: Which,
    pub record: String,
}

impl Supervisor {
    /// Every program's record at `now`, or why the supervisor cannot be
    /// frozen now.
    pub fn freeze(&self, now: Instant) -> Result<Vec<FrozenSlot>, String> {
        if self.main.is_some() {
            return Err(
                "a main command (combined mode) cannot be carried across a self-update".into(),
            );
        }
        if self.shutdown.is_some() {
            return Err("moltd is shutting down".into());
        }
        if !self.waiters.is_empty() {
            return Err(
                "a control request waits for services (sv -w); try again once it is answered"
                    .into(),
            );
        }
        let mut frozen = Vec::new();
        for (name, service) in &self.services {
            if service.removed || service.retiring || service.next.is_some() {
                return Err(format!(
                    "{name} is being removed or replaced; try again in a moment"
                ));
            }
            let slots = [
                (Which::Main, Some(&service.main)),
                (Which::Log, service.log.as_ref()),
            ];
            for (which, slot) in slots {
                let Some(slot) = slot else { continue };
                let record = slot.freeze(now).map_err(|busy| {
                    format!("{} is {busy}; try again in a moment", which.label(name))
                })?;
                frozen.push(FrozenSlot {
                    service: name.clone(),
                    which,
                    record,
                });
            }
        }
        Ok(frozen)
    }

    /// Takes the frozen programs back, `base` being the moment of the
    /// freeze on this program's clock: each service of `listing` with a
    /// record is adopted as it was (no start, no restart). Returns the
    /// process groups of programs whose folder is gone, for the caller to
    /// stop; a record that does not read is an error.
    pub fn thaw(
        &mut self,
        base: Instant,
        listing: &Listing,
        slots: Vec<FrozenSlot>,
    ) -> Result<Vec<i32>, String> {
        let mut records: BTreeMap<String, [Option<String>; 2]> = BTreeMap::new();
        for slot in slots {
            let index = match slot.which {
                Which::Main => 0,
                Which::Log => 1,
                Which::Next => return Err(format!("{}: a second generation", slot.service)),
            };
            records.entry(slot.service).or_default()[index] = Some(slot.record);
        }
        for def in &listing.services {
            let Some([Some(main), log]) = records.remove(&def.name) else {
                continue;
            };
            let bad = |which: Which| format!("{}: unreadable record", which.label(&def.name));
            let main = Slot::thaw(def.main.clone(), &main, base).ok_or_else(|| bad(Which::Main))?;
            let log = match (log, &def.log) {
                (Some(record), Some(part)) => {
                    Some(Slot::thaw(part.clone(), &record, base).ok_or_else(|| bad(Which::Log))?)
                }
                // A log/ that appeared meanwhile is started by the scan that
                // follows; one that vanished stays until the folder is made
                // again, as in a rescan.
                _ => None,
            };
            self.services.insert(
                def.name.clone(),
                Service {
                    def: def.clone(),
                    main,
                    log,
                    next: None,
                    retiring: false,
                    removed: false,
                    log_input_closed: false,
                },
            );
        }
        // Folders gone during the exec: their programs run unsupervised
        // unless stopped.
        let strays = records
            .into_values()
            .flatten()
            .flatten()
            .filter_map(|record| Slot::frozen_pid(&record))
            .collect();
        Ok(strays)
    }
}

/// Whether every record reads (the self-test's check, which has no
/// folders to read them against).
pub fn check_frozen(slots: &[FrozenSlot]) -> Result<(), String> {
    let part = crate::services::scan::Part {
        down: false,
        finish: false,
        down_signal: nix::libc::SIGTERM,
        down_signal_problem: None,
        readiness: crate::services::scan::Readiness::Grace,
        readiness_problem: None,
    };
    for slot in slots {
        if slot.which == Which::Next
            || Slot::thaw(part.clone(), &slot.record, Instant::now()).is_none()
        {
            return Err(format!(
                "{}: unreadable record",
                slot.which.label(&slot.service)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{def, exited, listing, running, settings, spawn};
    use super::*;
    use crate::services::machine::{Event, Program};
    use crate::sys::reap::ExitStatus;
    use std::time::Duration;

    fn listing_of(event: Event) -> Listing {
        match event {
            Event::Scanned(Ok(listing)) => listing,
            _ => unreachable!(),
        }
    }

    /// Resumed, a supervisor shows what it showed, runs down the same
    /// deadlines, and knows the same pids.
    #[test]
    fn a_frozen_supervisor_thaws_with_the_same_pids_phases_and_deadlines() {
        let t0 = Instant::now();
        let defs = [def("db"), def("web"), def("worker")];
        let mut sup = running(t0, &defs);
        // db dies at once: a quick death, in backoff until a second after
        // its start; web and worker are in their grace period.
        sup.step(t0, exited(100, ExitStatus::Exited(3), false));
        let now = t0 + Duration::from_millis(500);
        sup.step(now, Event::Tick);
        let records = sup.freeze(now).unwrap();
        let mut thawed = Supervisor::new(settings());
        let strays = thawed
            .thaw(now, &listing_of(listing(&defs)), records)
            .unwrap();
        assert!(strays.is_empty());
        assert_eq!(thawed.statuses(now), sup.statuses(now));
        assert_eq!(thawed.next_deadline(), sup.next_deadline());
        // The adopted `run` is the one its exit is matched to.
        let actions = thawed.step(now, exited(101, ExitStatus::Exited(0), false));
        assert!(thawed.statuses(now)[1].main.pid.is_none(), "{actions:?}");
    }

    #[test]
    fn a_busy_supervisor_is_not_frozen_and_says_what_is_busy() {
        let t0 = Instant::now();
        let mut sup = Supervisor::new(settings());
        let actions = sup.step(t0, listing(&[def("web")]));
        assert!(actions.contains(&spawn("web", Which::Main, Program::Run)));
        let refused = sup.freeze(t0).unwrap_err();
        assert!(refused.contains("web is starting"), "{refused}");
    }

    #[test]
    fn a_folder_gone_during_the_exec_leaves_its_pid_to_stop() {
        let t0 = Instant::now();
        let sup = running(t0, &[def("web"), def("old")]);
        let records = sup.freeze(t0).unwrap();
        let mut thawed = Supervisor::new(settings());
        let strays = thawed.thaw(t0, &listing_of(listing(&[def("web")])), records);
        assert_eq!(strays, Ok(vec![101]));
        assert_eq!(thawed.statuses(t0).len(), 1);
    }
}
