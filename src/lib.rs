//! moltd: a container PID 1 that reaps zombies, forwards signals and passes
//! exit codes like tini and dumb-init.
//!
//! See ARCHITECTURE.md for the map of the crate and the rules it keeps.
//!
//! `unsafe` is confined by the compiler, not by habit: denied here for the
//! whole crate, allowed only in [`sys`], and every block there says why it
//! is sound (`// SAFETY:`, checked by clippy).

#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod agent;
pub mod cli;
pub mod confinement;
pub mod control;
pub mod init;
pub mod logging;
pub mod observe;
pub mod personality;
pub mod secrets;
pub mod services;
pub mod signals;
#[allow(unsafe_code)]
pub mod sys;
pub mod update;
pub mod version;

/// Reads one environment variable; a parameter so parsers can be tested
/// without touching the process environment. Here, at the root, because
/// the command line, the secrets and the observers all read settings.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<std::ffi::OsString>;
