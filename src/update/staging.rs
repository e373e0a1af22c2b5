//! The staging folder, and the one rename that makes a release visible.
//!
//! A download unpacks into `releases/.staging-<tag>-<pid>/tree`. Only after
//! the digest and signature passed is the file system synced and the release
//! root renamed to `releases/<tag>`, and the `releases` folder fsynced. A
//! rename is atomic, so whatever moment moltd is killed at, `releases/<tag>`
//! is either absent or whole; dot-folders are never taken for releases, and
//! the next run removes them. A lock file keeps two moltd processes from
//! staging (and cleaning) at once.
//!
//! A second lock, `supervisor.lock`, says who may write the state file at
//! all: a supervisor holds it for its lifetime, a local `moltd update` or an
//! offline `moltd unmark` for its whole run. Without it a local command
//! would run `recover` or save its stale `current` under a supervisor that
//! is switching, or edit marks the supervisor holds in memory.
//!
//! A staging folder shares its file system with the running app, which must
//! not find the disk full because an update arrived. [`Room`] keeps a
//! reserve of space and inodes (`MOLTD_MIN_FREE`) that unpacking never
//! takes: it measures the file system once and is charged every inode and
//! every block as it is created.

use super::Error;
use super::config::MinFree;
use super::error::Resource;
use crate::sys;
use nix::fcntl::Flock;
use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const PREFIX: &str = ".staging-";

/// The longest tag that can be staged: `.staging-<tag>-<pid>` must fit
/// in a file name (255 bytes), whatever the pid.
const MAX_TAG: usize = 255 - PREFIX.len() - "-4294967295".len();

/// `releases/<tag>`, refusing tags that are not a plain folder name or are
/// too long to stage.
pub fn release_dir(releases: &Path, tag: &str) -> Result<PathBuf, Error> {
    let plain = !tag.is_empty() && !tag.starts_with('.') && !tag.contains(['/', '\0']);
    if plain && tag.len() <= MAX_TAG {
        Ok(releases.join(tag))
    } else {
        Err(Error::BadTag(tag.to_string()))
    }
}

/// A staging folder in use; removed on drop unless committed.
pub struct Staging {
    dir: PathBuf,
    releases: PathBuf,
    _lock: Flock<File>,
}

/// Takes the staging lock (`state_dir/staging.lock`) without waiting:
/// [`Error::Busy`] while another moltd stages into `releases`.
fn lock(releases: &Path, state_dir: &Path) -> Result<Flock<File>, Error> {
    try_lock(state_dir, "staging.lock")?.ok_or_else(|| Error::Busy(releases.to_path_buf()))
}

/// A hold on `supervisor.lock` (see [`manage`]).
pub enum Manage {
    /// Taken by this process.
    Taken(Flock<File>),
    /// Taken by PID 1 and lent to the update agent: the lock belongs to the
    /// open file, which the descriptor shares.
    Lent(std::os::fd::OwnedFd),
}

/// Takes `state_dir/supervisor.lock` without waiting, for as long as the
/// returned value lives: [`Error::Managed`] while another moltd (a
/// supervisor, or a local `moltd update`) writes the state of `app_dir`.
/// The descriptor is close-on-exec (std opens with `O_CLOEXEC`), so
/// services never inherit it.
pub fn manage(app_dir: &Path, state_dir: &Path) -> Result<Flock<File>, Error> {
    try_lock(state_dir, "supervisor.lock")?.ok_or_else(|| Error::Managed {
        app: app_dir.to_path_buf(),
        lock: state_dir.join("supervisor.lock"),
    })
}

/// `state_dir/name`, locked; `None` while another process holds it.
fn try_lock(state_dir: &Path, name: &str) -> Result<Option<Flock<File>>, Error> {
    fs::create_dir_all(state_dir).map_err(Error::io("create", state_dir))?;
    let path = state_dir.join(name);
    let file = File::create(&path).map_err(Error::io("create", &path))?;
    sys::fs::try_lock(file).map_err(Error::io("lock", &path))
}

/// Where the app asks for an update: `state_dir/update-requested` (for
/// moltd's user) and `state_dir/trigger/update-requested` (for any user,
/// see [`trigger_dir`]).
pub fn trigger_paths(state_dir: &Path) -> [PathBuf; 2] {
    const TRIGGER: &str = "update-requested";
    [
        state_dir.join(TRIGGER),
        state_dir.join(TRIGGER_DIR).join(TRIGGER),
    ]
}

const TRIGGER_DIR: &str = "trigger";

/// Creates `state_dir/trigger`, world-writable and sticky like `/tmp`, so
/// that the app may ask for an update whatever user its services run as,
/// while `.moltd/` itself (state, locks, manifest) stays writable by moltd's
/// user only: a writable `.moltd/` would let anyone replace `state.json` or
/// plant a link where moltd writes. moltd never opens what is in there; it
/// only removes the trigger file, which does not follow links.
pub fn trigger_dir(state_dir: &Path) -> Result<PathBuf, Error> {
    let dir = state_dir.join(TRIGGER_DIR);
    fs::create_dir_all(&dir).map_err(Error::io("create", &dir))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o1777))
        .map_err(Error::io("open to every user", &dir))?;
    Ok(dir)
}

