//! Every way an update step can fail, as one typed enum.
//!
//! One flat enum rather than one per file: callers (the CLI now, the switch
//! logic of the next step later) mostly need "what went wrong, in words", plus
//! a few distinctions that change behaviour ([`Error::RateLimited`] sets the
//! next poll, [`Error::is_transient`] picks backoff over a plain interval).
//! Messages are lowercase and name the file, URL or variable involved; the
//! underlying cause hangs off `source()`, and [`chain`] prints the whole chain.
//! Text that came from a feed or an archive (tags, names, URLs, server
//! bodies) is shown through [`Escaped`], because these messages also reach
//! the status file, `moltd update`'s terminal and the log.
//!
//! For retries the variants fall in two groups: [`Error::release_is_bad`]
//! (this release, as published, can never install under this configuration)
//! and the rest, of which [`Error::is_transient`] ones may pass by
//! themselves.

use crate::logging::Escaped;
use std::fmt::{self, Write as _};
use std::io;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bad {var} {value:?}: expected {expected}")]
    Config {
        var: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("the fleet lock at {} refused ({status}){}", Escaped(.url), detail(.message))]
    FleetLock {
        url: String,
        status: u16,
        message: String,
    },
    #[error(
        "bad MOLTD_WINDOW {value:?}: {problem}; expected windows such as 'Sat,Sun 22:30 1h; Mon-Fri 03:00 30m' (days, a UTC start time, a length)"
    )]
    Window { value: String, problem: String },
    #[error(
        "no release source: set MOLTD_REPO=owner/repo (or GH_USER and GH_REPO), or MOLTD_SOURCE=url with MOLTD_URL"
    )]
    NoSource,
    #[error(transparent)]
    Secret(#[from] crate::secrets::Error),
    #[error("cannot build the http client")]
    Client(#[source] reqwest::Error),
    #[error("cannot reach {}", Escaped(.url))]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{} answered http {status}{}", Escaped(.url), detail(.message))]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    #[error("rate limited by {} (http {status}){}", Escaped(.url), retry_hint(.wait))]
    RateLimited {
        url: String,
        status: u16,
        wait: Option<Duration>,
    },
    #[error("{what} from {} is larger than the limit of {limit} bytes", Escaped(.url))]
    TooLarge {
        what: &'static str,
        url: String,
        limit: u64,
    },
    #[error("cannot parse the release list from {}", Escaped(.url))]
    Parse {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("release {}: {}", Escaped(.tag), Escaped(.problem))]
    Asset { tag: String, problem: String },
    /// `hint` says what would let it through, if anything does.
    #[error(
        "release {} has no checksum for {asset} (no digest field, no SHA256SUMS, checksums.txt or {asset}.sha256 asset); {hint}",
        Escaped(.tag), asset = Escaped(.asset)
    )]
    MissingChecksum {
        tag: String,
        asset: String,
        hint: &'static str,
    },
    #[error(
        "release {} has no usable checksum for {}: {} in its digest field, and no checksum asset; {hint}",
        Escaped(.tag), Escaped(.asset), Escaped(.problem)
    )]
    UnusableDigest {
        tag: String,
        asset: String,
        problem: String,
        hint: &'static str,
    },
    #[error("{} lists no sha256 for {}", Escaped(.file), Escaped(.asset))]
    ChecksumNotListed { file: String, asset: String },
    #[error("sha256 of {} is {actual}, expected {expected} (from {})", Escaped(.asset), Escaped(.origin))]
    DigestMismatch {
        asset: String,
        actual: String,
        expected: String,
        origin: String,
    },
    /// `var` names the setting: the app's key or moltd's own.
    #[error("{var} is not a minisign public key")]
    MinisignKey {
        var: &'static str,
        #[source]
        source: minisign_verify::Error,
    },
    #[error("release {} has no {}.minisig, and {var} requires one", Escaped(.tag), Escaped(.asset))]
    MissingSignature {
        tag: String,
        asset: String,
        var: &'static str,
    },
    #[error("{}.minisig does not verify against {var}", Escaped(.asset))]
    BadSignature {
        asset: String,
        var: &'static str,
        #[source]
        source: minisign_verify::Error,
    },
    #[error("download of {} failed after {done} of {}", Escaped(.url), total.map_or("an unknown number of".into(), |t| t.to_string()) + " bytes")]
    Download {
        url: String,
        done: u64,
        total: Option<u64>,
        #[source]
        source: io::Error,
    },
    #[error("{} sent {actual} bytes but {expected} were announced", Escaped(.url))]
    WrongLength {
        url: String,
        expected: u64,
        actual: u64,
    },
    #[error("download took longer than the limit of {}s", .0.as_secs())]
    Deadline(Duration),
    #[error("{}: entry {} refused: {reason}", Escaped(.asset), Escaped(.path))]
    UnsafeEntry {
        asset: String,
        path: String,
        reason: &'static str,
    },
    /// `MOLTD_ENTRY` is not in the release, and cannot be made to point at
    /// its one program.
    #[error("{} cannot run: {}", Escaped(.asset), Escaped(.problem))]
    NoEntry { asset: String, problem: String },
    #[error("{} {}", Escaped(.asset), cap.exceeded(*.limit))]
    Limit { asset: String, cap: Cap, limit: u64 },
    #[error(
        "no space left on the device for staging in {}: at least {needed} {kind} needed, {} of the {free} free may be used (MOLTD_MIN_FREE keeps {reserve})",
        dir.display(), free.saturating_sub(*reserve)
    )]
    NoSpace {
        dir: PathBuf,
        kind: Resource,
        free: u64,
        needed: u64,
        reserve: u64,
    },
    #[error("disk full while unpacking into {}", dir.display())]
    DiskFull {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a valid tar.gz archive", Escaped(.asset))]
    BadArchive {
        asset: String,
        #[source]
        source: io::Error,
    },
    #[error("tag {0:?} cannot name a release folder")]
    BadTag(String),
    #[error("another moltd is staging a release in {}", .0.display())]
    Busy(PathBuf),
    #[error(
        "another moltd manages {} (it holds {}); if it is the running supervisor, ask it with moltd update / moltd unmark through MOLTD_CONTROL; if this is a second pod on the same volume, the old pod must stop first: on Kubernetes use a StatefulSet, or `strategy: type: Recreate` in the Deployment (the default RollingUpdate starts the new pod before the old one stops)",
        app.display(), lock.display()
    )]
    Managed { app: PathBuf, lock: PathBuf },
    #[error("{} lists no release to install", Escaped(.feed))]
    NoRelease { feed: String },
    #[error("no eligible release could be installed: {0}")]
    NothingInstallable(String),
    #[error("no previous release to roll back to")]
    NothingToRollBack,
    #[error("{} marked bad by MOLTD_SKIP: remove it from MOLTD_SKIP to allow it again", Escaped(&.0.join(", ")))]
    SkipConfigured(Vec<String>),
    #[error("{} not marked bad ({})", Escaped(&.tags.join(", ")), Escaped(&bad_list(.bad)))]
    NotMarkedBad { tags: Vec<String>, bad: Vec<String> },
    #[error("the supervisor cannot do it: {0}")]
    Supervisor(String),
    #[error("{name} exited with {code}; nothing was changed")]
    Hook { name: &'static str, code: i32 },
    #[error("release {tag} failed MOLTD_PREFLIGHT (exit code {code}); nothing was stopped")]
    Preflight { tag: String, code: i32 },
    #[error("{0}")]
    Unhealthy(String),
    #[error("{0}")]
    RolledBack(String),
    /// `moltd rollback` stopped the download or staging in progress: not a
    /// failure of the release, which stays eligible.
    #[error("cancelled by rollback")]
    Cancelled,
    #[error("{} redirected to {}: refused, only redirects to http and https are followed", Escaped(.url), Escaped(.location))]
    Redirect { url: String, location: String },
    #[error("cannot {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn detail(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {}", Escaped(message))
    }
}

