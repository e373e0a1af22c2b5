//! The updater's settings, read from environment variables.
//!
//! Containers are configured through the environment, and the names follow
//! the original container where one existed (`GH_USER`, `GH_REPO`, `SLEEP`,
//! `GITHUB_TOKEN`), so an image can switch to moltd without new settings.
//! Everything is parsed and checked here, once, so a typo is reported at
//! start with the variable's name instead of at the first poll.

use super::Error;
use super::poll::Schedule;
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// Where release lists come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// GitHub's (or GitHub Enterprise's) REST API.
    GitHub {
        api: String,
        owner: String,
        repo: String,
    },
    /// Gitea and Forgejo: the same release shape under `/api/v1`.
    Gitea {
        api: String,
        owner: String,
        repo: String,
    },
    /// A JSON manifest at a fixed URL.
    Manifest { url: String },
}

/// What one run of the updater does once it found a newer release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Stage and apply (applying arrives with the switch-over step).
    Auto,
    /// Stage and wait for a trigger.
    Stage,
    /// Only report that a newer release exists.
    Check,
}

/// Which releases are eligible.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub tag_prefix: String,
    pub requirement: semver::VersionReq,
    pub prerelease: bool,
}

/// Caps that stop a hostile or broken feed from filling memory or disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of the compressed asset.
    pub download: u64,
    /// Bytes written while unpacking.
    pub unpacked: u64,
    /// Entries in the archive.
    pub entries: u64,
    /// Bytes of a release list, checksum file or signature.
    pub document: u64,
    /// What unpacking leaves free on the staging file system.
    pub min_free: MinFree,
}

/// `MOLTD_MIN_FREE`: the reserve of space unpacking never uses, as a share
/// of the file system's size, at most `max` bytes; the same share of its
/// inodes is kept free too. A size (`200M`) is 100% at most 200M; a
/// percentage has no cap; the default is 5%, at most 1G, so that a small
/// volume keeps a useful reserve and a large one does not lose gigabytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MinFree {
    pub percent: u64,
    pub max: u64,
}

impl MinFree {
    pub const DEFAULT: MinFree = MinFree {
        percent: 5,
        max: 1024 * MIB,
    };

    fn parse(text: &str) -> Option<MinFree> {
        match text.strip_suffix('%') {
            Some(percent) => percent
                .trim()
                .parse()
                .ok()
                .filter(|p| *p <= 100)
                .map(|percent| MinFree {
                    percent,
                    max: u64::MAX,
                }),
            None => parse_size(text).map(|max| MinFree { percent: 100, max }),
        }
    }

    /// The reserve in bytes and in inodes on a file system of `bytes`
    /// bytes and `inodes` inodes.
    pub fn reserve(&self, bytes: u64, inodes: u64) -> (u64, u64) {
        let share = |total: u64| (u128::from(total) * u128::from(self.percent) / 100) as u64;
        let reserve = share(bytes).min(self.max);
        let of_inodes = match bytes {
            0 => 0,
            _ => (u128::from(inodes) * u128::from(reserve) / u128::from(bytes)) as u64,
        };
        (reserve, of_inodes)
    }
}

/// Network time limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// No byte for this long counts as a stalled connection.
    pub stall: Duration,
    /// Overall cap for a release list or another small document.
    pub document: Duration,
    /// Overall cap for a download.
    pub download: Duration,
}

/// How a staged release becomes the running one (the switch-over step).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Switch {
    /// `MOLTD_PREFLIGHT`: a shell command run in the staged release's
    /// folder before anything stops; non-zero marks the release bad.
    pub preflight: Option<String>,
    /// `MOLTD_PRE_UPDATE`: a shell command; non-zero aborts the update.
    pub pre_update: Option<String>,
    /// `MOLTD_POST_UPDATE`: a shell command run after a committed update.
    pub post_update: Option<String>,
    /// `MOLTD_RESTART`: the services to stop and start; none means all.
    pub restart: Option<Vec<String>>,
    /// `MOLTD_STRATEGY`: how the services change releases.
    pub strategy: Strategy,
    /// How long the restarted services must stay up.
    pub health_grace: Duration,
    pub health_url: Option<String>,
    pub health_cmd: Option<String>,
    /// How long the URL or command gets to report healthy.
    pub health_timeout: Duration,
    /// How long a hook may run before it is killed.
    pub hook_timeout: Duration,
    /// Installed releases to keep.
    pub keep: usize,
    /// Test-only (`MOLTD_TEST_CRASH_AT`): kill moltd when entering this state.
    /// Only in builds with the `test-hooks` feature, which the tests turn on.
    #[cfg(feature = "test-hooks")]
    pub crash_at: Option<String>,
}

