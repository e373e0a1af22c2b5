//! The update agent: `moltd agent`, a process PID 1 starts and supervises
//! when a release source, `MOLTD_LISTEN`, `MOLTD_METRICS_FILE` or
//! `MOLTD_WEBHOOK` is configured.
//!
//! Why a process of its own: everything that talks to the network or parses
//! what came from it (release feeds, JSON, gzip, tar, TLS, the HTTP
//! listener, the webhook) runs here, so a bug or a hostile feed can cost
//! this process, never PID 1, which restarts it. PID 1 keeps reaping,
//! signals and the services; the agent asks it, over the link on fd 3 (see
//! [`protocol`]), to stop, start and report services and to run hooks.
//!
//! Inside, the main thread (this module) is the link: it reads PID 1's
//! frames, answers control clients at once ([`admission`]) and turns the
//! [`worker`] thread's messages into frames. The worker is the updater's
//! loop; the observers (`crate::observe`) have threads of their own.

pub mod admission;
pub mod protocol;
pub mod worker;

use crate::control::{self, UpdateRequest};
use crate::observe::Observer;
use crate::sys::io::{self, Inherited, Pipe};
use crate::update::status::Status;
use admission::{Admission, Work};
use log::{debug, error, info};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use protocol::{FromAgent, FromInit, ProtocolError};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use worker::{ToAgent, ToLoop};

/// Names the descriptors PID 1 passes, in order from 3 (`link`, then
/// `listen` and `lock` when there are such): set only in the agent's
/// environment, so its absence says the agent was not started by moltd.
pub const FDS_VAR: &str = "MOLTD_AGENT_FDS";

/// What the agent reads from its environment before it takes a request.
pub struct Config {
    pub updates: Option<crate::update::Config>,
    pub observe: crate::observe::Config,
    pub svwait: Duration,
    /// `MOLTD_AGENT_USER`, `MOLTD_AGENT_MEMORY`.
    pub confine: crate::confinement::Settings,
}