/// The caps on an archive, each named by its variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cap {
    /// `MOLTD_MAX_DOWNLOAD`: compressed bytes.
    Download,
    /// `MOLTD_MAX_UNPACKED`: bytes written while unpacking.
    Unpacked,
    /// `MOLTD_MAX_ENTRIES`: entries, implied folders included.
    Entries,
}

impl Cap {
    fn exceeded(self, limit: u64) -> String {
        match self {
            Cap::Download => format!("is larger than MOLTD_MAX_DOWNLOAD={limit} bytes"),
            Cap::Unpacked => format!("unpacks to more than MOLTD_MAX_UNPACKED={limit} bytes"),
            Cap::Entries => format!(
                "has more than MOLTD_MAX_ENTRIES={limit} entries (folders its paths imply count too)"
            ),
        }
    }
}

/// What a file system can run out of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Bytes,
    Inodes,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Resource::Bytes => "bytes",
            Resource::Inodes => "inodes",
        })
    }
}

fn bad_list(bad: &[String]) -> String {
    match bad {
        [] => "no release is marked bad".into(),
        bad => format!("bad releases: {}", bad.join(", ")),
    }
}

fn retry_hint(wait: &Option<Duration>) -> String {
    wait.map_or_else(String::new, |w| {
        format!("; the server asks to wait {}s", w.as_secs())
    })
}

