//! moltd's own memory across restarts: `$MOLTD_APP_DIR/.moltd/state.json`.
//!
//! Written atomically (temporary file, fsync, rename), so a kill never leaves
//! half a file. The last release list is kept with its ETag: a 304 means
//! "what you have is current", which is only useful if what we have
//! survived the restart: see [`Listing`], stored in the same file. `applying`
//! is set before the first service is stopped and cleared when the switch is committed or undone, so a restart
//! after a kill knows an update was cut short and returns to `current`.
//!
//! Two kinds of marks keep a release from being chosen again: `bad` (its
//! health gate failed, or it was rolled back by hand) holds for the tag, and
//! `refused` (its download failed verification or unpacking) holds for the
//! tag *and* its assets as the feed listed them, so a republished asset is
//! tried again while the same broken one is not downloaded at every check.
//! A third, `skip` (`MOLTD_SKIP`), comes from the configuration: it is
//! never saved, so removing a tag there is all it takes to allow it again.

use super::Error;
use super::listing::Listing;
use super::release::{Release, fingerprint};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::path::Path;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    /// The installed release's tag.
    pub current: Option<String>,
    pub previous: Option<String>,
    /// Tags that failed their health check (or were rolled back by hand):
    /// never chosen again automatically.
    pub bad: BTreeSet<String>,
    /// Releases whose download failed verification or unpacking, by tag.
    pub refused: BTreeMap<String, Refusal>,
    /// Tags marked bad by configuration (`MOLTD_SKIP`); not saved.
    #[serde(skip)]
    pub skip: BTreeSet<String>,
    /// The tag a switch is under way to; `current` is still the committed one.
    pub applying: Option<String>,
    /// Unix time of the last successful check.
    pub last_check: Option<u64>,
    /// A FleetLock slot is held (taken before a switch, released after
    /// it): released at start and at every check until the server agrees.
    pub fleet_lock: bool,
    /// The release list as last read (stored flat: `etag`, `listing`,
    /// `listing_url`, ...).
    #[serde(flatten)]
    pub listing: Listing,
    /// moltd's own releases (`MOLTD_SELF_REPO`).
    #[serde(skip_serializing_if = "SelfState::is_empty")]
    pub moltd: SelfState,
}

/// What survives a restart of moltd's own updates: its release list, and
/// the versions refused (a download that failed verification, or PID 1's
/// refusal: an older version, a failed self-test), each with the assets it
/// was about, so a refused version is not downloaded and offered to PID 1
/// at every check. Its tags are those of moltd's repository, apart from the
/// app's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SelfState {
    pub listing: Listing,
    pub refused: BTreeMap<String, Refusal>,
}

impl SelfState {
    fn is_empty(&self) -> bool {
        *self == SelfState::default()
    }
}

/// Why a release was refused, and which assets that was about.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// [`assets_fingerprint`] of the release when it was refused.
    pub assets: String,
    /// [`fingerprint`] of the settings that judged it (asset rule,
    /// checksum and signature requirements, limits): a refusal made under
    /// other settings is forgotten at start-up, so that fixing a setting
    /// gives the release another chance.
    pub settings: String,
    pub reason: String,
}

/// What identifies a release's assets as the feed lists them: names, sizes,
/// digests and URLs (GitHub gives a re-uploaded asset a new API URL), not
/// download counts. Republishing an asset changes it.
pub fn assets_fingerprint(release: &Release) -> String {
    let fields: Vec<String> = release
        .assets
        .iter()
        .flat_map(|asset| {
            [
                asset.name.clone(),
                asset.size.map(|s| s.to_string()).unwrap_or_default(),
                asset.digest.clone().unwrap_or_default(),
                asset.api_url.clone().unwrap_or_default(),
                asset.download_url.clone(),
            ]
        })
        .collect();
    fingerprint(fields.iter().map(String::as_str))
}

impl State {
    /// Loads the state; a missing file is a fresh start, a damaged one is
    /// reported and replaced.
    pub fn load(path: &Path) -> State {
        State::read(path).unwrap_or_else(|err| {
            match err.kind() {
                io::ErrorKind::NotFound => {}
                io::ErrorKind::InvalidData => {
                    log::warn!("ignoring the damaged state file {}: {err}", path.display());
                }
                _ => log::warn!("cannot read the state file {}: {err}", path.display()),
            }
            State::default()
        })
    }

    /// The state the file at `path` holds; a damaged file is `InvalidData`.
    fn read(path: &Path) -> io::Result<State> {
        Ok(serde_json::from_slice(&fs::read(path)?)?)
    }

    pub fn save(&self, path: &Path) -> io::Result<()> {
        write_atomically(path, &serde_json::to_vec_pretty(self)?)
    }