/// How a switch moves the services to the new release.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Strategy {
    /// Stop them, switch, start them.
    #[default]
    Restart,
    /// Switch, start a second generation beside the running one, and stop
    /// the first only once the second is ready and healthy.
    Overlap,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The app's release source; `None` when `MOLTD_SELF_REPO` is the only
    /// one: moltd updates itself, nothing about the app runs (no first
    /// boot, no `current`, services start at once).
    pub source: Option<Source>,
    pub token: Option<String>,
    pub schedule: Schedule,
    pub policy: Policy,
    pub asset: Option<String>,
    pub app_dir: PathBuf,
    pub require_checksum: bool,
    pub minisign_key: Option<String>,
    pub strip_components: Option<usize>,
    /// `MOLTD_ENTRY`: the program services run, relative to a release.
    pub entry: Option<PathBuf>,
    pub mode: Mode,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub status_file: Option<PathBuf>,
    pub switch: Switch,
    /// `MOLTD_SKIP`: tags marked bad by configuration (see [`skip`]).
    pub skip: BTreeSet<String>,
    /// Wariness, minimum age and windows (see [`super::rollout`]).
    pub rollout: super::rollout::Policy,
    /// `MOLTD_SELF_REPO` and its settings: where moltd's own releases come
    /// from.
    pub self_update: Option<SelfUpdate>,
}

/// Where moltd finds new versions of itself, and what it accepts: the
/// payload's kind of source, API URL and token, another repository. A
/// digest is always required (PID 1 will exec what this accepts, whatever
/// `MOLTD_REQUIRE_CHECKSUM` says for the payload).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelfUpdate {
    pub source: Source,
    /// `MOLTD_SELF_ASSET`: a glob as `MOLTD_ASSET`; a raw binary, or a
    /// `.tar.gz`/`.tgz` holding a `moltd` file.
    pub asset: String,
    /// `MOLTD_SELF_VERSION` as the requirement; tags are `v` and semver.
    pub policy: Policy,
    /// `MOLTD_SELF_MINISIGN_KEY`: strongly recommended (a notice at start
    /// without it).
    pub minisign_key: Option<String>,
}

/// `MOLTD_SELF_ASSET`'s default: `moltd-1.4.0-linux-amd64`, with or without
/// `.tar.gz` (signature and checksum files beside it never match a glob).
pub const SELF_ASSET: &str = "moltd-*-{os}-{arch}*";

/// moltd's own files inside `app_dir`.
pub fn state_dir(app_dir: &std::path::Path) -> PathBuf {
    app_dir.join(".moltd")
}

const MIB: u64 = 1024 * 1024;

/// A variable's value, trimmed; empty counts as unset.
fn read_var(env: &dyn Fn(&str) -> Option<OsString>, name: &str) -> Option<String> {
    env(name)
        .map(|v| v.to_string_lossy().trim().to_string())
        .filter(|v| !v.is_empty())
}

/// `MOLTD_APP_DIR`, default `/app`: all `moltd unmark` needs without a
/// supervisor, which must not depend on a release source being set.
pub fn app_dir(env: &dyn Fn(&str) -> Option<OsString>) -> PathBuf {
    read_var(env, "MOLTD_APP_DIR").map_or_else(|| PathBuf::from("/app"), PathBuf::from)
}

/// `MOLTD_SKIP=v1.6.0,v1.7.0`: releases never to install, as a bad mark
/// that lives in the configuration instead of the state file. A pod without
/// a volume for `/app` starts with no state, and would otherwise download
/// and fail a release it already knew to be bad. Commas or spaces separate
/// the tags.
pub fn skip(env: &dyn Fn(&str) -> Option<OsString>) -> BTreeSet<String> {
    read_var(env, "MOLTD_SKIP")
        .unwrap_or_default()
        .split([',', ' ', '\t', '\n'])
        .filter(|tag| !tag.is_empty())
        .map(String::from)
        .collect()
}

