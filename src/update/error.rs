//! Every way an update step can fail, as one typed enum.
//!
//! One flat enum rather than one per file: callers (the CLI now, the switch
//! logic of the next step later) mostly need "what went wrong, in words", plus
//! a few distinctions that change behaviour ([`Error::RateLimited`] sets the
//! next poll, [`Error::is_transient`] picks backoff over a plain interval).
//! Messages are lowercase and name the file, URL or variable involved; the
//! underlying cause hangs off `source()`, and [`chain`] prints the whole chain.

use std::fmt::Write as _;
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
    #[error(
        "no release source: set MOLTD_REPO=owner/repo (or GH_USER and GH_REPO), or MOLTD_SOURCE=url with MOLTD_URL"
    )]
    NoSource,
    #[error(transparent)]
    Secret(#[from] crate::secrets::Error),
    #[error("cannot build the http client")]
    Client(#[source] reqwest::Error),
    #[error("cannot reach {url}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered http {status}{}", detail(.message))]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    #[error("rate limited by {url} (http {status}){}", retry_hint(.wait))]
    RateLimited {
        url: String,
        status: u16,
        wait: Option<Duration>,
    },
    #[error("{what} from {url} is larger than the limit of {limit} bytes")]
    TooLarge {
        what: &'static str,
        url: String,
        limit: u64,
    },
    #[error("cannot parse the release list from {url}")]
    Parse {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("release {tag}: {problem}")]
    Asset { tag: String, problem: String },
    #[error(
        "release {tag} has no checksum for {asset} (no digest field, no SHA256SUMS, checksums.txt or {asset}.sha256 asset); set MOLTD_REQUIRE_CHECKSUM=false to accept it unchecked"
    )]
    MissingChecksum { tag: String, asset: String },
    #[error("{file} lists no sha256 for {asset}")]
    ChecksumNotListed { file: String, asset: String },
    #[error("sha256 of {asset} is {actual}, expected {expected} (from {origin})")]
    DigestMismatch {
        asset: String,
        actual: String,
        expected: String,
        origin: String,
    },
    #[error("MOLTD_MINISIGN_KEY is not a minisign public key")]
    MinisignKey(#[source] minisign_verify::Error),
    #[error("release {tag} has no {asset}.minisig, and MOLTD_MINISIGN_KEY requires one")]
    MissingSignature { tag: String, asset: String },
    #[error("{asset}.minisig does not verify against MOLTD_MINISIGN_KEY")]
    BadSignature {
        asset: String,
        #[source]
        source: minisign_verify::Error,
    },
    #[error("download of {url} failed after {done} of {}", total.map_or("an unknown number of".into(), |t| t.to_string()) + " bytes")]
    Download {
        url: String,
        done: u64,
        total: Option<u64>,
        #[source]
        source: io::Error,
    },
    #[error("{url} sent {actual} bytes but {expected} were announced")]
    WrongLength {
        url: String,
        expected: u64,
        actual: u64,
    },
    #[error("download took longer than the limit of {}s", .0.as_secs())]
    Deadline(Duration),
    #[error("refused archive entry {path:?}: {reason}")]
    UnsafeEntry { path: String, reason: &'static str },
    #[error("archive exceeds the limit of {limit} {what}")]
    Limit { what: &'static str, limit: u64 },
    #[error("not enough free space in {}: {free} bytes free, {needed} needed", dir.display())]
    NoSpace {
        dir: PathBuf,
        free: u64,
        needed: u64,
    },
    #[error("disk full while unpacking into {}", dir.display())]
    DiskFull {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{asset} is not a valid tar.gz archive")]
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
        "another moltd manages {} (it holds {}); if it is the supervisor, ask it with moltd update / moltd unmark through MOLTD_CONTROL",
        app.display(), lock.display()
    )]
    Managed { app: PathBuf, lock: PathBuf },
    #[error("{feed} lists no release to install")]
    NoRelease { feed: String },
    #[error("no previous release to roll back to")]
    NothingToRollBack,
    #[error("{} not marked bad ({})", .tags.join(", "), bad_list(.bad))]
    NotMarkedBad { tags: Vec<String>, bad: Vec<String> },
    #[error("the supervisor cannot do it: {0}")]
    Supervisor(String),
    #[error("{name} exited with {code}; nothing was changed")]
    Hook { name: &'static str, code: i32 },
    #[error("{0}")]
    Unhealthy(String),
    #[error("{0}")]
    RolledBack(String),
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
        format!(": {message}")
    }
}

fn bad_list(bad: &[String]) -> String {
    match bad {
        [] => "no release is marked bad".into(),
        bad => format!("bad releases: {}", bad.join(", ")),
    }
}

fn retry_hint(wait: &Option<Duration>) -> String {
    wait.map_or_else(String::new, |w| format!("; retrying in {}s", w.as_secs()))
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
            | Error::Busy(_) => true,
            Error::Status { status, .. } => *status >= 500,
            _ => false,
        }
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
