//! Turning a staged release into the running one, and back.
//!
//! The sequence (each step reported in the status document):
//! `MOLTD_PREFLIGHT` (in the new release's folder) → `MOLTD_PRE_UPDATE` → stop the payload services → switch `current` → start
//! them → health gate → commit (state, `MOLTD_POST_UPDATE`, pruning). A
//! failed gate switches back, restarts the previous release, checks it too,
//! and marks the new tag bad. Everything slow (download, unpack) happened
//! before the first service was stopped, so the app is down only between
//! stop and start.
//!
//! With `MOLTD_STRATEGY=overlap` nothing stops first: switch `current` →
//! start a second generation of the services beside the first (same
//! folders, same held sockets), ready → health gate on it → retire the first
//! (down-signal, SVWAIT) → commit. A failure stops the second generation and
//! switches back: the first never stopped, so clients never notice.
//!
//! The updater runs on its own thread, and only moltd's event loop may start
//! or reap processes, so everything that touches a process goes through a
//! [`Payload`]: the supervisor implements it by turning each call into a
//! request to its loop. This file only decides.
//!
//! First boot, with nothing to fall back on, is in [`super::first_boot`].
//!
//! Crash safety: `state.applying` is saved before the first service stops and
//! cleared when the switch is committed or undone; [`Updater::recover`]
//! points `current` back at the committed release if moltd died in between.
//! The `current` link itself is always switched atomically (see
//! [`super::layout`]), so it names a whole release at every moment.

use super::config::Strategy;
use super::error::Error;
use super::layout::{self, Manifest};
use super::select::Candidate;
use super::state::write_atomically;
use super::status::{Phase, UPDATE_STEPS};
use super::{Mode, Updater, chain, poll};
use crate::control::{UpdateReply, UpdateRequest};
use crate::sys::reap::ExitStatus;
use std::path::Path;
use std::time::Duration;

/// What the updater needs from whoever runs the services: the supervisor's
/// event loop, through its control requests.
pub trait Payload {
    /// Lets the services start for the first time (they wait until a
    /// release is installed), holding what would end moltd by exiting until
    /// [`Payload::release`]; returns the names meant to run, the same at
    /// every call.
    fn ready(&mut self) -> Result<Vec<String>, String>;
    /// Stops `names` (none: every service that is up) and waits until they
    /// are down; returns the names stopped.
    fn stop(&mut self, names: Option<&[String]>) -> Result<Vec<String>, String>;
    /// Starts `names` and waits until each is ready.
    fn start(&mut self, names: &[String]) -> Result<(), String>;
    /// Starts a second generation of `names` (none: every service that is
    /// up) beside the running one and waits until each is ready; returns
    /// the names of the second generation, for [`Payload::pids`],
    /// [`Payload::retire`] and [`Payload::abandon`]. If it fails, what it
    /// started is stopped again.
    fn overlap(&mut self, names: Option<&[String]>) -> Result<Vec<String>, String>;
    /// Stops the first generation of each of `next` (named as
    /// [`Payload::overlap`] named them) and waits until it is down: the
    /// second is then the service.
    fn retire(&mut self, next: &[String]) -> Result<(), String>;
    /// Stops the second generation `next` and waits until it is down.
    fn abandon(&mut self, next: &[String]) -> Result<(), String>;
    /// The pid of each one's `run` while it runs.
    fn pids(&mut self, names: &[String]) -> Result<Vec<Option<i32>>, String>;
    /// The switch is over: what runs only until it exits (single-command
    /// mode's command, whose exit ends moltd) is on its own again, and is
    /// started if the switch left it down.
    fn release(&mut self) -> Result<(), String>;
    /// Asks PID 1 to replace itself with the binary `request` names:
    /// `Ok(Ok(VERSION))` when it execs it (the link closes next),
    /// `Ok(Err(REASON))` when it refused and nothing changed.
    fn replace_pid1(
        &mut self,
        request: &crate::control::SelfUpdate,
    ) -> Result<Result<String, String>, String>;
    /// Runs `sh -c COMMAND moltd ARGS...` (in folder `cwd`, if given) and
    /// waits for it, killing its group after `timeout`.
    fn run_hook(
        &mut self,
        command: &str,
        args: &[&str],
        cwd: Option<&Path>,
        timeout: Duration,
    ) -> Result<ExitStatus, String>;
    /// Runs `command` as [`Payload::run_hook`] does, with no arguments,
    /// its stdout and stderr appended to `output` instead of moltd's.
    fn run_check(
        &mut self,
        command: &str,
        output: &Path,
        timeout: Duration,
    ) -> Result<ExitStatus, String>;
}

