//! The update agent's worker: a thread that checks, downloads and decides,
//! and asks PID 1 (through the agent's link, see [`super`]) for everything
//! that touches a process.
//!
//! Why a thread: the updater does blocking HTTP, and the link must always
//! be answered. Why everything goes to PID 1: only PID 1 may call
//! `waitpid` (one reaper) and register a pid before it can be reaped, so the
//! agent never forks or reaps. The worker sends [`ToLoop`] messages over a
//! channel and writes a byte to a pipe the agent's main thread polls; that
//! thread turns them into frames for PID 1 and PID 1's frames into
//! [`ToAgent`] messages:
//!
//! * stop/start/status of services become control [`Request`]s; the
//!   supervisor's reply comes back as [`ToAgent::Answers`];
//! * hooks (`MOLTD_PRE_UPDATE`, `MOLTD_POST_UPDATE`, `MOLTD_HEALTH_CMD`) are
//!   spawned by PID 1, which reports their exit;
//! * requests from `moltd update`/`rollback`/`unmark`/`status` and the trigger file
//!   arrive as [`ToAgent::Client`] and [`ToAgent::Trigger`].
//!
//! Between checks the thread sleeps in `recv_timeout` until the next poll
//! deadline or a message: no periodic wake-ups.
//!
//! Requests never wait for the thread to be free: whoever takes them (the
//! link for the control socket, the HTTP thread) first asks
//! [`admission::admit`](super::admission::admit), and only what it lets
//! through reaches the thread.

mod link;
mod no_app;
use no_app::{agent_itself, agent_off};

use super::admission::{Admission, Work, admit};
use crate::control::{UpdateReply, UpdateRequest};
use crate::services::control::{Answer, Op, Request};
use crate::services::status::Phase as ServicePhase;
use crate::sys::reap::ExitStatus;
use crate::update::status::Status;
use crate::update::{Payload, Recovery, Updater, chain, outcome, poll};
use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long beyond SVWAIT a stop may take (the `finish` scripts).
const STOP_MARGIN: Duration = Duration::from_secs(5);
/// How long a started service gets to be running.
const START_WAIT: Duration = Duration::from_secs(10);

/// From the updater thread to the event loop.
#[derive(Debug)]
pub enum ToLoop {
    /// A control request; the reply comes back as [`ToAgent::Answers`].
    Control(Request),
    /// Spawn this command line (a hook); answer with
    /// [`ToAgent::HookStarted`], then [`ToAgent::HookExited`].
    Hook {
        argv: Vec<OsString>,
        cwd: Option<std::path::PathBuf>,
    },
    /// KILL the process group of a hook that ran too long.
    KillHook(i32),
    /// Answer socket client `client` and close its connection.
    Reply { client: u64, reply: UpdateReply },
    /// Replace PID 1 with this binary; answered with
    /// [`ToAgent::SelfUpdate`].
    SelfUpdate(crate::control::SelfUpdate),
    /// A release is installed: the services may start. The main command,
    /// if any, is held (an `Op::Up` for the agent, answered like any
    /// request) until [`Payload::release`], so that it may fail a first
    /// health gate without ending moltd.
    Ready,
}

/// From the event loop to the updater thread.
#[derive(Debug)]
pub enum ToAgent {
    Answers(Vec<Answer>),
    HookStarted(Result<i32, String>),
    HookExited {
        pid: i32,
        status: ExitStatus,
    },
    /// `$MOLTD_APP_DIR/.moltd/update-requested` appeared.
    Trigger,
    /// The services a dead agent stopped (from PID 1's `welcome`): the
    /// first message, once PID 1 answered.
    Welcome(Vec<String>),
    /// PID 1's answer to [`ToLoop::SelfUpdate`]: the version it execs, or
    /// why it refused.
    SelfUpdate(Result<String, String>),
    /// `moltd update`/`rollback`/`status`, or the same over HTTP.
    Client {
        to: ReplyTo,
        op: UpdateRequest,
    },
}

