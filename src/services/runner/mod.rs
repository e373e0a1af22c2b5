//! The event loop of service mode: it owns every descriptor (signalfd,
//! inotify, control socket and clients, output pipes), sleeps in `poll`, and
//! turns what happens into [`Event`]s for the [`Supervisor`], whose
//! [`Action`]s it carries out.
//!
//! It sleeps without a timeout unless the supervisor has a deadline (a
//! backoff, an SVWAIT, a client's wait, a directory settling), so an idle
//! moltd costs nothing. Reaping happens only here, after a SIGCHLD, and every
//! pid the supervisor starts is reported to it (through
//! [`Event::Spawned`]) before the loop can reap again.
//!
//! With updates or an observer configured, the update agent runs as a
//! process of its own (`moltd agent`, see [`super::agent_link`]) and this
//! loop is its hands: it carries out the agent's control requests and hooks
//! (so hooks are reaped here too, and never reach the supervisor), forwards
//! `moltd update` clients to it, watches the trigger file, and holds the
//! services back until a release is installed ([`agent`]).

mod agent;
mod clients;
mod ready;
mod resume;
pub use resume::resume;
mod self_update;
mod set_up;
mod sockets;
mod spawn;
mod watch;

use clients::{Client, open_control};
use ready::{NotifySocket, ReadyPipes};
use set_up::{Kept, set_up};
use watch::{DirError, read_dir};

use super::agent_link::{AgentLink, Reaped};
use super::control::Answer;
use super::machine::{Action, ClientId, Event, Supervisor, Which};
use super::output::Output;
use super::scan::Listing;
use super::{ServicesConfig, reexec};
use crate::init::messages::Messages;
use crate::init::policy::Forwarder;
use crate::init::{self, InitConfig, Reaping};
use crate::observe;
use crate::personality::Personality;
use crate::sys::io::{self, Pipe};
use crate::sys::signals::{Inherited, SignalSource};
use crate::sys::spawn::SpawnError;
use crate::sys::{process, reap};
use log::{debug, error, warn};
use nix::fcntl::OFlag;
use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{InitFlags, Inotify, WatchDescriptor};
use std::collections::{BTreeMap, VecDeque};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::Instant;

/// Runs service mode and returns the code moltd should exit with.
pub fn run(config: ServicesConfig, inherited: Inherited) -> i32 {
    let app_dir = crate::update::config::app_dir(&|name| std::env::var_os(name));
    // A container start: the moltd a self-update recorded, if newer.
    if let Some(recorded) = reexec::boot::at_boot(&app_dir) {
        let errno = reexec::exec_recorded(&recorded);
        warn!(
            "cannot exec the recorded moltd {}: {}; running this one",
            recorded.display(),
            errno.desc()
        );
    }
    let (mut runner, listing) = match set_up(config, inherited, None) {
        Ok(set_up) => set_up,
        Err(code) => return code,
    };
    let listing = runner.watch_listing(listing);
    if !runner.held && runner.start_main() {
        runner.handle(Event::Scanned(listing));
    }
    reexec::boot::came_up(&app_dir);
    runner.run()
}

/// The pipes of one service.
struct ServiceIo {
    out: Output,
    err: Output,
    /// `run`'s stdout into `log/run`'s stdin.
    log_pipe: Option<Pipe>,
    log_out: Option<Output>,
    log_err: Option<Output>,
}

impl ServiceIo {
    fn new(name: &str) -> Result<ServiceIo, nix::errno::Errno> {
        Ok(ServiceIo {
            out: Output::new(name.to_owned(), false)?,
            err: Output::new(name.to_owned(), true)?,
            log_pipe: None,
            log_out: None,
            log_err: None,
        })
    }

    /// Adds the log pipe and the log's outputs, unless there are some: at
    /// the first start of a service with `log/`, or when `log/` appears
    /// beside a running one (whose `run` gets the pipe at its next start).
    fn add_log(&mut self, name: &str) -> Result<(), nix::errno::Errno> {
        if self.log_pipe.is_some() {
            return Ok(());
        }
        let label = format!("{name}/log");
        self.log_out = Some(Output::new(label.clone(), false)?);
        self.log_err = Some(Output::new(label, true)?);
        self.log_pipe = Some(Pipe::new(false)?);
        Ok(())
    }