/// Takes the staging lock and removes leftovers of earlier runs from
/// `releases`.
fn lock_and_clean(releases: &Path, state_dir: &Path) -> Result<Flock<File>, Error> {
    fs::create_dir_all(releases).map_err(Error::io("create", releases))?;
    let lock = lock(releases, state_dir)?;
    let entries = fs::read_dir(releases).map_err(Error::io("list", releases))?;
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(PREFIX) {
            log::info!("removing the leftover {}", entry.path().display());
            fs::remove_dir_all(entry.path()).map_err(Error::io("remove", entry.path()))?;
        }
    }
    Ok(lock)
}

/// Removes what an interrupted run left behind, unless a run is going on.
pub fn clean_leftovers(releases: &Path, state_dir: &Path) -> Result<(), Error> {
    lock_and_clean(releases, state_dir).map(drop)
}

/// What unpacking may still use on the staging file system.
#[derive(Debug)]
pub struct Room {
    dir: PathBuf,
    space: sys::fs::Space,
    reserve_bytes: u64,
    reserve_inodes: u64,
    bytes: u64,
    inodes: u64,
}

impl Room {
    /// Measures the file system holding `dir` and checks that `needed`
    /// bytes and one inode fit above the reserve.
    pub fn measure(dir: &Path, min_free: MinFree, needed: u64) -> Result<Room, Error> {
        let space = sys::fs::space(dir).map_err(Error::io("measure free space in", dir))?;
        let (reserve_bytes, reserve_inodes) = min_free.reserve(space.bytes, space.inodes);
        let mut room = Room {
            dir: dir.to_path_buf(),
            space,
            reserve_bytes,
            reserve_inodes,
            bytes: 0,
            inodes: 0,
        };
        room.take(Resource::Bytes, needed)?;
        room.take(Resource::Inodes, 1)?;
        room.bytes = 0;
        room.inodes = 0;
        Ok(room)
    }

    /// Charges `amount` more of `kind`; an error once the reserve would be
    /// crossed.
    fn take(&mut self, kind: Resource, amount: u64) -> Result<(), Error> {
        let (used, free, reserve) = match kind {
            Resource::Bytes => (&mut self.bytes, self.space.bytes_free, self.reserve_bytes),
            // A file system without an inode count cannot run out of them.
            Resource::Inodes if self.space.inodes == 0 => return Ok(()),
            Resource::Inodes => (
                &mut self.inodes,
                self.space.inodes_free,
                self.reserve_inodes,
            ),
        };
        *used = used.saturating_add(amount);
        if used.saturating_add(reserve) > free {
            return Err(Error::NoSpace {
                dir: self.dir.clone(),
                kind,
                free,
                needed: *used,
                reserve,
            });
        }
        Ok(())
    }

    /// One more file, folder or symlink.
    pub fn inode(&mut self) -> Result<(), Error> {
        self.take(Resource::Inodes, 1)
    }

    /// A file grows from `from` to `to` bytes: charged in whole blocks.
    pub fn grow(&mut self, from: u64, to: u64) -> Result<(), Error> {
        let blocks = |size: u64| size.div_ceil(self.space.block);
        self.take(
            Resource::Bytes,
            (blocks(to) - blocks(from)) * self.space.block,
        )
    }

    /// A new folder: an inode and a block.
    pub fn folder(&mut self) -> Result<(), Error> {
        self.inode()?;
        self.grow(0, 1)
    }
}

impl Staging {
    pub fn begin(releases: &Path, state_dir: &Path, tag: &str) -> Result<Staging, Error> {
        release_dir(releases, tag)?;
        let lock = lock_and_clean(releases, state_dir)?;
        let dir = releases.join(format!("{PREFIX}{tag}-{}", std::process::id()));
        let tree = dir.join("tree");
        fs::create_dir_all(&tree).map_err(Error::io("create", &tree))?;
        Ok(Staging {
            dir,
            releases: releases.to_path_buf(),
            _lock: lock,
        })
    }

    /// The empty folder to unpack into.
    pub fn tree(&self) -> PathBuf {
        self.dir.join("tree")
    }

    /// Makes `root` (the tree or a folder inside it) the release `tag`.
    pub fn commit(self, root: &Path, tag: &str) -> Result<PathBuf, Error> {
        let target = release_dir(&self.releases, tag)?;
        sys::fs::sync_file_system(root).map_err(Error::io("sync", root))?;
        fs::rename(root, &target).map_err(Error::io("rename into place", &target))?;
        File::open(&self.releases)
            .and_then(|d| d.sync_all())
            .map_err(Error::io("sync", &self.releases))?;
        Ok(target)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Err(err) = fs::remove_dir_all(&self.dir) {
            log::warn!("cannot remove {}: {err}", self.dir.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_as_folder_names() {
        let releases = Path::new("/app/releases");
        for ok in ["v1.2.3", "backend-v0.8.7", "1.0.0+build.5"] {
            assert_eq!(release_dir(releases, ok).unwrap(), releases.join(ok));
        }
        let longest = "v1.0.0+".to_owned() + &"a".repeat(MAX_TAG - 7);
        assert!(release_dir(releases, &longest).is_ok());
        let too_long = longest.clone() + "a";
        for bad in ["", ".", "..", ".staging-x", "a/b", "../x", &too_long] {
            assert!(release_dir(releases, bad).is_err(), "{bad}");
        }
    }
}
