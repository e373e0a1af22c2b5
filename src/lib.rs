//! moltd: a container PID 1 that reaps zombies, forwards signals and passes
//! exit codes like tini and dumb-init.
//!
//! See ARCHITECTURE.md for the map of the crate and the rules it keeps.

pub mod agent;
pub mod cli;
pub mod confinement;
pub mod init;
pub mod logging;
pub mod observe;
pub mod personality;
pub mod secrets;
pub mod services;
pub mod signals;
pub mod sys;
pub mod update;