/// Where the answer to a [`ToAgent::Client`] goes.
#[derive(Debug)]
pub enum ReplyTo {
    /// A control socket client of the loop.
    Socket(u64),
    /// A request on the HTTP listener's thread.
    Http(Sender<UpdateReply>),
}

/// The updater thread's end of the link to the loop.
pub struct Link {
    to_loop: Sender<ToLoop>,
    wake: OwnedFd,
    from_loop: Receiver<ToAgent>,
    /// Messages that arrived while waiting for another one.
    deferred: VecDeque<ToAgent>,
    work: Arc<Work>,
    svwait: Duration,
    /// What [`Payload::ready`] started, once it was sent.
    started: Option<Vec<String>>,
    /// Services stopped at start because no release is installed for them
    /// (see [`resume`]): [`Payload::ready`] starts them on the first one.
    parked: Vec<String>,
}

impl Link {
    pub fn new(
        to_loop: Sender<ToLoop>,
        wake: OwnedFd,
        from_loop: Receiver<ToAgent>,
        work: Arc<Work>,
        svwait: Duration,
    ) -> Link {
        Link {
            to_loop,
            wake,
            from_loop,
            deferred: VecDeque::new(),
            work,
            svwait,
            started: None,
            parked: Vec::new(),
        }
    }

    /// The thread's own run (first boot, schedule, trigger) starts, or
    /// ended.
    fn working(&self, working: bool) {
        self.work.working.store(working, Ordering::SeqCst);
    }

    fn send(&self, message: ToLoop) -> Result<(), String> {
        self.to_loop
            .send(message)
            .map_err(|_| "the link to PID 1 has ended".to_owned())?;
        // A full pipe already wakes the loop; nothing else can go wrong
        // that retrying would fix.
        let _ = nix::unistd::write(&self.wake, b"!");
        Ok(())
    }

    /// Answers a request [`admit`] let through: one fewer is queued.
    fn reply(&self, to: ReplyTo, reply: UpdateReply) {
        let _ = match to {
            ReplyTo::Socket(client) => self.send(ToLoop::Reply { client, reply }),
            ReplyTo::Http(sender) => sender.send(reply).map_err(|_| String::new()),
        };
        let _ = (self.work.queued)
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }

    /// Waits for the message `wanted` picks, until `deadline`; everything
    /// else waits its turn (status requests never come here: see
    /// [`admit`]).
    fn wait_for(
        &mut self,
        deadline: Option<Instant>,
        mut wanted: impl FnMut(&ToAgent) -> bool,
    ) -> Result<Option<ToAgent>, String> {
        loop {
            let message = match deadline {
                None => self
                    .from_loop
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
                Some(at) => self
                    .from_loop
                    .recv_timeout(at.saturating_duration_since(Instant::now())),
            };
            match message {
                Ok(message) if wanted(&message) => return Ok(Some(message)),
                Ok(other) => self.deferred.push_back(other),
                Err(RecvTimeoutError::Timeout) => return Ok(None),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err("the link to PID 1 has ended".into());
                }
            }
        }
    }

    /// Sends a control request and waits for the supervisor's answers.
    fn ask(&mut self, request: Request) -> Result<Vec<Answer>, String> {
        self.send(ToLoop::Control(request))?;
        match self.wait_for(None, |m| matches!(m, ToAgent::Answers(_)))? {
            Some(ToAgent::Answers(answers)) => Ok(answers),
            _ => Err("no answer from the supervisor".into()),
        }
    }

    /// The services meant to run (and the main command).
    fn wanted_up(&mut self) -> Result<Vec<String>, String> {
        let all = self.ask(Request {
            op: Op::Status,
            names: Vec::new(),
            wait: None,
            kill_on_timeout: false,
        })?;
        Ok(statuses(all)?
            .into_iter()
            .filter(|s| s.main.want == crate::services::status::Want::Up)
            .map(|s| s.name)
            .collect())
    }

    /// The next thing to do, or `None` when `deadline` passed first.
    /// A rollback taken here clears the cancel flag: what it cancelled has
    /// ended, whoever takes the rollback (first boot refuses it).
    fn next(&mut self, deadline: Option<Instant>) -> Result<Option<ToAgent>, String> {
        let message = match self.deferred.pop_front() {
            Some(message) => Some(message),
            None => self.wait_for(deadline, |m| {
                matches!(m, ToAgent::Trigger | ToAgent::Client { .. })
            })?,
        };
        if let Some(ToAgent::Client {
            op: UpdateRequest::Rollback,
            ..
        }) = &message
        {
            self.work.cancel.store(false, Ordering::SeqCst);
        }
        Ok(message)
    }
}

