//! What a request for the updater gets at once, without waiting for the
//! updater thread: the control socket's loop and the HTTP thread ask
//! [`admit`], which answers from the shared status snapshot and the [`Work`]
//! flags (status, `--check` while busy, "already updating", "busy", "updates
//! are off"), or lets the request through to the thread, cancelling a
//! download in progress for a rollback. So a control request gets its first
//! answer within milliseconds whatever the thread is doing.
//!
//! Why apart from the thread (`updates.rs`): this is a pure decision over
//! shared flags, table-tested without a thread or a process.

use crate::control::{UpdateReply, UpdateRequest};
use crate::update::status::{Phase, Status, reply as status_reply};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Whether the updater thread has work, shared with those who take
/// requests for it (see [`admit`]). Busy means either; the two are kept
/// apart so that neither side can clear what the other set.
pub struct Work {
    /// A run of the thread's own (first boot, schedule, trigger).
    pub(super) working: AtomicBool,
    /// Requests let through and not answered yet.
    pub(super) queued: AtomicUsize,
    /// The updater's cancel flag (see `Updater::cancel_flag`): set with a
    /// rollback let through while a download or staging runs; cleared when
    /// the thread takes that rollback.
    pub(super) cancel: Arc<AtomicBool>,
    /// No release has been installed yet: nothing to roll back to, whatever
    /// a stale state file names (cleared by the thread once one is).
    pub(super) first_boot: AtomicBool,
    /// Why updates are off, if they are: every request but `status` is
    /// answered with it.
    off: Option<String>,
    /// Whether moltd's own updates run although the app's are off
    /// (`MOLTD_SELF_REPO` alone): they and `unmark` go through.
    itself: bool,
}

impl Work {
    /// The work of an updater thread that is about to start its first boot,
    /// or of one that only runs the installed release because updates are
    /// `off`.
    pub fn new(cancel: Arc<AtomicBool>, off: Option<String>) -> Work {
        Work {
            working: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            cancel,
            first_boot: AtomicBool::new(off.is_none()),
            off,
            itself: false,
        }
    }

    /// The work of a thread that updates moltd only, the app's updates
    /// being off for `reason`.
    pub fn only_itself(reason: String) -> Work {
        Work {
            itself: true,
            ..Work::new(Arc::default(), Some(reason))
        }
    }

    /// Whether the app's updates run (the trigger file is watched).
    pub fn updating(&self) -> bool {
        self.off.is_none()
    }

    fn busy(&self) -> bool {
        self.working.load(Ordering::SeqCst) || self.queued.load(Ordering::SeqCst) > 0
    }
}

/// What to do with a request for the updater.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Answered already: reply with this.
    Answer(UpdateReply),
    /// Hand it to the thread; meanwhile tell the client this (what it now
    /// waits for).
    Forward(String),
}

/// Steps of the switch itself: a rollback cannot cut in there.
fn switching(phase: Phase) -> bool {
    matches!(
        phase,
        Phase::Stopping | Phase::Switching | Phase::Starting | Phase::HealthCheck
    )
}

/// `step N/M (phase)` of the run in progress.
fn step(status: &Status) -> String {
    format!(
        "step {}/{} ({})",
        status.step,
        status.total_steps,
        status.state.name()
    )
}

