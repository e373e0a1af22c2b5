//! File-system calls the updater needs that std does not offer: free space
//! and inodes before and while unpacking, and flushing a whole file system
//! before a staged release is renamed into place.

use nix::errno::Errno;
use nix::libc;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Size and free room of a file system, as an unprivileged writer sees it.
#[derive(Clone, Copy, Debug)]
pub struct Space {
    pub bytes: u64,
    pub bytes_free: u64,
    /// 0 where the file system has no fixed number of inodes (btrfs).
    pub inodes: u64,
    pub inodes_free: u64,
    /// The allocation unit: a file takes whole blocks.
    pub block: u64,
}

/// statvfs of the file system holding `path`: available blocks times the
/// fragment size, available inodes.
pub fn space(path: &Path) -> io::Result<Space> {
    let stat = nix::sys::statvfs::statvfs(path)?;
    let block = stat.fragment_size().max(1);
    Ok(Space {
        bytes: stat.blocks().saturating_mul(block),
        bytes_free: stat.blocks_available().saturating_mul(block),
        inodes: stat.files(),
        inodes_free: stat.files_available(),
        block,
    })
}

/// Writes every dirty page of the file system holding `dir` to disk, with one
/// call instead of one fsync per unpacked file.
pub fn sync_file_system(dir: &Path) -> io::Result<()> {
    let handle = File::open(dir)?;
    // SAFETY: syncfs only reads the descriptor, which `handle` keeps open.
    Errno::result(unsafe { libc::syncfs(handle.as_raw_fd()) })?;
    Ok(())
}

/// Takes an exclusive advisory lock on `file` without waiting; `None` when
/// another process holds it. The lock lasts as long as the returned value.
pub fn try_lock(file: File) -> io::Result<Option<nix::fcntl::Flock<File>>> {
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(errno.into()),
    }
}