/// Why a switch is made: an update is gated and rolled back; a manual
/// rollback is gated too, but a failure there just returns to where it was.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Why {
    Update,
    Rollback,
}

impl Updater {
    pub(super) fn state_path(&self) -> std::path::PathBuf {
        self.config.state_dir().join("state.json")
    }

    pub(super) fn manifest_path(&self) -> std::path::PathBuf {
        self.config.state_dir().join("manifest.json")
    }

    pub(super) fn save_state(&mut self) -> Result<(), Error> {
        let path = self.state_path();
        self.state.save(&path).map_err(Error::io("save", path))?;
        self.reporter.releases(&self.state);
        Ok(())
    }

    /// After a kill in the middle of a switch, returns `current` to the
    /// committed release; the update will be tried again at the next check.
    /// A first install cut short before its gate passed is undone, so that
    /// it is not adopted unchecked: the first boot starts over. Returns
    /// which of the two it did.
    pub(super) fn recover(&mut self) -> Option<super::Recovery> {
        let target = self.state.applying.take()?;
        let recovery = match self.state.current {
            Some(_) => super::Recovery::WentBack,
            None => super::Recovery::Discarded,
        };
        match self.state.current.clone() {
            None => {
                log::warn!(
                    "the first install of {target} was interrupted before its health check passed; starting over"
                );
                self.discard(&target);
            }
            Some(current) => {
                log::warn!("the switch to {target} was interrupted; going back to {current}");
                if layout::current_tag(&self.config.app_dir).as_deref() != Some(current.as_str()) {
                    if let Err(err) = layout::switch_current(&self.config.app_dir, &current) {
                        log::error!("{}", chain(&err));
                    }
                }
            }
        }
        if let Err(err) = self.save_state() {
            log::error!("{}", chain(&err));
        }
        Some(recovery)
    }

    /// Records `tag` as current (and `previous`), with its manifest.
    pub(super) fn commit_state(
        &mut self,
        tag: &str,
        previous: Option<String>,
    ) -> Result<(), Error> {
        let manifest = Manifest::record(&self.config.releases_dir().join(tag), tag);
        let path = self.manifest_path();
        let json = serde_json::to_vec(&manifest).unwrap_or_default();
        write_atomically(&path, &json).map_err(Error::io("save", path))?;
        self.state.current = Some(tag.to_owned());
        self.state.previous = previous;
        self.state.applying = None;
        self.save_state()
    }

