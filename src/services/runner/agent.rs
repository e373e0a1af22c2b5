//! The loop's side of the update agent: what it does for the agent's
//! frames (service requests, hooks, `ready`, answers to control clients),
//! the trigger file, and the agent's death (see [`AgentLink`] for the link
//! itself and the agent's supervision).

use super::Runner;
use super::self_update::Requester;
use crate::agent::protocol::{FromAgent, FromInit};
use crate::control;
use crate::init::Isolation;
use crate::services::agent_link::{AgentLink, Ended};
use crate::services::control::{Op, Request};
use crate::services::machine::{ClientId, Event, MAIN_NAME};
use crate::sys::spawn::{self, SpawnError};
use log::{debug, error, warn};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Lives in a row that may end before `ready` until the services start on
/// the installed release without the agent.
const FAILED_STARTS: u32 = 3;

/// Watches `.moltd/` and `.moltd/trigger/` for the trigger file.
pub(super) struct Trigger {
    pub(super) inotify: Inotify,
    /// The trigger file in each (see `update::staging::trigger_dir`).
    paths: [PathBuf; 2],
}

impl Trigger {
    fn watch(state_dir: &Path) -> Result<Trigger, String> {
        let dir = crate::update::staging::trigger_dir(state_dir).map_err(|err| err.to_string())?;
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
            .map_err(|e| e.desc().to_owned())?;
        let flags =
            AddWatchFlags::IN_CLOSE_WRITE | AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_CREATE;
        for dir in [state_dir, &dir] {
            inotify
                .add_watch(dir, flags)
                .map_err(|e| format!("cannot watch {}: {}", dir.display(), e.desc()))?;
        }
        Ok(Trigger {
            inotify,
            paths: crate::update::staging::trigger_paths(state_dir),
        })
    }
}

/// Whether service mode needs the update agent: for a release source, or
/// for an observer (listener, metrics file, webhook), which lives there.
pub(super) fn wanted(config: &crate::services::ServicesConfig) -> bool {
    let observe = &config.observe;
    config.updates.is_some()
        || observe.listen.is_some()
        || observe.metrics_file.is_some()
        || observe.webhook.is_some()
}

/// What PID 1 holds for the agent across its lives: the `MOLTD_LISTEN`
/// socket (bound here, so ports below 1024 work and connections queue
/// while the agent restarts) and `supervisor.lock` (lent to each agent).
pub(super) fn prepare(config: &crate::services::ServicesConfig) -> Result<AgentLink, String> {
    let listener = match config.observe.listen {
        None => None,
        Some(addr) => Some(bind(addr).map_err(|err| format!("cannot listen on {addr}: {err}"))?),
    };
    let lock = match &config.updates {
        None => None,
        Some(updates) => {
            match crate::update::staging::manage(&updates.app_dir, &updates.state_dir()) {
                Ok(lock) => Some(lock),
                // Another moltd manages the app dir: starting its services
                // beside it, or an agent that can never take over, would hide
                // what an operator must change. Say it and stop, as before the
                // agent existed.
                Err(err @ crate::update::Error::Managed { .. }) => {
                    return Err(crate::update::chain(&err));
                }
                // A folder that cannot be written (updates off): the agent
                // meets the same error and says what it means.
                Err(err) => {
                    debug!("{}", crate::update::chain(&err));
                    None
                }
            }
        }
    };
    let entry = config.updates.as_ref().and_then(|u| u.entry.as_deref());
    Ok(AgentLink::new(listener, lock, entry))
}

/// Binds the HTTP listener with moltd's backlog (std binds with
/// `SO_REUSEADDR`, so a restarted moltd can listen again at once).
fn bind(addr: std::net::SocketAddr) -> std::io::Result<OwnedFd> {
    let listener = std::net::TcpListener::bind(addr)?;
    let backlog = nix::sys::socket::Backlog::new(crate::observe::BACKLOG)
        .unwrap_or(nix::sys::socket::Backlog::MAXCONN);
    nix::sys::socket::listen(&listener, backlog)?;
    Ok(OwnedFd::from(listener))
}

impl Runner {
    /// Reads and carries out what the agent sent, writes what it did not
    /// take yet.
    pub(super) fn on_agent(&mut self) {
        let Some(link) = &mut self.agent else { return };
        link.flush();
        let messages = link.read();
        for message in messages {
            self.carry_out(message);
        }
    }

