//! moltd's own releases (`MOLTD_SELF_REPO`): found, downloaded and verified
//! by the same code as the app's (the paged listing, the version policy,
//! the asset glob, digest and signature, the streaming pass and its
//! limits), then kept under `.moltd/self/` for PID 1, which alone may exec
//! it (`services::reexec`, which self-tests it first).
//!
//! What differs from the app's releases, and why:
//!
//! * A SHA-256 is always required, whatever `MOLTD_REQUIRE_CHECKSUM` says:
//!   what this accepts runs as PID 1. A minisign key is strongly
//!   recommended (a notice at start without one).
//! * The asset is one program: the binary itself, or a `.tar.gz` holding a
//!   file `moltd` (at its root or in its single top folder).
//! * The version compared with is the one running ([`crate::version`]), not
//!   a tag in the state; tags are `v` and semver.
//! * A refusal, of the download or by PID 1 (an older version, a failed
//!   self-test), is kept in `state.moltd` with the assets it was about, so
//!   the same binary is not downloaded and offered at every check; `moltd
//!   unmark TAG` clears it, as a republished asset does.

use super::select::{self, AssetRule, Candidate};
use super::state::{self, Refusal, State};
use super::status::SelfStatus;
use super::{
    Checks, Error, Payload, Unchecked, Updater, chain, config, fetch, plan, read_listing, staging,
};
use crate::control::SelfUpdate;
use std::fs;
use std::path::{Path, PathBuf};

/// A verified binary of a newer moltd, ready to offer PID 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    pub tag: String,
    pub path: PathBuf,
    /// Whether PID 1 should take it although it is not newer: an exact pin
    /// (`MOLTD_SELF_VERSION==1.2.3`) may go back.
    pub force: bool,
}

/// The file a `.tar.gz` asset must hold, and the name a raw one is given.
const PROGRAM: &str = "moltd";

impl Updater {
    /// Whether `MOLTD_SELF_REPO` is set.
    pub fn updates_itself(&self) -> bool {
        self.config.self_update.is_some()
    }

    /// One check of `MOLTD_SELF_REPO`: a newer moltd than the one running,
    /// downloaded and verified, or `None` (not configured, nothing newer,
    /// or only refused versions). The status shows what it found.
    pub fn check_itself(&mut self) -> Result<Option<Offer>, Error> {
        // Logged once, by whoever gets the error.
        let result = self.check_itself_steps();
        let error = result.as_ref().err().map(|err| chain(err));
        self.reporter.moltd(|status| status.last_error = error);
        result
    }

    fn check_itself_steps(&mut self) -> Result<Option<Offer>, Error> {
        let Some(settings) = self.config.self_update.clone() else {
            return Ok(None);
        };
        let version = crate::version::version();
        let running = format!("v{version}");
        log::info!(
            "checking {} for a newer moltd (running {running})",
            super::source::listing_url(&settings.source)
        );
        let marks = State {
            refused: self.state.moltd.refused.clone(),
            ..State::default()
        };
        let floor = select::floor(&settings.policy, Some(&running), None);
        let more = read_listing(
            &super::source::Reader {
                http: &self.http,
                source: &settings.source,
                limit: self.config.limits.document,
                policy: &settings.policy,
                floor,
                // Nothing of moltd's own is installed from this list.
                current: None,
            },
            &mut self.state.moltd.listing,
            &marks,
        );
        if let Err(err) = self.save_state() {
            log::warn!("moltd's release list not saved: {}", chain(&err));
        }
        crate::sys::mem::trim_heap();
        more??;
        let releases = &self.state.moltd.listing.releases;
        let newer = select::choose(
            releases,
            &settings.policy,
            Some(&running),
            &marks.skipped(releases),
        );
        let Some(candidate) = newer else {
            // What was staged runs now (PID 1 kept its own copy), or was
            // refused: nothing is on offer.
            self.forget_staged_except(&self.config.state_dir().join("self"), None);
            self.reporter.moltd(|status| {
                status.available = None;
                status.staged = None;
                status.message = Some(format!("no newer moltd (running {running})"));
            });
            return Ok(None);
        };
        let tag = candidate.release.tag.clone();
        crate::notice!("a newer moltd is available: {tag} (running {running})");
        self.reporter.moltd(|status| {
            status.available = Some(tag.clone());
            status.message = Some(format!("downloading moltd {tag}"));
        });
        let staged = self.stage_itself(&settings, &candidate);
        let refusal = match &staged {
            Err(err) if err.release_is_bad() => Some(chain(err)),
            _ => None,
        };
        if let Some(reason) = refusal {
            self.refuse_itself(&candidate.release, &reason);
        }
        let path = staged?;
        // Only an exact pin chooses an older version.
        let force = semver::Version::parse(version).is_ok_and(|v| candidate.version < v);
        self.reporter.moltd(|status| {
            status.staged = Some(path.clone());
            status.message = Some(format!(
                "moltd {tag} verified and staged in {}",
                path.display()
            ));
        });
        Ok(Some(Offer { tag, path, force }))
    }

