//! First boot: with nothing installed there is no release to fall back
//! on, so moltd keeps a release the image shipped, or walks down the
//! eligible releases: each is staged, switched to, started and gated in
//! turn until one passes, so that one broken release (or several) never
//! keeps the services from starting for good.

use super::apply::{Payload, Why};
use super::error::Error;
use super::layout;
use super::select::{self, Candidate};
use super::status::{Phase, UPDATE_STEPS};
use super::{Updater, chain};
use std::collections::BTreeSet;

/// How many releases one round of a first boot tries before it waits on
/// the schedule: each may cost a download and a health gate.
const FIRST_BOOT_TRIES: usize = 5;

impl Updater {
    /// Makes sure a release is installed, then lets the services start:
    /// keeps the committed one, adopts one the image shipped in `releases/`,
    /// or walks down the feed's releases (see [`Updater::walk_down`]).
    pub fn ensure_installed(&mut self, payload: &mut dyn Payload) -> Result<String, Error> {
        let tag = match self.adopt()? {
            Some(tag) => {
                payload.ready().map_err(Error::Supervisor)?;
                tag
            }
            None => self.walk_down(payload)?,
        };
        if let Err(problem) = payload.release() {
            log::error!("cannot hand the payload back: {problem}");
        }
        Ok(tag)
    }

    /// The release installed without the feed: the committed one, or one
    /// the image shipped (`current`, else the newest in `releases/` not
    /// marked).
    fn adopt(&mut self) -> Result<Option<String>, Error> {
        let app = self.config.app_dir.clone();
        let releases = self.config.releases_dir();
        if let Some(tag) = self.state.current.clone() {
            if releases.join(&tag).is_dir() {
                if layout::current_tag(&app).is_none() {
                    layout::switch_current(&app, &tag)?;
                }
                if !self.manifest_path().exists() {
                    let previous = self.state.previous.clone();
                    self.commit_state(&tag, previous)?;
                }
                return Ok(Some(tag));
            }
            log::warn!(
                "the installed release {tag} is gone from {}",
                releases.display()
            );
        }
        let linked = layout::current_tag(&app).filter(|tag| releases.join(tag).is_dir());
        let marked = self.state.marked();
        let shipped = || {
            let mut tags = layout::installed(&releases);
            tags.retain(|tag| !marked.contains(tag));
            let prefix = &self.config.policy.tag_prefix;
            tags.sort_by_key(|tag| super::select::tag_version(tag, prefix));
            tags.pop()
        };
        let Some(tag) = linked.or_else(shipped) else {
            return Ok(None);
        };
        layout::ensure_version_file(&releases.join(&tag), &tag)?;
        layout::switch_current(&app, &tag)?;
        self.commit_state(&tag, None)?;
        self.reporter.phase(
            Phase::Idle,
            UPDATE_STEPS,
            format!("release {tag} adopted from the image"),
        );
        Ok(Some(tag))
    }

    /// First boot with nothing installed: tries the eligible releases newest
    /// first, at most [`FIRST_BOOT_TRIES`] of them, until one stages and
    /// passes its health gate. Each that fails is skipped with its reason
    /// (and marked, unless the failure was not its own); a network error
    /// or a rate limit ends the round at once, to try the same release again
    /// after the wait.
    fn walk_down(&mut self, payload: &mut dyn Payload) -> Result<String, Error> {
        self.reporter.total_steps(UPDATE_STEPS);
        self.check()?;
        let skipped = self.state.skipped(&self.state.listing.releases);
        let candidates =
            select::ranked(&self.state.listing.releases, &self.config.policy, &skipped);
        let any = !candidates.is_empty();
        let candidates = self.first_boot_order(candidates);
        if any && candidates.is_empty() {
            return Err(super::adopt::all_withdrawn(super::source::listing_url(
                self.config.app_source()?,
            )));
        }
        if candidates.is_empty() {
            let none = BTreeSet::new();
            let marked: Vec<_> =
                select::allowed(&self.state.listing.releases, &self.config.policy, &none)
                    .map(|(_, release)| release.tag.as_str())
                    .collect();
            if marked.is_empty() {
                return Err(Error::NoRelease {
                    feed: super::source::listing_url(self.config.app_source()?),
                });
            }
            return Err(Error::NothingInstallable(format!(
                "all are marked bad or refused ({}); 'moltd unmark TAG' lets one be tried again",
                marked.join(", ")
            )));
        }
        let mut reasons = Vec::new();
        for candidate in candidates.iter().take(FIRST_BOOT_TRIES) {
            let tag = &candidate.release.tag;
            match self.install_first(payload, candidate) {
                Ok(()) => return Ok(tag.clone()),
                Err(err) if err.is_transient() => return Err(err),
                Err(err) => {
                    log::warn!("release {tag} cannot be installed: {}", chain(&err));
                    reasons.push(format!("{tag}: {}", chain(&err)));
                }
            }
        }
        Err(Error::NothingInstallable(reasons.join("; ")))
    }