    fn outputs(&mut self) -> impl Iterator<Item = &mut Output> {
        [
            Some(&mut self.out),
            Some(&mut self.err),
            self.log_out.as_mut(),
            self.log_err.as_mut(),
        ]
        .into_iter()
        .flatten()
    }
}

struct Runner {
    supervisor: Supervisor,
    signals: SignalSource,
    inherited: Inherited,
    /// None in single-command mode with updates.
    dir: Option<PathBuf>,
    devnull: OwnedFd,
    inotify: Option<Inotify>,
    /// Folders watched, with their watches: a folder removed and created
    /// again is a new inode, to be watched anew.
    watched: BTreeMap<PathBuf, WatchDescriptor>,
    /// While the services directory is missing: the watch on its nearest
    /// existing ancestor, which reports it (or a folder on the way) created.
    ancestor: Option<(PathBuf, WatchDescriptor)>,
    listener: Option<UnixListener>,
    /// `NOTIFY_SOCKET`, and the `notification-fd` pipes of programs not yet
    /// ready.
    notify: Option<NotifySocket>,
    ready_pipes: ReadyPipes,
    control: PathBuf,
    clients: BTreeMap<u64, Client>,
    next_client: u64,
    io: BTreeMap<String, ServiceIo>,
    /// The sockets of `listen` files.
    sockets: sockets::Held,
    exit: Option<i32>,
    agent: Option<AgentLink>,
    /// Watched once the agent says updates run (see [`agent::Trigger`]).
    trigger: Option<agent::Trigger>,
    /// The release source, if any (the app dir, the trigger's folder).
    updates: Option<crate::update::Config>,
    /// Services and the main command wait until the agent installed a
    /// release.
    held: bool,
    /// Processes reaped so far, for the metrics.
    reaped: u64,
    /// The main command (combined mode, or single-command mode with updates).
    main: Option<InitConfig>,
    /// A self-update whose self-test runs.
    self_update: Option<self_update::Pending>,
}

/// What a ready descriptor in the poll set belongs to.
enum Source {
    Signals,
    Inotify,
    Listener,
    Notify,
    ReadyPipe((String, Which)),
    Client(u64),
    Output,
    Agent,
    Trigger,
}

impl Runner {
    fn run(mut self) -> i32 {
        // Start-up is over: from here on PID 1 runs its loop, whose code
        // is linked together at the start of `.text` (build.rs), for as
        // long as the container runs. What start-up alone mapped goes.
        crate::sys::mem::drop_start_up_pages();
        loop {
            if let Some(code) = self.exit {
                for io in self.io.values_mut() {
                    io.outputs().for_each(Output::flush);
                }
                if self.listener.is_some() {
                    let _ = std::fs::remove_file(&self.control);
                }
                if let Some(notify) = &self.notify {
                    let _ = std::fs::remove_file(notify.path());
                }
                return code;
            }
            let (ready, outputs_ready) = match self.wait() {
                Ok(ready) => ready,
                Err(err) => {
                    error!("cannot poll: {}", err.desc());
                    return 1;
                }
            };
            if outputs_ready {
                for io in self.io.values_mut() {
                    io.outputs().for_each(Output::drain);
                }
            }
            for source in ready {
                match source {
                    Source::Signals => self.on_signal(),
                    Source::Inotify => self.on_inotify(),
                    Source::Listener => self.accept(),
                    Source::Notify => {
                        let notifiers = self.notify.as_ref().map(NotifySocket::receive);
                        for notifier in notifiers.into_iter().flatten() {
                            self.handle(Event::Ready(notifier));
                        }
                    }
                    Source::ReadyPipe(key) => {
                        if let Some(notifier) = self.ready_pipes.read(&key) {
                            self.handle(Event::Ready(notifier));
                        }
                    }
                    Source::Client(id) => self.read_client(id),
                    Source::Output => {}
                    Source::Agent => self.on_agent(),
                    Source::Trigger => self.on_trigger(),
                }
            }
            if let Some(link) = &mut self.agent {
                link.tick(&self.inherited, self.devnull.as_fd());
            }
            self.self_test_late();
            if self
                .supervisor
                .next_deadline()
                .is_some_and(|d| d <= Instant::now())
            {
                self.handle(Event::Tick);
            }
            for pgid in self.supervisor.lingering_groups() {
                if !process::group_exists(pgid) {
                    self.handle(Event::GroupGone { pgid });
                }
            }
            self.publish();
            self.exec_if_due();
        }
    }

