//! The loop's side of `moltd self-update` and the agent's `self-update`
//! frame: both end in [`Runner::self_update`], which checks the binary,
//! runs its self-test as a child of the loop (registered before it can be
//! reaped, its deadline in the poll timeout: nothing blocks), then keeps
//! it, freezes the state and execs it (see [`crate::services::reexec`] for
//! the steps and `resume` for the other side).

use super::Runner;
use crate::agent::protocol::{FromInit, SelfUpdateAnswer};
use crate::control::{self, SelfUpdate};
use crate::init::Isolation;
use crate::services::machine::ClientId;
use crate::services::output::Output;
use crate::services::reexec::{self, Refusal, State, state};
use crate::sys::io::Pipe;
use crate::sys::process;
use crate::sys::reap::ExitStatus;
use crate::sys::spawn::{self, SpawnError};
use log::{info, warn};
use nix::libc;
use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Instant;

/// The most of a failed self-test's output a refusal repeats.
const MAX_OUTPUT: usize = 2048;

/// Who asked for a self-update, and hears how it went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Requester {
    /// A control socket client.
    Socket(u64),
    /// The agent, in this life.
    Agent(ClientId),
}

/// A self-update whose self-test runs.
pub(super) struct Pending {
    requester: Requester,
    path: PathBuf,
    pid: i32,
    /// When the self-test is killed.
    deadline: Instant,
    timed_out: bool,
    /// Its stdout and stderr.
    output: Pipe,
}

impl Pending {
    /// The self-test's deadline, while it has not been killed for it.
    pub(super) fn deadline(&self) -> Option<Instant> {
        (!self.timed_out).then_some(self.deadline)
    }
}

impl Runner {
    /// Replaces PID 1 with the binary `request` names, or says why not and
    /// changes nothing. Goes as far as starting the self-test; its exit
    /// ([`Runner::self_test_exited`]) does the rest.
    pub(super) fn self_update(&mut self, request: SelfUpdate, from: Requester) {
        if let Err(refusal) = self.start_self_test(&request, from) {
            self.refuse_self_update(from, &refusal);
        }
    }

    fn start_self_test(&mut self, request: &SelfUpdate, from: Requester) -> Result<(), Refusal> {
        if self.self_update.is_some() {
            return Err(Refusal::UnderWay);
        }
        reexec::check_binary(&request.path)?;
        // Refused now rather than after the self-test if busy: the state
        // the self-test reads is this one.
        let state = self.freeze(None, &File::open("/proc/self/exe").map_err(Refusal::State)?)?;
        reexec::crash_point("self-update:freeze")?;
        let file = reexec::write_state(&state)?;
        let output = Pipe::new(true).map_err(|e| Refusal::SelfTestStart(e.desc().to_owned()))?;
        let mut argv: Vec<OsString> = vec![
            request.path.clone().into(),
            reexec::SELF_TEST.into(),
            crate::version::version().into(),
        ];
        if request.force {
            argv.push("force".into());
        }
        let path = std::ffi::CString::new(request.path.as_os_str().as_encoded_bytes())
            .map_err(|_| Refusal::SelfTestStart("a NUL byte in the path".into()))?;
        let program = spawn::Program::at(&path, &argv)
            .map_err(|_| Refusal::SelfTestStart("a NUL byte".into()))?;
        let mut options = spawn::Options::new(Isolation::Background, &self.inherited);
        let writer = output.writer();
        options.stdio = [Some(self.devnull.as_fd()), writer, writer];
        let pass = [file.as_fd()];
        options.pass = &pass;
        let pid = match spawn::spawn(&program, &options) {
            Ok(pid) | Err(SpawnError::Exec { pid, .. }) => pid,
            Err(SpawnError::Setup(what, errno)) => {
                return Err(Refusal::SelfTestStart(format!("{what}: {}", errno.desc())));
            }
            Err(SpawnError::NulInArgument(_)) => {
                return Err(Refusal::SelfTestStart("a NUL byte".into()));
            }
        };
        // Registered before the loop polls again, so before it is reaped.
        let mut output = output;
        output.write = None;
        self.self_update = Some(Pending {
            requester: from,
            path: request.path.clone(),
            pid,
            deadline: Instant::now() + reexec::SELF_TEST_TIMEOUT,
            timed_out: false,
            output,
        });
        info!(
            "self-update: testing {} (self-test pid {pid})",
            request.path.display()
        );
        if let Requester::Socket(client) = from {
            let what = format!("testing {}", request.path.display());
            self.write_client(client, &control::encode_pending(&what));
        }
        Ok(())
    }

