//! PID 1's side of the update agent (`moltd agent`, see `crate::agent`):
//! starting it, the link to it, and supervising it.
//!
//! Why here and not in the agent: PID 1 is the one process that must never
//! die, so it trusts the agent no more than a control client. Every frame
//! is checked ([`protocol`]); a malformed one, or a `client` frame not
//! answered within [`WATCHDOG`], gets the agent killed and restarted. The
//! agent may only answer clients whose requests were given to it, and
//! replies of the supervisor meant for an agent that died since are
//! dropped (client ids carry the agent's life, [`ClientId::Agent`]).
//!
//! Nothing here runs on a timer: the loop's poll timeout includes
//! [`AgentLink::deadline`], which exists only while a restart is due or a
//! client's first answer is awaited.
//!
//! What PID 1 keeps across the agent's lives: the MOLTD_LISTEN socket (so
//! connections queue while the agent restarts), `supervisor.lock` (so no
//! other moltd takes the app dir between two agents), the services the
//! agent stopped and did not start again (`held`: handed to the next agent
//! in `welcome`), and the hooks of a dead agent (killed, then reaped
//! quietly).

mod start;

use super::machine::ClientId;
use crate::agent::FDS_VAR;
use crate::agent::protocol::{self, FromAgent, FromInit};
use crate::observe::Services;
use crate::sys::process;
use crate::sys::reap::ExitStatus;
use crate::sys::signals::Inherited;
use crate::sys::spawn;
use log::{info, warn};
use nix::fcntl::Flock;
use nix::libc;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long the agent gets to give a control client its first answer:
/// below the clients' own reply timeout (5 s), so that they hear the
/// watchdog's reason rather than time out.
pub const WATCHDOG: Duration = Duration::from_secs(3);
/// How long an agent may take to say `hello` (when it can serve) before
/// the watchdog counts for a client that asked meanwhile.
const STARTING: Duration = Duration::from_secs(30);
/// The first delay before a restart; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// An agent up this long starts again after [`BACKOFF_MIN`].
const STABLE: Duration = Duration::from_secs(60);
/// The most PID 1 keeps queued for the agent: one that leaves this much
/// unread (stopped, hung, or sending requests without reading the
/// answers) is killed, so that it cannot make PID 1 grow.
const MAX_UNREAD: usize = protocol::MAX_FRAME;

/// The update agent as PID 1 sees it.
pub struct AgentLink {
    argv: [OsString; 2],
    /// Where moltd's binary was found at start, if `/proc/self/exe` is
    /// missing when the agent is started.
    found: Option<PathBuf>,
    environment: Vec<CString>,
    listener: Option<OwnedFd>,
    /// Locked by PID 1 for its whole life; each agent gets a descriptor of
    /// the same open file, which shares the lock.
    lock: Option<Flock<File>>,
    life: Life,
    /// Lives so far: the number in [`ClientId::Agent`].
    lives: u32,
    backoff: Duration,
    /// Lives in a row that ended before the agent said `ready`.
    pub exits_before_ready: u32,
    /// Hooks the running agent started.
    hooks: BTreeSet<i32>,
    /// Hooks of dead agents: killed, reaped without telling anyone.
    orphans: BTreeSet<i32>,
    /// Services the agent stopped and did not start again.
    held: BTreeSet<String>,
    /// The snapshot the agent has: sent again only when it changed.
    sent: Option<Services>,
}

enum Life {
    Up(Box<Running>),
    Down { cause: String, restart_at: Instant },
}

struct Running {
    pid: i32,
    /// `None` once the agent closed it (it is about to be reaped).
    stream: Option<UnixStream>,
    frames: protocol::Frames,
    /// Framed bytes not written yet (the socket is non-blocking: a stopped
    /// agent must not stop PID 1).
    out: Vec<u8>,
    greeted: bool,
    ready: bool,
    since: Instant,
    /// Clients given to the agent and not answered yet, with the deadline
    /// of their first answer (removed at the first).
    unanswered: BTreeMap<u64, Instant>,
    /// Clients given to the agent and not replied to (their connection is
    /// open until the reply).
    waiting: BTreeSet<u64>,
    /// Why PID 1 killed it, if it did.
    killed: Option<String>,
    /// When it closed its link: it is to exit within [`WATCHDOG`].
    closed: Option<Instant>,
}