/// Why the agent stops.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(
        "`moltd agent` is the update agent, started by a supervising moltd with its link on \
         descriptor 3; it is not a command to run by hand"
    )]
    NotStarted,
    #[error("cannot use the link to PID 1")]
    Link(#[source] std::io::Error),
    #[error("PID 1 broke the protocol")]
    Protocol(#[source] ProtocolError),
    #[error("PID 1 does not speak version {} of the protocol", protocol::VERSION)]
    Version,
    #[error("cannot confine the update agent")]
    Choose(#[source] crate::confinement::Error),
    #[error("cannot confine the update agent")]
    Confine(#[source] crate::sys::confine::Error),
    #[error("{0}")]
    Start(String),
}

/// The descriptors PID 1 passed, taken over.
pub struct Passed {
    link: OwnedFd,
    listener: Option<OwnedFd>,
    lock: Option<OwnedFd>,
}

/// Takes the descriptors PID 1 passed, or says the agent was not started
/// by moltd. Call it first: nothing else may have opened a file yet.
pub fn take_passed() -> Result<Passed, AgentError> {
    let names = std::env::var(FDS_VAR).map_err(|_| AgentError::NotStarted)?;
    let names: Vec<&str> = names.split(',').collect();
    let take = |name: &str, kind| {
        let at = names.iter().position(|n| *n == name)?;
        io::take_inherited(3 + at as i32, kind)
    };
    if names.first() != Some(&"link") {
        return Err(AgentError::NotStarted);
    }
    Ok(Passed {
        link: take("link", Inherited::Socket).ok_or(AgentError::NotStarted)?,
        listener: take("listen", Inherited::Socket),
        lock: take("lock", Inherited::File),
    })
}

/// The agent's whole life; returns its exit code.
pub fn run(passed: Passed, config: Config) -> Result<(), AgentError> {
    // Worker and observer threads inherit this mask: no signal is taken on
    // one of them. PID 1 stops the agent with KILL; an ignored PIPE turns
    // into EPIPE.
    crate::sys::signals::Inherited::capture_and_block()
        .map_err(|err| AgentError::Start(format!("cannot block signals: {}", err.desc())))?;
    // Before the first request and the first thread, after the
    // configuration (token files included) was read as moltd's user.
    confine(&config)?;
    let observer = Observer::start(
        &config.observe,
        passed.listener.map(std::net::TcpListener::from),
    )
    .map_err(AgentError::Start)?;
    let worker = match config.updates {
        Some(updates) => Some(Worker::start(
            updates,
            config.svwait,
            &observer,
            passed.lock,
        )?),
        None => None,
    };
    // Only now, ready to serve (the updater may have cleaned up after a
    // dead agent): PID 1's watchdog counts from here.
    let mut link = UnixStream::from(passed.link);
    let mut frames = protocol::Frames::default();
    let hello = FromAgent::Hello {
        version: protocol::VERSION,
        moltd: crate::version::version().into(),
    };
    link.write_all(&protocol::frame(&hello.encode()))
        .map_err(AgentError::Link)?;
    let held = match read_frame(&mut link, &mut frames)? {
        Some(FromInit::Welcome { version, held }) if version == protocol::VERSION => held,
        _ => return Err(AgentError::Version),
    };
    if let Some(worker) = &worker {
        let _ = worker.to_worker.send(ToAgent::Welcome(held));
    }
    info!("update agent started");
    Pump {
        link,
        frames,
        worker,
        observer,
    }
    .run()
}

/// Gives up what the agent does not need: root where the image allows
/// (handing it the app dir's moltd-written parts first, for a configured
/// user), new privileges, address space beyond `MOLTD_AGENT_MEMORY`.
fn confine(config: &Config) -> Result<(), AgentError> {
    let app_dir = config.updates.as_ref().map(|u| u.app_dir.as_path());
    let root = crate::sys::confine::is_root();
    let choice = crate::confinement::choose_user(&config.confine, app_dir, root, || {
        std::fs::read_to_string("/etc/passwd")
    })
    .map_err(AgentError::Choose)?;
    if let (true, Some((uid, gid)), Some(dir)) = (choice.hand_over, choice.user, app_dir) {
        crate::confinement::hand_over(dir, uid, gid).map_err(AgentError::Choose)?;
    }
    crate::sys::confine::confine(&crate::sys::confine::Limits {
        address_space: config.confine.memory,
        user: choice.user,
        parent_death_signal: nix::libc::SIGKILL,
    })
    .map_err(AgentError::Confine)?;
    info!("the update agent runs {}", choice.why);
    Ok(())
}

/// Reads until one whole frame arrived (at start, before anything else
/// is polled); `None` when PID 1 closed the link.
fn read_frame(
    link: &mut UnixStream,
    frames: &mut protocol::Frames,
) -> Result<Option<FromInit>, AgentError> {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(text) = frames.next_text().map_err(AgentError::Protocol)? {
            return FromInit::decode(&text)
                .map(Some)
                .map_err(AgentError::Protocol);
        }
        match link.read(&mut buf) {
            Ok(0) => return Ok(None),
            Ok(n) => frames.push(&buf[..n]),
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(AgentError::Link(err)),
        }
    }
}

/// The worker thread, as the link sees it.
struct Worker {
    to_worker: Sender<ToAgent>,
    from_worker: Receiver<ToLoop>,
    /// The worker writes a byte here after each message.
    wake: Pipe,
    /// The updater's status snapshot and work flags: requests are
    /// answered or let through from these (see [`admission::admit`]).
    status: Arc<Mutex<Status>>,
    work: Arc<Work>,
    updating: bool,
}

impl Worker {
    fn start(
        config: crate::update::Config,
        svwait: Duration,
        observer: &Observer,
        lock: Option<OwnedFd>,
    ) -> Result<Worker, AgentError> {
        let failed = |what: &str, err: nix::errno::Errno| {
            AgentError::Start(format!("cannot {what}: {}", err.desc()))
        };
        let wake = Pipe::new(true).map_err(|err| failed("create a pipe", err))?;
        let wake_write = wake
            .writer()
            .map(|fd| fd.try_clone_to_owned())
            .transpose()
            .map_err(|err| AgentError::Start(format!("cannot duplicate a pipe: {err}")))?
            .ok_or(AgentError::Start("a pipe without a writer".into()))?;
        let (to_loop, from_worker) = mpsc::channel();
        let (to_worker, from_loop) = mpsc::channel();
        let link = |work| worker::Link::new(to_loop, wake_write, from_loop, work, svwait);
        let started = worker::start(config, observer, to_worker.clone(), link, lock)
            .map_err(AgentError::Start)?;
        Ok(Worker {
            to_worker,
            from_worker,
            wake,
            status: started.status,
            work: started.work,
            updating: started.updating,
        })
    }
}

/// The agent's main thread: the link between PID 1 and the worker.
struct Pump {
    link: UnixStream,
    frames: protocol::Frames,
    worker: Option<Worker>,
    observer: Observer,
}

impl Pump {
    /// Runs until PID 1 closes the link (it ended) or breaks the protocol.
    fn run(mut self) -> Result<(), AgentError> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // Frames that came in one read with `welcome` (the first
            // `services`) are carried out before the first poll, which
            // would not wake up for them.
            while let Some(text) = self.frames.next_text().map_err(AgentError::Protocol)? {
                let message = FromInit::decode(&text).map_err(AgentError::Protocol)?;
                self.carry_out(message)?;
            }
            let (link_ready, wake_ready) = {
                let mut fds = vec![PollFd::new(self.link.as_fd(), PollFlags::POLLIN)];
                if let Some(worker) = &self.worker {
                    fds.push(PollFd::new(worker.wake.read.as_fd(), PollFlags::POLLIN));
                }
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(err) => return Err(AgentError::Link(err.into())),
                }
                let ready = |fd: Option<&PollFd>| {
                    fd.and_then(PollFd::revents)
                        .is_some_and(|revents| !revents.is_empty())
                };
                (ready(fds.first()), ready(fds.get(1)))
            };
            if wake_ready {
                self.pass_on()?;
            }
            if link_ready {
                match self.link.read(&mut buf) {
                    Ok(0) => {
                        debug!("PID 1 closed the link");
                        return Ok(());
                    }
                    Ok(n) => self.frames.push(&buf[..n]),
                    Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(err) => return Err(AgentError::Link(err)),
                }
            }
        }
    }

    fn send(&mut self, message: FromAgent) -> Result<(), AgentError> {
        self.link
            .write_all(&protocol::frame(&message.encode()))
            .map_err(AgentError::Link)
    }

    /// Passes on what the worker sent.
    fn pass_on(&mut self) -> Result<(), AgentError> {
        let Some(worker) = &self.worker else {
            return Ok(());
        };
        let mut buf = [0u8; 256];
        while worker.wake.read_some(&mut buf).is_ok_and(|n| n > 0) {}
        let updating = worker.updating;
        let messages: Vec<ToLoop> = worker.from_worker.try_iter().collect();
        for message in messages {
            self.send(match message {
                ToLoop::Control(request) => FromAgent::Command(request),
                ToLoop::Hook { argv, cwd } => FromAgent::Hook {
                    argv: argv
                        .iter()
                        .map(|arg| arg.to_string_lossy().into_owned())
                        .collect(),
                    cwd: cwd.map(|dir| dir.to_string_lossy().into_owned()),
                },
                ToLoop::KillHook(pid) => FromAgent::KillHook(pid),
                ToLoop::Reply { client, reply } => FromAgent::Reply { client, reply },
                ToLoop::Ready => FromAgent::Ready { updating },
                ToLoop::SelfUpdate(request) => FromAgent::SelfUpdate(request),
            })?;
        }
        Ok(())
    }

    /// Carries out what PID 1 sent.
    fn carry_out(&mut self, message: FromInit) -> Result<(), AgentError> {
        let to_worker = |worker: &Option<Worker>, message| {
            if let Some(worker) = worker {
                let _ = worker.to_worker.send(message);
            }
        };
        match message {
            FromInit::Welcome { .. } => {
                return Err(AgentError::Protocol(ProtocolError::Bad {
                    kind: "welcome",
                    problem: "sent twice",
                }));
            }
            FromInit::Answers(answers) => to_worker(&self.worker, ToAgent::Answers(answers)),
            FromInit::HookStarted(pid) => to_worker(&self.worker, ToAgent::HookStarted(Ok(pid))),
            FromInit::HookFailed(why) => to_worker(&self.worker, ToAgent::HookStarted(Err(why))),
            FromInit::HookExited { pid, status } => {
                to_worker(&self.worker, ToAgent::HookExited { pid, status })
            }
            FromInit::Trigger => to_worker(&self.worker, ToAgent::Trigger),
            FromInit::Services(services) => self.observer.publish(services),
            FromInit::Client { client, line } => self.client(client, &line)?,
            // PID 1's answer to a self-update this agent asked for; on
            // `exec` the link closes next and the new PID 1 starts a new agent.
            FromInit::SelfUpdate(answer) => to_worker(
                &self.worker,
                ToAgent::SelfUpdate(match answer {
                    protocol::SelfUpdateAnswer::Exec(version) => Ok(version),
                    protocol::SelfUpdateAnswer::Refused(reason) => Err(reason),
                }),
            ),
        }
        Ok(())
    }

    /// Answers a control client at once, or lets its request through to
    /// the worker with a `pending` line (see [`admission::admit`]).
    fn client(&mut self, client: u64, line: &str) -> Result<(), AgentError> {
        let Some(worker) = &self.worker else {
            let reply = Err(control::NOT_CONFIGURED.to_owned());
            return self.send(FromAgent::Reply { client, reply });
        };
        let op = match UpdateRequest::decode(line) {
            Some(Ok(op)) => op,
            Some(Err(bad)) => {
                let reply = Err(bad.to_string());
                return self.send(FromAgent::Reply { client, reply });
            }
            None => {
                let reply = Err("bad request".to_owned());
                return self.send(FromAgent::Reply { client, reply });
            }
        };
        match admission::admit(&worker.work, &worker.status, &op) {
            Admission::Answer(reply) => self.send(FromAgent::Reply { client, reply }),
            Admission::Forward(text) => {
                let to = worker::ReplyTo::Socket(client);
                let _ = worker.to_worker.send(ToAgent::Client { to, op });
                self.send(FromAgent::Pending { client, text })
            }
        }
    }
}

/// Logs why the agent stops and gives its exit code.
pub fn exit_code(outcome: Result<(), AgentError>) -> i32 {
    match outcome {
        Ok(()) => 0,
        Err(err @ AgentError::NotStarted) => {
            error!("{err}");
            2
        }
        Err(err) => {
            error!("update agent: {}", crate::update::chain(&err));
            1
        }
    }
}