    /// Every tag marked bad, refused or skipped by configuration, sorted.
    pub fn marked(&self) -> Vec<String> {
        let all: BTreeSet<&String> = (self.bad.iter())
            .chain(self.refused.keys())
            .chain(&self.skip)
            .collect();
        all.into_iter().cloned().collect()
    }

    /// The tags of `releases` not to choose: marked bad (in the state or by
    /// configuration), or refused with the assets they still list.
    pub fn skipped(&self, releases: &[Release]) -> BTreeSet<String> {
        let refused = releases.iter().filter(|r| {
            self.refused
                .get(&r.tag)
                .is_some_and(|refusal| refusal.assets == assets_fingerprint(r))
        });
        let refused = refused.map(|r| r.tag.clone());
        (self.bad.iter().chain(&self.skip).cloned())
            .chain(refused)
            .collect()
    }

    /// Clears the bad or refused mark of `tags`, all or none: a tag not
    /// marked (a typo) changes nothing and says which tags are; a tag in
    /// `MOLTD_SKIP` can only be allowed again there.
    pub fn unmark(&mut self, tags: &[String]) -> Result<(), Error> {
        let configured: Vec<String> = (tags.iter())
            .filter(|tag| self.skip.contains(*tag))
            .cloned()
            .collect();
        if !configured.is_empty() {
            return Err(Error::SkipConfigured(configured));
        }
        let unknown: Vec<String> = tags
            .iter()
            .filter(|tag| {
                !self.bad.contains(*tag)
                    && !self.refused.contains_key(*tag)
                    && !self.moltd.refused.contains_key(*tag)
            })
            .cloned()
            .collect();
        if !unknown.is_empty() {
            return Err(Error::NotMarkedBad {
                tags: unknown,
                bad: (self.marked().into_iter())
                    .chain(self.moltd.refused.keys().cloned())
                    .collect(),
            });
        }
        for tag in tags {
            self.bad.remove(tag);
            self.refused.remove(tag);
            self.moltd.refused.remove(tag);
        }
        Ok(())
    }

    /// [`State::unmark`] on the state file at `path`, when no supervisor
    /// holds the state in memory; `skip` is `MOLTD_SKIP`. Call under
    /// [`super::staging::manage`].
    pub fn unmark_file(path: &Path, tags: &[String], skip: BTreeSet<String>) -> Result<(), Error> {
        let mut state = State {
            skip,
            ..State::load(path)
        };
        state.unmark(tags)?;
        state.save(path).map_err(Error::io("save", path))
    }
}