impl Running {
    /// When it must have exited, having closed its link (an agent that
    /// keeps running without it could never be told or asked anything).
    fn exit_due(&self) -> Option<Instant> {
        let closed = self.closed.filter(|_| self.killed.is_none())?;
        Some(closed + WATCHDOG)
    }
}

/// What became of a dead agent's business.
pub struct Ended {
    pub cause: String,
    /// Clients it had not replied to.
    pub clients: Vec<u64>,
}

/// What a reaped pid was to the agent link.
pub enum Reaped {
    Agent(Ended),
    /// A hook of the running agent: it has been told.
    Hook,
    /// Not the agent's.
    Other,
}

impl AgentLink {
    /// Prepares the agent's start: its environment is moltd's own (tokens
    /// included, which services never get) with the names of the passed
    /// descriptors, moltd's log level, and the entry the command line
    /// implies (`moltd -- /app/current/bin/server`), which the agent reads
    /// from its environment like the rest of its settings.
    pub fn new(
        listener: Option<OwnedFd>,
        lock: Option<Flock<File>>,
        entry: Option<&std::path::Path>,
    ) -> AgentLink {
        let mut fds = vec!["link"];
        fds.extend(listener.as_ref().map(|_| "listen"));
        fds.extend(lock.as_ref().map(|_| "lock"));
        let level = log::max_level().to_string().to_lowercase();
        let mut ours: Vec<(&str, OsString)> =
            vec![(FDS_VAR, fds.join(",").into()), ("MOLTD_LOG", level.into())];
        ours.extend(entry.map(|entry| ("MOLTD_ENTRY", entry.as_os_str().to_owned())));
        let inherited: Vec<_> = std::env::vars_os()
            .filter(|(name, _)| !ours.iter().any(|(n, _)| name == n))
            .collect();
        let environment = spawn::environment(
            inherited
                .into_iter()
                .chain(ours.into_iter().map(|(n, v)| (n.into(), v))),
        );
        AgentLink {
            argv: ["moltd".into(), "agent".into()],
            // Without /proc (a bare chroot), the absolute path moltd was
            // started by.
            found: std::env::current_exe().ok().or_else(|| {
                let argv0 = PathBuf::from(std::env::args_os().next()?);
                argv0.is_absolute().then_some(argv0)
            }),
            environment,
            listener,
            lock,
            life: Life::Down {
                cause: "not started yet".into(),
                restart_at: Instant::now(),
            },
            lives: 0,
            backoff: BACKOFF_MIN,
            exits_before_ready: 0,
            hooks: BTreeSet::new(),
            orphans: BTreeSet::new(),
            held: BTreeSet::new(),
            sent: None,
        }
    }

    fn running(&mut self) -> Option<&mut Running> {
        match &mut self.life {
            Life::Up(running) => Some(running),
            Life::Down { .. } => None,
        }
    }

    /// What a self-update keeps of the link (the agent itself is started
    /// anew on the new binary), or why it cannot go now: an update holds
    /// services, a hook runs, or a client waits for the agent.
    pub fn freeze(&self) -> Result<crate::services::reexec::state::Agent, String> {
        use std::os::fd::AsRawFd;
        if !self.held.is_empty() {
            return Err("an update holds services".into());
        }
        if !self.hooks.is_empty() || !self.orphans.is_empty() {
            return Err("an update hook runs".into());
        }
        let pid = match &self.life {
            Life::Up(running) if !running.waiting.is_empty() => {
                return Err("a client waits for the update agent".into());
            }
            Life::Up(running) => Some(running.pid),
            Life::Down { .. } => None,
        };
        Ok(crate::services::reexec::state::Agent {
            pid,
            listen: self.listener.as_ref().map(AsRawFd::as_raw_fd),
            lock: self.lock.as_ref().map(|lock| lock.as_raw_fd()),
        })
    }

