//! Finding, downloading, verifying and staging a new release while the app
//! keeps running.
//!
//! The pieces, in the order a check runs them:
//!
//! * [`config`] reads the environment once and checks it.
//! * [`source`] reads the release list (GitHub, Gitea, manifest) with ETags
//!   and rate-limit handling; [`release`] is the common shape it produces.
//! * [`select`] applies the version policy and picks the asset.
//! * [`verify`] finds the expected SHA-256 and the signature key.
//! * [`fetch`] streams the asset through the hashes and gunzip into
//!   [`unpack`], inside a folder from [`staging`], which renames it into
//!   `releases/<tag>` only when everything passed.
//! * [`status`] writes the status document; [`state`] keeps what must
//!   survive a restart; [`poll`] says when to look again.
//!
//! [`Updater`] ties them together for one check or one staging run. It does
//! no waiting of its own: [`Updater::watch`] is a plain loop for the CLI, and
//! the supervisor can drive [`Updater::run_once`] and [`poll::Schedule`]
//! from its own event loop instead.

mod adopt;
mod apply;
pub mod config;
mod error;
pub mod fetch;
mod first_boot;
mod fleetlock;
mod health;
pub mod http;
pub mod itself;
pub mod layout;
pub mod listing;
mod overlap;
mod plan;
pub mod poll;
pub mod release;
pub mod rollout;
pub mod select;
pub mod source;
pub mod staging;
pub mod state;
pub mod status;
pub mod unpack;
pub mod verify;

pub use apply::{Payload, outcome};
pub use config::{Config, Mode};
pub use error::{Error, chain};

use http::Http;
use plan::{Checks, Plan, Unchecked, app_unchecked, plan, read_listing};
use select::{AssetRule, Candidate};
use state::State;
use status::{Phase, Reporter, STAGING_STEPS};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Why the app's updates are off with `MOLTD_SELF_REPO` alone.
pub const APP_OFF: &str = "no release source for the app (MOLTD_REPO, GH_USER and GH_REPO, or MOLTD_URL); moltd updates itself from MOLTD_SELF_REPO";

/// Why updates cannot run although a source is configured, when the
/// services can run without them: moltd cannot write its own files in the
/// app dir (a read-only mount, another owner) and `current` names a
/// release, or only moltd updates itself (`MOLTD_SELF_REPO` alone). `None`
/// when moltd must not start (a mistake in the configuration, another
/// moltd managing the app dir, nothing installed).
pub fn updates_off(config: &Config, err: &Error) -> Option<String> {
    let installed = config.source.is_none() || config.app_dir.join("current").is_dir();
    (installed && matches!(err, Error::Io { .. })).then(|| chain(err))
}

/// The settings that decide whether a release's download is accepted, as
/// a [`release::fingerprint`].
fn verification_settings(config: &Config) -> String {
    let fields = [
        format!("{:?}", config.asset),
        format!("{:?}", config.require_checksum),
        format!("{:?}", config.minisign_key),
        format!("{:?}", config.strip_components),
        format!("{:?}", config.entry),
        format!("{:?}", config.limits),
    ];
    release::fingerprint(fields.iter().map(String::as_str))
}

/// What one run found and did.
#[derive(Debug)]
pub struct Ran {
    pub current: Option<String>,
    /// The newer release this node takes, if there is one.
    pub newer: Option<Candidate>,
    /// Where it was staged (modes `stage` and `auto`), or where the
    /// release to leave a withdrawn one for is.
    pub staged: Option<PathBuf>,
    /// Whether `newer` is applied now or waits (see [`rollout`]).
    pub decision: Option<rollout::Decision>,
    /// The current release is withdrawn: the release to go back to, and why.
    pub leave: Option<(Candidate, String)>,
}

pub struct Updater {
    /// `supervisor.lock`, held while the updater lives: no other moltd
    /// writes this app's state meanwhile (see [`staging::manage`]).
    _manage: staging::Manage,
    config: Config,
    http: Http,
    state: State,
    reporter: Reporter,
    key: Option<minisign_verify::PublicKey>,
    /// Set from another thread to stop a download or staging in progress
    /// (a rollback asked for meanwhile); cleared by the one who set it.
    cancel: Arc<AtomicBool>,
    /// What `recover` did at start, if anything.
    recovered: Option<Recovery>,
    /// When a release the last check judged becomes eligible (Unix time).
    wake_at: Option<u64>,
}