impl Config {
    /// Reads the configuration through `env` (a parameter so tests need not
    /// touch the process environment).
    pub fn from_env(env: &dyn Fn(&str) -> Option<OsString>) -> Result<Config, Error> {
        let var = |name: &str| read_var(env, name);
        let bad = |var: &'static str, value: &str, expected: &'static str| Error::Config {
            var,
            value: value.to_string(),
            expected,
        };

        let repo = match (var("MOLTD_REPO"), var("GH_USER"), var("GH_REPO")) {
            (Some(full), _, _) => Some(owner_repo("MOLTD_REPO", &full)?),
            (None, Some(owner), Some(repo)) => Some((owner, repo)),
            _ => None,
        };
        let source_kind = var("MOLTD_SOURCE").unwrap_or_else(|| "github".into());
        // Resolved now, raised after the other variables are checked: with no
        // source, updates are off, but a bad value elsewhere is still wrong.
        let source = match source_kind.as_str() {
            "url" | "manifest" => var("MOLTD_URL")
                .map(|url| Source::Manifest { url })
                .ok_or(Error::NoSource),
            "github" | "gitea" | "forgejo" => repo
                .ok_or(Error::NoSource)
                .and_then(|(owner, repo)| repo_source(&var, &source_kind, owner, repo)),
            _ => Err(bad("MOLTD_SOURCE", &source_kind, "github, gitea or url")),
        };
        let self_update = match var("MOLTD_SELF_REPO") {
            None => None,
            Some(full) => {
                let (owner, repo) = owner_repo("MOLTD_SELF_REPO", &full)?;
                let source = match source_kind.as_str() {
                    "url" | "manifest" => {
                        return Err(bad(
                            "MOLTD_SOURCE",
                            &source_kind,
                            "github or gitea with MOLTD_SELF_REPO (moltd's own releases come from a repository)",
                        ));
                    }
                    _ => repo_source(&var, &source_kind, owner, repo)?,
                };
                let requirement = match var("MOLTD_SELF_VERSION") {
                    None => semver::VersionReq::STAR,
                    Some(text) => requirement("MOLTD_SELF_VERSION", &text)?,
                };
                Some(SelfUpdate {
                    source,
                    asset: var("MOLTD_SELF_ASSET").unwrap_or_else(|| SELF_ASSET.into()),
                    policy: Policy {
                        tag_prefix: String::new(),
                        requirement,
                        prerelease: false,
                    },
                    minisign_key: var("MOLTD_SELF_MINISIGN_KEY"),
                })
            }
        };
        let token = crate::secrets::release_token(env)?.map(|(token, _)| token);

        let interval = match (var("MOLTD_INTERVAL"), var("SLEEP")) {
            (Some(text), _) => parse_duration(&text)
                .ok_or_else(|| bad("MOLTD_INTERVAL", &text, "a duration such as 90s, 5m or 1h"))?,
            // The seed gave SLEEP to sleep(1), which takes 300 and 5m alike.
            (None, Some(text)) => parse_duration(&text)
                .ok_or_else(|| bad("SLEEP", &text, "seconds, or a duration such as 5m"))?,
            (None, None) => Duration::from_secs(300),
        };
        if interval.is_zero() {
            return Err(bad("MOLTD_INTERVAL", "0", "a duration above zero"));
        }
        let jitter = match var("MOLTD_JITTER") {
            None => interval / 10,
            Some(text) => match text.strip_suffix('%') {
                Some(percent) => percent
                    .parse::<u32>()
                    .ok()
                    .filter(|p| *p <= 100)
                    .map(|p| interval * p / 100),
                None => parse_duration(&text),
            }
            .ok_or_else(|| {
                bad(
                    "MOLTD_JITTER",
                    &text,
                    "a duration (30s) or a percentage of the interval (10%)",
                )
            })?,
        };

        let tag_prefix = var("MOLTD_TAG_PREFIX").unwrap_or_default();
        let requirement = match var("MOLTD_VERSION") {
            None => semver::VersionReq::STAR,
            Some(text) => requirement("MOLTD_VERSION", &text)?,
        };
        let prerelease = flag(&var, "MOLTD_PRERELEASE", false)?;
        let require_checksum = flag(&var, "MOLTD_REQUIRE_CHECKSUM", true)?;
        let strip_components = match var("MOLTD_STRIP_COMPONENTS") {
            None => None,
            Some(text) => Some(text.parse().map_err(|_| {
                bad(
                    "MOLTD_STRIP_COMPONENTS",
                    &text,
                    "a number of leading folders",
                )
            })?),
        };
        let entry = match var("MOLTD_ENTRY") {
            None => None,
            Some(text) => Some(
                super::unpack::entry_path(std::path::Path::new(&text), 0)
                    .ok()
                    .flatten()
                    .ok_or_else(|| {
                        bad(
                            "MOLTD_ENTRY",
                            &text,
                            "a path inside a release, such as bin/app",
                        )
                    })?,
            ),
        };
        let mode = match var("MOLTD_MODE").as_deref() {
            None | Some("auto") => Mode::Auto,
            Some("stage") => Mode::Stage,
            Some("check") => Mode::Check,
            Some(other) => return Err(bad("MOLTD_MODE", other, "auto, stage or check")),
        };
        let size = |name: &'static str, default: u64| match var(name) {
            None => Ok(default),
            Some(text) => {
                parse_size(&text).ok_or_else(|| bad(name, &text, "a size such as 500M or 2G"))
            }
        };
        let limits = Limits {
            download: size("MOLTD_MAX_DOWNLOAD", 1024 * MIB)?,
            unpacked: size("MOLTD_MAX_UNPACKED", 4096 * MIB)?,
            entries: match var("MOLTD_MAX_ENTRIES") {
                None => 100_000,
                Some(text) => text
                    .parse()
                    .map_err(|_| bad("MOLTD_MAX_ENTRIES", &text, "a number"))?,
            },
            document: 8 * MIB,
            min_free: match var("MOLTD_MIN_FREE") {
                None => MinFree::DEFAULT,
                Some(text) => MinFree::parse(&text).ok_or_else(|| {
                    bad(
                        "MOLTD_MIN_FREE",
                        &text,
                        "a size such as 200M or a percentage such as 5%",
                    )
                })?,
            },
        };
        let duration = |name: &'static str, default: u64| match var(name) {
            None => Ok(Duration::from_secs(default)),
            Some(text) => {
                parse_duration(&text).ok_or_else(|| bad(name, &text, "a duration such as 30s"))
            }
        };
        let timeouts = Timeouts {
            connect: Duration::from_secs(10),
            stall: duration("MOLTD_STALL_TIMEOUT", 30)?,
            document: Duration::from_secs(60),
            download: duration("MOLTD_DOWNLOAD_TIMEOUT", 3600)?,
        };
        let status_file = match env("MOLTD_STATUS_FILE") {
            None => Some(PathBuf::from("/run/moltd/status.json")),
            Some(path) if path.is_empty() => None,
            Some(path) => Some(PathBuf::from(path)),
        };
        let switch =
            Switch {
                preflight: var("MOLTD_PREFLIGHT"),
                pre_update: var("MOLTD_PRE_UPDATE"),
                post_update: var("MOLTD_POST_UPDATE"),
                restart: var("MOLTD_RESTART").map(|names| {
                    names
                        .split([',', ' '])
                        .filter(|n| !n.is_empty())
                        .map(str::to_owned)
                        .collect()
                }),
                strategy: match var("MOLTD_STRATEGY").as_deref() {
                    None | Some("restart") => Strategy::Restart,
                    Some("overlap") => Strategy::Overlap,
                    Some(other) => {
                        return Err(bad("MOLTD_STRATEGY", other, "restart or overlap"));
                    }
                },
                health_grace: duration("MOLTD_HEALTH_GRACE", 10)?,
                health_url: var("MOLTD_HEALTH_URL"),
                health_cmd: var("MOLTD_HEALTH_CMD"),
                health_timeout: duration("MOLTD_HEALTH_TIMEOUT", 60)?,
                hook_timeout: duration("MOLTD_HOOK_TIMEOUT", 600)?,
                keep: match var("MOLTD_KEEP") {
                    None => 3,
                    Some(text) => text.parse().ok().filter(|k| *k >= 2).ok_or_else(|| {
                        bad("MOLTD_KEEP", &text, "a number of releases, at least 2")
                    })?,
                },
                #[cfg(feature = "test-hooks")]
                crash_at: var("MOLTD_TEST_CRASH_AT"),
            };
        // `MOLTD_SELF_REPO` alone is enough: moltd keeps itself up to date
        // in an image whose services never change.
        let source = match source {
            Err(Error::NoSource) if self_update.is_some() => None,
            source => Some(source?),
        };
        Ok(Config {
            source,
            token,
            schedule: Schedule::new(interval, jitter),
            policy: Policy {
                tag_prefix,
                requirement,
                prerelease,
            },
            asset: var("MOLTD_ASSET"),
            app_dir: app_dir(env),
            require_checksum,
            minisign_key: var("MOLTD_MINISIGN_KEY"),
            strip_components,
            entry,
            mode,
            limits,
            timeouts,
            status_file,
            switch,
            skip: skip(env),
            rollout: super::rollout::Policy::from_env(&var)?,
            self_update,
        })
    }

    /// The app's release source, or [`Error::NoSource`] when only moltd
    /// updates itself.
    pub fn app_source(&self) -> Result<&Source, Error> {
        self.source.as_ref().ok_or(Error::NoSource)
    }

    /// The server the token is for: the app's, else moltd's own.
    pub fn token_source(&self) -> Option<&Source> {
        let itself = self.self_update.as_ref().map(|s| &s.source);
        self.source.as_ref().or(itself)
    }

    /// Where installed releases live: `$MOLTD_APP_DIR/releases`.
    pub fn releases_dir(&self) -> PathBuf {
        self.app_dir.join("releases")
    }

    /// moltd's own files inside the app dir: `$MOLTD_APP_DIR/.moltd`.
    pub fn state_dir(&self) -> PathBuf {
        state_dir(&self.app_dir)
    }
}

