//! File-system calls the updater needs that std does not offer: free space
//! before a download, and flushing a whole file system before a staged
//! release is renamed into place.

use nix::errno::Errno;
use nix::libc;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Bytes an unprivileged writer may still use on the file system holding
/// `path` (statvfs: available blocks times the fragment size).
pub fn free_space(path: &Path) -> io::Result<u64> {
    let stat = nix::sys::statvfs::statvfs(path)?;
    Ok(stat.blocks_available().saturating_mul(stat.fragment_size()))
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