    /// Hands the agent's observers a snapshot (when it changed).
    fn publish(&mut self) {
        if self.agent.is_none() {
            return;
        }
        let list = self
            .supervisor
            .statuses(Instant::now())
            .into_iter()
            .map(|status| observe::ServiceState {
                essential: self
                    .supervisor
                    .definition(&status.name)
                    .is_some_and(|d| d.essential),
                phase: status.main.phase,
                restarts: status.main.restarts,
                name: status.name,
            })
            .collect();
        let services = observe::Services {
            list,
            shutting_down: self.supervisor.shutting_down(),
            reaped: self.reaped,
        };
        if let Some(link) = &mut self.agent {
            link.publish(services);
        }
    }

    /// Sleeps until a descriptor is ready or the next deadline; returns the
    /// ready sources, and whether any output pipe had data.
    fn wait(&mut self) -> nix::Result<(Vec<Source>, bool)> {
        let mut sources = vec![Source::Signals];
        let mut fds = vec![PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
        if let Some(inotify) = &self.inotify {
            sources.push(Source::Inotify);
            fds.push(PollFd::new(inotify.as_fd(), PollFlags::POLLIN));
        }
        if let Some(listener) = &self.listener {
            sources.push(Source::Listener);
            fds.push(PollFd::new(listener.as_fd(), PollFlags::POLLIN));
        }
        if let Some(notify) = &self.notify {
            sources.push(Source::Notify);
            fds.push(PollFd::new(notify.as_fd(), PollFlags::POLLIN));
        }
        for (key, fd) in self.ready_pipes.fds() {
            sources.push(Source::ReadyPipe(key.clone()));
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        if let Some((fd, output)) = self.agent.as_ref().and_then(AgentLink::fd) {
            sources.push(Source::Agent);
            let flags = match output {
                true => PollFlags::POLLIN | PollFlags::POLLOUT,
                false => PollFlags::POLLIN,
            };
            fds.push(PollFd::new(fd, flags));
        }
        if let Some(trigger) = &self.trigger {
            sources.push(Source::Trigger);
            fds.push(PollFd::new(trigger.inotify.as_fd(), PollFlags::POLLIN));
        }
        for (&id, client) in &self.clients {
            if !client.asked {
                sources.push(Source::Client(id));
                fds.push(PollFd::new(client.stream.as_fd(), PollFlags::POLLIN));
            }
        }
        for io in self.io.values_mut() {
            for output in io.outputs() {
                sources.push(Source::Output);
                fds.push(PollFd::new(output.pipe.read.as_fd(), PollFlags::POLLIN));
            }
        }
        let deadline = [
            self.supervisor.next_deadline(),
            self.agent.as_ref().and_then(AgentLink::deadline),
            self.self_update
                .as_ref()
                .and_then(self_update::Pending::deadline),
        ]
        .into_iter()
        .flatten()
        .min();
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(deadline) => {
                // Round up, so the deadline has passed when poll returns.
                let left = deadline.saturating_duration_since(Instant::now());
                let ms = left.as_micros().div_ceil(1000);
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        };
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => return Ok((Vec::new(), false)),
            Err(err) => return Err(err),
        }
        let mut ready = Vec::new();
        let mut outputs_ready = false;
        for (source, fd) in sources.into_iter().zip(&fds) {
            if fd.revents().is_some_and(|r| !r.is_empty()) {
                outputs_ready |= matches!(source, Source::Output);
                ready.push(source);
            }
        }
        Ok((ready, outputs_ready))
    }

    /// Feeds one event to the supervisor and carries out everything it asks,
    /// including the events those actions produce in turn.
    fn handle(&mut self, event: Event) {
        let mut queue: VecDeque<Action> = self.supervisor.step(Instant::now(), event).into();
        while let Some(action) = queue.pop_front() {
            let follow_up = match action {
                Action::Scan => {
                    let listing = self.scan();
                    if let Ok(listing) = &listing {
                        self.sockets.keep_named(listing);
                    }
                    Some(Event::Scanned(listing))
                }
                Action::SpawnMain => self.restart_main().map(Event::MainSpawned),
                Action::Spawn {
                    service,
                    which,
                    program,
                } => {
                    let result = self.spawn(&service, which, program);
                    Some(Event::Spawned {
                        service,
                        which,
                        program,
                        result,
                    })
                }
                Action::Signal { target, signal } => {
                    if let Err(err) = process::send_signal(target, signal) {
                        debug!("cannot send signal {signal} to {target}: {}", err.desc());
                    }
                    None
                }
                Action::CloseLogInput { service } => {
                    if let Some(pipe) = self
                        .io
                        .get_mut(&service)
                        .and_then(|io| io.log_pipe.as_mut())
                    {
                        pipe.write = None;
                    }
                    None
                }
                Action::Forget { service } => {
                    if let Some(mut io) = self.io.remove(&service) {
                        io.outputs().for_each(Output::flush);
                    }
                    self.sockets.forget(&service);
                    None
                }
                Action::Reply {
                    client: ClientId::Agent(life),
                    answers,
                } => {
                    // For the agent that asked; one that died since is gone.
                    if let Some(link) = self.agent.as_mut() {
                        if link.client_id() == ClientId::Agent(life) {
                            link.send(crate::agent::protocol::FromInit::Answers(answers));
                        }
                    }
                    None
                }
                Action::Reply {
                    client: ClientId::Socket(client),
                    answers,
                } => {
                    let text: String = answers.iter().map(Answer::encode).collect();
                    self.reply(client, &text);
                    None
                }
                Action::StopSelf => {
                    let _ = process::stop_self();
                    None
                }
                Action::Exit(code) => {
                    self.exit = Some(code);
                    None
                }
            };
            if let Some(event) = follow_up {
                queue.extend(self.supervisor.step(Instant::now(), event));
            }
        }
    }

    fn on_signal(&mut self) {
        let signal = match self.signals.wait() {
            Ok(signal) => signal,
            Err(err) => return warn!("cannot read signals: {}", err.desc()),
        };
        if signal != libc::SIGCHLD {
            self.handle(Event::Signal(signal));
        }
        self.reap();
    }

    /// Reaps every child that has exited and hands each exit to whom it
    /// belongs.
    fn reap(&mut self) {
        // Reap after every signal, not only SIGCHLD: the signalfd hands out
        // lower-numbered signals first, so a flood of them must not starve
        // reaping. Collect the whole batch first, so that when a group is probed its
        // members that died together are already reaped.
        let mut batch = Vec::new();
        if let Err(err) = reap::reap_terminated(|pid, status| batch.push((pid, status))) {
            warn!("cannot wait for children: {}", err.desc());
        }
        self.reaped += batch.len() as u64;
        // What a dead agent wrote before it died (a last reply) counts.
        if let Some(link) = &self.agent {
            if batch.iter().any(|(pid, _)| link.is_agent(*pid)) {
                self.on_agent();
            }
        }
        for (pid, status) in batch {
            if self.self_test_exited(pid, status) {
                continue;
            }
            match self.agent.as_mut().map(|link| link.reaped(pid, status)) {
                Some(Reaped::Hook) => continue,
                Some(Reaped::Agent(ended)) => {
                    self.agent_ended(ended);
                    continue;
                }
                Some(Reaped::Other) | None => {}
            }
            let group_alive = process::group_exists(pid);
            self.handle(Event::Exited {
                pid,
                status,
                group_alive,
            });
        }
    }

    /// Starts the main command the first time; if it cannot be started,
    /// moltd leaves with the code single-command mode would (and this
    /// returns false).
    fn start_main(&mut self) -> bool {
        let Some(main) = &self.main else { return true };
        match init::start(main, &self.signals) {
            Ok(forwarder) => self.handle(Event::MainSpawned(Ok(forwarder))),
            Err(code) => self.exit = Some(code),
        }
        self.exit.is_none()
    }

    /// Starts the main command again (after an update stopped it). A child
    /// that failed to exec is registered like a started one: the loop reaps
    /// its exit 127.
    fn restart_main(&mut self) -> Option<Result<Forwarder, i32>> {
        let main = self.main.as_ref()?;
        Some(match init::spawn_command(main, &self.signals) {
            Ok(forwarder) => Ok(forwarder),
            Err(err) => {
                let pid = match err {
                    SpawnError::Exec { pid, .. } => Some(pid),
                    _ => None,
                };
                let code = Messages(main.personality).spawn_failed(&main.command[0], err);
                match pid {
                    Some(pid) => Ok(Forwarder::new(main.rules.clone(), pid)),
                    None => Err(code),
                }
            }
        })
    }
}