/// What [`Updater::open`] found cut short and undid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// A switch: `current` names the committed release again.
    WentBack,
    /// A first install before its gate passed: removed, nothing installed.
    Discarded,
}

impl Updater {
    pub fn new(config: Config) -> Result<Updater, Error> {
        Updater::open(config, None)
    }

    /// An updater that uses `lent`, a descriptor of `supervisor.lock`
    /// already locked by PID 1 for the update agent (a second lock on the
    /// file would fail), or takes the lock itself.
    pub fn open(config: Config, lent: Option<std::os::fd::OwnedFd>) -> Result<Updater, Error> {
        let key = config
            .minisign_key
            .as_deref()
            .map(verify::public_key)
            .transpose()
            .map_err(|source| Error::MinisignKey {
                var: "MOLTD_MINISIGN_KEY",
                source,
            })?;
        let http = Http::new(&config)?;
        // Before anything reads or repairs the state: `recover` under a
        // supervisor that is switching would undo its switch.
        let manage = match lent {
            Some(lock) => staging::Manage::Lent(lock),
            None => staging::Manage::Taken(staging::manage(&config.app_dir, &config.state_dir())?),
        };
        let mut state = State {
            skip: config.skip.clone(),
            ..State::load(&config.state_dir().join("state.json"))
        };
        let settings = verification_settings(&config);
        state.refused.retain(|tag, refusal| {
            let same = refusal.settings == settings;
            if !same {
                log::info!(
                    "release {tag} may be tried again: the settings that refused it changed"
                );
            }
            same
        });
        let settings = itself::self_settings(&config);
        state.moltd.refused.retain(|tag, refusal| {
            let same = refusal.settings == settings;
            if !same {
                log::info!("moltd {tag} may be tried again: the settings that refused it changed");
            }
            same
        });
        // Without a source for the app, moltd only updates itself: its
        // releases, `current` and a switch cut short are left as they are.
        let app = config.source.is_some();
        if app && state.current.is_none() && state.applying.is_none() {
            // An image may ship the link without moltd's state: it says.
            // Not a link to a first install cut short before its gate.
            state.current = layout::current_tag(&config.app_dir);
        }
        let releases = config.releases_dir();
        if app && releases.is_dir() {
            if let Err(err) = staging::clean_leftovers(&releases, &config.state_dir()) {
                log::warn!("{}", chain(&err));
            }
        }
        let reporter = Reporter::new(config.status_file.clone());
        let mut updater = Updater {
            _manage: manage,
            config,
            http,
            state,
            reporter,
            key,
            cancel: Arc::default(),
            recovered: None,
            wake_at: None,
        };
        #[cfg(feature = "test-hooks")]
        updater
            .reporter
            .crash_at(updater.config.switch.crash_at.clone());
        if app {
            updater.recovered = updater.recover();
            updater.unlock_slot();
            let report = rollout::Report::new(&updater.config.rollout);
            updater.reporter.rollout(report);
        }
        updater.seed_itself();
        if !app {
            updater.reporter.app_off(APP_OFF);
        }
        Ok(updater)
    }

    /// What starting undid (so services still running may run a release
    /// `current` no longer names).
    pub fn recovered(&self) -> Option<Recovery> {
        self.recovered
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Reads the release list and picks the release to move to, if any,
    /// as the rollout allows (see [`adopt`]).
    pub fn check(&mut self) -> Result<adopt::Plan, Error> {
        // A check that fails leaves the schedule's backoff alone.
        self.wake_at = None;
        self.unlock_slot();
        let url = source::listing_url(self.config.app_source()?);
        self.reporter
            .phase(Phase::Checking, 1, format!("checking {url} for releases"));
        let marks = State {
            bad: self.state.bad.clone(),
            refused: self.state.refused.clone(),
            skip: self.state.skip.clone(),
            ..State::default()
        };
        let floor = select::floor(
            &self.config.policy,
            self.state.current.as_deref(),
            self.state.previous.as_deref(),
        );
        let more = read_listing(
            &source::Reader {
                http: &self.http,
                source: self.config.app_source()?,
                limit: self.config.limits.document,
                policy: &self.config.policy,
                floor,
                current: self.state.current.as_deref(),
            },
            &mut self.state.listing,
            &marks,
        )?;
        if more.is_ok() {
            self.state.last_check = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs());
        }
        // Saved even when a later page failed: the next check goes on from
        // the pages read, instead of reading them again.
        let path = self.state_path();
        let saved = self.state.save(&path);
        if let Err(err) = saved.map_err(Error::io("save", &path)) {
            log::warn!("release list not saved: {}", chain(&err));
        }
        // The pages read are freed by now; PID 1 idles until the next check.
        crate::sys::mem::trim_heap();
        more?;
        let plan = self.plan();
        self.reporter.found(plan.newer.as_ref().map(|c| &c.release));
        Ok(plan)
    }

