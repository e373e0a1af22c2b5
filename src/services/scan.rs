//! Reading the services directory into service definitions.
//!
//! Only this file looks at the layout of a service folder (`run`, `finish`,
//! `down`, `essential`, `down-signal`, `forward-signals`, `listen`, `log/`,
//! and the readiness files `notify`, `notification-fd`, `check`). The state
//! machine gets plain [`Definition`]s, so it can be tested without a file
//! system.

use super::machine;
use crate::signals;
use nix::libc;
use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// One service folder, as found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Definition {
    pub name: String,
    pub dir: PathBuf,
    pub main: Part,
    /// The `log/` sub-service, if the folder has one with an executable `run`.
    pub log: Option<Part>,
    /// An `essential` file: the container stops when this service gives up.
    pub essential: bool,
    /// The signals moltd passes on to the group of `run` (never to
    /// `log/run`): every forwardable one, or those a `forward-signals` file
    /// names.
    pub forward_signals: SignalSet,
    /// What was wrong with `forward-signals`, if anything: then none are
    /// forwarded.
    pub forward_signals_problem: Option<ForwardSignalsError>,
    /// The sockets of a `listen` file, which moltd binds and passes to every
    /// start of `run`; what was wrong with the file, which keeps `run` from
    /// starting until it is fixed.
    pub listen: Result<Vec<Listen>, ListenError>,
}

/// One line of a `listen` file: `[NAME=]ADDRESS [mode=OCTAL] [owner=UID[:GID]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listen {
    /// Its name in `LISTEN_FDNAMES`; `None`: the service's name.
    pub name: Option<String>,
    pub address: Address,
    /// Where it was written, for error messages.
    pub line: usize,
}

/// What a held socket is bound to. Two lines with equal addresses are the
/// same socket, so a rescan keeps the descriptor of an unchanged one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    Tcp(SocketAddr),
    Unix {
        /// Relative paths are taken from the service folder.
        path: PathBuf,
        mode: Option<u32>,
        owner: Option<(u32, Option<u32>)>,
    },
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Tcp(addr) => write!(f, "tcp://{addr}"),
            Address::Unix { path, .. } => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Why a `listen` file cannot be used; it names the file and the line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ListenError {
    #[error("{} cannot be read: {reason}", file.display())]
    Unreadable { file: PathBuf, reason: String },
    #[error("{} line {line}: {problem}", file.display())]
    Line {
        file: PathBuf,
        line: usize,
        problem: ListenProblem,
    },
}

/// What is wrong with one line of a `listen` file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ListenProblem {
    #[error("{0:?} is not tcp://HOST:PORT, tcp://[IPV6]:PORT or unix:PATH")]
    Scheme(String),
    #[error("{0:?} is not an IP address and port (host names are not resolved)")]
    TcpAddress(String),
    #[error("the path after unix: is empty")]
    EmptyPath,
    #[error("name {0:?} must be 1 to 255 of A-Z a-z 0-9 _ . -")]
    Name(String),
    #[error("{0:?} is not mode=OCTAL or owner=UID[:GID]")]
    Option(String),
    #[error("{0} is given twice")]
    Repeated(&'static str),
    #[error("mode= and owner= are for unix: sockets only")]
    OptionOnTcp,
    #[error("same address as line {0}")]
    Duplicate(usize),
    #[error("more than {} sockets", MAX_SOCKETS)]
    TooMany,
}

/// The most sockets one service may hold (all are passed to each start).
pub const MAX_SOCKETS: usize = crate::sys::spawn::MAX_PASS;

/// A set of signal numbers from 1 to [`signals::MAX_SIGNAL`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SignalSet(u64);

impl SignalSet {
    /// Every signal moltd forwards to services unless told otherwise.
    pub fn forwardable() -> SignalSet {
        (1..=signals::MAX_SIGNAL)
            .filter(|&s| machine::not_forwarded_because(s).is_none())
            .collect()
    }

    pub fn contains(self, signal: i32) -> bool {
        (1..=signals::MAX_SIGNAL).contains(&signal) && self.0 & (1 << (signal - 1)) != 0
    }
}

