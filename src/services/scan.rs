//! Reading the services directory into service definitions.
//!
//! Only this file looks at the layout of a service folder (`run`, `finish`,
//! `down`, `essential`, `down-signal`, `log/`). The state machine gets plain
//! [`Definition`]s, so it can be tested without a file system.

use crate::signals;
use nix::libc;
use std::fs;
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
}

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
                let log_dir = path.join("log");
                let log = if log_dir.is_dir() {
                    listing.folders.push(log_dir.clone());
                    read_part(&log_dir).ok()
                } else {
                    None
                };
                listing.services.push(Definition {
                    essential: path.join("essential").exists(),
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
    Ok(Part {
        down: dir.join("down").exists(),
        finish: is_executable(&dir.join("finish")),
        down_signal,
        down_signal_problem,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_signal_syntax() {
        let table = [
            ("QUIT\n", Some(libc::SIGQUIT)),
            ("SIGHUP", Some(libc::SIGHUP)),
            ("  usr1  \nignored", Some(libc::SIGUSR1)),
            ("3", Some(3)),
            ("KILL", None),
            ("garbage", None),
            ("", None),
            ("99", None),
        ];
        for (text, expected) in table {
            assert_eq!(parse_down_signal(text), expected, "{text:?}");
        }
    }
}
