//! The supervisor written into PID 1's frozen state and taken back by the
//! program that resumes it (see `services::reexec`).
//!
//! What is written is each program's slot (`slot::frozen` has its record)
//! and the main command's (a record named `.main`: pid, starts, since, last
//! exit); the definitions and the main command's forwarding rules are not:
//! the resuming program reads the folders and its command line again, which
//! it would do anyway, so a folder changed during the exec is seen as
//! changed. A supervisor with work in flight (a main command held by an
//! update or not running, shutdown, a waiting `sv -w`, an overlap or a
//! removed folder being stopped, a slot not at rest) is not frozen: the
//! reason is the self-update's refusal.

use super::definition::Service;
use super::main_command::MainCommand;
use super::slot::Slot;
use super::{MAIN_NAME, Supervisor, Which};
use crate::init::policy::Rules;
use crate::services::scan::Listing;
use crate::sys::reap::ExitStatus;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// `t` as signed nanoseconds from `base`.
pub(super) fn offset(t: Instant, base: Instant) -> i128 {
    match t.checked_duration_since(base) {
        Some(after) => after.as_nanos() as i128,
        None => -((base - t).as_nanos() as i128),
    }
}

/// The inverse of [`offset`]; a time before the clock's start is the start.
pub(super) fn at(base: Instant, offset: i128) -> Instant {
    let span = Duration::from_nanos(offset.unsigned_abs().min(u64::MAX as u128) as u64);
    match offset >= 0 {
        true => base + span,
        false => base.checked_sub(span).unwrap_or(base),
    }
}

/// A last exit as a field: `-`, `exit:N` or `signal:N`.
pub(super) fn encode_exit(exit: Option<ExitStatus>) -> String {
    match exit {
        None => "-".to_owned(),
        Some(ExitStatus::Exited(code)) => format!("exit:{code}"),
        Some(ExitStatus::Signaled(signal)) => format!("signal:{signal}"),
    }
}

/// The inverse of [`encode_exit`]; `None` for a field it never writes.
pub(super) fn decode_exit(text: &str) -> Option<Option<ExitStatus>> {
    Some(match text.split_once(':') {
        None if text == "-" => None,
        Some(("exit", code)) => Some(ExitStatus::Exited(code.parse().ok()?)),
        Some(("signal", signal)) => Some(ExitStatus::Signaled(signal.parse().ok()?)),
        _ => return None,
    })
}

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
        if let Some(main) = &self.main {
            let record = main
                .freeze(now)
                .map_err(|busy| format!("the main command is {busy}; try again in a moment"))?;
            frozen.push(FrozenSlot {
                service: MAIN_NAME.to_owned(),
                which: Which::Main,
                record,
            });
        }
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
        main_rules: Option<Rules>,
    ) -> Result<Vec<i32>, String> {
        let mut records: BTreeMap<String, [Option<String>; 2]> = BTreeMap::new();
        for slot in slots {
            if slot.service == MAIN_NAME {
                let rules = main_rules
                    .clone()
                    .ok_or("a main command, and none is given now")?;
                let main = MainCommand::thaw(rules, &slot.record, base);
                self.main = Some(main.ok_or("the main command: unreadable record")?);
                continue;
            }
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
        let readable = match slot.service == MAIN_NAME {
            true => MainCommand::frozen_reads(&slot.record),
            false => Slot::thaw(part.clone(), &slot.record, Instant::now()).is_some(),
        };
        if slot.which == Which::Next || !readable {
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
    use super::super::tests::{
        def, exited, listing, main_command, main_rules, running, settings, spawn,
    };
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
            .thaw(now, &listing_of(listing(&defs)), records, None)
            .unwrap();
        assert!(strays.is_empty());
        assert_eq!(thawed.statuses(now), sup.statuses(now));
        assert_eq!(thawed.next_deadline(), sup.next_deadline());
        // The adopted `run` is the one its exit is matched to.
        let actions = thawed.step(now, exited(101, ExitStatus::Exited(0), false));
        assert!(thawed.statuses(now)[1].main.pid.is_none(), "{actions:?}");
    }

    #[test]
    fn the_main_command_thaws_running_with_its_pid() {
        let t0 = Instant::now();
        let mut sup = running(t0, &[def("web")]);
        sup.step(t0, Event::MainSpawned(Ok(main_command(42))));
        let now = t0 + Duration::from_secs(3);
        let records = sup.freeze(now).unwrap();
        let mut thawed = Supervisor::new(settings());
        let listing = listing_of(listing(&[def("web")]));
        thawed
            .thaw(now, &listing, records, Some(main_rules()))
            .unwrap();
        assert_eq!(thawed.statuses(now), sup.statuses(now));
        // Its exit still ends moltd with its code.
        let actions = thawed.step(now, exited(42, ExitStatus::Exited(7), false));
        assert!(thawed.shutting_down(), "{actions:?}");
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
        let strays = thawed.thaw(t0, &listing_of(listing(&[def("web")])), records, None);
        assert_eq!(strays, Ok(vec![101]));
        assert_eq!(thawed.statuses(t0).len(), 1);
    }
}