impl Error {
    /// An [`Error::Io`] for `action` on `path`, as a closure for `map_err`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }

    /// Failures that may go away by themselves (network, server errors), so a
    /// poller backs off and tries again; everything else waits for a new
    /// release or a changed configuration.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Transport { .. }
            | Error::RateLimited { .. }
            | Error::Download { .. }
            | Error::WrongLength { .. }
            | Error::Deadline(_)
            | Error::NoSpace { .. }
            | Error::DiskFull { .. }
            | Error::Busy(_) => true,
            Error::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// The release as published cannot be installed with this
    /// configuration: its digest or signature is wrong or missing, its
    /// archive is broken, holds a refused entry or exceeds a cap. Trying it
    /// again gives the same answer; a new release (or a changed setting) is
    /// needed. Network trouble and a full disk are not the release's fault.
    pub fn release_is_bad(&self) -> bool {
        matches!(
            self,
            Error::Asset { .. }
                | Error::MissingChecksum { .. }
                | Error::UnusableDigest { .. }
                | Error::ChecksumNotListed { .. }
                | Error::DigestMismatch { .. }
                | Error::MissingSignature { .. }
                | Error::BadSignature { .. }
                | Error::UnsafeEntry { .. }
                | Error::NoEntry { .. }
                | Error::Limit { .. }
                | Error::BadArchive { .. }
                | Error::BadTag(_)
        )
    }
}

/// The error and all its causes on one line: `a: b: c`.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_cap_and_escape_outside_text() {
        let asset = "app\n\u{1b}[2J.tar.gz".to_string();
        let table = [
            (
                Error::Limit {
                    asset: "a.tar.gz".into(),
                    cap: Cap::Unpacked,
                    limit: 10,
                },
                "a.tar.gz unpacks to more than MOLTD_MAX_UNPACKED=10 bytes",
            ),
            (
                Error::Limit {
                    asset: "a.tar.gz".into(),
                    cap: Cap::Download,
                    limit: 10,
                },
                "a.tar.gz is larger than MOLTD_MAX_DOWNLOAD=10 bytes",
            ),
            (
                Error::MissingChecksum {
                    tag: "v1\n".into(),
                    asset: asset.clone(),
                    hint: "",
                },
                "release v1\\n has no checksum for app\\n\\u{1b}[2J.tar.gz (no digest field, no SHA256SUMS, checksums.txt or app\\n\\u{1b}[2J.tar.gz.sha256 asset)",
            ),
            (
                Error::Status {
                    url: "http://x/\u{1b}".into(),
                    status: 500,
                    message: "down\nforged".into(),
                },
                "http://x/\\u{1b} answered http 500: down\\nforged",
            ),
            (
                Error::NoSpace {
                    dir: "/app/releases".into(),
                    kind: Resource::Inodes,
                    free: 20,
                    needed: 19,
                    reserve: 2,
                },
                "no space left on the device for staging in /app/releases: at least 19 inodes needed, 18 of the 20 free may be used (MOLTD_MIN_FREE keeps 2)",
            ),
        ];
        for (error, expected) in table {
            let text = error.to_string();
            assert!(text.starts_with(expected), "{text}");
        }
    }

    #[test]
    fn bad_releases_and_transient_trouble() {
        let limit = Error::Limit {
            asset: "a".into(),
            cap: Cap::Entries,
            limit: 1,
        };
        let full = Error::NoSpace {
            dir: "/app".into(),
            kind: Resource::Bytes,
            free: 1,
            needed: 2,
            reserve: 0,
        };
        let mismatch = Error::DigestMismatch {
            asset: "a".into(),
            actual: "1".into(),
            expected: "2".into(),
            origin: "the digest field".into(),
        };
        assert!(limit.release_is_bad() && !limit.is_transient());
        assert!(mismatch.release_is_bad() && !mismatch.is_transient());
        assert!(!full.release_is_bad() && full.is_transient());
        assert!(!Error::Deadline(Duration::from_secs(1)).release_is_bad());
    }
}