    /// One scheduled self-update: a newer moltd from `MOLTD_SELF_REPO`,
    /// verified, offered to PID 1. Returns what happened, or why nothing
    /// did.
    pub fn update_itself(&mut self, payload: &mut dyn Payload) -> Result<String, String> {
        let running = crate::version::version();
        match self.check_itself().map_err(|err| chain(&err))? {
            None => Ok(format!("no newer moltd (running {running})")),
            Some(offer) => self.offer(payload, &offer),
        }
    }

    /// `POST /self-update`: the binary `request` names, or with none a
    /// check of `MOLTD_SELF_REPO` now.
    pub(super) fn request_itself(
        &mut self,
        payload: &mut dyn Payload,
        request: Option<SelfUpdate>,
    ) -> Result<String, String> {
        let Some(request) = request else {
            if !self.updates_itself() {
                return Err("moltd does not update itself: MOLTD_SELF_REPO is not set".into());
            }
            return self.update_itself(payload);
        };
        let path = request.path.display().to_string();
        match payload.replace_pid1(&request)? {
            Ok(version) => {
                self.itself_replaced(&version);
                Ok(format!(
                    "PID 1 is replacing itself with moltd {version} from {path}"
                ))
            }
            // PID 1's reason says what refused it.
            Err(reason) => {
                self.reporter
                    .moltd(|status| status.message = Some(format!("{path}: {reason}")));
                Err(reason)
            }
        }
    }

    /// Offers PID 1 the verified `offer`; a refusal is remembered.
    fn offer(&mut self, payload: &mut dyn Payload, offer: &Offer) -> Result<String, String> {
        let request = SelfUpdate {
            path: offer.path.clone(),
            force: offer.force,
        };
        match payload.replace_pid1(&request)? {
            Ok(version) => {
                self.itself_replaced(&version);
                Ok(format!("PID 1 is replacing itself with moltd {version}"))
            }
            Err(reason) if busy(&reason) => {
                let message = format!(
                    "moltd {}: {reason}; offered again at the next check",
                    offer.tag
                );
                self.reporter
                    .moltd(|status| status.message = Some(message.clone()));
                Err(message)
            }
            Err(reason) => {
                self.itself_refused(offer, &reason);
                Err(format!("moltd {}: {reason}", offer.tag))
            }
        }
    }