/// Replaces `path` with `contents` so that readers see the old or the new
/// file, never a mix: write a temporary file beside it, fsync, rename.
pub fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let written = fs::File::create(&tmp).and_then(|mut file| {
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    });
    if written.is_err() {
        // A full disk or a failed rename leaves no temporary file behind.
        let _ = fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmark_clears_a_refused_version_of_moltd_and_it_survives_a_save() {
        let dir = std::env::temp_dir().join(format!("moltd-self-state-{}", std::process::id()));
        let path = dir.join("state.json");
        let mut state = State::default();
        state.moltd.refused.insert(
            "v9.0.0".into(),
            Refusal {
                reason: "PID 1 refused it: older".into(),
                ..Refusal::default()
            },
        );
        state.save(&path).unwrap();
        let mut loaded = State::load(&path);
        assert_eq!(loaded, state);
        match loaded.unmark(&["v8.0.0".into()]) {
            Err(Error::NotMarkedBad { bad, .. }) => assert_eq!(bad, ["v9.0.0"]),
            other => panic!("{other:?}"),
        }
        loaded.unmark(&["v9.0.0".into()]).unwrap();
        assert!(loaded.moltd.refused.is_empty());
        // Nothing of moltd's own is written once there is nothing to keep.
        loaded.save(&path).unwrap();
        assert!(!fs::read_to_string(&path).unwrap().contains("moltd"));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_atomic_write_leaves_the_old_file_and_no_temporary() {
        let dir = std::env::temp_dir().join(format!("moltd-atomic-{}", std::process::id()));
        fs::create_dir_all(dir.join("target.json")).unwrap();
        // A directory cannot be replaced by a file: the rename fails.
        let failed = write_atomically(&dir.join("target.json"), b"{}");
        assert!(failed.is_err());
        let left: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, ["target.json"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A file from before the listing was kept per policy still loads, with
    /// every other field; its listing carries no policy, so the next check
    /// reads the list anew instead of trusting it.
    #[test]
    fn an_older_state_file_loads() {
        let old = r#"{"current": "v1.0.0", "previous": "v0.9.0", "bad": ["v1.1.0"],
            "last_check": 1700000000, "etag": "\"a\"",
            "listing_url": "https://api.github.com/repos/acme/app/releases?per_page=100",
            "listing": [{"tag": "v1.1.0", "draft": false, "prerelease": false, "notes": "n",
                "url": null, "assets": [{"name": "a.tar.gz", "size": 1, "download_url": "https://h/a",
                "api_url": null, "digest": null}]}],
            "listing_next": "https://api.github.com/repositories/1/releases?per_page=100&page=4"}"#;
        let dir = std::env::temp_dir().join(format!("moltd-old-state-{}", std::process::id()));
        let path = dir.join("state.json");
        write_atomically(&path, old.as_bytes()).unwrap();
        let state = State::load(&path);
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(state.current.as_deref(), Some("v1.0.0"));
        assert_eq!(state.previous.as_deref(), Some("v0.9.0"));
        assert!(state.bad.contains("v1.1.0"));
        assert_eq!(state.listing.releases[0].assets[0].name, "a.tar.gz");
        assert_eq!((&state.listing.policy, state.listing.read), (&None, 0));
        let kept = "https://api.github.com/repos/acme/app/releases?per_page=100";
        assert!(!state.listing.kept_for(kept, "any policy"));
    }

    #[test]
    fn a_refusal_holds_for_the_assets_it_was_about() {
        let asset = |digest: &str| super::super::release::Asset {
            name: "app.tar.gz".into(),
            size: Some(10),
            download_url: "https://h/app.tar.gz".into(),
            api_url: None,
            digest: Some(digest.into()),
        };
        let listed = |digest: &str| Release {
            tag: "v2.0.0".into(),
            draft: false,
            prerelease: false,
            notes: None,
            published: None,
            rollout: None,
            url: None,
            assets: vec![asset(digest)],
        };
        let mut state = State::default();
        let refusal = Refusal {
            assets: assets_fingerprint(&listed("sha256:aa")),
            settings: fingerprint(["MOLTD_ASSET unset"]),
            reason: "sha256 of app.tar.gz is ...".into(),
        };
        state.refused.insert("v2.0.0".into(), refusal);
        assert_eq!(state.skipped(&[listed("sha256:aa")]).len(), 1);
        assert!(state.skipped(&[listed("sha256:bb")]).is_empty());
        assert_eq!(state.marked(), ["v2.0.0"]);
        state.unmark(&["v2.0.0".to_string()]).unwrap();
        assert!(state.refused.is_empty());
    }

    #[test]
    fn unmark_is_all_or_nothing() {
        let tags = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut state = State {
            bad: ["v2.0.0".to_string(), "v3.0.0".to_string()].into(),
            ..State::default()
        };
        let err = state.unmark(&tags(&["v3.0.0", "v9.0.0"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "v9.0.0 not marked bad (bad releases: v2.0.0, v3.0.0)"
        );
        assert_eq!(state.bad.len(), 2);
        state.unmark(&tags(&["v3.0.0", "v2.0.0"])).unwrap();
        assert!(state.bad.is_empty());
        let err = state.unmark(&tags(&["v3.0.0"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "v3.0.0 not marked bad (no release is marked bad)"
        );
    }

    #[test]
    fn skip_from_configuration_is_honoured_shown_and_never_saved() {
        let dir = std::env::temp_dir().join(format!("moltd-skip-{}", std::process::id()));
        let path = dir.join("state.json");
        let listed = |tag: &str| Release {
            tag: tag.into(),
            draft: false,
            prerelease: false,
            notes: None,
            published: None,
            rollout: None,
            url: None,
            assets: Vec::new(),
        };
        let state = State {
            bad: ["v1.2.0".to_string()].into(),
            skip: ["v1.6.0".to_string()].into(),
            ..State::default()
        };
        assert_eq!(state.marked(), ["v1.2.0", "v1.6.0"]);
        let skipped = state.skipped(&[listed("v1.6.0"), listed("v1.5.0")]);
        assert_eq!(skipped, ["v1.2.0".to_string(), "v1.6.0".to_string()].into());
        state.save(&path).unwrap();
        let saved = State::load(&path);
        assert!(saved.skip.is_empty(), "MOLTD_SKIP was saved");
        assert_eq!(saved.bad, state.bad);
        // Only the configuration can allow it again.
        let tags = ["v1.6.0".to_string()];
        let err = State::unmark_file(&path, &tags, state.skip.clone()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "v1.6.0 marked bad by MOLTD_SKIP: remove it from MOLTD_SKIP to allow it again"
        );
        State::unmark_file(&path, &["v1.2.0".to_string()], state.skip.clone()).unwrap();
        assert!(State::load(&path).bad.is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }
}