impl FromIterator<i32> for SignalSet {
    fn from_iter<I: IntoIterator<Item = i32>>(signals: I) -> SignalSet {
        SignalSet(signals.into_iter().fold(0, |set, s| set | 1 << (s - 1)))
    }
}

/// Why a `forward-signals` file was not used. Any problem means no signal is
/// forwarded to that service: the file was there to narrow what it gets, and
/// most of these signals end a program that does not expect them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ForwardSignalsError {
    #[error("forward-signals cannot be read ({reason}); forwarding no signals")]
    Unreadable { reason: String },
    #[error(
        "forward-signals line {line}: {text:?} is not a signal name or number; forwarding no signals"
    )]
    NotASignal { line: usize, text: String },
    #[error(
        "forward-signals line {line}: {name} is never forwarded ({why}); forwarding no signals"
    )]
    NotForwardable {
        line: usize,
        name: String,
        why: &'static str,
    },
}

/// What is known about one supervised program (`run`, or `log/run`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// A `down` file: not started at boot.
    pub down: bool,
    /// An executable `finish` to run after `run` exits.
    pub finish: bool,
    /// The signal that starts a stop (from `down-signal`, default TERM).
    pub down_signal: i32,
    /// What was wrong with `down-signal`, if anything.
    pub down_signal_problem: Option<String>,
    /// How a running `run` says it is ready.
    pub readiness: Readiness,
    /// What was wrong with `notification-fd`, if anything.
    pub readiness_problem: Option<String>,
}

/// How a running program becomes ready. A `READY=1` on `NOTIFY_SOCKET`
/// counts whatever this says; the others are tried in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// A `notify` file: only `READY=1` on `NOTIFY_SOCKET` makes it ready.
    Notify,
    /// A `notification-fd` file (s6): `run` gets a pipe's write end as this
    /// descriptor, and a newline on it means ready.
    Fd(i32),
    /// An executable `check` (runit): ready once `./check` exits 0.
    Check,
    /// None of those: ready once it stayed up `MOLTD_READY_GRACE`.
    Grace,
}

/// The lowest and highest descriptor a `notification-fd` may name: not a
/// standard stream, and one a child can have under the usual limit.
const NOTIFICATION_FDS: std::ops::RangeInclusive<i32> = 3..=1023;

/// A directory entry that looks like a service but is not one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ignored {
    pub name: String,
    pub reason: String,
}

/// Everything found in the services directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    pub services: Vec<Definition>,
    pub ignored: Vec<Ignored>,
    /// Sub-folders (services or not) to watch for `run` appearing or changing.
    pub folders: Vec<PathBuf>,
}

/// Lists the services in `dir`. Dot-folders and plain files are skipped
/// silently; folders without an executable `run` are reported as ignored.
pub fn scan(dir: &Path) -> std::io::Result<Listing> {
    let mut listing = Listing::default();
    let mut entries: Vec<_> = fs::read_dir(dir)?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            listing.ignored.push(Ignored {
                name: entry.file_name().to_string_lossy().into_owned(),
                reason: "its name is not UTF-8".into(),
            });
            continue;
        };
        let path = entry.path();
        // fs::metadata follows symlinks: /etc/service/x -> /etc/sv/x is the
        // usual runit layout.
        if name.starts_with('.') || !fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        listing.folders.push(path.clone());
        if name.contains(['\t', '\n']) {
            listing.ignored.push(Ignored {
                name,
                reason: "its name holds a tab or a newline".into(),
            });
            continue;
        }
        match read_part(&path) {
            Ok(main) => {
                let (forward_signals, forward_signals_problem) =
                    match read_forward_signals(&path.join("forward-signals")) {
                        Ok(set) => (set, None),
                        Err(problem) => (SignalSet::default(), Some(problem)),
                    };
                let log_dir = path.join("log");
                let log = if log_dir.is_dir() {
                    listing.folders.push(log_dir.clone());
                    read_part(&log_dir).ok()
                } else {
                    None
                };
                listing.services.push(Definition {
                    listen: read_listen(&path),
                    essential: path.join("essential").exists(),
                    forward_signals,
                    forward_signals_problem,
                    dir: path,
                    name,
                    main,
                    log,
                });
            }
            Err(reason) => listing.ignored.push(Ignored { name, reason }),
        }
    }
    Ok(listing)
}