    fn carry_out(&mut self, message: FromAgent) {
        let Some(link) = &mut self.agent else { return };
        match message {
            FromAgent::Hello { .. } => {}
            FromAgent::Command(request) => {
                link.track(&request);
                let client = link.client_id();
                self.handle(Event::Command { client, request });
            }
            FromAgent::Hook { .. } if !link.may_start_hook() => {}
            FromAgent::Hook { argv, cwd } => {
                let argv: Vec<OsString> = argv.into_iter().map(OsString::from).collect();
                let started = self.spawn_hook(&argv, cwd.as_deref());
                let Some(link) = &mut self.agent else { return };
                if let Ok(pid) = started {
                    link.hook_started(pid);
                }
                link.send(match started {
                    Ok(pid) => FromInit::HookStarted(pid),
                    Err(why) => FromInit::HookFailed(why),
                });
            }
            FromAgent::KillHook(pid) => link.kill_hook(pid),
            FromAgent::Pending { client, text } => {
                if link.answers(client, false) {
                    self.write_client(client, &control::encode_pending(&text));
                }
            }
            FromAgent::Reply { client, reply } => {
                if link.answers(client, true) {
                    self.reply(client, &control::encode_reply(&reply));
                }
            }
            FromAgent::Ready { updating } => {
                link.ready();
                if updating && self.trigger.is_none() {
                    self.watch_trigger();
                }
                self.release(None);
                // The main command is held for the agent until it lets go
                // (see `worker::ToLoop::Ready`): the hold is its answer.
                let client = self.agent.as_ref().map(AgentLink::client_id);
                self.handle(Event::Command {
                    client: client.unwrap_or(ClientId::Agent(0)),
                    request: Request {
                        op: Op::Up,
                        names: vec![MAIN_NAME.to_owned()],
                        wait: None,
                        kill_on_timeout: false,
                    },
                });
                self.on_trigger();
            }
            FromAgent::SelfUpdate(request) => {
                let requester = Requester::Agent(link.client_id());
                self.self_update(request, requester);
            }
        }
    }

    /// Lets the services and the main command start, the first time a
    /// release is installed (or, with `why`, without the agent's word).
    pub(super) fn release(&mut self, why: Option<&str>) {
        if !self.held {
            return;
        }
        if let Some(why) = why {
            warn!("{why}");
        }
        self.held = false;
        if self.start_main() {
            let listing = self.scan();
            self.handle(Event::Scanned(listing));
        }
    }

    fn watch_trigger(&mut self) {
        let Some(updates) = &self.updates else { return };
        match Trigger::watch(&updates.state_dir()) {
            Ok(trigger) => self.trigger = Some(trigger),
            Err(problem) => warn!("{problem}; the trigger file will not work"),
        }
    }

    /// Starts a hook in its own process group, with moltd's standard
    /// streams; a failed exec still yields a pid that exits 127.
    fn spawn_hook(&mut self, argv: &[OsString], cwd: Option<&str>) -> Result<i32, String> {
        let program = spawn::Program::new(argv, None).map_err(|_| "a NUL byte in the command")?;
        let cwd = cwd
            .map(std::ffi::CString::new)
            .transpose()
            .map_err(|_| "a NUL byte in the folder")?;
        let mut options = spawn::Options::new(Isolation::Background, &self.inherited);
        options.stdio[0] = Some(self.devnull.as_fd());
        options.cwd = cwd.as_deref();
        match spawn::spawn(&program, &options) {
            Ok(pid) | Err(SpawnError::Exec { pid, .. }) => Ok(pid),
            Err(SpawnError::Setup(what, errno)) => Err(format!("{what}: {}", errno.desc())),
            Err(SpawnError::NulInArgument(_)) => Err("a NUL byte in the command".into()),
        }
    }

    /// Takes the trigger file, if it is there, and tells the agent.
    pub(super) fn on_trigger(&mut self) {
        let Some(trigger) = &self.trigger else { return };
        let _ = trigger.inotify.read_events();
        // Left for the next agent's `ready` while none can take it.
        if self.held || !self.agent.as_ref().is_some_and(AgentLink::serving) {
            return;
        }
        // Both are removed: one request, however many wrote it.
        let taken = trigger
            .paths
            .iter()
            .filter(|path| std::fs::remove_file(path).is_ok());
        if taken.count() == 0 {
            return;
        }
        if let Some(link) = &mut self.agent {
            link.send(FromInit::Trigger);
        }
    }

    /// The agent died: the clients it owed an answer hear why; if it never
    /// got as far as `ready` three times and a release is installed, the
    /// services start on it anyway.
    pub(super) fn agent_ended(&mut self, ended: Ended) {
        let Some(link) = &self.agent else { return };
        let text = format!(
            "the update agent stopped before answering ({}); {}",
            ended.cause,
            link.restart_in()
        );
        for client in ended.clients {
            self.reply(client, &control::encode_reply(&Err(text.clone())));
        }
        // An overlap the dead agent drove is over: its second generations
        // stop (the first ones never did); the next agent's recovery takes
        // `current` back. Answered to the dead agent: nobody.
        let next = self.supervisor.second_generations();
        if let (Some(link), false) = (&self.agent, next.is_empty()) {
            warn!(
                "stopping {}: the update agent that started {} died",
                next.join(", "),
                if next.len() == 1 { "it" } else { "them" }
            );
            let client = link.client_id();
            let request = Request {
                op: Op::Down,
                names: next,
                wait: None,
                kill_on_timeout: false,
            };
            self.handle(Event::Command { client, request });
        }
        let Some(link) = &self.agent else { return };
        if self.held && link.exits_before_ready >= FAILED_STARTS {
            let app_dir = self.updates.as_ref().map(|u| u.app_dir.clone());
            match app_dir.and_then(|dir| crate::update::layout::current_tag(&dir)) {
                Some(tag) => self.release(Some(&format!(
                    "the update agent failed {} times before installing a release; starting the services on the installed release {tag}",
                    link.exits_before_ready
                ))),
                None if link.exits_before_ready == FAILED_STARTS => error!(
                    "the update agent failed {} times before installing a release, and none is installed: the services wait",
                    link.exits_before_ready
                ),
                None => {}
            }
        }
    }
}
