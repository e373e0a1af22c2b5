//! Setting up one start of a service's program (`run`, `finish`, `check`,
//! `log/run`): its folder and arguments, its output pipes, its readiness
//! pipe, the held sockets `run` gets, then the spawn itself. Apart from the
//! event loop, which only carries out the supervisor's `Spawn` actions.

use super::{Runner, ServiceIo};
use crate::init::Isolation;
use crate::services::machine::{Program, SpawnFailure, Which};
use crate::services::scan::Readiness;
use crate::sys::io::Pipe;
use crate::sys::spawn::{self, SpawnError};
use std::collections::btree_map::Entry;
use std::ffi::{CString, OsString};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;

impl Runner {
    pub(super) fn spawn(
        &mut self,
        service: &str,
        which: Which,
        program: Program,
    ) -> Result<i32, SpawnFailure> {
        let setup_failed = |what: &str, reason: String| SpawnFailure {
            pid: None,
            reason: format!("{what}: {reason}"),
        };
        let def = self
            .supervisor
            .definition(service)
            .ok_or_else(|| setup_failed("unknown service", service.to_owned()))?;
        let dir = match which {
            Which::Main | Which::Next => def.dir.clone(),
            Which::Log => def.dir.join("log"),
        };
        let pipes_failed =
            |e: nix::errno::Errno| setup_failed("cannot create pipes", e.desc().into());
        let io = match self.io.entry(service.to_owned()) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => entry.insert(ServiceIo::new(service).map_err(pipes_failed)?),
        };
        if def.log.is_some() {
            io.add_log(service).map_err(pipes_failed)?;
        }
        let io = &*io;
        // Only `run` gets the held sockets (both generations of an
        // overlap: the same sockets): not `finish`, `check` or `log/run`.
        let gets_sockets = which != Which::Log && matches!(program, Program::Run);
        let argv: Vec<OsString> = match program {
            Program::Run => vec!["./run".into()],
            Program::Check => vec!["./check".into()],
            Program::Finish { code, signal } => {
                vec![
                    "./finish".into(),
                    code.to_string().into(),
                    signal.to_string().into(),
                ]
            }
        };
        let cwd = CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| setup_failed("folder name", "holds a NUL byte".into()))?;
        let command = spawn::Program::new(&argv, None)
            .map_err(|_| setup_failed("arguments", "hold a NUL byte".into()))?;
        let part = match which {
            Which::Main | Which::Next => Some(&def.main),
            Which::Log => def.log.as_ref(),
        };
        // A fresh pipe for each start of `run`; PID 1 keeps the read end.
        let notification = match (program, part.map(|p| p.readiness)) {
            (Program::Run, Some(Readiness::Fd(target))) => Some((
                self.ready_pipes
                    .open(service, which)
                    .map_err(pipes_failed)?,
                target,
            )),
            (Program::Run, _) => {
                self.ready_pipes.close(service, which);
                None
            }
            _ => None,
        };
        let passed = match gets_sockets {
            true => Some(
                self.sockets
                    .for_start(service, &def.dir, &def.listen)
                    .map_err(|reason| SpawnFailure { pid: None, reason })?,
            ),
            false => None,
        };
        let held = passed.as_ref().map_or(0, |p| p.fds.len()) as i32;
        if let Some(&(_, target)) = notification
            .as_ref()
            .filter(|(_, t)| (3..3 + held).contains(t))
        {
            return Err(setup_failed(
                "notification-fd",
                format!(
                    "{target} is one of the held sockets' descriptors (3 to {})",
                    2 + held
                ),
            ));
        }
        let mut options = spawn::Options::new(Isolation::Background, &self.inherited);
        options.cwd = Some(&cwd);
        options.at = notification
            .as_ref()
            .map(|(fd, target)| (fd.as_fd(), *target));
        if let Some(passed) = &passed {
            options.pass = &passed.fds;
            options.add = &passed.environment;
            options.listen_pid = !passed.fds.is_empty();
        }
        options.stdio = match (which, program) {
            // A probe's chatter goes to the service's stderr, not its log.
            (Which::Main | Which::Next, Program::Check) => [
                Some(self.devnull.as_fd()),
                io.err.pipe.writer(),
                io.err.pipe.writer(),
            ],
            (Which::Log, Program::Check) => [
                Some(self.devnull.as_fd()),
                io.log_err.as_ref().and_then(|o| o.pipe.writer()),
                io.log_err.as_ref().and_then(|o| o.pipe.writer()),
            ],
            (Which::Main | Which::Next, _) => [
                Some(self.devnull.as_fd()),
                io.log_pipe
                    .as_ref()
                    .and_then(Pipe::writer)
                    .or(io.out.pipe.writer()),
                io.err.pipe.writer(),
            ],
            (Which::Log, _) => [
                io.log_pipe.as_ref().map(|p| p.read.as_fd()),
                io.log_out.as_ref().and_then(|o| o.pipe.writer()),
                io.log_err.as_ref().and_then(|o| o.pipe.writer()),
            ],
        };
        spawn::spawn(&command, &options).map_err(|err| match err {
            SpawnError::Exec { pid, errno } => SpawnFailure {
                pid: Some(pid),
                reason: errno.desc().into(),
            },
            SpawnError::Setup(what, errno) => setup_failed(what, errno.desc().into()),
            SpawnError::NulInArgument(_) => setup_failed("arguments", "hold a NUL byte".into()),
        })
    }
}
