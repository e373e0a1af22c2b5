//! The status document: what the updater is doing, for people and apps.
//!
//! A JSON file (`MOLTD_STATUS_FILE`, default `/run/moltd/status.json`),
//! replaced atomically at every step, so an app can draw a progress bar by
//! reading it whenever it likes. Every step is also logged. Progress writes
//! are throttled; step changes are written at once. `moltd status` reads the
//! same document from the running supervisor over the control socket.

use super::release::Release;
use super::state::write_atomically;
use crate::control::UpdateReply;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Idle,
    Checking,
    Downloading,
    Verifying,
    Unpacking,
    /// Staged and waiting (`MOLTD_MODE=stage`, `moltd update --stage-only`).
    Staged,
    Stopping,
    Switching,
    Starting,
    HealthCheck,
    Completed,
    RolledBack,
    Failed,
}

impl Phase {
    /// The name used in the document (and by the tests' `MOLTD_TEST_CRASH_AT`).
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// A newer release that was found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Available {
    pub tag: String,
    pub notes: Option<String>,
    pub url: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub state: Phase,
    pub current: Option<String>,
    /// The release a rollback would return to.
    pub previous: Option<String>,
    pub target: Option<String>,
    pub step: u32,
    pub total_steps: u32,
    /// Percent of the download, when its size is known.
    pub progress: Option<u8>,
    pub bytes_done: u64,
    pub bytes_total: Option<u64>,
    pub message: String,
    pub started_at: Option<String>,
    pub updated_at: String,
    pub last_error: Option<String>,
    pub available: Option<Available>,
    pub bad_releases: Vec<String>,
    /// Of those, the ones refused for their download, with the reason.
    #[serde(default)]
    pub refused_releases: BTreeMap<String, String>,
    /// Of those, the ones marked bad by configuration (`MOLTD_SKIP`).
    #[serde(default)]
    pub skipped_releases: Vec<String>,
    /// Why automatic updates are suspended (the release was changed by hand).
    pub suspended: Option<String>,
    /// Totals since moltd started, for metrics.
    #[serde(default)]
    pub counters: Counters,
    /// The fleet rollout as this node sees it: its wariness and what the
    /// last check decided (see `update::rollout`).
    #[serde(default)]
    pub rollout: Option<super::rollout::Report>,
    /// moltd's own version and updates (`MOLTD_SELF_REPO`).
    #[serde(default)]
    pub moltd: SelfStatus,
}

/// moltd's own version, and where its self-updates are.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelfStatus {
    /// The version running (the agent's, which PID 1 restarts on each new
    /// binary).
    pub version: String,
    /// `MOLTD_SELF_REPO`, if set.
    pub repo: Option<String>,
    /// The newer version last found, if any.
    pub available: Option<String>,
    /// The verified binary waiting for PID 1, if any.
    pub staged: Option<PathBuf>,
    /// What the last self-update did or why it did nothing.
    pub message: Option<String>,
    /// The last failure of a check or download of moltd itself.
    pub last_error: Option<String>,
    /// Versions not offered again, with the reason (a failed verification,
    /// or PID 1's refusal); `moltd unmark TAG` clears one.
    pub refused: BTreeMap<String, String>,
}

impl SelfStatus {
    /// Lines for `moltd status` and `moltd update --check`: the version
    /// running and where its own updates are. Text from the feed (tags,
    /// reasons) is escaped.
    pub fn summary(&self) -> String {
        use crate::logging::Escaped;
        use std::fmt::Write;
        let mut text = match &self.repo {
            Some(repo) => format!(
                "moltd: {} (updates itself from {})\n",
                self.version,
                Escaped(repo)
            ),
            None => format!("moltd: {} (MOLTD_SELF_REPO not set)\n", self.version),
        };
        if let Some(tag) = &self.available {
            let staged = match &self.staged {
                Some(path) => format!(", staged in {}", path.display()),
                None => String::new(),
            };
            let _ = writeln!(text, "newer moltd: {}{staged}", Escaped(tag));
        }
        if let Some(message) = &self.message {
            let _ = writeln!(text, "moltd's own update: {}", Escaped(message));
        }
        if let Some(error) = &self.last_error {
            let _ = writeln!(text, "moltd's last error: {}", Escaped(error));
        }
        for (tag, reason) in &self.refused {
            let _ = writeln!(
                text,
                "moltd {} refused (moltd unmark {} to retry): {}",
                Escaped(tag),
                Escaped(tag),
                Escaped(reason)
            );
        }
        text
    }
}

