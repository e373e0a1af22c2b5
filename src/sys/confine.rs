//! Shutting the update agent in: the calls it makes on itself before it
//! touches the network.
//!
//! Why in the agent and not between fork and exec in PID 1: the agent reads
//! its token files first, as whoever started moltd, and only then gives up
//! that user; and a process that confines itself cannot be given a
//! half-confined start by a mistake in the spawner.

use nix::errno::Errno;
use nix::libc;
use nix::sys::resource::{Resource, setrlimit};
use nix::unistd::{Gid, Uid};

/// What the agent gives up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The most address space it may map (`RLIMIT_AS`), in bytes.
    pub address_space: Option<u64>,
    /// The user and group to become (only root can).
    pub user: Option<(u32, u32)>,
    /// The signal to get when PID 1 dies.
    pub parent_death_signal: i32,
}

/// A step of [`confine`] that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot limit the address space to {bytes} bytes: {errno}")]
    AddressSpace { bytes: u64, errno: Errno },
    #[error("cannot become uid {uid}, gid {gid}: {what}: {errno}")]
    User {
        uid: u32,
        gid: u32,
        what: &'static str,
        errno: Errno,
    },
    #[error("cannot set no_new_privs: {0}")]
    NoNewPrivs(Errno),
    #[error("cannot set the parent-death signal: {0}")]
    ParentDeath(Errno),
}

/// Applies `limits` to the calling process. Call it while the process has
/// one thread: the user change then needs no cross-thread broadcast.
pub fn confine(limits: &Limits) -> Result<(), Error> {
    // Fewer malloc arenas: each one reserves 64 MiB of address space, which
    // would count against the limit without being used.
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt takes two integers and only adjusts glibc's tunables.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    if let Some(bytes) = limits.address_space {
        setrlimit(Resource::RLIMIT_AS, bytes, bytes)
            .map_err(|errno| Error::AddressSpace { bytes, errno })?;
    }
    if let Some((uid, gid)) = limits.user {
        let failed = |what| {
            move |errno| Error::User {
                uid,
                gid,
                what,
                errno,
            }
        };
        // Supplementary groups first, then the group, then the user: after
        // setuid there are no rights left to change the others.
        nix::unistd::setgroups(&[Gid::from_raw(gid)]).map_err(failed("setgroups"))?;
        nix::unistd::setgid(Gid::from_raw(gid)).map_err(failed("setgid"))?;
        nix::unistd::setuid(Uid::from_raw(uid)).map_err(failed("setuid"))?;
    }
    nix::sys::prctl::set_no_new_privs().map_err(Error::NoNewPrivs)?;
    // After the user change, which clears it.
    super::process::set_parent_death_signal(limits.parent_death_signal)
        .map_err(Error::ParentDeath)?;
    Ok(())
}

/// Whether the process runs as root.
pub fn is_root() -> bool {
    Uid::effective().is_root()
}
