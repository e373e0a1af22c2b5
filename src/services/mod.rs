//! Service mode: supervise a directory of runit-style service folders,
//! optionally beside a main command (combined mode), and answer `sv` on a
//! control socket.
//!
//! The decisions live in the pure [`machine`]; [`runner`] is the event loop
//! that does the I/O for it; [`scan`] reads service folders; [`control`] and
//! [`status`] are the protocol and the formats that `sv` and `moltd status`
//! share with the supervisor; [`client`] is their side of the socket;
//! [`agent_link`] starts and supervises the update agent.

mod agent_link;
pub mod client;
pub mod control;
pub mod machine;
mod output;
pub mod reexec;
mod runner;
pub mod scan;
pub mod status;

use crate::init::InitConfig;
use std::path::PathBuf;
use std::time::Duration;

pub use machine::Settings;
pub use runner::{resume, run};

/// Where services live when neither `--services` nor `MOLTD_SERVICES` says.
pub const DEFAULT_DIR: &str = "/etc/service";
/// Where the control socket lives unless `--control` or `MOLTD_CONTROL` says.
pub const DEFAULT_CONTROL: &str = "/run/moltd/control.sock";
/// runit's default for SVWAIT.
pub const DEFAULT_SVWAIT: Duration = Duration::from_secs(7);
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long a service with no `notify`, `notification-fd` or `check` must
/// stay up to count as ready.
pub const DEFAULT_READY_GRACE: Duration = Duration::from_secs(1);

/// Everything service mode needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicesConfig {
    /// None: no services, only the main command (single-command mode with
    /// updates).
    pub dir: Option<PathBuf>,
    pub control: PathBuf,
    pub settings: Settings,
    /// Combined mode's main command.
    pub main: Option<InitConfig>,
    /// The updater's settings, when a release source is configured (for
    /// the app, or only `MOLTD_SELF_REPO`).
    pub updates: Option<crate::update::Config>,
    /// The HTTP listener, metrics file and webhook.
    pub observe: crate::observe::Config,
    /// moltd's secret variables, left out of every child's environment.
    pub withheld: Vec<&'static str>,
    /// Whether `listen` files are honoured (`MOLTD_HELD_SOCKETS`).
    pub hold_sockets: bool,
}

impl ServicesConfig {
    /// Whether the app has a release source: its services then wait for a
    /// first release. `MOLTD_SELF_REPO` alone updates moltd only.
    pub fn updates_app(&self) -> bool {
        self.updates.as_ref().is_some_and(|u| u.source.is_some())
    }
}