    /// Why the installed tree no longer is what moltd installed, if it is not:
    /// `current` repointed, or a file of the current release edited.
    pub fn manual_change(&self) -> Option<String> {
        let current = self.state.current.as_deref()?;
        match layout::current_tag(&self.config.app_dir) {
            Some(tag) if tag == current => {}
            Some(tag) => return Some(format!("current points to {tag}, not to {current}")),
            None => return Some(format!("current no longer points to {current}")),
        }
        let manifest: Manifest = std::fs::read(self.manifest_path())
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())?;
        if manifest.tag != current {
            return None;
        }
        let what = manifest.changed(&self.config.releases_dir().join(current))?;
        Some(format!("release {current} was changed by hand: {what}"))
    }

    /// Accepts the tree as it is now (`moltd update --force`): a repointed
    /// `current` becomes the installed release, edits become its manifest.
    fn accept_manual_change(&mut self) -> Result<(), Error> {
        let linked = layout::current_tag(&self.config.app_dir)
            .filter(|tag| self.config.releases_dir().join(tag).is_dir());
        let Some(current) = self.state.current.clone() else {
            return Ok(());
        };
        let (tag, previous) = match linked {
            Some(tag) if tag != current => (tag, Some(current)),
            _ => {
                layout::switch_current(&self.config.app_dir, &current)?;
                (current, self.state.previous.clone())
            }
        };
        log::info!("accepting the installed tree as release {tag}");
        self.commit_state(&tag, previous)
    }

    /// One scheduled or triggered check: apply in mode `auto` (or when
    /// `apply` says so), stage in mode `stage`, report in mode `check`.
    /// Skipped while the tree was changed by hand.
    pub fn automatic(&mut self, payload: &mut dyn Payload, apply: bool) -> poll::Outcome {
        let suspended = self.manual_change();
        let skip = suspended.is_some();
        self.reporter.suspended(suspended);
        if skip {
            return poll::Outcome::Normal;
        }
        let mode = match (apply, self.config.mode) {
            (true, _) => Mode::Auto,
            (false, mode) => mode,
        };
        outcome(self.update(payload, mode))
    }

    /// Carries out a request from `moltd update`, `rollback`, `unmark` or
    /// `status` (or HTTP); returns what to tell the user.
    pub fn request(&mut self, payload: &mut dyn Payload, request: UpdateRequest) -> UpdateReply {
        let (mode, force) = match request {
            UpdateRequest::Status => return super::status::reply(&self.shared_status()),
            UpdateRequest::Itself(request) => return self.request_itself(payload, request),
            UpdateRequest::Unmark(tags) => return self.unmark(&tags).map_err(|err| chain(&err)),
            UpdateRequest::Rollback => return self.rollback(payload).map_err(|err| chain(&err)),
            UpdateRequest::Check => (Mode::Check, false),
            UpdateRequest::Apply { force } => (Mode::Auto, force),
        };
        match (self.manual_change(), force) {
            (Some(why), false) => {
                self.reporter.suspended(Some(why.clone()));
                return Err(format!(
                    "automatic updates are suspended: {why}; use 'moltd update --force' to update anyway"
                ));
            }
            (Some(_), true) => {
                if let Err(err) = self.accept_manual_change() {
                    return Err(chain(&err));
                }
                self.reporter.suspended(None);
            }
            (None, _) => {}
        }
        let result = self.update(payload, mode).map_err(|err| chain(&err));
        match mode {
            // What a check says of the app, then of moltd itself.
            Mode::Check => {
                result.map(|found| format!("{found}\n{}", self.status().moltd.summary().trim_end()))
            }
            _ => result,
        }
    }

    fn update(&mut self, payload: &mut dyn Payload, mode: Mode) -> Result<String, Error> {
        if mode == Mode::Auto {
            self.reporter.total_steps(UPDATE_STEPS);
        }
        // `run_once` reports its own failures: each is logged once.
        let ran = self.run_once(match mode {
            Mode::Auto => Mode::Stage,
            other => other,
        })?;
        let result = self.update_steps(payload, mode, ran);
        if let Err(err) = &result {
            if !matches!(err, Error::RolledBack(_)) {
                self.report_error(err);
            }
        }
        result
    }

    fn update_steps(
        &mut self,
        payload: &mut dyn Payload,
        mode: Mode,
        ran: super::Ran,
    ) -> Result<String, Error> {
        let current = ran.current.unwrap_or_else(|| "nothing installed".into());
        // A decision that waits says until when and why; one for now, why.
        let decision = ran
            .decision
            .as_ref()
            .map(|d| format!("; {}", d.describe()))
            .unwrap_or_default();
        if let Some((to, why)) = ran.leave {
            let to = to.release.tag;
            return match mode {
                Mode::Check => Ok(format!("{why}: moltd would go back to {to}")),
                Mode::Stage => Ok(format!("{why}: release {to} staged to go back to")),
                Mode::Auto => {
                    self.check_cancel()?;
                    crate::notice!("{why}: going back to {to}");
                    self.switch(payload, &to, Why::Update)?;
                    Ok(format!("{why}: went back to {to}"))
                }
            };
        }
        let waits = matches!(ran.decision, Some(super::rollout::Decision::At { .. }));
        match (ran.newer, mode) {
            (None, _) => Ok(self.nothing_taken(&current)),
            (Some(c), Mode::Check) => Ok(format!(
                "newer release {} available (current: {current}){decision}",
                c.release.tag
            )),
            (Some(c), Mode::Stage) => Ok(format!("release {} staged{decision}", c.release.tag)),
            (Some(c), Mode::Auto) if waits => Ok(format!(
                "release {} staged, not applied yet{decision}",
                c.release.tag
            )),
            (Some(c), Mode::Auto) => {
                // The last moment a rollback asked for meanwhile wins.
                self.check_cancel()?;
                self.apply(payload, &c)
            }
        }
    }

    /// Switches to a staged candidate, with the health gate.
    fn apply(&mut self, payload: &mut dyn Payload, candidate: &Candidate) -> Result<String, Error> {
        let to = candidate.release.tag.clone();
        self.switch(payload, &to, Why::Update)?;
        Ok(format!("updated to {to}"))
    }

    /// Back to the previous release (`moltd rollback`). The release left is
    /// marked bad, so that the next check does not return to it.
    fn rollback(&mut self, payload: &mut dyn Payload) -> Result<String, Error> {
        let previous = self
            .state
            .previous
            .clone()
            .ok_or(Error::NothingToRollBack)?;
        if !self.config.releases_dir().join(&previous).is_dir() {
            return Err(Error::NothingToRollBack);
        }
        let current = self.state.current.as_deref().unwrap_or("nothing installed");
        crate::notice!("rolling back from {current} to {previous}");
        self.reporter.total_steps(UPDATE_STEPS);
        let result = self.switch(payload, &previous, Why::Rollback);
        if let Err(err) = &result {
            self.reporter.failed(chain(err));
        }
        result?;
        Ok(format!("rolled back to {previous}"))
    }

    /// Clears the bad or refused mark of `tags` (`moltd unmark`), so that a
    /// release that failed for a reason of its surroundings may be chosen
    /// again.
    pub fn unmark(&mut self, tags: &[String]) -> Result<String, Error> {
        // If the file cannot be saved, memory keeps the marks too, so what
        // the reply says and what the next start reads agree.
        let marks = (self.state.bad.clone(), self.state.refused.clone());
        self.state.unmark(tags)?;
        if let Err(err) = self.save_state() {
            (self.state.bad, self.state.refused) = marks;
            return Err(err);
        }
        self.reporter.unmarked(&self.state);
        let them = if tags.len() == 1 { "it" } else { "them" };
        Ok(format!(
            "{} no longer marked bad: the next check may choose {them} again",
            tags.join(", ")
        ))
    }

    fn switch(&mut self, payload: &mut dyn Payload, to: &str, why: Why) -> Result<(), Error> {
        // A FleetLock slot (when configured) spans the whole switch.
        let result = self
            .lock_slot()
            .and_then(|()| self.switch_steps(payload, to, why));
        if let Err(problem) = payload.release() {
            log::error!("cannot hand the payload back: {problem}");
        }
        self.unlock_slot();
        result
    }

    fn switch_steps(&mut self, payload: &mut dyn Payload, to: &str, why: Why) -> Result<(), Error> {
        let sw = self.config.switch.clone();
        let from = self.state.current.clone();
        let from_text = from.clone().unwrap_or_default();
        self.reporter.target(to);
        if let Some(command) = &sw.preflight {
            self.preflight(payload, command, &from_text, to, why)?;
        }
        if let Some(command) = &sw.pre_update {
            self.reporter
                .phase(Phase::Stopping, 5, "running MOLTD_PRE_UPDATE".into());
            let status = payload
                .run_hook(command, &[&from_text, to], None, sw.hook_timeout)
                .map_err(Error::Supervisor)?;
            if status != ExitStatus::Exited(0) {
                return Err(Error::Hook {
                    name: "MOLTD_PRE_UPDATE",
                    code: status.shell_code(),
                });
            }
        }
        self.state.applying = Some(to.to_owned());
        self.save_state()?;
        if sw.strategy == Strategy::Overlap {
            return self.overlap_steps(payload, to, why, from);
        }
        self.reporter.phase(
            Phase::Stopping,
            5,
            format!("stopping the services of {from_text}"),
        );
        let names = match payload.stop(sw.restart.as_deref()) {
            Ok(names) => names,
            Err(problem) => return self.abandon(payload, None, Error::Supervisor(problem)),
        };
        self.reporter.phase(
            Phase::Switching,
            6,
            format!("switching current from {from_text} to {to}"),
        );
        if let Err(err) = layout::switch_current(&self.config.app_dir, to) {
            return self.abandon(payload, Some(&names), err);
        }
        self.reporter
            .phase(Phase::Starting, 7, format!("starting {}", names.join(", ")));
        let started = payload.start(&names);
        self.reporter.phase(
            Phase::HealthCheck,
            8,
            format!("checking the health of {to}"),
        );
        let healthy = started.and_then(|()| self.health(payload, &names));
        match healthy {
            Ok(()) => {
                if let (Why::Rollback, Some(left)) = (why, &from) {
                    self.state.bad.insert(left.clone());
                }
                self.commit(payload, to, from)
            }
            Err(problem) => {
                let reason = format!("release {to} failed its health check: {problem}");
                self.undo(payload, &names, from.as_deref(), to, why, reason)
            }
        }
    }

    /// `MOLTD_PREFLIGHT` (`sh -c COMMAND moltd FROM TO`) in the folder of
    /// release `to`, before anything stops. A non-zero exit marks an
    /// update's release bad (a rollback's target is only not switched to);
    /// either way nothing was stopped. A hook that could not run or timed
    /// out marks nothing: that may be the machine's fault.
    pub(super) fn preflight(
        &mut self,
        payload: &mut dyn Payload,
        command: &str,
        from: &str,
        to: &str,
        why: Why,
    ) -> Result<(), Error> {
        self.reporter.phase(
            Phase::Stopping,
            5,
            format!("running MOLTD_PREFLIGHT in {to}"),
        );
        let dir = self.config.releases_dir().join(to);
        let timeout = self.config.switch.hook_timeout;
        let status = payload
            .run_hook(command, &[from, to], Some(&dir), timeout)
            .map_err(Error::Supervisor)?;
        if status == ExitStatus::Exited(0) {
            return Ok(());
        }
        if why == Why::Update {
            self.state.bad.insert(to.to_owned());
            self.save_state()?;
        }
        Err(Error::Preflight {
            tag: to.to_owned(),
            code: status.shell_code(),
        })
    }

    /// Gives up a switch before `current` changed: restarts what was stopped.
    pub(super) fn abandon(
        &mut self,
        payload: &mut dyn Payload,
        stopped: Option<&[String]>,
        err: Error,
    ) -> Result<(), Error> {
        if let Some(names) = stopped {
            if let Err(problem) = payload.start(names) {
                log::error!("cannot restart {}: {problem}", names.join(", "));
            }
        }
        self.state.applying = None;
        self.save_state()?;
        Err(err)
    }

    pub(super) fn commit(
        &mut self,
        payload: &mut dyn Payload,
        to: &str,
        from: Option<String>,
    ) -> Result<(), Error> {
        let sw = self.config.switch.clone();
        self.commit_state(to, from.clone())?;
        if let Some(command) = &sw.post_update {
            let from_text = from.clone().unwrap_or_default();
            match payload.run_hook(command, &[&from_text, to], None, sw.hook_timeout) {
                Ok(ExitStatus::Exited(0)) => {}
                Ok(status) => log::warn!(
                    "MOLTD_POST_UPDATE exited with {}; the update stays",
                    status.shell_code()
                ),
                Err(problem) => log::warn!("cannot run MOLTD_POST_UPDATE: {problem}"),
            }
        }
        let releases = self.config.releases_dir();
        for tag in layout::prune(&releases, sw.keep, &[Some(to), from.as_deref()]) {
            log::info!("removed the old release {tag}");
        }
        self.reporter
            .phase(Phase::Completed, UPDATE_STEPS, format!("now running {to}"));
        Ok(())
    }

    /// Switches back to `from` after a failed gate, checks it, and marks
    /// `to` bad (for an update) or just reports (for a manual rollback).
    pub(super) fn undo(
        &mut self,
        payload: &mut dyn Payload,
        names: &[String],
        from: Option<&str>,
        to: &str,
        why: Why,
        reason: String,
    ) -> Result<(), Error> {
        let Some(from) = from else {
            self.state.bad.insert(to.to_owned());
            self.state.applying = None;
            self.save_state()?;
            return Err(Error::Unhealthy(reason));
        };
        log::warn!("{reason}; switching back to {from}");
        self.reporter
            .phase(Phase::Stopping, 5, format!("{reason}; stopping it"));
        let stopped = payload.stop(Some(names));
        self.reporter.phase(
            Phase::Switching,
            6,
            format!("switching current back to {from}"),
        );
        layout::switch_current(&self.config.app_dir, from)?;
        self.reporter
            .phase(Phase::Starting, 7, format!("starting {from} again"));
        let back = stopped.and_then(|_| payload.start(names));
        let back = back.and_then(|()| self.health(payload, names));
        if let Err(problem) = &back {
            log::error!("release {from} is not healthy either: {problem}");
        }
        if why == Why::Update {
            self.state.bad.insert(to.to_owned());
        }
        self.state.applying = None;
        self.save_state()?;
        let reason = match back {
            Ok(()) => format!("{reason}; rolled back to {from}"),
            Err(problem) => {
                format!("{reason}; rolled back to {from}, which is not healthy either: {problem}")
            }
        };
        self.reporter.rolled_back(reason.clone());
        Err(Error::RolledBack(reason))
    }
}
/// How a run ends, for the poll schedule: the caller counts failures in a
/// row.
pub fn outcome<T>(result: Result<T, Error>) -> poll::Outcome {
    match result {
        Ok(_) => poll::Outcome::Normal,
        Err(Error::RateLimited { wait, .. }) => poll::Outcome::RateLimited(wait, 1),
        Err(err) if err.is_transient() => poll::Outcome::Failed(1),
        Err(_) => poll::Outcome::Normal,
    }
}