    /// The self-test's deadline passed: it is killed, and its exit refuses.
    pub(super) fn self_test_late(&mut self) {
        let Some(pending) = &mut self.self_update else {
            return;
        };
        if !pending.timed_out && pending.deadline <= Instant::now() {
            pending.timed_out = true;
            let _ = process::send_signal(-pending.pid, libc::SIGKILL);
        }
    }

    /// Whether `pid` is the self-test; if so its exit is handled.
    pub(super) fn self_test_exited(&mut self, pid: i32, status: ExitStatus) -> bool {
        if self.self_update.as_ref().is_none_or(|p| p.pid != pid) {
            return false;
        }
        let Some(pending) = self.self_update.take() else {
            return false;
        };
        let mut bytes = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = pending.output.read_some(&mut buf) {
            if bytes.len() < MAX_OUTPUT {
                bytes.extend_from_slice(&buf[..n]);
            }
        }
        let output = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_OUTPUT)]).into_owned();
        let version = output
            .lines()
            .find_map(|line| line.strip_prefix(reexec::SELF_TEST_OK))
            .map(str::to_owned);
        let outcome = match (pending.timed_out, status, version) {
            (true, ..) => Err(Refusal::SelfTestHung),
            (false, ExitStatus::Exited(0), Some(version)) => self.replace(&pending, &version),
            (false, status, _) => Err(Refusal::SelfTestFailed {
                status: match status {
                    ExitStatus::Exited(code) => format!("exit code {code}"),
                    ExitStatus::Signaled(signal) => crate::signals::name(signal),
                },
                output: output.trim().replace('\n', "; "),
            }),
        };
        if let Err(refusal) = outcome {
            self.refuse_self_update(pending.requester, &refusal);
        }
        true
    }

    /// Steps 4 and 5: keep, freeze, exec. Returns only on failure, with
    /// nothing changed but the boot record (undone).
    fn replace(&mut self, pending: &Pending, version: &str) -> Result<(), Refusal> {
        let app_dir = crate::update::config::app_dir(&|name| std::env::var_os(name));
        reexec::crash_point("self-update:keep")?;
        let kept = reexec::boot::keep(&app_dir, &pending.path, version)
            .inspect_err(|err| {
                warn!(
                    "self-update: cannot keep moltd {version} under {}: {err}; it runs from {} until the container restarts",
                    reexec::boot::bin_dir(&app_dir).display(),
                    pending.path.display()
                )
            })
            .ok();
        let path = kept.clone().unwrap_or_else(|| pending.path.clone());
        let previous = File::open("/proc/self/exe").map_err(Refusal::State);
        let previous = previous.inspect_err(|_| reexec::boot::undo(&app_dir))?;
        let requester = match pending.requester {
            Requester::Socket(client) => self.clients.remove(&client).map(|c| c.stream),
            Requester::Agent(_) => None,
        };
        let result = self.exec(
            &path,
            version,
            &previous,
            requester.as_ref(),
            pending.requester,
        );
        if kept.is_some() {
            reexec::boot::undo(&app_dir);
        }
        if let (Some(stream), Requester::Socket(client)) = (requester, pending.requester) {
            self.clients
                .insert(client, super::clients::Client::answering(stream));
        }
        result
    }

    fn exec(
        &mut self,
        path: &std::path::Path,
        version: &str,
        previous: &File,
        requester: Option<&UnixStream>,
        from: Requester,
    ) -> Result<(), Refusal> {
        for io in self.io.values_mut() {
            io.outputs().for_each(Output::flush);
        }
        let state = self.freeze(requester.map(AsRawFd::as_raw_fd), previous)?;
        let file = reexec::write_state(&state)?;
        reexec::crash_point("self-update:exec")?;
        if let (Requester::Agent(life), Some(link)) = (from, self.agent.as_mut()) {
            if link.client_id() == life {
                link.send(FromInit::SelfUpdate(SelfUpdateAnswer::Exec(
                    version.to_owned(),
                )));
                link.flush();
            }
        }
        info!(
            "self-update: replacing moltd {} with {version} ({})",
            crate::version::version(),
            path.display()
        );
        let _ = std::io::stderr().flush();
        Err(reexec::exec_new(path, &file, &state))
    }

    /// Step 2: everything PID 1 holds, as a [`State`], or why not now.
    fn freeze(&self, requester: Option<RawFd>, previous: &File) -> Result<State, Refusal> {
        if self.held {
            return Err(Refusal::Busy(
                "the services wait for a release to be installed".into(),
            ));
        }
        if !self.ready_pipes.is_empty() {
            return Err(Refusal::Busy(
                "a program is on its way to ready by its notification-fd; try again in a moment"
                    .into(),
            ));
        }
        let agent = self.agent.as_ref().map(|link| link.freeze()).transpose();
        let agent = agent.map_err(Refusal::Busy)?;
        let slots = self
            .supervisor
            .freeze(Instant::now())
            .map_err(Refusal::Busy)?;
        let pair = |pipe: &Pipe| {
            (
                pipe.read.as_raw_fd(),
                pipe.write.as_ref().map(AsRawFd::as_raw_fd),
            )
        };
        let io = self
            .io
            .iter()
            .map(|(service, io)| {
                let mut fds = vec![pair(&io.out.pipe), pair(&io.err.pipe)];
                if let (Some(log), Some(out), Some(err)) = (&io.log_pipe, &io.log_out, &io.log_err)
                {
                    fds.extend([pair(log), pair(&out.pipe), pair(&err.pipe)]);
                }
                state::Io {
                    service: service.clone(),
                    fds,
                }
            })
            .collect();
        let sockets = self
            .sockets
            .all()
            .map(|(service, address, fd)| state::Socket {
                service: service.to_owned(),
                fd: fd.as_raw_fd(),
                address: address.to_string(),
            })
            .collect();
        let clock = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map_err(|e| Refusal::State(e.into()))?;
        Ok(State {
            from: crate::version::version().to_owned(),
            clock: clock.tv_sec() as u128 * 1_000_000_000 + clock.tv_nsec() as u128,
            previous: previous.as_raw_fd(),
            signals: self.inherited.encode(),
            reaped: self.reaped,
            control: (self.listener.as_ref()).map(|l| (l.as_raw_fd(), self.control.clone())),
            notify: (self.notify.as_ref()).map(|n| (n.as_fd().as_raw_fd(), n.path().to_owned())),
            requester,
            agent,
            io,
            sockets,
            slots,
        })
    }

    /// Tells the requester why nothing changed.
    fn refuse_self_update(&mut self, from: Requester, refusal: &Refusal) {
        let reason = format!("self-update refused: {refusal}");
        warn!("{reason}");
        match from {
            Requester::Socket(client) => self.reply(client, &control::encode_reply(&Err(reason))),
            Requester::Agent(life) => {
                if let Some(link) = self.agent.as_mut().filter(|l| l.client_id() == life) {
                    link.send(FromInit::SelfUpdate(SelfUpdateAnswer::Refused(reason)));
                }
            }
        }
    }
}