/// What the updater did since moltd started (the metrics' counters).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub checks: u64,
    pub applied: u64,
    pub failed: u64,
    pub rolled_back: u64,
    pub downloaded_bytes: u64,
    /// Unix time of the last check that read the release list.
    pub last_successful_check: Option<u64>,
}

/// Something an operator is told about (see `crate::observe`'s webhook).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Notice {
    Available,
    Applied,
    Failed,
    RolledBack,
}

/// Called with the status after every write, and with a notice when one
/// is due; it must not block (the observers queue the work).
pub type Hook = Box<dyn Fn(&Status, Option<Notice>) + Send>;

/// The longest a download goes without a progress line.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Steps of a staging run: check, download and unpack, verify, stage.
pub const STAGING_STEPS: u32 = 4;
/// Steps of a whole update: the staging steps, then stop, switch, start,
/// health check, commit.
pub const UPDATE_STEPS: u32 = 9;

pub struct Reporter {
    path: Option<PathBuf>,
    status: Status,
    last_write: Option<Instant>,
    warned: bool,
    /// Test-only: see [`Reporter::crash_at`].
    #[cfg(feature = "test-hooks")]
    crash_at: Option<String>,
    /// A copy kept for `moltd status`, read by the supervisor's side while
    /// an update runs.
    shared: Arc<Mutex<Status>>,
    hook: Option<Hook>,
    /// The newer release last announced, so each is announced once.
    announced: Option<String>,
    /// The download's last progress line: its tenth and when.
    progress_logged: Option<(u8, Instant)>,
}

impl Reporter {
    pub fn new(path: Option<PathBuf>) -> Reporter {
        let status = Status {
            state: Phase::Idle,
            current: None,
            previous: None,
            target: None,
            step: 0,
            total_steps: STAGING_STEPS,
            progress: None,
            bytes_done: 0,
            bytes_total: None,
            message: String::new(),
            started_at: None,
            updated_at: rfc3339(SystemTime::now()),
            last_error: None,
            available: None,
            bad_releases: Vec::new(),
            refused_releases: BTreeMap::new(),
            skipped_releases: Vec::new(),
            suspended: None,
            counters: Counters::default(),
            rollout: None,
            moltd: SelfStatus::default(),
        };
        Reporter {
            path,
            shared: Arc::new(Mutex::new(status.clone())),
            status,
            last_write: None,
            warned: false,
            #[cfg(feature = "test-hooks")]
            crash_at: None,
            hook: None,
            announced: None,
            progress_logged: None,
        }
    }

    /// Names a state on entering which moltd kills itself
    /// (`MOLTD_TEST_CRASH_AT`), so that tests can cut an update short at any
    /// step: the update agent, or with `pid1:` the supervising moltd too. Not in the shipped binary: the tests build it with the
    /// `test-hooks` feature.
    #[cfg(feature = "test-hooks")]
    pub fn crash_at(&mut self, state: Option<String>) {
        self.crash_at = state;
    }

    /// Installs the hook the observers (metrics file, webhook) listen on.
    pub fn set_hook(&mut self, hook: Hook) {
        self.hook = Some(hook);
    }

    fn notify(&self, notice: Notice) {
        if let Some(hook) = &self.hook {
            hook(&self.status, Some(notice));
        }
    }

    /// The status as last written, shared with other threads.
    pub fn shared(&self) -> Arc<Mutex<Status>> {
        self.shared.clone()
    }

    /// Shows the installed releases and the bad ones as the state has them.
    pub fn releases(&mut self, state: &super::state::State) {
        self.status.current = state.current.clone();
        self.status.previous = state.previous.clone();
        self.status.bad_releases = state.marked();
        self.status.refused_releases = state
            .refused
            .iter()
            .map(|(tag, refusal)| (tag.clone(), refusal.reason.clone()))
            .collect();
        self.status.skipped_releases = state.skip.iter().cloned().collect();
        self.status.moltd.refused = (state.moltd.refused.iter())
            .map(|(tag, refusal)| (tag.clone(), refusal.reason.clone()))
            .collect();
        // What is installed now, or was just marked, is not on offer.
        let stale = self.status.available.as_ref().is_some_and(|a| {
            self.status.bad_releases.contains(&a.tag)
                || state.current.as_deref() == Some(a.tag.as_str())
        });
        if stale {
            self.status.available = None;
        }
    }