/// Decides at once what becomes of `op`, from the status snapshot and the
/// work flags, without waiting for the thread:
///
/// * `status`: the snapshot;
/// * `update --check` while busy: what the last check found;
/// * `update` while busy: "already updating, step N/M (phase)";
/// * `rollback` with nothing to return to (or first boot): refused; while a check,
///   download or staging runs: cancels it and goes through (the thread
///   takes it next); during a switch or health check: "busy, try again";
/// * `unmark` while busy: "busy, try again";
/// * anything else goes through, and the thread counts as busy from now.
pub fn admit(work: &Work, status: &Mutex<Status>, op: &UpdateRequest) -> Admission {
    if *op == UpdateRequest::Status {
        return Admission::Answer(status_reply(status));
    }
    let Ok(status) = status.lock() else {
        return Admission::Answer(Err("status unavailable".into()));
    };
    let busy = work.busy();
    let refuse = |text: String| Admission::Answer(Err(text));
    match (&work.off, op) {
        (None, _) => {}
        (Some(_), UpdateRequest::Itself(_) | UpdateRequest::Unmark(_)) if work.itself => {}
        // What is known of moltd's own releases is worth a check's answer.
        (Some(reason), UpdateRequest::Check) if work.itself => {
            return refuse(format!(
                "updates of the app are off: {reason}\n{}",
                status.moltd.summary().trim_end()
            ));
        }
        (Some(reason), _) if work.itself => {
            return refuse(format!("updates of the app are off: {reason}"));
        }
        (Some(reason), _) => return refuse(format!("updates are off: {reason}")),
    }
    match op {
        UpdateRequest::Check if busy => {
            let current = status.current.as_deref().unwrap_or("nothing installed");
            let found = match &status.available {
                Some(newer) => format!("newer release {} available", newer.tag),
                None => "no newer release".to_owned(),
            };
            Admission::Answer(Ok(format!(
                "{found} (current: {current}; as of the last check: an update is in progress, {})\n{}",
                step(&status),
                status.moltd.summary().trim_end()
            )))
        }
        UpdateRequest::Apply { .. } if busy => {
            refuse(format!("already updating, {}", step(&status)))
        }
        UpdateRequest::Rollback
            if status.current.is_none() || work.first_boot.load(Ordering::SeqCst) =>
        {
            refuse("no release is installed yet: nothing to roll back".into())
        }
        UpdateRequest::Rollback if status.previous.is_none() => {
            refuse("no previous release to roll back to".into())
        }
        UpdateRequest::Rollback if busy && work.cancel.load(Ordering::SeqCst) => refuse(format!(
            "a rollback is already waiting for {}",
            step(&status)
        )),
        UpdateRequest::Rollback if busy && !switching(status.state) => {
            work.cancel.store(true, Ordering::SeqCst);
            work.queued.fetch_add(1, Ordering::SeqCst);
            let previous = status.previous.as_deref().unwrap_or_default();
            Admission::Forward(format!(
                "cancelling the update in progress at {}, then rolling back to {previous}",
                step(&status)
            ))
        }
        _ if busy => refuse(format!("busy: {}; try again when it ends", step(&status))),
        _ => {
            work.queued.fetch_add(1, Ordering::SeqCst);
            Admission::Forward(match op {
                UpdateRequest::Check => "checking for a newer release".to_owned(),
                UpdateRequest::Apply { .. } => {
                    "checking for a newer release and applying it".into()
                }
                UpdateRequest::Rollback => format!(
                    "rolling back to {}",
                    status.previous.as_deref().unwrap_or_default()
                ),
                UpdateRequest::Unmark(tags) => {
                    format!("clearing the bad mark of {}", tags.join(", "))
                }
                UpdateRequest::Status => String::new(),
                UpdateRequest::Itself(Some(request)) => format!(
                    "asking PID 1 to replace itself with {}",
                    request.path.display()
                ),
                UpdateRequest::Itself(None) => {
                    "checking MOLTD_SELF_REPO for a newer moltd and applying it".into()
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::update::status::Reporter;

    fn status(state: Phase, step: u32, previous: Option<&str>) -> Mutex<Status> {
        let mut status = Reporter::new(None).status().clone();
        status.state = state;
        status.step = step;
        status.total_steps = 9;
        status.current = Some("v2".into());
        status.previous = previous.map(str::to_owned);
        Mutex::new(status)
    }

    /// The work flags once a release is installed.
    fn installed() -> Work {
        let work = Work::new(Arc::default(), None);
        work.first_boot.store(false, Ordering::SeqCst);
        work
    }

    fn answered(admission: Admission) -> String {
        match admission {
            Admission::Answer(Ok(text) | Err(text)) => text,
            Admission::Forward(pending) => panic!("let through: {pending}"),
        }
    }

    #[test]
    fn admit_answers_what_cannot_wait() {
        let update = UpdateRequest::Apply { force: false };
        let check = UpdateRequest::Check;
        let work = installed();
        let downloading = status(Phase::Downloading, 2, Some("v1"));
        // Idle: through, and busy from then on.
        assert!(matches!(
            admit(&work, &downloading, &update),
            Admission::Forward(_)
        ));
        let again = answered(admit(&work, &downloading, &update));
        assert_eq!(again, "already updating, step 2/9 (downloading)");
        assert!(answered(admit(&work, &downloading, &check)).contains("no newer release"));
        assert!(
            answered(admit(&work, &downloading, &UpdateRequest::Status)).contains("downloading")
        );
        let unmark = UpdateRequest::Unmark(vec!["v3".into()]);
        assert!(answered(admit(&work, &downloading, &unmark)).starts_with("busy: step 2/9"));
        // A rollback cancels the download, once.
        let Admission::Forward(pending) = admit(&work, &downloading, &UpdateRequest::Rollback)
        else {
            panic!("rollback refused");
        };
        assert!(pending.contains("then rolling back to v1"), "{pending}");
        assert!(work.cancel.load(Ordering::SeqCst));
        let second = answered(admit(&work, &downloading, &UpdateRequest::Rollback));
        assert!(
            second.starts_with("a rollback is already waiting"),
            "{second}"
        );
        // Not during a health check, nor with nothing to return to.
        let work = installed();
        work.working.store(true, Ordering::SeqCst);
        let checking = status(Phase::HealthCheck, 8, Some("v1"));
        let busy = answered(admit(&work, &checking, &UpdateRequest::Rollback));
        assert_eq!(
            busy,
            "busy: step 8/9 (health_check); try again when it ends"
        );
        assert!(!work.cancel.load(Ordering::SeqCst));
        let first = status(Phase::Downloading, 2, None);
        let none = answered(admit(&work, &first, &UpdateRequest::Rollback));
        assert_eq!(none, "no previous release to roll back to");
        let first_boot = status(Phase::Downloading, 2, Some("v1"));
        first_boot.lock().unwrap().current = None;
        let none = answered(admit(&work, &first_boot, &UpdateRequest::Rollback));
        assert_eq!(none, "no release is installed yet: nothing to roll back");
        // A state file may name a current and a previous release whose
        // folders are gone: still first boot.
        let stale = Work::new(Arc::default(), None);
        stale.working.store(true, Ordering::SeqCst);
        let downloading = status(Phase::Downloading, 2, Some("v1"));
        let none = answered(admit(&stale, &downloading, &UpdateRequest::Rollback));
        assert_eq!(none, "no release is installed yet: nothing to roll back");
        assert!(!stale.cancel.load(Ordering::SeqCst));
        // Updates off: every request but the status gets the reason at once.
        let off = Work::new(Arc::default(), Some("read-only".into()));
        let idle = status(Phase::Idle, 1, Some("v1"));
        for op in [
            UpdateRequest::Rollback,
            UpdateRequest::Check,
            UpdateRequest::Unmark(vec!["v2".into()]),
        ] {
            assert_eq!(
                answered(admit(&off, &idle, &op)),
                "updates are off: read-only"
            );
        }
        assert!(matches!(
            admit(&off, &idle, &UpdateRequest::Status),
            Admission::Answer(Ok(_))
        ));
    }

    /// `MOLTD_SELF_REPO` alone: moltd's own updates and `unmark` go
    /// through, the app's requests get why they are off (a check with what
    /// is known of moltd).
    #[test]
    fn only_moltd_updates_itself() {
        let work = Work::only_itself("no source for the app".into());
        assert!(!work.updating());
        let idle = status(Phase::Idle, 1, None);
        idle.lock().unwrap().moltd.repo = Some("acme/moltd".into());
        for op in [
            UpdateRequest::Itself(None),
            UpdateRequest::Unmark(vec!["v9.0.0".into()]),
        ] {
            // Each on a thread with nothing queued.
            let free = Work::only_itself("no source for the app".into());
            assert!(
                matches!(admit(&free, &idle, &op), Admission::Forward(_)),
                "{op:?}"
            );
        }
        let check = answered(admit(&work, &idle, &UpdateRequest::Check));
        assert!(
            check.starts_with("updates of the app are off: no source for the app\nmoltd: ")
                && check.contains("(updates itself from acme/moltd)"),
            "{check}"
        );
        for op in [
            UpdateRequest::Apply { force: true },
            UpdateRequest::Rollback,
        ] {
            assert_eq!(
                answered(admit(&work, &idle, &op)),
                "updates of the app are off: no source for the app"
            );
        }
    }
}