    /// Downloads, verifies and stages `candidate`; returns its folder. A
    /// release that fails for a fault of its own is refused (see
    /// [`state`]): not downloaded again until its assets change.
    pub fn stage(&mut self, candidate: &Candidate) -> Result<PathBuf, Error> {
        let release = &candidate.release;
        let result = self.stage_steps(candidate);
        let refusal = match &result {
            Err(err) if err.release_is_bad() => Some(state::Refusal {
                assets: state::assets_fingerprint(release),
                settings: verification_settings(&self.config),
                reason: chain(err),
            }),
            Err(_) => return result,
            Ok(_) if self.state.refused.contains_key(&release.tag) => None,
            Ok(_) => return result,
        };
        // The caller logs the error itself: once.
        match refusal {
            Some(refusal) => self.state.refused.insert(release.tag.clone(), refusal),
            None => self.state.refused.remove(&release.tag),
        };
        if let Err(err) = self.save_state() {
            log::warn!("{}", chain(&err));
        }
        result
    }

    fn stage_steps(&mut self, candidate: &Candidate) -> Result<PathBuf, Error> {
        self.check_cancel()?;
        let Updater {
            config,
            http,
            reporter,
            key,
            cancel,
            state,
            ..
        } = self;
        let release = &candidate.release;
        let tag = &release.tag;
        let releases = config.releases_dir();
        let target = staging::release_dir(&releases, tag)?;
        if target.is_dir() {
            log::info!("release {tag} is already staged in {}", target.display());
            return Ok(target);
        }
        let source = config.app_source()?;
        let rule = match (&config.asset, source) {
            (Some(glob), _) => AssetRule::Glob(glob),
            (None, config::Source::Manifest { .. }) => AssetRule::Only,
            (None, _) => AssetRule::Default,
        };
        let checks = Checks {
            rule,
            unchecked: app_unchecked(config.require_checksum),
            key: key.as_ref(),
            key_var: "MOLTD_MINISIGN_KEY",
        };
        let plan = plan(http, config, source, candidate, &checks)?;
        let request = plan.request(&checks, cancel);
        let Plan {
            asset,
            expected,
            signature,
            url,
        } = &plan;
        let staging = staging::Staging::begin(&releases, &config.state_dir(), tag)?;
        // An archive hardly unpacks to less than its compressed size.
        let needed = asset.size.unwrap_or(0);
        let mut room = staging::Room::measure(&releases, config.limits.min_free, needed)?;
        let size = asset
            .size
            .map_or_else(String::new, |s| format!(" ({s} bytes)"));
        let current = state.current.as_deref().unwrap_or("nothing installed");
        crate::notice!("update to {tag} started (current: {current})");
        reporter.phase(
            Phase::Downloading,
            2,
            format!("downloading {}{size} from {url}", asset.name),
        );
        let unpacked = fetch::fetch_and_unpack(
            http,
            &request,
            &staging.tree(),
            &mut room,
            &config.limits,
            &config.timeouts,
            fetch::Content::Archive {
                strip: config.strip_components,
            },
            &mut |done, total| reporter.progress(done, total),
        )?;
        let checked = match (&expected, &signature) {
            (Some(e), Some(_)) => format!(
                "sha256 matches {} and the minisign signature verifies",
                e.origin
            ),
            (Some(e), None) => format!("sha256 matches {}", e.origin),
            (None, _) => "no checksum to compare".into(),
        };
        reporter.phase(
            Phase::Verifying,
            3,
            format!(
                "{checked}; {} entries, {} bytes unpacked",
                unpacked.entries, unpacked.bytes
            ),
        );
        reporter.phase(
            Phase::Unpacking,
            4,
            format!("moving release {tag} into {}", releases.display()),
        );
        if let Some(entry) = &config.entry {
            // Before anything is stopped: a release without the program the
            // services run would only fail its health check.
            if let Some(program) = layout::ensure_entry(&unpacked.root, entry, &asset.name)? {
                log::info!(
                    "release {tag} has no {}: linked it to {program}, its only program",
                    entry.display()
                );
            }
        }
        layout::ensure_version_file(&unpacked.root, tag)?;
        staging.commit(&unpacked.root, tag)
    }