/// Reads one program folder; the error says why it is not a service.
fn read_part(dir: &Path) -> Result<Part, String> {
    let run = dir.join("run");
    match fs::metadata(&run) {
        Err(_) => return Err("it has no run file".into()),
        Ok(meta) if !meta.is_file() => return Err("its run is not a file".into()),
        Ok(meta) if meta.permissions().mode() & 0o111 == 0 => {
            return Err("its run file is not executable".into());
        }
        Ok(_) => {}
    }
    let (down_signal, down_signal_problem) = match fs::read_to_string(dir.join("down-signal")) {
        Err(_) => (libc::SIGTERM, None),
        Ok(text) => match parse_down_signal(&text) {
            Some(signal) => (signal, None),
            None => (
                libc::SIGTERM,
                Some(format!(
                    "down-signal holds {:?}, not a signal name or number; using TERM",
                    text.trim()
                )),
            ),
        },
    };
    let (readiness, readiness_problem) = read_readiness(dir);
    Ok(Part {
        down: dir.join("down").exists(),
        finish: is_executable(&dir.join("finish")),
        down_signal,
        down_signal_problem,
        readiness,
        readiness_problem,
    })
}

/// How the program in `dir` says it is ready. A `notification-fd` that
/// names no usable descriptor still makes the notification the only way
/// (the service meant to notify), with the problem to report.
fn read_readiness(dir: &Path) -> (Readiness, Option<String>) {
    match fs::read_to_string(dir.join("notification-fd")) {
        Ok(text) => match parse_notification_fd(&text) {
            Some(fd) => (Readiness::Fd(fd), None),
            None => (
                Readiness::Notify,
                Some(format!(
                    "notification-fd holds {:?}, not a descriptor from {} to {}; \
                     only READY=1 on NOTIFY_SOCKET will make it ready",
                    text.trim(),
                    NOTIFICATION_FDS.start(),
                    NOTIFICATION_FDS.end()
                )),
            ),
        },
        Err(_) if dir.join("notify").exists() => (Readiness::Notify, None),
        Err(_) if is_executable(&dir.join("check")) => (Readiness::Check, None),
        Err(_) => (Readiness::Grace, None),
    }
}

/// The first line of a `notification-fd` file: a descriptor number.
fn parse_notification_fd(text: &str) -> Option<i32> {
    let fd = text.lines().next()?.trim().parse().ok()?;
    NOTIFICATION_FDS.contains(&fd).then_some(fd)
}

/// Whether `path` is a file with an execute bit: how runit decides that an
/// optional `finish` (or `sv`'s `check`) is there to run.
pub fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The first line of a `down-signal` file: a name (`QUIT`, `SIGQUIT`) or a
/// number. KILL and STOP are refused: they would skip the graceful stop.
fn parse_down_signal(text: &str) -> Option<i32> {
    let first = text.lines().next()?.trim();
    signals::parse(first).filter(|&s| s != libc::SIGKILL && s != libc::SIGSTOP)
}

/// Reads a `forward-signals` file; without one, every forwardable signal.
fn read_forward_signals(path: &Path) -> Result<SignalSet, ForwardSignalsError> {
    match fs::read_to_string(path) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(SignalSet::forwardable()),
        Err(err) => Err(ForwardSignalsError::Unreadable {
            reason: err.to_string().to_lowercase(),
        }),
        Ok(text) => parse_forward_signals(&text),
    }
}

/// One signal name (`HUP`, `SIGHUP`) or number (real-time signals have only
/// numbers: 34 to 64 reach moltd, glibc keeps 32 and 33) a line; blank lines
/// and `#` comments are skipped, and `none` names nothing, so an empty file
/// or one saying `none` forwards no signal.
fn parse_forward_signals(text: &str) -> Result<SignalSet, ForwardSignalsError> {
    let mut wanted = Vec::new();
    for (at, line) in text.lines().enumerate() {
        let line_no = at + 1;
        let word = line.trim();
        if word.is_empty() || word.starts_with('#') || word.eq_ignore_ascii_case("none") {
            continue;
        }
        let signal = signals::parse(word).ok_or_else(|| ForwardSignalsError::NotASignal {
            line: line_no,
            text: word.to_owned(),
        })?;
        if let Some(why) = machine::not_forwarded_because(signal) {
            return Err(ForwardSignalsError::NotForwardable {
                line: line_no,
                name: signals::name(signal),
                why,
            });
        }
        wanted.push(signal);
    }
    Ok(wanted.into_iter().collect())
}