    /// The agent of the PID 1 this one replaced: killed (its link closed
    /// at the exec) and reaped quietly; the next is started on this binary.
    pub fn retire(&mut self, pid: i32) {
        let _ = process::send_signal(pid, libc::SIGKILL);
        self.orphans.insert(pid);
    }

    /// Whether `pid` is the running agent's.
    pub fn is_agent(&self, pid: i32) -> bool {
        matches!(&self.life, Life::Up(running) if running.pid == pid)
    }

    /// Whether an agent runs that frames reach.
    pub fn serving(&self) -> bool {
        matches!(&self.life, Life::Up(running) if running.stream.is_some())
    }

    /// The id the running agent's requests go by.
    pub fn client_id(&self) -> ClientId {
        ClientId::Agent(self.lives)
    }

    /// The link, for the poll set, with whether there is output to write.
    pub fn fd(&self) -> Option<(BorrowedFd<'_>, bool)> {
        match &self.life {
            Life::Up(running) => {
                let output = running.greeted && !running.out.is_empty();
                (running.stream.as_ref()).map(|stream| (stream.as_fd(), output))
            }
            Life::Down { .. } => None,
        }
    }

    /// When [`AgentLink::tick`] has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.life {
            Life::Up(running) => {
                let exit = running.exit_due();
                running.unanswered.values().copied().chain(exit).min()
            }
            Life::Down { restart_at, .. } => Some(*restart_at),
        }
    }

    /// Starts the agent when its restart is due; kills it when a client
    /// waited too long for its first answer, or when it closed its link
    /// and did not exit.
    pub fn tick(&mut self, inherited: &Inherited, devnull: BorrowedFd) {
        let now = Instant::now();
        match &self.life {
            Life::Down { restart_at, .. } if *restart_at <= now => self.start(inherited, devnull),
            Life::Up(running) if running.unanswered.values().any(|d| *d <= now) => {
                let why = format!("it did not answer a request within {}s", WATCHDOG.as_secs());
                self.kill(why);
            }
            Life::Up(running) if running.exit_due().is_some_and(|d| d <= now) => {
                self.kill("it closed its link and did not exit".into());
            }
            _ => {}
        }
    }

    /// KILLs the agent, saying why; its exit is handled when it is reaped.
    pub fn kill(&mut self, why: String) {
        let Some(running) = self.running() else {
            return;
        };
        if running.killed.is_none() {
            warn!("killing the update agent: {why}");
            let _ = process::send_signal(running.pid, libc::SIGKILL);
            running.killed = Some(why);
        }
        // Nothing more from it is believed, no client waits on it, and
        // nothing more goes to it.
        running.stream = None;
        running.unanswered.clear();
        running.out = Vec::new();
    }

    /// Reads what the agent sent. A broken frame gets it killed; `hello`
    /// and its version are checked here (and answered with `welcome`).
    pub fn read(&mut self) -> Vec<FromAgent> {
        let mut messages = Vec::new();
        let Some(running) = self.running() else {
            return messages;
        };
        let Some(stream) = &mut running.stream else {
            return messages;
        };
        let mut buf = [0u8; 16 * 1024];
        // At most this much a wake-up: an agent that writes without end
        // must not keep the loop from its other sources.
        let mut rounds = 16;
        let closed = loop {
            rounds -= 1;
            match stream.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) if rounds == 0 => {
                    running.frames.push(&buf[..n]);
                    break false;
                }
                Ok(n) => running.frames.push(&buf[..n]),
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break false,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break true,
            }
        };
        let mut welcome = false;
        let problem = loop {
            let text = match running.frames.next_text() {
                Ok(Some(text)) => text,
                Ok(None) => break None,
                Err(err) => break Some(err.to_string()),
            };
            match FromAgent::decode(&text) {
                Ok(FromAgent::Hello { version, .. }) if running.greeted => {
                    break Some(format!("hello (version {version}) sent twice"));
                }
                Ok(FromAgent::Hello { version, .. }) if version != protocol::VERSION => {
                    break Some(format!(
                        "it speaks protocol version {version}, not {}",
                        protocol::VERSION
                    ));
                }
                Ok(FromAgent::Hello { .. }) => {
                    running.greeted = true;
                    welcome = true;
                    let due = Instant::now() + WATCHDOG;
                    running
                        .unanswered
                        .values_mut()
                        .for_each(|d| *d = due.min(*d));
                }
                Ok(_) if !running.greeted => break Some("it did not say hello first".into()),
                Ok(message) => messages.push(message),
                Err(err) => break Some(err.to_string()),
            }
        };
        if closed {
            running.stream = None;
            running.closed = Some(Instant::now());
        }
        if let Some(problem) = problem {
            self.kill(format!("it broke the protocol: {problem}"));
            messages.clear();
        }
        if welcome {
            let held = self.held.iter().cloned().collect();
            let welcome = FromInit::Welcome {
                version: protocol::VERSION,
                held,
            };
            if let Some(running) = self.running() {
                // First, before what was queued while it started.
                let queued =
                    std::mem::replace(&mut running.out, protocol::frame(&welcome.encode()));
                running.out.extend(queued);
            }
            self.flush();
        }
        messages
    }

    /// Queues a frame and writes what the socket takes now (the rest when
    /// it is writable again). Until the agent said `hello`, frames wait:
    /// `welcome` goes first.
    pub fn send(&mut self, message: FromInit) {
        if let Some(running) = self.running() {
            if running.stream.is_some() {
                running.out.extend(protocol::frame(&message.encode()));
                self.flush();
            }
        }
        if self.running().is_some_and(|r| r.out.len() > MAX_UNREAD) {
            let why = format!("it left more than {MAX_UNREAD} bytes of its link unread");
            self.kill(why);
        }
    }

    /// Writes queued frames while the socket takes them.
    pub fn flush(&mut self) {
        let Some(running) = self.running().filter(|r| r.greeted) else {
            return;
        };
        let Some(stream) = &mut running.stream else {
            return;
        };
        while !running.out.is_empty() {
            match stream.write(&running.out) {
                Ok(n) => {
                    running.out.drain(..n);
                }
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }

    /// Sends the services snapshot if the agent does not have it yet.
    pub fn publish(&mut self, services: Services) {
        let greeted = self
            .running()
            .is_some_and(|r| r.greeted && r.stream.is_some());
        if greeted && self.sent.as_ref() != Some(&services) {
            self.sent = Some(services.clone());
            self.send(FromInit::Services(services));
        }
    }

    /// Gives an `update\t` request line from control client `client` to
    /// the agent, or says why it cannot take it.
    pub fn forward(&mut self, client: u64, line: &str) -> Result<(), String> {
        let unavailable = self.unavailable();
        let Some(running) = self.running().filter(|r| r.stream.is_some()) else {
            return Err(unavailable);
        };
        // An agent says `hello` once it can serve; before, it may be
        // cleaning up after its predecessor (a large staging folder).
        let wait = match running.greeted {
            true => WATCHDOG,
            false => STARTING + WATCHDOG,
        };
        running.unanswered.insert(client, Instant::now() + wait);
        running.waiting.insert(client);
        self.send(FromInit::Client {
            client,
            line: line.to_owned(),
        });
        Ok(())
    }

    /// Whether the agent may answer `client` (it was given its request),
    /// and notes that it did: `last` closes the client.
    pub fn answers(&mut self, client: u64, last: bool) -> bool {
        let Some(running) = self.running() else {
            return false;
        };
        running.unanswered.remove(&client);
        match last {
            true => running.waiting.remove(&client),
            false => running.waiting.contains(&client),
        }
    }

    /// Why the agent cannot answer now, and when it will be back.
    pub fn unavailable(&self) -> String {
        match &self.life {
            Life::Down { cause, .. } => {
                format!(
                    "the update agent is not running ({cause}); {}",
                    self.restart_in()
                )
            }
            Life::Up(_) => "the update agent is restarting".into(),
        }
    }

    /// `restarting in Ns`, while the agent is down.
    pub fn restart_in(&self) -> String {
        let left = match &self.life {
            Life::Down { restart_at, .. } => restart_at.saturating_duration_since(Instant::now()),
            Life::Up(_) => Duration::ZERO,
        };
        format!("restarting in {}s", left.as_secs_f64().ceil())
    }

    /// The agent said `ready` (in this life).
    pub fn ready(&mut self) {
        self.exits_before_ready = 0;
        if let Some(running) = self.running() {
            running.ready = true;
        }
    }

    /// Notes a request of the agent's: services it stops stay `held` until
    /// it starts them again, through its death and the next agent.
    pub fn track(&mut self, request: &super::control::Request) {
        use super::control::Op;
        match request.op {
            // A second generation stopped (an overlap given up) is meant
            // to stay down; the first runs on.
            Op::Down => self.held.extend(
                (request.names.iter())
                    .filter(|n| !n.ends_with("/next"))
                    .cloned(),
            ),
            Op::Up | Op::Once | Op::Restart { .. } => {
                for name in &request.names {
                    self.held.remove(name);
                }
            }
            _ => {}
        }
    }

    /// Whether the agent may have a hook started now. Its worker runs one
    /// at a time and waits for each, so an agent asking for another while
    /// one runs (or after it was killed) is refused, and killed: it must
    /// not make PID 1 fork without bound.
    pub fn may_start_hook(&mut self) -> bool {
        if self.running().is_none_or(|r| r.killed.is_some()) {
            return false;
        }
        if let Some(hook) = self.hooks.first() {
            self.kill(format!("it asked for a hook while its hook {hook} runs"));
            return false;
        }
        true
    }

    /// Registers a hook the agent started.
    pub fn hook_started(&mut self, pid: i32) {
        self.hooks.insert(pid);
    }

    /// KILLs the process group of a hook, if the agent started it.
    pub fn kill_hook(&self, pid: i32) {
        if self.hooks.contains(&pid) {
            let _ = process::send_signal(-pid, libc::SIGKILL);
        }
    }

    /// Takes a reaped pid if it is the agent or one of its hooks.
    pub fn reaped(&mut self, pid: i32, status: ExitStatus) -> Reaped {
        if self.hooks.remove(&pid) {
            self.send(FromInit::HookExited { pid, status });
            return Reaped::Hook;
        }
        if self.orphans.remove(&pid) {
            return Reaped::Hook;
        }
        let Life::Up(running) = &mut self.life else {
            return Reaped::Other;
        };
        if running.pid != pid {
            return Reaped::Other;
        }
        let cause = match (running.killed.take(), status) {
            (Some(why), _) => format!("killed by moltd: {why}"),
            (None, ExitStatus::Exited(code)) => format!("exited with code {code}"),
            (None, ExitStatus::Signaled(libc::SIGKILL)) => {
                "killed by SIGKILL (out of memory?)".into()
            }
            (None, ExitStatus::Signaled(signal)) => {
                format!("killed by {}", crate::signals::name(signal))
            }
        };
        let clients = std::mem::take(&mut running.waiting).into_iter().collect();
        let (lived, ready) = (running.since.elapsed(), running.ready);
        if !ready {
            self.exits_before_ready += 1;
        }
        // Hooks it started would report to no one: they go with it.
        for hook in std::mem::take(&mut self.hooks) {
            let _ = process::send_signal(-hook, libc::SIGKILL);
            self.orphans.insert(hook);
        }
        let delay = self.next_delay(lived);
        warn!(
            "the update agent stopped: {cause}; restarting it in {}s",
            delay.as_secs()
        );
        if !self.held.is_empty() {
            info!(
                "{} stay down until the next update agent starts them",
                self.held.iter().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        self.life = Life::Down {
            cause: cause.clone(),
            restart_at: Instant::now() + delay,
        };
        Reaped::Agent(Ended { cause, clients })
    }
}

#[cfg(test)]
mod tests;
