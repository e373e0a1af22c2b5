//! Every Linux-specific call moltd makes, and all of its `unsafe`.
//!
//! The rest of the crate speaks in plain values (signal numbers, pids, exit
//! statuses) and never touches libc. Keeping the syscalls here means the rules
//! a PID 1 must follow can be checked in one folder:
//!
//! * [`reap`] is the only caller of `waitpid`.
//! * [`spawn`] is the only code that runs between `fork` and `exec`, and it
//!   only calls async-signal-safe functions there.
//! * [`signals`] owns the signal mask: everything forwardable is blocked and
//!   read synchronously from a signalfd, so no handler ever runs.
//! * [`fs`] holds the two file-system calls std lacks (statvfs, syncfs).
//! * [`mem`] hands freed heap back to the kernel after a big parse, and
//!   unmaps the binary's start-up pages once.
//! * [`confine`] is what the update agent gives up before its first request.
//! * [`exec`] is PID 1 replacing itself: the state memfd, kept descriptors,
//!   `execve`.

pub mod confine;
pub mod exec;
pub mod fs;
pub mod io;
pub mod mem;
pub mod process;
pub mod reap;
pub mod signals;
pub mod spawn;