/// `owner/repo` from variable `name`.
fn owner_repo(name: &'static str, full: &str) -> Result<(String, String), Error> {
    match full.split_once('/') {
        Some((owner, repo)) if !owner.is_empty() && !repo.is_empty() && !repo.contains('/') => {
            Ok((owner.to_string(), repo.to_string()))
        }
        _ => Err(Error::Config {
            var: name,
            value: full.to_string(),
            expected: "owner/repo",
        }),
    }
}

/// The repository `owner/repo` on the server `MOLTD_SOURCE` (`kind`) names.
fn repo_source(
    var: &dyn Fn(&str) -> Option<String>,
    kind: &str,
    owner: String,
    repo: String,
) -> Result<Source, Error> {
    Ok(match kind {
        "github" => {
            let api = var("GITHUB_API_URL").unwrap_or_else(|| "https://api.github.com".into());
            Source::GitHub {
                api: trim_slash(api),
                owner,
                repo,
            }
        }
        "gitea" | "forgejo" => {
            let api = var("MOLTD_API_URL").ok_or(Error::Config {
                var: "MOLTD_API_URL",
                value: String::new(),
                expected: "the API base of the Gitea or Forgejo server, e.g. https://codeberg.org/api/v1",
            })?;
            Source::Gitea {
                api: trim_slash(api),
                owner,
                repo,
            }
        }
        _ => {
            return Err(Error::Config {
                var: "MOLTD_SOURCE",
                value: kind.to_string(),
                expected: "github, gitea or url",
            });
        }
    })
}

/// A semver requirement from variable `name` (a leading `v` is allowed).
fn requirement(name: &'static str, text: &str) -> Result<semver::VersionReq, Error> {
    semver::VersionReq::parse(text.trim_start_matches('v')).map_err(|_| Error::Config {
        var: name,
        value: text.to_string(),
        expected: "a semver requirement such as ^1.4, ~2.0 or =1.2.3",
    })
}

fn trim_slash(url: String) -> String {
    url.trim_end_matches('/').to_string()
}

fn flag(
    var: &dyn Fn(&str) -> Option<String>,
    name: &'static str,
    default: bool,
) -> Result<bool, Error> {
    match var(name) {
        None => Ok(default),
        Some(text) => match text.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(Error::Config {
                var: name,
                value: text,
                expected: "true or false",
            }),
        },
    }
}

mod units;
pub use units::{parse_duration, parse_size};

#[cfg(test)]
mod tests;