/// The names and statuses in `answers`, or the first problem.
fn statuses(answers: Vec<Answer>) -> Result<Vec<crate::services::status::Status>, String> {
    answers
        .into_iter()
        .map(|answer| match answer {
            Answer::Done(s) | Answer::Ok(s) | Answer::Killed(s) => Ok(s),
            Answer::Timeout(s) if s.main.phase == ServicePhase::Running && !s.main.ready => {
                Err(format!("{} did not become ready in time", s.name))
            }
            Answer::Timeout(s) => Err(format!("{} did not change state in time", s.name)),
            Answer::Unknown(name) => Err(format!("no service named {name:?}")),
        })
        .collect()
}

/// Starts the updater thread for `config`, or, when updates cannot run but
/// the installed release can (see [`crate::update::updates_off`]), a thread
/// that lets the services start and tells whoever asks why nothing is
/// updated. `link` makes the thread's end of the link over the status it
/// shares. Returns whether updates run.
pub fn start(
    config: crate::update::Config,
    observer: &crate::observe::Observer,
    to_agent: std::sync::mpsc::Sender<ToAgent>,
    link: impl FnOnce(Arc<Work>) -> Link,
    lock: Option<OwnedFd>,
) -> Result<Started, String> {
    let thread = std::thread::Builder::new().name("updater".into());
    let (spawned, started) = match Updater::open(config.clone(), lock) {
        // `MOLTD_SELF_REPO` alone: moltd updates itself, the app's
        // requests are answered with why they are not.
        Ok(mut updater) if config.source.is_none() => {
            let work = Work::only_itself(crate::update::APP_OFF.into());
            let started = Started::new(updater.shared_status(), work);
            updater.set_hook(started.attach(observer, to_agent));
            let link = link(started.work.clone());
            (thread.spawn(move || agent_itself(updater, link)), started)
        }
        Ok(mut updater) => {
            let work = Work::new(updater.cancel_flag(), None);
            let started = Started::new(updater.shared_status(), work);
            updater.set_hook(started.attach(observer, to_agent));
            let link = link(started.work.clone());
            (thread.spawn(move || agent(updater, link)), started)
        }
        Err(err) => {
            let Some(reason) = crate::update::updates_off(&config, &err) else {
                return Err(format!("cannot start the updater: {}", chain(&err)));
            };
            let mut reporter = crate::update::status::Reporter::new(config.status_file);
            // Nothing downloads, so nothing is ever cancelled.
            let work = Work::new(Arc::default(), Some(reason.clone()));
            let started = Started::new(reporter.shared(), work);
            reporter.set_hook(started.attach(observer, to_agent));
            let current = crate::update::layout::current_tag(&config.app_dir);
            reporter.off(current, &reason);
            let link = link(started.work.clone());
            (thread.spawn(move || agent_off(link)), started)
        }
    };
    spawned.map_err(|err| format!("cannot start the updater thread: {err}"))?;
    Ok(started)
}