    /// The releases in `state` as a new updater finds them, shown at once
    /// to whoever asks (`moltd status` from a restarted update agent), the
    /// status file left as the last run wrote it.
    pub fn seed(&mut self, state: &super::state::State) {
        self.releases(state);
        if let Ok(mut shared) = self.shared.lock() {
            *shared = self.status.clone();
        }
    }

    /// Bad marks cleared outside a run (`moltd unmark`): written at once, so
    /// the status document, `moltd status` and the metrics show it.
    pub fn unmarked(&mut self, state: &super::state::State) {
        self.releases(state);
        self.write();
    }

    /// The release a switch is moving to.
    pub fn target(&mut self, tag: &str) {
        self.status.target = Some(tag.to_owned());
    }

    /// How many steps the run in progress has.
    pub fn total_steps(&mut self, total: u32) {
        self.status.total_steps = total;
    }

    /// Automatic updates are suspended for `reason`, or resumed (`None`).
    pub fn suspended(&mut self, reason: Option<String>) {
        if reason != self.status.suspended {
            match &reason {
                Some(why) => log::warn!("automatic updates suspended: {why}"),
                None => log::info!("automatic updates resumed"),
            }
            self.status.suspended = reason;
            self.write();
        }
    }

    /// Updates cannot run (`reason`); `current` runs as installed.
    pub fn off(&mut self, current: Option<String>, reason: &str) {
        let message = format!("updates are off: {reason}");
        log::warn!("{message}");
        self.set_off(current, message);
    }

    /// The app's updates are off as configured (`MOLTD_SELF_REPO` alone):
    /// said in the status, not logged as a problem.
    pub fn app_off(&mut self, reason: &str) {
        self.set_off(None, format!("updates of the app are off: {reason}"));
    }

    fn set_off(&mut self, current: Option<String>, message: String) {
        self.status.current = current;
        self.status.message = message.clone();
        self.status.suspended = Some(message);
        self.write();
    }

    /// Ends a switch that failed its health check and was undone.
    pub fn rolled_back(&mut self, reason: String) {
        log::error!("{reason}");
        self.status.state = Phase::RolledBack;
        self.status.step = self.status.total_steps;
        self.status.message = reason.clone();
        self.status.last_error = Some(reason);
        self.status.counters.rolled_back += 1;
        self.write();
        self.notify(Notice::RolledBack);
    }

    pub fn status(&self) -> &Status {
        &self.status
    }

    /// Enters a step: logged and written at once. Switching and the end of
    /// an update are notices: shown at the default level.
    pub fn phase(&mut self, state: Phase, step: u32, message: String) {
        match state {
            Phase::Switching | Phase::Completed => crate::notice!("{message}"),
            _ => log::info!("{message}"),
        }
        match state {
            Phase::Checking => self.status.counters.checks += 1,
            Phase::Completed => self.status.counters.applied += 1,
            _ => {}
        }
        if step == 1 {
            self.status.started_at = Some(rfc3339(SystemTime::now()));
            self.clear_progress();
        }
        self.status.state = state;
        self.status.step = step;
        self.status.message = message;
        self.write();
        if state == Phase::Completed {
            self.notify(Notice::Applied);
        }
        #[cfg(feature = "test-hooks")]
        if let Some(at) = &self.crash_at {
            // `pid1:STATE` kills the supervising moltd first, as `kill -9`
            // from outside would (the update agent then goes too).
            let (pid1, at) = match at.strip_prefix("pid1:") {
                Some(at) => (true, at),
                None => (false, at.as_str()),
            };
            if at == state.name() {
                log::warn!(
                    "MOLTD_TEST_CRASH_AT={}: killing moltd",
                    self.crash_at.as_deref().unwrap_or_default()
                );
                if pid1 {
                    crate::sys::process::kill_parent();
                }
                crate::sys::process::kill_self();
            }
        }
    }

