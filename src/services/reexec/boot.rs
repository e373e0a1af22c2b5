//! The boot record: which moltd a container start runs.
//!
//! A self-update keeps the new binary under `$MOLTD_APP_DIR/.moltd/bin/`
//! (`moltd-VERSION`, written under a temporary name, synced, renamed) and
//! records it by renaming a new `current` link, with `tries` at 0: the
//! image is read-only and is never changed. At the next container start the
//! image's moltd ([`at_boot`]) execs the recorded binary if it is newer
//! than itself, counting the try first; the recorded binary zeroes the
//! count once its loop runs ([`came_up`]). After [`MAX_TRIES`] starts that
//! never got there, the image's own binary runs and says why.

use log::{info, warn};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Starts of a recorded binary that never came up, after which the image's
/// binary runs.
pub const MAX_TRIES: u32 = 2;
const PREFIX: &str = "moltd-";

/// Where kept binaries and the record live.
pub fn bin_dir(app_dir: &Path) -> PathBuf {
    crate::update::config::state_dir(app_dir).join("bin")
}

/// The version a kept binary's name says.
fn version_of(name: &Path) -> Option<String> {
    let name = name.file_name()?.to_str()?;
    name.strip_prefix(PREFIX).map(str::to_owned)
}

/// Whether a version makes a plain file name.
fn plain(version: &str) -> bool {
    !version.is_empty()
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn read_tries(dir: &Path) -> u32 {
    std::fs::read_to_string(dir.join("tries"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// Sets `tries` (temporary file, synced, renamed).
fn set_tries(dir: &Path, tries: u32) -> std::io::Result<()> {
    let temporary = dir.join(".tries.new");
    write_synced(&temporary, format!("{tries}\n").as_bytes())?;
    std::fs::rename(&temporary, dir.join("tries"))
}

/// Points `current` at `target` (a name in the folder) by renaming a new
/// link over it.
fn record(dir: &Path, target: &str) -> std::io::Result<()> {
    let temporary = dir.join(".current.new");
    let _ = std::fs::remove_file(&temporary);
    std::os::unix::fs::symlink(target, &temporary)?;
    std::fs::rename(&temporary, dir.join("current"))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Step 4 of a self-update: copies `file` (version `version`) into the
/// folder, records it with `tries` at 0, and returns the copy, which is
/// what gets exec'd.
pub fn keep(app_dir: &Path, file: &Path, version: &str) -> std::io::Result<PathBuf> {
    if !plain(version) {
        return Err(std::io::Error::other(format!(
            "version {version:?} does not make a file name"
        )));
    }
    let dir = bin_dir(app_dir);
    std::fs::create_dir_all(&dir)?;
    let name = format!("{PREFIX}{version}");
    let kept = dir.join(&name);
    let temporary = dir.join(format!(".{name}.new"));
    std::fs::copy(file, &temporary)?;
    std::fs::File::open(&temporary)?.sync_all()?;
    crate::version::keep_beside(file, &kept)?;
    std::fs::rename(&temporary, &kept)?;
    set_tries(&dir, 0)?;
    record(&dir, &name)?;
    Ok(kept)
}

/// A resume that failed: the record goes back to the binary that runs
/// again (one kept here), or is removed (the image's).
pub fn undo(app_dir: &Path) {
    let dir = bin_dir(app_dir);
    let running = std::fs::read_link("/proc/self/exe").ok();
    let result = match running.as_deref().filter(|exe| exe.parent() == Some(&dir)) {
        Some(exe) => match exe.file_name().and_then(|n| n.to_str()) {
            Some(name) => record(&dir, name),
            None => Ok(()),
        },
        None => std::fs::remove_file(dir.join("current")).or_else(|err| match err.kind() {
            std::io::ErrorKind::NotFound => Ok(()),
            _ => Err(err),
        }),
    };
    if let Err(err) = result {
        warn!("cannot undo the boot record in {}: {err}", dir.display());
    }
}

/// At a container start (service mode, not a resume): the recorded binary
/// to exec instead of this one, its try counted; `None` to run on.
pub fn at_boot(app_dir: &Path) -> Option<PathBuf> {
    let dir = bin_dir(app_dir);
    let target = std::fs::read_link(dir.join("current")).ok()?;
    let version = version_of(&target)?;
    let own = crate::version::version();
    if !super::newer(&version, own) {
        return None;
    }
    let path = dir.join(&target);
    let tries = read_tries(&dir);
    if tries >= MAX_TRIES {
        warn!(
            "the recorded moltd {version} ({}) did not come up in {tries} starts; running this one, {own}",
            path.display()
        );
        return None;
    }
    if let Err(err) = set_tries(&dir, tries + 1) {
        warn!("cannot count a try of the recorded moltd {version}: {err}; running this one, {own}");
        return None;
    }
    info!("starting the recorded moltd {version} ({})", path.display());
    Some(path)
}

/// The loop runs: if this is the recorded binary, its tries are zeroed.
pub fn came_up(app_dir: &Path) {
    let dir = bin_dir(app_dir);
    let Ok(current) = std::fs::canonicalize(dir.join("current")) else {
        return;
    };
    let running = std::fs::read_link("/proc/self/exe").ok();
    if running.as_deref() == Some(current.as_path()) && read_tries(&dir) != 0 {
        if let Err(err) = set_tries(&dir, 0) {
            warn!("cannot reset the tries of {}: {err}", current.display());
        }
    }
}