/// Reads the service folder's `listen` file; without one, no sockets.
fn read_listen(dir: &Path) -> Result<Vec<Listen>, ListenError> {
    let file = dir.join("listen");
    match fs::read_to_string(&file) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(err) => Err(ListenError::Unreadable {
            file,
            reason: err.to_string().to_lowercase(),
        }),
        Ok(text) => parse_listen(&text, dir).map_err(|(line, problem)| ListenError::Line {
            file,
            line,
            problem,
        }),
    }
}

/// One socket a line; blank lines and `#` comments are skipped. The error
/// carries the line number.
fn parse_listen(text: &str, dir: &Path) -> Result<Vec<Listen>, (usize, ListenProblem)> {
    let mut sockets: Vec<Listen> = Vec::new();
    for (at, line) in text.lines().enumerate() {
        let line_no = at + 1;
        let words = line.trim();
        if words.is_empty() || words.starts_with('#') {
            continue;
        }
        let socket = parse_listen_line(words, dir, line_no).map_err(|p| (line_no, p))?;
        if let Some(same) = sockets.iter().find(|s| s.address == socket.address) {
            return Err((line_no, ListenProblem::Duplicate(same.line)));
        }
        if sockets.len() == MAX_SOCKETS {
            return Err((line_no, ListenProblem::TooMany));
        }
        sockets.push(socket);
    }
    Ok(sockets)
}

fn parse_listen_line(words: &str, dir: &Path, line: usize) -> Result<Listen, ListenProblem> {
    let mut words = words.split_whitespace();
    let first = words.next().unwrap_or_default();
    // A name is what comes before the first `=`, unless that holds a `:`
    // (then the `=` belongs to the address: `unix:/run/a=b`).
    let (name, address) = match first.split_once('=') {
        Some((name, address)) if !name.contains(':') => {
            let valid = (1..=255).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !valid {
                return Err(ListenProblem::Name(name.to_owned()));
            }
            (Some(name.to_owned()), address)
        }
        _ => (None, first),
    };
    let (mut mode, mut owner) = (None, None);
    for option in words {
        let bad = || ListenProblem::Option(option.to_owned());
        match option.split_once('=') {
            Some(("mode", octal)) => {
                let value = u32::from_str_radix(octal, 8)
                    .ok()
                    .filter(|&m| m <= 0o7777)
                    .ok_or_else(bad)?;
                if mode.replace(value).is_some() {
                    return Err(ListenProblem::Repeated("mode="));
                }
            }
            Some(("owner", ids)) => {
                let (uid, gid) = match ids.split_once(':') {
                    Some((uid, gid)) => (uid, Some(gid)),
                    None => (ids, None),
                };
                let uid = uid.parse().map_err(|_| bad())?;
                let gid = gid.map(str::parse).transpose().map_err(|_| bad())?;
                if owner.replace((uid, gid)).is_some() {
                    return Err(ListenProblem::Repeated("owner="));
                }
            }
            _ => return Err(bad()),
        }
    }
    let address = if let Some(rest) = address.strip_prefix("tcp://") {
        if mode.is_some() || owner.is_some() {
            return Err(ListenProblem::OptionOnTcp);
        }
        Address::Tcp(
            rest.parse()
                .map_err(|_| ListenProblem::TcpAddress(rest.to_owned()))?,
        )
    } else if let Some(path) = address.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(ListenProblem::EmptyPath);
        }
        Address::Unix {
            path: dir.join(path),
            mode,
            owner,
        }
    } else {
        return Err(ListenProblem::Scheme(address.to_owned()));
    };
    Ok(Listen {
        name,
        address,
        line,
    })
}

#[cfg(test)]
mod tests;