    /// Stages `candidate`, points `current` at it, lets the services start
    /// and applies the health gate. A failed gate stops them and marks the
    /// release bad; whatever failed after staging removes it, leaving
    /// nothing installed.
    fn install_first(
        &mut self,
        payload: &mut dyn Payload,
        candidate: &Candidate,
    ) -> Result<(), Error> {
        let tag = candidate.release.tag.clone();
        self.stage(candidate)?;
        self.reporter.target(&tag);
        self.state.applying = Some(tag.clone());
        self.save_state()?;
        let mut names = Vec::new();
        let failed = match self.first_gate(payload, &tag, &mut names) {
            Ok(Ok(())) => {
                self.commit_state(&tag, None)?;
                self.reporter.phase(
                    Phase::Completed,
                    UPDATE_STEPS,
                    format!("release {tag} installed"),
                );
                return Ok(());
            }
            Ok(Err(problem)) => {
                if let Err(problem) = payload.stop(Some(&names)) {
                    log::error!("cannot stop {}: {problem}", names.join(", "));
                }
                self.state.bad.insert(tag.clone());
                Error::Unhealthy(format!("failed its health check: {problem}"))
            }
            Err(err) => err,
        };
        self.discard(&tag);
        self.state.applying = None;
        self.save_state()?;
        Err(failed)
    }

    /// The first boot's switch: `current`, start (the first time, the
    /// services held until now), then the health gate's verdict on the
    /// services an update restarts (`MOLTD_RESTART`, else all), which `names`
    /// gets.
    fn first_gate(
        &mut self,
        payload: &mut dyn Payload,
        tag: &str,
        names: &mut Vec<String>,
    ) -> Result<Result<(), String>, Error> {
        if let Some(command) = self.config.switch.preflight.clone() {
            self.preflight(payload, &command, "", tag, Why::Update)?;
        }
        self.reporter
            .phase(Phase::Switching, 6, format!("switching current to {tag}"));
        layout::switch_current(&self.config.app_dir, tag)?;
        let all = payload.ready().map_err(Error::Supervisor)?;
        // The services an update would restart are the ones gated.
        *names = self.config.switch.restart.clone().unwrap_or(all);
        self.reporter
            .phase(Phase::Starting, 7, format!("starting {}", names.join(", ")));
        let started = payload.start(names);
        self.reporter.phase(
            Phase::HealthCheck,
            8,
            format!("checking the health of {tag}"),
        );
        Ok(started.and_then(|()| self.health(payload, names)))
    }

    /// Removes a release that never became the committed one: the `current`
    /// link if it names it, and its folder.
    pub(super) fn discard(&mut self, tag: &str) {
        let app = &self.config.app_dir;
        if layout::current_tag(app).as_deref() == Some(tag) {
            if let Err(err) = std::fs::remove_file(app.join("current")) {
                log::error!("cannot remove {}: {err}", app.join("current").display());
            }
        }
        let dir = self.config.releases_dir().join(tag);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => log::info!("removed the release {tag}"),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => log::error!("cannot remove {}: {err}", dir.display()),
        }
    }
}
