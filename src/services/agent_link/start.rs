//! Starting the update agent: spawning `moltd agent` with its end of the
//! link and the descriptors PID 1 keeps for it, and the backoff before the
//! next try when it cannot start or dies. Apart from the link itself
//! (framing, watchdog, hooks), which does not care how the agent came to be.

use super::{AgentLink, BACKOFF_MAX, BACKOFF_MIN, Life, Running, STABLE};
use crate::agent::protocol;
use crate::sys::signals::Inherited;
use crate::sys::spawn::{self, Isolation, SpawnError};
use log::warn;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

impl AgentLink {
    pub(super) fn start(&mut self, inherited: &Inherited, devnull: BorrowedFd) {
        self.lives += 1;
        // A crash point fires in the first agent only: the next one is to
        // recover from it.
        #[cfg(feature = "test-hooks")]
        if self.lives == 2 {
            self.environment
                .retain(|entry| !entry.as_bytes().starts_with(b"MOLTD_TEST_CRASH_AT="));
        }
        let (ours, theirs) = match UnixStream::pair() {
            Ok(pair) => pair,
            Err(err) => return self.failed(format!("cannot create its link: {err}")),
        };
        let exe = std::path::Path::new("/proc/self/exe");
        let path = match (exe.exists(), &self.found) {
            (false, Some(found)) => found.as_path(),
            _ => exe,
        };
        let Ok(path) = CString::new(path.as_os_str().as_bytes()) else {
            return self.failed("its path holds a NUL byte".into());
        };
        let program = match spawn::Program::at(&path, &self.argv) {
            Ok(program) => program,
            Err(_) => return self.failed("its arguments hold a NUL byte".into()),
        };
        let mut pass = vec![theirs.as_fd()];
        pass.extend(self.listener.as_ref().map(AsFd::as_fd));
        pass.extend(self.lock.as_deref().map(AsFd::as_fd));
        let mut options = spawn::Options::new(Isolation::Background, inherited);
        options.stdio[0] = Some(devnull);
        options.pass = &pass;
        options.environment = Some(&self.environment);
        let pid = match spawn::spawn(&program, &options) {
            Ok(pid) => pid,
            Err(SpawnError::Exec { pid, errno }) => {
                // Reaped as the agent: its exit 127 restarts it later.
                warn!("cannot start the update agent: {}", errno.desc());
                pid
            }
            Err(SpawnError::Setup(what, errno)) => {
                return self.failed(format!("{what}: {}", errno.desc()));
            }
            Err(SpawnError::NulInArgument(_)) => {
                return self.failed("its arguments hold a NUL byte".into());
            }
        };
        drop(theirs);
        if let Err(err) = ours.set_nonblocking(true) {
            warn!("cannot make the update agent's link non-blocking: {err}");
        }
        self.sent = None;
        self.life = Life::Up(Box::new(Running {
            pid,
            stream: Some(ours),
            frames: protocol::Frames::default(),
            out: Vec::new(),
            greeted: false,
            ready: false,
            since: Instant::now(),
            unanswered: BTreeMap::new(),
            waiting: BTreeSet::new(),
            killed: None,
            closed: None,
        }));
    }

    /// The agent could not even be started: try again later.
    fn failed(&mut self, cause: String) {
        let delay = self.next_delay(Duration::ZERO);
        warn!(
            "cannot start the update agent: {cause}; trying again in {}s",
            delay.as_secs()
        );
        self.life = Life::Down {
            cause,
            restart_at: Instant::now() + delay,
        };
    }

    /// The delay before the next start, after a life of `lived`.
    pub(super) fn next_delay(&mut self, lived: Duration) -> Duration {
        if lived >= STABLE {
            self.backoff = BACKOFF_MIN;
        }
        let delay = self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        delay
    }
}