    /// One check, and staging when the mode asks for it.
    pub fn run_once(&mut self, mode: Mode) -> Result<Ran, Error> {
        let result = self.check_and_stage(mode);
        if let Err(err) = &result {
            self.report_error(err);
        }
        result
    }

    /// Records how a run ended badly: a failure, or a cancel by rollback,
    /// which is none (no failure counted, no notice, no last error).
    fn report_error(&mut self, err: &Error) {
        match err {
            Error::Cancelled => self.reporter.cancelled(),
            err => self.reporter.failed(chain(err)),
        }
    }

    /// The flag that cancels the download or staging in progress.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    /// Stops between steps once a cancel was asked for.
    fn check_cancel(&self) -> Result<(), Error> {
        match self.cancel.load(Ordering::Relaxed) {
            true => Err(Error::Cancelled),
            false => Ok(()),
        }
    }

    fn check_and_stage(&mut self, mode: Mode) -> Result<Ran, Error> {
        let plan = self.check()?;
        let current = self.state.current.clone();
        let now = current.as_deref().unwrap_or("nothing installed");
        // What waits, and until when, when anything does.
        let waiting = match &plan.decision {
            Some(decision @ rollout::Decision::At { .. }) => {
                format!("; {}", decision.describe())
            }
            _ => String::new(),
        };
        let staged = match (&plan.leave, &plan.newer, mode) {
            (Some((to, why)), _, Mode::Check) => {
                let message = format!("{why}: moltd would go back to {}", to.release.tag);
                self.reporter.phase(Phase::Idle, 1, message);
                None
            }
            (Some((to, _)), _, _) => Some(self.stage(to)?),
            (None, None, _) => {
                let message = self.nothing_taken(now);
                self.reporter.phase(Phase::Idle, 1, message);
                None
            }
            (None, Some(c), Mode::Check) => {
                self.reporter.phase(
                    Phase::Idle,
                    1,
                    format!("newer release {} available{waiting}", c.release.tag),
                );
                None
            }
            (None, Some(c), Mode::Stage | Mode::Auto) => {
                let path = self.stage(c)?;
                self.reporter.phase(
                    Phase::Staged,
                    STAGING_STEPS,
                    format!(
                        "release {} staged in {}{waiting}",
                        c.release.tag,
                        path.display()
                    ),
                );
                Some(path)
            }
        };
        Ok(Ran {
            current,
            newer: plan.newer,
            staged,
            decision: plan.decision,
            leave: plan.leave,
        })
    }

    /// Checks forever on the schedule (interval, jitter, backoff, rate
    /// limits), for `moltd update --watch`.
    pub fn watch(&mut self, mode: Mode) -> ! {
        let mut failures = 0;
        loop {
            let outcome = apply::outcome(self.run_once(mode));
            let wait = self.config.schedule.after(outcome, &mut failures);
            log::info!("next check in {:.1}s", wait.as_secs_f64());
            std::thread::sleep(wait);
        }
    }

    pub fn status(&self) -> &status::Status {
        self.reporter.status()
    }

    /// The status document, kept current for other threads.
    pub fn shared_status(&self) -> std::sync::Arc<std::sync::Mutex<status::Status>> {
        self.reporter.shared()
    }

    /// Records a failure that happened outside a run (first boot retries).
    /// Lets the observers (metrics file, webhook) follow the status.
    pub fn set_hook(&mut self, hook: status::Hook) {
        self.reporter.set_hook(hook);
    }

    pub fn report_failure(&mut self, message: String) {
        self.reporter.failed(message);
    }
}