    /// The end of a successful check: the newer release, if any.
    pub fn found(&mut self, release: Option<&Release>) {
        self.status.counters.last_successful_check = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs());
        self.status.available = release.map(|r| Available {
            tag: r.tag.clone(),
            notes: r.notes.clone(),
            url: r.url.clone(),
        });
        self.status.target = release.map(|r| r.tag.clone());
        let tag = release.map(|r| r.tag.clone());
        if tag.is_some() && tag != self.announced {
            self.announced = tag;
            self.notify(Notice::Available);
        }
    }

    /// What the last check decided about the rollout.
    pub fn rollout(&mut self, report: super::rollout::Report) {
        self.status.rollout = Some(report);
    }

    /// Forgets the download's progress (a new run, or an abandoned one).
    fn clear_progress(&mut self) {
        self.status.bytes_done = 0;
        self.status.bytes_total = None;
        self.status.progress = None;
        self.progress_logged = None;
    }

    /// Download progress; written at most every 200 ms, and at the end.
    pub fn progress(&mut self, done: u64, total: Option<u64>) {
        self.status.counters.downloaded_bytes += done.saturating_sub(self.status.bytes_done);
        self.status.bytes_done = done;
        self.status.bytes_total = total;
        self.status.progress = total
            .filter(|t| *t > 0)
            .map(|t| (done.min(t) * 100 / t) as u8);
        let due = self
            .last_write
            .is_none_or(|w| w.elapsed() >= Duration::from_millis(200));
        if due || Some(done) == total {
            self.write();
        }
        self.log_progress();
    }

    /// A progress notice at every tenth of the download, or every
    /// [`PROGRESS_EVERY`] when it goes slower (or its size is unknown).
    /// Called from the download's read loop, so nothing ticks when idle.
    fn log_progress(&mut self) {
        let now = Instant::now();
        let tenth = self.status.progress.map(|p| p / 10);
        // The download's start counts as a line at 0%.
        let (last, at) = *self.progress_logged.get_or_insert((0, now));
        let new_tenth = tenth.is_some_and(|t| t > last);
        if !new_tenth && now.duration_since(at) < PROGRESS_EVERY {
            return;
        }
        self.progress_logged = Some((tenth.unwrap_or(last), now));
        let tag = self.status.target.as_deref().unwrap_or("the release");
        let done = self.status.bytes_done;
        match (self.status.progress, self.status.bytes_total) {
            (Some(percent), Some(total)) => {
                crate::notice!("downloading {tag}: {percent}% ({done} of {total} bytes)")
            }
            _ => crate::notice!("downloading {tag}: {done} bytes"),
        }
    }

    /// A run stopped by a rollback: back to idle, with no failure counted,
    /// no notice and no last error (the release was not at fault).
    pub fn cancelled(&mut self) {
        let message = match &self.status.target {
            Some(tag) => format!("update to {tag} cancelled by rollback"),
            None => "update cancelled by rollback".to_owned(),
        };
        // Both the staging run and the update around it end here.
        if self.status.state == Phase::Idle && self.status.message == message {
            return;
        }
        log::info!("{message}");
        self.status.state = Phase::Idle;
        self.status.message = message;
        // The download was abandoned: its progress no longer means anything.
        self.clear_progress();
        self.write();
    }

    /// What the status says of moltd itself before any check (shown with
    /// the next [`Reporter::seed`]).
    pub fn seed_moltd(&mut self, status: SelfStatus) {
        self.status.moltd = status;
    }

    /// Changes what the status says of moltd itself, and writes it.
    pub fn moltd(&mut self, change: impl FnOnce(&mut SelfStatus)) {
        change(&mut self.status.moltd);
        self.write();
    }

    /// Records a failure: the state becomes `failed` with the reason.
    pub fn failed(&mut self, error: String) {
        log::error!("{error}");
        // A rollback ends in this error too; it was announced as one.
        let announce = self.status.state != Phase::RolledBack;
        self.status.state = Phase::Failed;
        self.status.message = error.clone();
        self.status.last_error = Some(error);
        self.status.counters.failed += 1;
        self.write();
        if announce {
            self.notify(Notice::Failed);
        }
    }

    fn write(&mut self) {
        self.last_write = Some(Instant::now());
        self.status.updated_at = rfc3339(SystemTime::now());
        if let Ok(mut shared) = self.shared.lock() {
            *shared = self.status.clone();
        }
        if let Some(hook) = &self.hook {
            hook(&self.status, None);
        }
        let Some(path) = &self.path else { return };
        let json = serde_json::to_vec_pretty(&self.status).unwrap_or_default();
        if let Err(err) = write_atomically(path, &json) {
            if !self.warned {
                log::warn!("cannot write the status file {}: {err}", path.display());
                self.warned = true;
            }
        }
    }
}

/// `2024-05-01T12:34:56Z`.
/// The status document as JSON, the reply to a status request.
pub fn reply(status: &Mutex<Status>) -> UpdateReply {
    let status = status.lock().map_err(|_| "status unavailable")?;
    serde_json::to_string_pretty(&*status).map_err(|err| err.to_string())
}

pub fn rfc3339(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (proleptic Gregorian).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests;
