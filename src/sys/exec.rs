//! What PID 1 needs to replace itself (see `services::reexec`): the memfd
//! that carries its state across `execve`, close-on-exec cleared on exactly
//! the descriptors to keep, the exec itself, and taking the kept
//! descriptors back in the new program.

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use std::ffi::{CStr, CString};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// An anonymous file in memory, close-on-exec until [`keep_open`] says.
pub fn memfd(name: &CStr) -> Result<File, Errno> {
    memfd_create(name, MFdFlags::MFD_CLOEXEC).map(File::from)
}

/// Clears (`keep`) or sets close-on-exec on `fd`.
pub fn keep_open(fd: BorrowedFd, keep: bool) -> Result<(), Errno> {
    let flags = match keep {
        true => FdFlag::empty(),
        false => FdFlag::FD_CLOEXEC,
    };
    fcntl(fd, FcntlArg::F_SETFD(flags)).map(drop)
}

/// Replaces the program; returns only on failure.
pub fn exec(path: &CStr, argv: &[CString], env: &[CString]) -> Errno {
    match nix::unistd::execve(path, argv, env) {
        Err(err) => err,
        Ok(never) => match never {},
    }
}

/// Replaces the program with the file open on descriptor `fd` (the
/// binary that ran before, even if its path is gone); returns only on
/// failure (`EBADF` if `fd` is not open).
pub fn exec_raw_file(fd: RawFd, argv: &[CString], env: &[CString]) -> Errno {
    if !is_open(fd) {
        return Errno::EBADF;
    }
    // SAFETY: `fd` is open (checked above) and is only borrowed for the
    // call; nothing closes it meanwhile (one thread).
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    match nix::unistd::fexecve(fd, argv, env) {
        Err(err) => err,
        Ok(never) => match never {},
    }
}

/// Takes ownership of a descriptor the previous program kept open across
/// `execve` and named in its state, and makes it close-on-exec again.
/// `EBADF` if it is not open.
pub fn adopt(fd: RawFd) -> Result<OwnedFd, Errno> {
    if fd < 3 {
        return Err(Errno::EBADF);
    }
    fcntl_check(fd)?;
    // SAFETY: `fd` is open (checked above) and owned by nothing else in this
    // program: the state lists each descriptor once (its parser refuses
    // duplicates), and it is adopted once, at resume.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    keep_open(owned.as_fd(), false)?;
    Ok(owned)
}

/// Whether `fd` is open, without taking it.
pub fn is_open(fd: RawFd) -> bool {
    fcntl_check(fd).is_ok()
}

fn fcntl_check(fd: RawFd) -> Result<(), Errno> {
    // SAFETY: F_GETFD reads the descriptor's flags and changes nothing; an
    // fd that is not open gives EBADF.
    Errno::result(unsafe { nix::libc::fcntl(fd, nix::libc::F_GETFD) }).map(drop)
}

/// Clears (`keep`) or sets close-on-exec on a descriptor by number: the
/// state names descriptors by number, and the panic hook holds nothing else.
pub fn keep_open_raw(fd: RawFd, keep: bool) -> Result<(), Errno> {
    let flags = if keep { 0 } else { nix::libc::FD_CLOEXEC };
    // SAFETY: F_SETFD only changes the close-on-exec flag; a descriptor
    // that is not open gives EBADF.
    Errno::result(unsafe { nix::libc::fcntl(fd, nix::libc::F_SETFD, flags) }).map(drop)
}