/// Picks up after an agent that died in the middle of an update, so that
/// every service runs the release `current` names: starts the services it
/// stopped; when `current` was just taken back from a switch cut short,
/// restarts those that run (they may run the release it left); when a
/// first install was undone, stops them until the next one is ready
/// (their release is gone), as it does with those it stopped.
fn resume(link: &mut Link, recovered: Option<Recovery>) -> Result<(), String> {
    let held = match link.wait_for(None, |m| matches!(m, ToAgent::Welcome(_)))? {
        Some(ToAgent::Welcome(held)) => held,
        _ => return Err("no welcome from PID 1".into()),
    };
    if recovered == Some(Recovery::Discarded) {
        let running = link.wanted_up()?;
        log::info!(
            "stopping {} until a release is installed",
            running.join(", ")
        );
        link.parked = link.stop(Some(&running))?;
        link.parked
            .extend(held.into_iter().filter(|n| !running.contains(n)));
        return Ok(());
    }
    let held = held.as_slice();
    if !held.is_empty() {
        log::info!(
            "starting {} again (stopped by an update agent that died)",
            held.join(", ")
        );
        if let Err(problem) = link.start(held) {
            log::warn!("cannot start {}: {problem}", held.join(", "));
        }
    }
    if recovered != Some(Recovery::WentBack) {
        return Ok(());
    }
    let running = match link.wanted_up() {
        Ok(names) => names,
        Err(problem) => {
            log::warn!("cannot list the services: {problem}");
            return Ok(());
        }
    };
    let restart: Vec<String> = running.into_iter().filter(|n| !held.contains(n)).collect();
    if restart.is_empty() {
        return Ok(());
    }
    log::info!(
        "restarting {} on the release current names again",
        restart.join(", ")
    );
    let answers = link.ask(Request {
        op: Op::Restart {
            only_if_running: false,
        },
        names: restart,
        wait: Some(START_WAIT),
        kill_on_timeout: false,
    });
    if let Err(problem) = answers.and_then(statuses) {
        log::warn!("cannot restart the services: {problem}");
    }
    Ok(())
}

/// What the loop keeps of a started updater thread: the status snapshot and
/// the work flags it answers requests from (see [`admit`]).
pub struct Started {
    pub status: Arc<Mutex<Status>>,
    pub work: Arc<Work>,
    /// Whether updates run (else they are off: see `no_app::agent_off`).
    pub updating: bool,
}

impl Started {
    fn new(status: Arc<Mutex<Status>>, work: Work) -> Started {
        Started {
            status,
            updating: work.updating(),
            work: Arc::new(work),
        }
    }

    fn attach(
        &self,
        observer: &crate::observe::Observer,
        to_agent: std::sync::mpsc::Sender<ToAgent>,
    ) -> crate::update::status::Hook {
        let (status, work) = (self.status.clone(), self.work.clone());
        let ask = move |request| ask_blocking(&work, &status, &to_agent, request);
        observer.attach_updater(self.status.clone(), Box::new(ask))
    }
}

/// Answers at once what [`admit`] answers, else hands the request to the
/// thread and waits for its reply (for a caller that may block: HTTP).
fn ask_blocking(
    work: &Work,
    status: &Mutex<Status>,
    to_agent: &Sender<ToAgent>,
    request: UpdateRequest,
) -> UpdateReply {
    if let Admission::Answer(reply) = admit(work, status, &request) {
        return reply;
    }
    let ended = || Err("the updater has ended".to_owned());
    let (reply, replied) = std::sync::mpsc::channel();
    let to = ReplyTo::Http(reply);
    if to_agent.send(ToAgent::Client { to, op: request }).is_err() {
        return ended();
    }
    replied.recv().unwrap_or_else(|_| ended())
}

/// A scheduled check of `MOLTD_SELF_REPO`, if set: what it did is logged
/// and in the status.
pub(super) fn check_itself(updater: &mut Updater, link: &mut Link) {
    if updater.updates_itself() {
        if let Err(problem) = updater.update_itself(link) {
            log::error!("moltd did not update itself: {problem}");
        }
    }
}