    /// Downloads and verifies `candidate` into `.moltd/self/moltd-TAG`
    /// (renamed there only once it passed), or finds it there already.
    fn stage_itself(
        &mut self,
        settings: &config::SelfUpdate,
        candidate: &Candidate,
    ) -> Result<PathBuf, Error> {
        let tag = &candidate.release.tag;
        let dir = self.config.state_dir().join("self");
        let name = staging::release_dir(&dir, tag)?
            .file_name()
            .map(|name| format!("{PROGRAM}-{}", name.to_string_lossy()))
            .unwrap_or_default();
        let target = dir.join(name);
        if target.is_file() {
            log::info!("moltd {tag} is already staged in {}", target.display());
            return Ok(target);
        }
        let key = (settings.minisign_key.as_deref())
            .map(super::verify::public_key)
            .transpose()
            .map_err(|source| Error::MinisignKey {
                var: "MOLTD_SELF_MINISIGN_KEY",
                source,
            })?;
        let checks = Checks {
            rule: AssetRule::Glob(&settings.asset),
            unchecked: Unchecked::Refused {
                hint: "moltd never runs a binary of itself unchecked",
            },
            key: key.as_ref(),
            key_var: "MOLTD_SELF_MINISIGN_KEY",
        };
        let plan = plan(
            &self.http,
            &self.config,
            &settings.source,
            candidate,
            &checks,
        )?;
        let asset = plan.asset;
        let archive = asset.name.ends_with(".tar.gz") || asset.name.ends_with(".tgz");
        let content = match archive {
            true => fetch::Content::Archive { strip: None },
            false => fetch::Content::File(Path::new(PROGRAM)),
        };
        fs::create_dir_all(&dir).map_err(Error::io("create", &dir))?;
        let tree = dir.join(format!(".staging-{}", asset.name));
        remove_tree(&tree)?;
        fs::create_dir(&tree).map_err(Error::io("create", &tree))?;
        let request = plan.request(&checks, &self.cancel);
        let result = (|| {
            let needed = asset.size.unwrap_or(0);
            let mut room = staging::Room::measure(&dir, self.config.limits.min_free, needed)?;
            let unpacked = fetch::fetch_and_unpack(
                &self.http,
                &request,
                &tree,
                &mut room,
                &self.config.limits,
                &self.config.timeouts,
                content,
                &mut |_, _| {},
            )?;
            let program = unpacked.root.join(PROGRAM);
            let regular = fs::symlink_metadata(&program).is_ok_and(|m| m.file_type().is_file());
            if !regular {
                return Err(Error::NoEntry {
                    asset: asset.name.clone(),
                    problem: format!("it holds no file {PROGRAM} at its top"),
                });
            }
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&program, fs::Permissions::from_mode(0o755))
                .map_err(Error::io("set the mode of", &program))?;
            fs::rename(&program, &target).map_err(Error::io("rename", &program))
        })();
        let removed = remove_tree(&tree);
        result?;
        removed?;
        let checked = match &plan.signature {
            Some(_) => "sha256 and minisign signature verified",
            None => "sha256 verified, no signature key",
        };
        crate::notice!("moltd {tag} downloaded: {checked}");
        self.forget_staged_except(&dir, Some(&target));
        Ok(target)
    }

    /// Removes binaries staged for versions no longer on offer, all but
    /// `keep` (and what lies beside them under their name).
    fn forget_staged_except(&self, dir: &Path, keep: Option<&Path>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        let kept = keep.and_then(Path::file_name).map(|n| n.to_string_lossy());
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let spared = kept.as_ref().is_some_and(|kept| name.starts_with(&**kept));
            if name.starts_with(&format!("{PROGRAM}-")) && !spared {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Remembers that `release` of moltd was refused for `reason` (by its
    /// download's checks or by PID 1): not offered again until its assets
    /// change or `moltd unmark` clears it.
    fn refuse_itself(&mut self, release: &super::release::Release, reason: &str) {
        let refusal = Refusal {
            assets: state::assets_fingerprint(release),
            settings: self_settings(&self.config),
            reason: reason.to_owned(),
        };
        self.state
            .moltd
            .refused
            .insert(release.tag.clone(), refusal);
        if let Err(err) = self.save_state() {
            log::warn!("{}", chain(&err));
        }
        self.reporter.releases(&self.state);
        let (tag, reason) = (release.tag.clone(), reason.to_owned());
        self.reporter.moltd(|status| {
            status.staged = None;
            status.message = Some(format!("moltd {tag} refused: {reason}"));
        });
    }

    /// PID 1 refused `offer` (its self-test failed, it is older, ...):
    /// remembered like a failed verification, and its file removed.
    fn itself_refused(&mut self, offer: &Offer, reason: &str) {
        let release = (self.state.moltd.listing.releases.iter())
            .find(|r| r.tag == offer.tag)
            .cloned();
        let _ = fs::remove_file(&offer.path);
        if let Some(release) = release {
            self.refuse_itself(&release, reason);
        }
    }

    /// PID 1 is about to exec `version`: said in the status until the agent
    /// restarts on it.
    fn itself_replaced(&mut self, version: &str) {
        crate::notice!("PID 1 is replacing itself with moltd {version}");
        let message = format!("PID 1 is replacing itself with moltd {version}");
        self.reporter.moltd(|status| status.message = Some(message));
    }

    /// What the status says of moltd before any check: its version and
    /// source, and the versions refused.
    pub(super) fn seed_itself(&mut self) {
        let repo = self.config.self_update.as_ref().map(|s| match &s.source {
            config::Source::GitHub { owner, repo, .. }
            | config::Source::Gitea { owner, repo, .. } => {
                format!("{owner}/{repo}")
            }
            config::Source::Manifest { url } => url.clone(),
        });
        self.reporter.seed_moltd(SelfStatus {
            version: crate::version::version().to_owned(),
            repo,
            ..SelfStatus::default()
        });
        self.reporter.seed(&self.state);
    }
}

/// The settings that decide whether a download of moltd is accepted, as a
/// fingerprint: a refusal made under others is forgotten at start.
pub(super) fn self_settings(config: &config::Config) -> String {
    let settings = config.self_update.as_ref();
    let fields = [
        format!("{:?}", settings.map(|s| &s.asset)),
        format!("{:?}", settings.map(|s| &s.minisign_key)),
        format!("{:?}", config.limits),
    ];
    super::release::fingerprint(fields.iter().map(String::as_str))
}

/// Whether PID 1 refused for a reason of the moment, not of the binary
/// (`services::reexec::Refusal`: busy, a self-update under way, a
/// self-test or state file it could not start or write): such an offer is
/// made again at the next check instead of being remembered.
fn busy(reason: &str) -> bool {
    [
        "not now: ",
        "a self-update is already under way",
        "cannot start its self-test",
        "cannot write the state",
    ]
    .iter()
    .any(|words| reason.contains(words))
}

/// Removes the staging folder `tree` if it is there.
fn remove_tree(tree: &Path) -> Result<(), Error> {
    match fs::remove_dir_all(tree) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::io("remove", tree)(err))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    /// PID 1's refusals of the moment are offered again; those of the
    /// binary are remembered.
    #[test]
    fn refusals_of_the_moment_are_not_remembered() {
        for (reason, busy) in [
            ("self-update refused: not now: an update hook runs", true),
            (
                "self-update refused: a self-update is already under way",
                true,
            ),
            (
                "self-update refused: cannot write the state: no space",
                true,
            ),
            ("self-update refused: /x is not an ELF executable", false),
            (
                "self-update refused: its self-test failed (exit code 1): older",
                false,
            ),
        ] {
            assert_eq!(super::busy(reason), busy, "{reason}");
        }
        // As PID 1 words them.
        use crate::services::reexec::Refusal;
        let of_the_moment = [
            Refusal::Busy("an update hook runs".into()),
            Refusal::UnderWay,
            Refusal::SelfTestStart("fork failed".into()),
            Refusal::State(std::io::Error::other("no space")),
        ];
        for refusal in of_the_moment {
            assert!(super::busy(&refusal.to_string()), "{refusal}");
        }
        let of_the_binary = [
            Refusal::NotElf("/x".into()),
            Refusal::SelfTestHung,
            Refusal::SelfTestFailed {
                status: "exit code 1".into(),
                output: "not newer".into(),
            },
        ];
        for refusal in of_the_binary {
            assert!(!super::busy(&refusal.to_string()), "{refusal}");
        }
    }
}