/// The updater thread's whole life.
pub fn agent(mut updater: Updater, mut link: Link) {
    if resume(&mut link, updater.recovered()).is_err() {
        return;
    }
    let schedule = updater.config().schedule;
    let mut failures = 0;
    // First boot: nothing starts before a release is installed.
    let mut waiting: Option<ReplyTo> = None;
    loop {
        link.working(true);
        let installed = updater.ensure_installed(&mut link);
        link.working(false);
        // A `moltd update` that asked for this round gets its outcome.
        if let Some(to) = waiting.take() {
            let reply = match &installed {
                Ok(tag) => Ok(format!("installed {tag}")),
                Err(err) => Err(format!("no release installed yet: {}", chain(err))),
            };
            link.reply(to, reply);
        }
        match installed {
            Ok(_) => {
                link.work.first_boot.store(false, Ordering::SeqCst);
                break;
            }
            Err(err) => {
                let text = chain(&err);
                // A round in which nothing worked backs off like a network
                // error; a rate limit waits as the server asked.
                let outcome = match outcome(Err::<(), _>(err)) {
                    poll::Outcome::Normal => poll::Outcome::Failed(1),
                    other => other,
                };
                let wait = schedule.after(outcome, &mut failures);
                updater.report_failure(format!(
                    "no release installed yet: {text}; retrying in {:.0}s",
                    wait.as_secs_f64()
                ));
                match first_boot_wait(&mut updater, &mut link, Instant::now() + wait) {
                    Ok(client) => waiting = client,
                    Err(_) => return,
                }
            }
        }
    }
    failures = 0;
    let mut next_check = Instant::now();
    loop {
        let message = match link.next(Some(next_check)) {
            Ok(message) => message,
            Err(_) => return,
        };
        match message {
            None => {
                link.working(true);
                let outcome = updater.automatic(&mut link, false);
                // After the app's own check, never during its update.
                check_itself(&mut updater, &mut link);
                next_check = Instant::now() + schedule.after(outcome, &mut failures);
                log::info!(
                    "next check in {:.1}s",
                    next_check
                        .saturating_duration_since(Instant::now())
                        .as_secs_f64()
                );
            }
            Some(ToAgent::Trigger) => {
                log::info!("update requested by the trigger file");
                link.working(true);
                updater.automatic(&mut link, true);
            }
            Some(ToAgent::Client { to, op }) => {
                let reply = carry_out(&mut updater, &mut link, op);
                link.reply(to, reply);
            }
            Some(_) => {}
        }
        next_check = rollout_wake(&updater, next_check);
        link.working(false);
    }
}

/// `next_check`, or earlier when a release the last check judged becomes
/// eligible before it (a throttle, minimum age or window): the schedule
/// computes the time, nothing polls for it. A second late, so the clock
/// has passed it.
fn rollout_wake(updater: &Updater, next_check: Instant) -> Instant {
    let Some(wait) = updater.wake_in() else {
        return next_check;
    };
    let wake = Instant::now() + wait;
    if wake < next_check {
        log::info!(
            "next check in {}s, when a release becomes eligible",
            wait.as_secs()
        );
    }
    next_check.min(wake)
}

/// Waits for the first boot's next round until `deadline`, answering
/// clients. An update request, the trigger file or an unmark starts the
/// round at once (an operator who fixed or unmarked a release need not wait
/// for the backoff); the update's client is returned, to get the round's
/// outcome. A check answers at once.
fn first_boot_wait(
    updater: &mut Updater,
    link: &mut Link,
    deadline: Instant,
) -> Result<Option<ReplyTo>, String> {
    while let Some(message) = link.next(Some(deadline))? {
        let (to, op) = match message {
            ToAgent::Trigger => {
                log::info!("install requested by the trigger file");
                return Ok(None);
            }
            ToAgent::Client { to, op } => (to, op),
            _ => continue,
        };
        match op {
            UpdateRequest::Apply { .. } => return Ok(Some(to)),
            UpdateRequest::Status | UpdateRequest::Rollback => {
                link.reply(to, Err("no release is installed yet".into()));
            }
            op => {
                let unmark = matches!(op, UpdateRequest::Unmark(_));
                let reply = carry_out(updater, link, op);
                let unmarked = unmark && reply.is_ok();
                link.reply(to, reply);
                if unmarked {
                    return Ok(None);
                }
            }
        }
    }
    Ok(None)
}

/// Carries out a request `admit` let through to the thread.
fn carry_out(updater: &mut Updater, link: &mut Link, op: UpdateRequest) -> UpdateReply {
    updater.request(link, op)
}
