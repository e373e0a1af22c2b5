//! The supervisor's decisions: a state machine with no syscalls.
//!
//! [`Supervisor::step`] takes the current time and one [`Event`] (a process
//! exited, a signal arrived, the directory changed, a client asked for
//! something, time passed) and returns the [`Action`]s to carry out. The
//! event loop in `runner.rs` does the I/O and feeds back what happened, so
//! every rule here is checked by table tests without starting a process.
//!
//! Each supervised program (`run`, and `log/run` if there is one) is a
//! [`Slot`] that goes round one cycle:
//!
//! ```text
//! Down/Backoff -> Starting -> Running -> (Stopping) -> (Finishing) -> Down/Backoff
//! ```
//!
//! `Stopping` lasts until every process of the program's group is gone, not
//! just `run`: a new `run` never starts beside leftovers of the old one.
//! Everything that can hang (a group ignoring the down-signal, a `finish`
//! that never ends) has a deadline of SVWAIT, after which its group gets
//! KILL, so one broken service never holds up the others or shutdown.
//!
//! Other modules drive services the way `sv` does: send
//! [`Event::Command`] with their own client id and act on the
//! [`Action::Reply`] addressed to it, which comes when the services are
//! up or down (or the wait timed out).

use super::control::{Answer, Op, Request};
use super::scan::{Definition, Ignored, Listing, Part};
use super::status::{Phase, ProgramStatus, Status, Want};
use crate::init::policy::{self, Forwarder};
use crate::signals;
use crate::sys::reap::ExitStatus;
use crate::sys::signals::FAULT_SIGNALS;
use log::{debug, info, trace, warn};
use nix::libc;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A program that ran at least this long was not crash-looping.
pub const STABLE: Duration = Duration::from_secs(10);
/// The minimum time between two starts of a program (runit's rule).
pub const MIN_RESTART: Duration = Duration::from_secs(1);
/// Quick deaths in a row after which an essential service has given up.
pub const GIVE_UP_AFTER: u32 = 5;
/// Quick deaths in a row from which a program counts as crash-looping.
pub const CRASH_LOOP_AFTER: u32 = 2;
/// moltd's exit code when an essential service stopped the container.
pub const ESSENTIAL_FAILED: i32 = 111;
/// A `finish` exit code that means "do not restart" (s6's convention).
pub const FINISH_NO_RESTART: i32 = 125;
/// The exit code runit reports to `finish` when `run` could not be started.
pub const COULD_NOT_START: i32 = 111;
/// How long to let a changing directory settle before reading it, so a
/// folder being copied in is seen whole.
pub const SCAN_SETTLE: Duration = Duration::from_millis(100);
/// The name the main command answers to in control requests and statuses.
/// Service folders starting with a dot are never read, so no service can
/// take it.
pub const MAIN_NAME: &str = ".main";

/// Tunables from the environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// How long a stopping group or a `finish` gets before KILL (SVWAIT).
    pub svwait: Duration,
    /// The longest restart delay of a crash-looping program.
    pub backoff_max: Duration,
}

/// `run` or its `log/run`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    Main,
    Log,
}

/// The program to start in a service folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    Run,
    /// `./finish CODE SIGNAL`, with runit's arguments.
    Finish {
        code: i32,
        signal: i32,
    },
}

/// Why a program could not be started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpawnFailure {
    /// The child that failed to exec and will exit by itself, if fork worked.
    pub pid: Option<i32>,
    pub reason: String,
}

/// Something that happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The services directory was read.
    Scanned(Result<Listing, String>),
    /// Something changed in the services directory or a service folder.
    DirChanged,
    /// The outcome of an [`Action::Spawn`], fed back before any reaping.
    Spawned {
        service: String,
        which: Which,
        program: Program,
        result: Result<i32, SpawnFailure>,
    },
    /// A child was reaped; `group_alive` says whether its process group
    /// (which it led, if it was a service) still has members.
    Exited {
        pid: i32,
        status: ExitStatus,
        group_alive: bool,
    },
    /// A group from [`Supervisor::lingering_groups`] is now empty.
    GroupGone {
        pgid: i32,
    },
    /// The main command was started (the first time, or again after
    /// [`Action::SpawnMain`]), or could not be, with the code to report.
    MainSpawned(Result<Forwarder, i32>),
    /// moltd received a signal (not CHLD).
    Signal(i32),
    Command {
        client: ClientId,
        request: Request,
    },
    /// Time passed; deadlines may have expired.
    Tick,
}

/// Who asked for an [`Event::Command`], and gets its [`Action::Reply`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ClientId {
    /// A control socket client, numbered by the runner.
    Socket(u64),
    /// The update agent, by the number of its life (a reply for an agent
    /// that died since is dropped, not given to the next one).
    Agent(u32),
}

/// Something for the event loop to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Read the services directory and send [`Event::Scanned`].
    Scan,
    /// Start a program and send [`Event::Spawned`] at once.
    Spawn {
        service: String,
        which: Which,
        program: Program,
    },
    /// `kill(target, signal)`: a pid, or minus a process group.
    Signal {
        target: i32,
        signal: i32,
    },
    /// Close moltd's write end of the service's log pipe, so `log/run` sees
    /// end of file once the service is gone.
    CloseLogInput {
        service: String,
    },
    /// The service is gone for good: release its pipes.
    Forget {
        service: String,
    },
    Reply {
        client: ClientId,
        answers: Vec<Answer>,
    },
    /// Start the main command again and send [`Event::MainSpawned`] at once.
    SpawnMain,
    /// Stop moltd until CONT (job control in combined mode).
    StopSelf,
    Exit(i32),
}

/// What a program should be doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Intent {
    Up,
    Down,
    /// Run, but do not restart.
    Once,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    Down,
    Backoff {
        until: Instant,
    },
    /// [`Action::Spawn`] was issued; [`Event::Spawned`] comes next.
    Starting,
    Running {
        pid: i32,
        exec_failed: bool,
    },
    /// Waiting for the group `pgid` to empty; `run` is its pid while alive.
    Stopping {
        pgid: i32,
        run: Option<i32>,
        exit: Option<ExitStatus>,
        /// When to KILL the group; none once KILL was sent.
        deadline: Option<Instant>,
    },
    Finishing {
        pid: Option<i32>,
        exit: ExitStatus,
        deadline: Option<Instant>,
    },
}

/// How a stop begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StopHow {
    /// The down-signal, then CONT, to the group.
    Signal,
    /// Close the log pipe: a logger stops at end of file, after writing out
    /// everything the service said.
    CloseInput,
}

/// One supervised program and its history.
#[derive(Debug)]
struct Slot {
    part: Part,
    life: Life,
    since: Instant,
    intent: Intent,
    starts: u32,
    last_start: Option<Instant>,
    last_exit: Option<ExitStatus>,
    quick_deaths: u32,
    paused: bool,
    got_term: bool,
    /// The last problem logged, so that a program failing the same way over
    /// and over says so once.
    last_problem: Option<String>,
}

#[derive(Debug)]
struct Service {
    def: Definition,
    main: Slot,
    log: Option<Slot>,
    /// Its folder is gone: stop it, then forget it.
    removed: bool,
    log_input_closed: bool,
}

/// The command of combined mode (`moltd --services DIR -- CMD`), or of
/// single-command mode with updates.
///
/// Its exit ends moltd with its status, except while an update holds it:
/// `Op::Down` (stop it: its stop signal and CONT, KILL after SVWAIT; down
/// once its group is gone) and `Op::Up` (start it again) hold it, and
/// `Op::Once` lets go (starting it if it is down), after which its exit ends
/// moltd again.
#[derive(Debug)]
struct MainCommand {
    forwarder: Forwarder,
    /// Its exit code, once it has exited (until it is started again).
    code: Option<i32>,
    last_exit: Option<ExitStatus>,
    /// When to KILL it if it was asked to stop and has not.
    deadline: Option<Instant>,
    /// An update stops and starts it: its exit does not end moltd.
    held: bool,
    /// Asked to stop, and not asked to start since.
    wanted_down: bool,
    /// It exited, but its process group still has members.
    lingering: bool,
    /// [`Action::SpawnMain`] was issued; [`Event::MainSpawned`] comes next.
    starting: bool,
    starts: u32,
    since: Instant,
}

impl MainCommand {
    fn running(&self) -> bool {
        self.code.is_none() && !self.starting
    }

    fn is_down(&self) -> bool {
        self.code.is_some() && !self.lingering && !self.starting
    }

    /// Its stop signal (as a forwarded TERM: to its group or to it alone),
    /// then CONT to its group; KILL after SVWAIT.
    fn stop(&mut self, now: Instant, svwait: Duration, actions: &mut Vec<Action>) {
        let term = self.forwarder.on_signal(libc::SIGTERM);
        push_forwarded(actions, term);
        actions.push(Action::Signal {
            target: -self.forwarder.child(),
            signal: libc::SIGCONT,
        });
        self.deadline = Some(now + svwait);
    }

    fn reached(&self, goal: Goal) -> bool {
        match goal {
            Goal::Any => true,
            Goal::Up => self.running(),
            Goal::Down => self.is_down(),
            Goal::Restarted(starts) => self.running() && self.starts > starts,
        }
    }

    fn status(&self, now: Instant) -> Status {
        let child = Some(self.forwarder.child());
        let (phase, pid) = match self {
            m if m.starting => (Phase::Running, None),
            m if m.code.is_none() && m.wanted_down => (Phase::Stopping, child),
            m if m.code.is_none() => (Phase::Running, child),
            m if m.lingering => (Phase::Stopping, child),
            _ => (Phase::Down, None),
        };
        let want = if self.wanted_down {
            Want::Down
        } else {
            Want::Up
        };
        Status {
            name: MAIN_NAME.to_owned(),
            main: ProgramStatus {
                phase,
                pid,
                secs: now.saturating_duration_since(self.since).as_secs(),
                normally_up: true,
                want,
                paused: false,
                got_term: false,
                restarts: self.starts.saturating_sub(1),
                last_exit: self.last_exit,
            },
            log: None,
            dir: None,
        }
    }
}

/// What a client waits for, per service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Goal {
    Any,
    Up,
    Down,
    /// Running, started more than this many times in all.
    Restarted(u32),
}

#[derive(Debug)]
struct Waiter {
    client: ClientId,
    targets: Vec<(String, Goal)>,
    deadline: Instant,
    kill_on_timeout: bool,
}

/// Everything the supervisor knows.
#[derive(Debug)]
pub struct Supervisor {
    settings: Settings,
    services: BTreeMap<String, Service>,
    ignored: BTreeMap<String, String>,
    dir_problem: Option<String>,
    main: Option<MainCommand>,
    /// The exit code, once shutdown has begun.
    shutdown: Option<i32>,
    exited: bool,
    scan_at: Option<Instant>,
    waiters: Vec<Waiter>,
}

/// What a slot method needs from its surroundings.
struct Ctx<'a> {
    now: Instant,
    settings: Settings,
    /// `web` or `web/log`, for messages.
    label: String,
    service: &'a str,
    which: Which,
    /// New starts are allowed (no shutdown, folder not removed).
    may_start: bool,
    actions: &'a mut Vec<Action>,
    /// Set when an essential program gave up.
    gave_up: bool,
}

impl Slot {
    fn new(part: Part, now: Instant) -> Slot {
        Slot {
            intent: if part.down { Intent::Down } else { Intent::Up },
            part,
            life: Life::Down,
            since: now,
            starts: 0,
            last_start: None,
            last_exit: None,
            quick_deaths: 0,
            paused: false,
            got_term: false,
            last_problem: None,
        }
    }

    fn set_life(&mut self, life: Life, now: Instant) {
        self.life = life;
        self.since = now;
    }

    /// Logs `problem` unless it is the one logged last.
    fn complain(&mut self, label: &str, problem: String) {
        if self.last_problem.as_ref() != Some(&problem) {
            warn!("{label}: {problem}");
            self.last_problem = Some(problem);
        }
    }

    fn start(&mut self, cx: &mut Ctx) {
        if !cx.may_start {
            return self.set_life(Life::Down, cx.now);
        }
        if self.starts > 0 {
            info!("{}: restarting", cx.label);
        }
        self.starts += 1;
        self.last_start = Some(cx.now);
        self.paused = false;
        self.got_term = false;
        self.set_life(Life::Starting, cx.now);
        cx.actions.push(Action::Spawn {
            service: cx.service.to_owned(),
            which: cx.which,
            program: Program::Run,
        });
    }

    /// Starts now if runit's one-second rule allows, else at the earliest.
    fn start_soon(&mut self, cx: &mut Ctx, delay: Duration) {
        let earliest = self.last_start.map_or(cx.now, |t| t + MIN_RESTART);
        let at = earliest.max(cx.now + delay);
        if at <= cx.now {
            self.start(cx);
        } else {
            self.set_life(Life::Backoff { until: at }, cx.now);
        }
    }

    fn stop(&mut self, cx: &mut Ctx, how: StopHow) {
        match self.life {
            Life::Backoff { .. } => self.set_life(Life::Down, cx.now),
            Life::Running { pid, .. } => {
                match how {
                    StopHow::Signal => {
                        let signal = self.part.down_signal;
                        debug!("{}: sending {}", cx.label, signals::name(signal));
                        self.got_term = signal == libc::SIGTERM;
                        for signal in [signal, libc::SIGCONT] {
                            cx.actions.push(Action::Signal {
                                target: -pid,
                                signal,
                            });
                        }
                    }
                    StopHow::CloseInput => cx.actions.push(Action::CloseLogInput {
                        service: cx.service.to_owned(),
                    }),
                }
                // Still counted as up, with the time since its start.
                self.life = Life::Stopping {
                    pgid: pid,
                    run: Some(pid),
                    exit: None,
                    deadline: Some(cx.now + cx.settings.svwait),
                };
            }
            Life::Down | Life::Starting | Life::Stopping { .. } | Life::Finishing { .. } => {}
        }
    }

    /// `run` was reaped.
    fn run_exited(&mut self, cx: &mut Ctx, status: ExitStatus, group_alive: bool) {
        let (pgid, exec_failed, stopping) = match self.life {
            Life::Running { pid, exec_failed } => (pid, exec_failed, None),
            Life::Stopping { pgid, deadline, .. } => (pgid, false, Some(deadline)),
            _ => return,
        };
        // runit's convention: a run that could not be started "exited 111".
        let status = if exec_failed {
            ExitStatus::Exited(COULD_NOT_START)
        } else {
            status
        };
        self.last_exit = Some(status);
        match stopping {
            Some(_) => info!("{}: stopped ({})", cx.label, describe(status)),
            None => {
                let ran = self.last_start.map_or(Duration::ZERO, |t| cx.now - t);
                if ran < STABLE {
                    self.quick_deaths += 1;
                } else {
                    self.quick_deaths = 0;
                }
                if !exec_failed {
                    self.last_problem = None;
                }
                info!(
                    "{}: {} after {}s",
                    cx.label,
                    describe(status),
                    ran.as_secs()
                );
            }
        }
        if !group_alive {
            return self.group_gone(cx, status);
        }
        let deadline = match stopping {
            Some(deadline) => deadline,
            None => {
                // Leftovers of a run that died on its own are stopped like a
                // service being stopped.
                debug!("{}: run exited, stopping the rest of its group", cx.label);
                for signal in [self.part.down_signal, libc::SIGCONT] {
                    cx.actions.push(Action::Signal {
                        target: -pgid,
                        signal,
                    });
                }
                Some(cx.now + cx.settings.svwait)
            }
        };
        self.life = Life::Stopping {
            pgid,
            run: None,
            exit: Some(status),
            deadline,
        };
    }

    /// The whole group of `run` is gone: run `finish`, or settle.
    fn group_gone(&mut self, cx: &mut Ctx, exit: ExitStatus) {
        if !self.part.finish {
            return self.settle(cx, exit, None);
        }
        let (code, signal) = match exit {
            ExitStatus::Exited(code) => (code, 0),
            ExitStatus::Signaled(signal) => (-1, signal),
        };
        self.set_life(
            Life::Finishing {
                pid: None,
                exit,
                deadline: Some(cx.now + cx.settings.svwait),
            },
            cx.now,
        );
        cx.actions.push(Action::Spawn {
            service: cx.service.to_owned(),
            which: cx.which,
            program: Program::Finish { code, signal },
        });
    }

    /// The cycle is over: decide whether and when to start again.
    fn settle(&mut self, cx: &mut Ctx, exit: ExitStatus, finish: Option<ExitStatus>) {
        self.set_life(Life::Down, cx.now);
        if finish == Some(ExitStatus::Exited(FINISH_NO_RESTART)) {
            info!(
                "{}: finish exited {FINISH_NO_RESTART}, not restarting",
                cx.label
            );
            self.intent = Intent::Down;
            cx.gave_up = true;
            return;
        }
        if self.intent == Intent::Once {
            self.intent = Intent::Down;
        }
        if self.intent != Intent::Up || !cx.may_start {
            return;
        }
        if self.quick_deaths >= GIVE_UP_AFTER {
            cx.gave_up = true;
        }
        let delay = match self.quick_deaths {
            0 => Duration::ZERO,
            n => (MIN_RESTART * 2u32.pow((n - 1).min(20))).min(cx.settings.backoff_max),
        };
        if self.quick_deaths == CRASH_LOOP_AFTER {
            warn!(
                "{}: crash-looping: {} times in a row within {}s of starting (last {}); \
                 restarting with a growing delay, up to {}s",
                cx.label,
                self.quick_deaths,
                STABLE.as_secs(),
                describe(exit),
                cx.settings.backoff_max.as_secs()
            );
        }
        self.start_soon(cx, delay);
    }

    fn finish_exited(&mut self, cx: &mut Ctx, status: ExitStatus) {
        if let Life::Finishing { exit, .. } = self.life {
            debug!("{}: finish {}", cx.label, describe(status));
            self.settle(cx, exit, Some(status));
        }
    }

    fn spawned(&mut self, cx: &mut Ctx, program: Program, result: Result<i32, SpawnFailure>) {
        match (program, result) {
            (Program::Run, Ok(pid)) => {
                debug!("{}: started as pid {pid}", cx.label);
                self.life = Life::Running {
                    pid,
                    exec_failed: false,
                };
            }
            (Program::Run, Err(failure)) => {
                self.complain(&cx.label, format!("cannot run ./run: {}", failure.reason));
                match failure.pid {
                    Some(pid) => {
                        self.life = Life::Running {
                            pid,
                            exec_failed: true,
                        }
                    }
                    None => {
                        self.quick_deaths += 1;
                        self.last_exit = Some(ExitStatus::Exited(COULD_NOT_START));
                        self.group_gone(cx, ExitStatus::Exited(COULD_NOT_START));
                    }
                }
            }
            (Program::Finish { .. }, result) => {
                let Life::Finishing { pid, exit, .. } = &mut self.life else {
                    return;
                };
                let exit = *exit;
                match result {
                    Ok(started) => *pid = Some(started),
                    Err(failure) => {
                        warn!("{}: cannot run ./finish: {}", cx.label, failure.reason);
                        match failure.pid {
                            Some(started) => *pid = Some(started),
                            None => self.settle(cx, exit, None),
                        }
                    }
                }
            }
        }
    }

    fn deadline(&self) -> Option<Instant> {
        match self.life {
            Life::Backoff { until } => Some(until),
            Life::Stopping { deadline, .. } | Life::Finishing { deadline, .. } => deadline,
            _ => None,
        }
    }

    fn tick(&mut self, cx: &mut Ctx) {
        let expired = |deadline: &Option<Instant>| deadline.is_some_and(|d| d <= cx.now);
        let (group, what) = match &mut self.life {
            Life::Backoff { until } if *until <= cx.now => {
                if self.intent == Intent::Down {
                    self.set_life(Life::Down, cx.now);
                } else {
                    self.start(cx);
                }
                return;
            }
            Life::Stopping { pgid, deadline, .. } if expired(deadline) => {
                *deadline = None;
                (*pgid, "still running after being told to stop")
            }
            Life::Finishing {
                pid: Some(pid),
                deadline,
                ..
            } if expired(deadline) => {
                *deadline = None;
                (*pid, "finish still running")
            }
            _ => return,
        };
        warn!(
            "{}: {what} after {}s, killing its process group",
            cx.label,
            cx.settings.svwait.as_secs()
        );
        cx.actions.push(Action::Signal {
            target: -group,
            signal: libc::SIGKILL,
        });
    }

    /// The pid of `run` while it is alive.
    fn run_pid(&self) -> Option<i32> {
        match self.life {
            Life::Running { pid, .. } => Some(pid),
            Life::Stopping { run, .. } => run,
            _ => None,
        }
    }

    /// The group to KILL when a wait times out.
    fn group(&self) -> Option<i32> {
        match self.life {
            Life::Running { pid, .. } => Some(pid),
            Life::Stopping { pgid, .. } => Some(pgid),
            _ => None,
        }
    }

    fn is_down(&self) -> bool {
        self.life == Life::Down
    }

    fn reached(&self, goal: Goal) -> bool {
        let running = matches!(self.life, Life::Running { .. });
        match goal {
            Goal::Any => true,
            Goal::Up => running,
            Goal::Down => self.is_down(),
            Goal::Restarted(starts) => running && self.starts > starts,
        }
    }

    fn status(&self, now: Instant) -> ProgramStatus {
        let (phase, pid) = match self.life {
            Life::Down => (Phase::Down, None),
            Life::Backoff { .. } if self.quick_deaths >= CRASH_LOOP_AFTER => {
                (Phase::CrashLoop, None)
            }
            Life::Backoff { .. } => (Phase::Backoff, None),
            Life::Starting => (Phase::Running, None),
            Life::Running { pid, .. } => (Phase::Running, Some(pid)),
            Life::Stopping { pgid, run, .. } => (Phase::Stopping, Some(run.unwrap_or(pgid))),
            Life::Finishing { pid, .. } => (Phase::Finishing, pid),
        };
        ProgramStatus {
            phase,
            pid,
            secs: now.saturating_duration_since(self.since).as_secs(),
            normally_up: !self.part.down,
            want: if self.intent == Intent::Up {
                Want::Up
            } else {
                Want::Down
            },
            paused: self.paused,
            got_term: self.got_term,
            restarts: self.starts.saturating_sub(1),
            last_exit: self.last_exit,
        }
    }
}

fn describe(status: ExitStatus) -> String {
    match status {
        ExitStatus::Exited(code) => format!("exited with {code}"),
        ExitStatus::Signaled(signal) => format!("killed by {}", signals::name(signal)),
    }
}

/// The exit code for a shutdown asked for by this signal, if it asks for one:
/// 0 for TERM (the normal `docker stop`), 128+N for INT (Ctrl-C) and QUIT,
/// as a shell reports a program those signals ended.
pub fn shutdown_code(signal: i32) -> Option<i32> {
    match signal {
        libc::SIGTERM => Some(0),
        libc::SIGINT | libc::SIGQUIT => Some(128 + signal),
        _ => None,
    }
}

/// Why moltd never passes `signal` on to services, if it does not; every
/// other signal goes to the group of each running `run` (narrowed by its
/// `forward-signals`).
pub fn not_forwarded_because(signal: i32) -> Option<&'static str> {
    match signal {
        _ if shutdown_code(signal).is_some() => Some("it stops the container"),
        libc::SIGCHLD => Some("it tells moltd to reap"),
        libc::SIGKILL | libc::SIGSTOP => Some("moltd cannot catch it"),
        _ if FAULT_SIGNALS.iter().any(|&fault| fault as i32 == signal) => {
            Some("it reports a fault, and is dropped as in single-command mode")
        }
        // Stopping and resuming a service is what `sv pause` and `sv cont`
        // are for: they keep its status true, a forwarded TSTP or CONT
        // would not. TTIN and TTOU only mean a background process touched
        // the terminal.
        libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU | libc::SIGCONT => {
            Some("job control of services is sv pause and sv cont")
        }
        _ => None,
    }
}

impl Supervisor {
    /// A supervisor with no services yet; a main command joins with
    /// [`Event::MainSpawned`].
    pub fn new(settings: Settings) -> Supervisor {
        Supervisor {
            settings,
            services: BTreeMap::new(),
            ignored: BTreeMap::new(),
            dir_problem: None,
            main: None,
            shutdown: None,
            exited: false,
            scan_at: None,
            waiters: Vec::new(),
        }
    }

    /// Handles one event.
    pub fn step(&mut self, now: Instant, event: Event) -> Vec<Action> {
        let mut actions = Vec::new();
        match event {
            Event::Scanned(listing) => self.scanned(now, listing, &mut actions),
            Event::DirChanged => {
                self.scan_at.get_or_insert(now + SCAN_SETTLE);
            }
            Event::Spawned {
                service,
                which,
                program,
                result,
            } => self.with_slot(now, &service, which, &mut actions, |slot, cx| {
                slot.spawned(cx, program, result)
            }),
            Event::Exited {
                pid,
                status,
                group_alive,
            } => self.exited(now, pid, status, group_alive, &mut actions),
            Event::GroupGone { pgid } => {
                if let Some(main) = self
                    .main
                    .as_mut()
                    .filter(|m| m.lingering && m.forwarder.child() == pgid)
                {
                    main.lingering = false;
                    main.deadline = None;
                }
                let found = self.find(|slot| {
                    matches!(slot.life, Life::Stopping { pgid: p, run: None, .. } if p == pgid)
                });
                if let Some((name, which)) = found {
                    self.with_slot(now, &name, which, &mut actions, |slot, cx| {
                        if let Life::Stopping {
                            exit: Some(exit), ..
                        } = slot.life
                        {
                            slot.group_gone(cx, exit);
                        }
                    });
                }
            }
            Event::MainSpawned(result) => self.main_spawned(now, result),
            Event::Signal(signal) => self.signal(now, signal, &mut actions),
            Event::Command { client, request } => self.command(now, client, request, &mut actions),
            Event::Tick => self.tick(now, &mut actions),
        }
        self.progress(now, &mut actions);
        actions
    }

    /// When the next deadline expires; `None` means sleep until an event.
    pub fn next_deadline(&self) -> Option<Instant> {
        let slots = self
            .services
            .values()
            .flat_map(|s| std::iter::once(&s.main).chain(s.log.as_ref()))
            .filter_map(Slot::deadline);
        slots
            .chain(self.scan_at)
            .chain(self.waiters.iter().map(|w| w.deadline))
            .chain(self.main.as_ref().and_then(|m| m.deadline))
            .min()
    }

    /// Groups whose `run` has exited but which still had members; the loop
    /// reports each one that empties with [`Event::GroupGone`].
    pub fn lingering_groups(&self) -> Vec<i32> {
        let main = self.main.as_ref().filter(|m| m.lingering);
        self.services
            .values()
            .flat_map(|s| std::iter::once(&s.main).chain(s.log.as_ref()))
            .filter_map(|slot| match slot.life {
                Life::Stopping {
                    pgid, run: None, ..
                } => Some(pgid),
                _ => None,
            })
            .chain(main.map(|m| m.forwarder.child()))
            .collect()
    }

    /// The definition of a service, for the loop to find its folder.
    /// Every service's status, for metrics and the health endpoint.
    pub fn statuses(&self, now: Instant) -> Vec<Status> {
        self.services
            .keys()
            .filter_map(|name| self.status_of(name, now))
            .collect()
    }

    /// Shutdown has begun (a signal, or an essential service gave up).
    pub fn shutting_down(&self) -> bool {
        self.shutdown.is_some()
    }

    pub fn definition(&self, name: &str) -> Option<&Definition> {
        self.services.get(name).map(|s| &s.def)
    }

    fn find(&self, mut matches: impl FnMut(&Slot) -> bool) -> Option<(String, Which)> {
        self.services.iter().find_map(|(name, service)| {
            if matches(&service.main) {
                Some((name.clone(), Which::Main))
            } else if service.log.as_ref().is_some_and(&mut matches) {
                Some((name.clone(), Which::Log))
            } else {
                None
            }
        })
    }

    /// Runs `f` on one slot with its context, then handles an essential
    /// service giving up.
    fn with_slot(
        &mut self,
        now: Instant,
        name: &str,
        which: Which,
        actions: &mut Vec<Action>,
        f: impl FnOnce(&mut Slot, &mut Ctx),
    ) {
        let Some(service) = self.services.get_mut(name) else {
            return;
        };
        let label = match which {
            Which::Main => name.to_owned(),
            Which::Log => format!("{name}/log"),
        };
        let mut cx = Ctx {
            now,
            settings: self.settings,
            label,
            service: name,
            which,
            may_start: self.shutdown.is_none() && !service.removed,
            actions,
            gave_up: false,
        };
        let slot = match which {
            Which::Main => &mut service.main,
            Which::Log => match &mut service.log {
                Some(log) => log,
                None => return,
            },
        };
        f(slot, &mut cx);
        if !(cx.gave_up && service.def.essential && which == Which::Main) {
            return;
        }
        warn!("{name}: essential service gave up, stopping the container");
        slot.intent = Intent::Down;
        if let Life::Backoff { .. } = slot.life {
            slot.set_life(Life::Down, now);
        }
        self.begin_shutdown(now, ESSENTIAL_FAILED, actions);
    }

    fn scanned(
        &mut self,
        now: Instant,
        listing: Result<Listing, String>,
        actions: &mut Vec<Action>,
    ) {
        let listing = match listing {
            Ok(listing) => {
                self.dir_problem = None;
                listing
            }
            Err(problem) => {
                if self.dir_problem.as_ref() != Some(&problem) {
                    warn!("{problem}");
                    self.dir_problem = Some(problem);
                }
                Listing::default()
            }
        };
        self.note_ignored(&listing.ignored);
        for def in &listing.services {
            self.define(now, def, actions);
        }
        let gone: Vec<String> = self
            .services
            .iter()
            .filter(|(name, s)| !s.removed && !listing.services.iter().any(|d| &d.name == *name))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            info!("{name}: folder removed, stopping it");
            if let Some(service) = self.services.get_mut(&name) {
                service.removed = true;
                service.main.intent = Intent::Down;
            }
            self.with_slot(now, &name, Which::Main, actions, |slot, cx| {
                slot.stop(cx, StopHow::Signal)
            });
        }
    }

    fn note_ignored(&mut self, ignored: &[Ignored]) {
        self.ignored
            .retain(|name, _| ignored.iter().any(|i| &i.name == name));
        for entry in ignored {
            if self.ignored.get(&entry.name) != Some(&entry.reason) {
                warn!("{}: not a service: {}", entry.name, entry.reason);
                self.ignored
                    .insert(entry.name.clone(), entry.reason.clone());
            }
        }
    }

    /// Adds a new service or updates a known one from its folder.
    fn define(&mut self, now: Instant, def: &Definition, actions: &mut Vec<Action>) {
        let problems = |part: &Option<Part>, label: &str, old: Option<&Part>| {
            if let Some(problem) = part.as_ref().and_then(|p| p.down_signal_problem.as_ref()) {
                if old.and_then(|o| o.down_signal_problem.as_ref()) != Some(problem) {
                    warn!("{label}: {problem}");
                }
            }
        };
        if let Some(problem) = &def.forward_signals_problem {
            let old = self.services.get(&def.name);
            if old.and_then(|s| s.def.forward_signals_problem.as_ref()) != Some(problem) {
                warn!("{}: {problem}", def.name);
            }
        }
        match self.services.get_mut(&def.name) {
            // A folder that came back while its old self is still stopping
            // is picked up by the scan that follows the forgetting.
            Some(service) if service.removed => {}
            Some(service) => {
                problems(&Some(def.main.clone()), &def.name, Some(&service.main.part));
                service.main.part = def.main.clone();
                let label = format!("{}/log", def.name);
                let mut log_appeared = false;
                match (&mut service.log, &def.log) {
                    (Some(slot), Some(part)) => {
                        problems(&def.log, &label, Some(&slot.part));
                        slot.part = part.clone();
                    }
                    // Started now; `run` keeps the output it has and writes
                    // into the log from its next start, rather than being
                    // restarted unasked.
                    (None, Some(part)) => {
                        problems(&def.log, &label, None);
                        info!(
                            "{label}: new log service; {} writes to it from its next start",
                            def.name
                        );
                        service.log = Some(Slot::new(part.clone(), now));
                        log_appeared = true;
                    }
                    // `run` writes into the log pipe: it stays until the
                    // folder is re-created.
                    (Some(_), None) => debug!(
                        "{}: log/ vanished; applies once the folder is re-created",
                        def.name
                    ),
                    (None, None) => {}
                }
                let log = service.def.log.clone().or(def.log.clone());
                service.def = Definition { log, ..def.clone() };
                if log_appeared {
                    self.start_if_wanted(now, &def.name, Which::Log, actions);
                }
            }
            None => {
                problems(&Some(def.main.clone()), &def.name, None);
                problems(&def.log, &format!("{}/log", def.name), None);
                info!("{}: new service", def.name);
                self.services.insert(
                    def.name.clone(),
                    Service {
                        def: def.clone(),
                        main: Slot::new(def.main.clone(), now),
                        log: def.log.clone().map(|part| Slot::new(part, now)),
                        removed: false,
                        log_input_closed: false,
                    },
                );
                for which in [Which::Log, Which::Main] {
                    self.start_if_wanted(now, &def.name, which, actions);
                }
            }
        }
    }

    /// The first start of a program just defined, unless it has a `down` file.
    fn start_if_wanted(
        &mut self,
        now: Instant,
        name: &str,
        which: Which,
        actions: &mut Vec<Action>,
    ) {
        self.with_slot(now, name, which, actions, |slot, cx| {
            if slot.intent == Intent::Up {
                slot.start(cx);
            }
        });
    }

    fn exited(
        &mut self,
        now: Instant,
        pid: i32,
        status: ExitStatus,
        alive: bool,
        actions: &mut Vec<Action>,
    ) {
        let main = self.main.as_mut().filter(|m| m.code.is_none());
        if let Some(main) = main {
            if let Some(code) = main.forwarder.on_exit(pid, status) {
                main.code = Some(code);
                main.last_exit = Some(status);
                main.since = now;
                if main.held {
                    return main_exited_held(
                        main,
                        now,
                        self.settings.svwait,
                        status,
                        alive,
                        actions,
                    );
                }
                info!("main command {}, stopping services", describe(status));
                main.deadline = None;
                let follow_up = main.forwarder.on_child_gone();
                push_forwarded(actions, follow_up);
                return self.begin_shutdown(now, code, actions);
            }
        }
        if let Some((name, which)) = self.find(|slot| slot.run_pid() == Some(pid)) {
            return self.with_slot(now, &name, which, actions, |slot, cx| {
                slot.run_exited(cx, status, alive)
            });
        }
        let finishing =
            |slot: &Slot| matches!(slot.life, Life::Finishing { pid: Some(p), .. } if p == pid);
        if let Some((name, which)) = self.find(finishing) {
            return self.with_slot(now, &name, which, actions, |slot, cx| {
                slot.finish_exited(cx, status)
            });
        }
        trace!("reaped orphan {pid} ({})", describe(status));
    }

    fn signal(&mut self, now: Instant, signal: i32, actions: &mut Vec<Action>) {
        if let Some(main) = self.main.as_mut().filter(|m| m.code.is_none()) {
            if shutdown_code(signal).is_some() {
                // Stopping the container wins over an update: its exit ends
                // moltd again.
                main.held = false;
            }
            let forwarded = main.forwarder.on_signal(signal);
            push_forwarded(actions, forwarded);
        } else {
            match shutdown_code(signal) {
                Some(code) if self.shutdown.is_none() => {
                    info!("received {}, stopping all services", signals::name(signal));
                    // A main command stopped for an update leaves with the
                    // status it stopped with.
                    let code = self.main.as_ref().and_then(|m| m.code).unwrap_or(code);
                    self.begin_shutdown(now, code, actions);
                }
                Some(_) => debug!("received {} again, already stopping", signals::name(signal)),
                None => {}
            }
        }
        self.forward_to_services(signal, actions);
    }

    /// Passes `signal` on to the group of every running `run` whose
    /// `forward-signals` allows it. Log services never get one: they stop
    /// at end of input, after the service they log for.
    fn forward_to_services(&self, signal: i32, actions: &mut Vec<Action>) {
        if not_forwarded_because(signal).is_some() {
            return;
        }
        let mut to = Vec::new();
        for (name, service) in &self.services {
            if let Life::Running {
                pid,
                exec_failed: false,
            } = service.main.life
            {
                if service.def.forward_signals.contains(signal) {
                    actions.push(Action::Signal {
                        target: -pid,
                        signal,
                    });
                    to.push(name.as_str());
                }
            }
        }
        if to.is_empty() {
            debug!("{}: no service takes it", signals::name(signal));
        } else {
            debug!("forwarding {} to {}", signals::name(signal), to.join(", "));
        }
    }

    fn begin_shutdown(&mut self, now: Instant, code: i32, actions: &mut Vec<Action>) {
        if self.shutdown.is_some() {
            return;
        }
        self.shutdown = Some(code);
        if let Some(main) = self.main.as_mut().filter(|m| m.code.is_none()) {
            // Only an essential service's failure gets here with the main
            // command alive: it is stopped like a service.
            main.held = false;
            main.stop(now, self.settings.svwait, actions);
        }
        let names: Vec<String> = self.services.keys().cloned().collect();
        for name in names {
            self.with_slot(now, &name, Which::Main, actions, |slot, cx| {
                slot.intent = Intent::Down;
                slot.stop(cx, StopHow::Signal);
            });
        }
    }

    fn tick(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if self.scan_at.is_some_and(|at| at <= now) {
            self.scan_at = None;
            actions.push(Action::Scan);
        }
        if let Some(main) = &mut self.main {
            if main.deadline.is_some_and(|d| d <= now) {
                warn!(
                    "main command still running after {}s, killing it",
                    self.settings.svwait.as_secs()
                );
                main.deadline = None;
                actions.push(Action::Signal {
                    target: -main.forwarder.child(),
                    signal: libc::SIGKILL,
                });
            }
        }
        let names: Vec<String> = self.services.keys().cloned().collect();
        for name in names {
            for which in [Which::Main, Which::Log] {
                self.with_slot(now, &name, which, actions, Slot::tick);
            }
        }
    }

    /// Follow-ups that depend on the state as a whole, after every event.
    fn progress(&mut self, now: Instant, actions: &mut Vec<Action>) {
        // Let go while down (its start failed, or it was still stopping).
        let gone = self.main.as_ref().filter(|m| !m.held && m.is_down());
        if let Some(code) = gone.and_then(|m| m.code) {
            self.begin_shutdown(now, code, actions);
        }
        let stopping_all = self.shutdown.is_some();
        let names: Vec<String> = self.services.keys().cloned().collect();
        for name in names {
            let Some(service) = self.services.get_mut(&name) else {
                continue;
            };
            let leaving = stopping_all || service.removed;
            if leaving
                && service.main.is_down()
                && !service.log_input_closed
                && service.log.is_some()
            {
                service.log_input_closed = true;
                self.with_slot(now, &name, Which::Log, actions, |slot, cx| {
                    slot.intent = Intent::Down;
                    match slot.life {
                        Life::Running { .. } => slot.stop(cx, StopHow::CloseInput),
                        _ => {
                            cx.actions.push(Action::CloseLogInput {
                                service: cx.service.to_owned(),
                            });
                            slot.stop(cx, StopHow::Signal);
                        }
                    }
                });
            }
            let service = &self.services[&name];
            let all_down = service.main.is_down() && service.log.as_ref().is_none_or(Slot::is_down);
            if service.removed && all_down {
                info!("{name}: removed");
                self.services.remove(&name);
                actions.push(Action::Forget { service: name });
                // The folder may have come back meanwhile.
                self.scan_at.get_or_insert(now);
            }
        }
        self.answer_waiters(now, actions);
        let main_done = self.main.as_ref().is_none_or(|m| m.code.is_some());
        let services_down = self
            .services
            .values()
            .all(|s| s.main.is_down() && s.log.as_ref().is_none_or(Slot::is_down));
        if let (Some(code), false, true, true) =
            (self.shutdown, self.exited, main_done, services_down)
        {
            self.exited = true;
            actions.push(Action::Exit(code));
        }
    }

    fn slot(&self, name: &str) -> Option<&Slot> {
        match name.strip_suffix("/log") {
            Some(service) => self.services.get(service)?.log.as_ref(),
            None => Some(&self.services.get(name)?.main),
        }
    }

    fn status_of(&self, name: &str, now: Instant) -> Option<Status> {
        if let Some(main) = self.main.as_ref().filter(|_| name == MAIN_NAME) {
            return Some(main.status(now));
        }
        match name.strip_suffix("/log") {
            Some(service) => Some(Status {
                name: name.to_owned(),
                main: self.slot(name)?.status(now),
                log: None,
                dir: Some(self.services.get(service)?.def.dir.join("log")),
            }),
            None => {
                let service = self.services.get(name)?;
                Some(Status {
                    name: name.to_owned(),
                    main: service.main.status(now),
                    log: service.log.as_ref().map(|log| log.status(now)),
                    dir: Some(service.def.dir.clone()),
                })
            }
        }
    }

    fn command(
        &mut self,
        now: Instant,
        client: ClientId,
        request: Request,
        actions: &mut Vec<Action>,
    ) {
        let names = if request.names.is_empty() && request.op == Op::Status {
            let main = self.main.as_ref().map(|_| MAIN_NAME.to_owned());
            main.into_iter()
                .chain(self.services.keys().cloned())
                .collect()
        } else {
            request.names.clone()
        };
        let mut targets = Vec::new();
        for name in names {
            let goal = self.apply(now, &name, request.op, actions);
            targets.push((name, goal.unwrap_or(Goal::Any)));
        }
        let waiter = Waiter {
            client,
            targets,
            deadline: now + request.wait.unwrap_or_default(),
            kill_on_timeout: request.kill_on_timeout,
        };
        if request.wait.is_none() {
            let answers = waiter
                .targets
                .iter()
                .map(|(name, _)| match self.status_of(name, now) {
                    Some(status) => Answer::Done(status),
                    None => Answer::Unknown(name.clone()),
                })
                .collect();
            actions.push(Action::Reply { client, answers });
        } else {
            self.waiters.push(waiter);
        }
    }

    /// Carries out `op` on one program; returns what a waiting client waits
    /// for, or `None` if there is no such service.
    fn apply(
        &mut self,
        now: Instant,
        name: &str,
        op: Op,
        actions: &mut Vec<Action>,
    ) -> Option<Goal> {
        if name == MAIN_NAME && self.main.is_some() {
            return Some(self.apply_main(now, op, actions));
        }
        let (service, which) = match name.strip_suffix("/log") {
            Some(service) => (service, Which::Log),
            None => (name, Which::Main),
        };
        let slot = self.slot(name)?;
        let starts = slot.starts;
        let goal = match op {
            Op::Status => Goal::Any,
            Op::Up | Op::Once => Goal::Up,
            Op::Down => Goal::Down,
            // try-restart leaves a program that is not running alone.
            Op::Restart {
                only_if_running: true,
            } if !matches!(slot.life, Life::Running { .. }) => Goal::Any,
            // runit's sv: after term or kill, up again, unless it is meant
            // to stay down.
            Op::Signal(libc::SIGTERM | libc::SIGKILL) if slot.intent != Intent::Up => Goal::Down,
            Op::Signal(libc::SIGTERM | libc::SIGKILL) | Op::Restart { .. } => {
                Goal::Restarted(starts)
            }
            Op::Signal(_) => Goal::Any,
            Op::Check => match slot.intent {
                Intent::Up => Goal::Up,
                Intent::Down => Goal::Down,
                Intent::Once => Goal::Any,
            },
        };
        self.with_slot(now, service, which, actions, |slot, cx| match op {
            Op::Status | Op::Check => {}
            Op::Up | Op::Once => {
                if !cx.may_start {
                    return;
                }
                slot.intent = if op == Op::Up {
                    Intent::Up
                } else {
                    Intent::Once
                };
                slot.quick_deaths = 0;
                if matches!(slot.life, Life::Down | Life::Backoff { .. }) {
                    slot.start_soon(cx, Duration::ZERO);
                }
            }
            Op::Down => {
                slot.intent = Intent::Down;
                slot.stop(cx, StopHow::Signal);
            }
            Op::Signal(signal) => {
                if let Some(pid) = slot.run_pid() {
                    match signal {
                        libc::SIGSTOP => slot.paused = true,
                        libc::SIGCONT => slot.paused = false,
                        libc::SIGTERM => slot.got_term = true,
                        _ => {}
                    }
                    cx.actions.push(Action::Signal {
                        target: pid,
                        signal,
                    });
                }
            }
            Op::Restart { only_if_running } => {
                let running = matches!(slot.life, Life::Running { .. });
                if (only_if_running && !running) || !cx.may_start {
                    return;
                }
                slot.intent = Intent::Up;
                slot.quick_deaths = 0;
                if running {
                    slot.stop(cx, StopHow::Signal);
                } else if matches!(slot.life, Life::Down | Life::Backoff { .. }) {
                    slot.start_soon(cx, Duration::ZERO);
                }
            }
        });
        Some(goal)
    }

    /// `op` on the main command; see [`MainCommand`].
    fn apply_main(&mut self, now: Instant, op: Op, actions: &mut Vec<Action>) -> Goal {
        let may_start = self.shutdown.is_none();
        let Some(main) = &mut self.main else {
            return Goal::Any;
        };
        match op {
            Op::Up | Op::Once => {
                main.held = op == Op::Up;
                main.wanted_down = false;
                if main.is_down() && may_start {
                    info!("main command: starting");
                    main.starting = true;
                    actions.push(Action::SpawnMain);
                }
                Goal::Up
            }
            Op::Down => {
                main.held = true;
                main.wanted_down = true;
                if main.running() && main.deadline.is_none() {
                    info!("main command: stopping");
                    main.stop(now, self.settings.svwait, actions);
                }
                Goal::Down
            }
            Op::Signal(signal) => {
                if main.running() {
                    actions.push(Action::Signal {
                        target: main.forwarder.child(),
                        signal,
                    });
                }
                Goal::Any
            }
            Op::Status | Op::Check | Op::Restart { .. } => Goal::Any,
        }
    }

    fn main_spawned(&mut self, now: Instant, result: Result<Forwarder, i32>) {
        let Some(main) = &mut self.main else {
            if let Ok(forwarder) = result {
                self.main = Some(MainCommand {
                    forwarder,
                    code: None,
                    last_exit: None,
                    deadline: None,
                    held: false,
                    wanted_down: false,
                    lingering: false,
                    starting: false,
                    starts: 1,
                    since: now,
                });
            }
            return;
        };
        main.starting = false;
        main.since = now;
        match result {
            Ok(forwarder) => {
                main.forwarder = forwarder;
                main.code = None;
                main.starts += 1;
            }
            Err(code) => {
                main.code = Some(code);
                main.last_exit = Some(ExitStatus::Exited(code));
            }
        }
    }

    /// Whether each target reached its goal; a name that is gone has.
    fn reached(&self, name: &str, goal: Goal) -> bool {
        match self.main.as_ref().filter(|_| name == MAIN_NAME) {
            Some(main) => main.reached(goal),
            None => self.slot(name).is_none_or(|slot| slot.reached(goal)),
        }
    }

    /// The group to KILL when a wait for `name` times out.
    fn group(&self, name: &str) -> Option<i32> {
        match self.main.as_ref().filter(|_| name == MAIN_NAME) {
            Some(main) => (main.code.is_none() || main.lingering).then(|| main.forwarder.child()),
            None => self.slot(name)?.group(),
        }
    }

    fn answer_waiters(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let mut pending = std::mem::take(&mut self.waiters);
        pending.retain(|waiter| {
            let all_reached = waiter
                .targets
                .iter()
                .all(|(name, goal)| self.reached(name, *goal));
            let timed_out = waiter.deadline <= now;
            if !all_reached && !timed_out {
                return true;
            }
            let answers = waiter
                .targets
                .iter()
                .map(|(name, goal)| {
                    let Some(status) = self.status_of(name, now) else {
                        return Answer::Unknown(name.clone());
                    };
                    let reached = self.reached(name, *goal);
                    let group = self.group(name);
                    match (reached, waiter.kill_on_timeout, group) {
                        (true, _, _) => Answer::Ok(status),
                        (false, true, Some(pgid)) => {
                            actions.push(Action::Signal {
                                target: -pgid,
                                signal: libc::SIGKILL,
                            });
                            Answer::Killed(status)
                        }
                        (false, true, None) => Answer::Killed(status),
                        (false, false, _) => Answer::Timeout(status),
                    }
                })
                .collect();
            actions.push(Action::Reply {
                client: waiter.client,
                answers,
            });
            false
        });
        self.waiters.append(&mut pending);
    }
}

/// The main command exited while an update holds it: it is down once its
/// group is gone; leftovers are stopped like a service's.
fn main_exited_held(
    main: &mut MainCommand,
    now: Instant,
    svwait: Duration,
    status: ExitStatus,
    group_alive: bool,
    actions: &mut Vec<Action>,
) {
    info!("main command {}", describe(status));
    main.lingering = group_alive;
    if !group_alive {
        main.deadline = None;
        return;
    }
    if main.deadline.is_none() && !main.wanted_down {
        for signal in [libc::SIGTERM, libc::SIGCONT] {
            actions.push(Action::Signal {
                target: -main.forwarder.child(),
                signal,
            });
        }
        main.deadline = Some(now + svwait);
    }
}

/// Carries single-command mode's forwarding decisions over to this loop.
fn push_forwarded(actions: &mut Vec<Action>, forwarded: Vec<policy::Action>) {
    for action in forwarded {
        match action {
            policy::Action::Send { target, signal } => {
                actions.push(Action::Signal { target, signal })
            }
            policy::Action::StopSelf => actions.push(Action::StopSelf),
            policy::Action::Drop { signal, .. } => {
                debug!("not forwarding {}", signals::name(signal))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::scan::SignalSet;
    use std::path::PathBuf;

    const SVWAIT: Duration = Duration::from_secs(7);

    fn settings() -> Settings {
        Settings {
            svwait: SVWAIT,
            backoff_max: Duration::from_secs(4),
        }
    }

    fn part() -> Part {
        Part {
            down: false,
            finish: false,
            down_signal: libc::SIGTERM,
            down_signal_problem: None,
        }
    }

    fn def(name: &str) -> Definition {
        Definition {
            name: name.into(),
            dir: PathBuf::from("/svc").join(name),
            main: part(),
            log: None,
            essential: false,
            forward_signals: SignalSet::forwardable(),
            forward_signals_problem: None,
        }
    }

    fn listing(defs: &[Definition]) -> Event {
        Event::Scanned(Ok(Listing {
            services: defs.to_vec(),
            ..Listing::default()
        }))
    }

    fn spawn(name: &str, which: Which, program: Program) -> Action {
        Action::Spawn {
            service: name.into(),
            which,
            program,
        }
    }

    fn spawned(name: &str, which: Which, program: Program, pid: i32) -> Event {
        Event::Spawned {
            service: name.into(),
            which,
            program,
            result: Ok(pid),
        }
    }

    fn exited(pid: i32, status: ExitStatus, group_alive: bool) -> Event {
        Event::Exited {
            pid,
            status,
            group_alive,
        }
    }

    fn signal(target: i32, signal: i32) -> Action {
        Action::Signal { target, signal }
    }

    fn request(op: Op, name: &str, wait: Option<u64>) -> Event {
        Event::Command {
            client: ClientId::Socket(9),
            request: Request {
                op,
                names: vec![name.into()],
                wait: wait.map(Duration::from_secs),
                kill_on_timeout: false,
            },
        }
    }

    /// A supervisor running `defs`, each main `run` started with pids 100,
    /// 101, ... in name order.
    fn running(t0: Instant, defs: &[Definition]) -> Supervisor {
        let mut sup = Supervisor::new(settings());
        sup.step(t0, listing(defs));
        for (i, d) in defs.iter().enumerate() {
            sup.step(
                t0,
                spawned(&d.name, Which::Main, Program::Run, 100 + i as i32),
            );
        }
        sup
    }

    fn answers(actions: &[Action]) -> Vec<Answer> {
        actions
            .iter()
            .find_map(|a| match a {
                Action::Reply { answers, .. } => Some(answers.clone()),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// A main command with pid `pid`, forwarding to its group.
    fn main_command(pid: i32) -> Forwarder {
        let rules = policy::Rules {
            delivery: policy::Delivery::Group,
            job_control: policy::JobControl::ForwardThenStop,
            rewrites: Vec::new(),
            success_codes: Vec::new(),
            term_group_on_exit: true,
            forward_faults: false,
        };
        Forwarder::new(rules, pid)
    }

    /// A supervisor with only a main command, pid 50.
    fn with_main(t0: Instant) -> Supervisor {
        let mut sup = Supervisor::new(settings());
        sup.step(t0, Event::MainSpawned(Ok(main_command(50))));
        sup.step(t0, listing(&[]));
        sup
    }

    fn main_phase(sup: &Supervisor, now: Instant) -> (Phase, Option<i32>) {
        let status = sup.status_of(MAIN_NAME, now).unwrap().main;
        (status.phase, status.pid)
    }

    /// Restarts the held main command as pid `pid`.
    fn restart_main(sup: &mut Supervisor, now: Instant, pid: i32) -> Vec<Action> {
        let actions = sup.step(now, request(Op::Up, MAIN_NAME, Some(10)));
        assert_eq!(actions, vec![Action::SpawnMain]);
        sup.step(now, Event::MainSpawned(Ok(main_command(pid))))
    }

    #[test]
    fn main_command_stops_and_starts_for_an_update_without_exiting() {
        let t0 = Instant::now();
        let mut sup = with_main(t0);
        assert_eq!(main_phase(&sup, t0), (Phase::Running, Some(50)));
        // Down: TERM to its group (the forwarder's delivery), then CONT.
        assert_eq!(
            sup.step(t0, request(Op::Down, MAIN_NAME, Some(10))),
            vec![signal(-50, libc::SIGTERM), signal(-50, libc::SIGCONT)]
        );
        assert_eq!(main_phase(&sup, t0), (Phase::Stopping, Some(50)));
        // It exits, its group lingers: not down yet, and moltd stays.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            sup.step(t1, exited(50, ExitStatus::Signaled(libc::SIGTERM), true)),
            vec![]
        );
        assert_eq!(sup.lingering_groups(), vec![50]);
        assert_eq!(main_phase(&sup, t1), (Phase::Stopping, Some(50)));
        // Its group is gone: down, and the waiting client hears so.
        let actions = sup.step(t1, Event::GroupGone { pgid: 50 });
        assert!(
            matches!(answers(&actions)[..], [Answer::Ok(_)]),
            "{actions:?}"
        );
        assert_eq!(main_phase(&sup, t1), (Phase::Down, None));
        assert_eq!(sup.next_deadline(), None, "idle means no timer");
        // Up starts it again, in the same handler call as its pid arrives.
        let actions = restart_main(&mut sup, t1, 60);
        assert!(
            matches!(answers(&actions)[..], [Answer::Ok(_)]),
            "{actions:?}"
        );
        assert_eq!(main_phase(&sup, t1), (Phase::Running, Some(60)));
        // Once lets go: its exit ends moltd with its status again.
        sup.step(t1, request(Op::Once, MAIN_NAME, None));
        assert_eq!(
            sup.step(t1, exited(60, ExitStatus::Exited(3), false)),
            vec![signal(-60, libc::SIGTERM), Action::Exit(3)]
        );
    }

    #[test]
    fn held_main_command_that_exits_is_down_and_released_it_ends_moltd() {
        let t0 = Instant::now();
        let mut sup = with_main(t0);
        sup.step(t0, request(Op::Down, MAIN_NAME, Some(10)));
        sup.step(t0, exited(50, ExitStatus::Signaled(libc::SIGTERM), false));
        restart_main(&mut sup, t0, 60);
        // The new release dies at once: down, not the end of moltd.
        assert_eq!(
            sup.step(t0, exited(60, ExitStatus::Exited(1), false)),
            vec![]
        );
        assert_eq!(main_phase(&sup, t0), (Phase::Down, None));
        // Rolled back: started again and healthy, then released.
        restart_main(&mut sup, t0, 70);
        assert_eq!(sup.step(t0, request(Op::Once, MAIN_NAME, None)).len(), 1);
        // TERM while it runs is forwarded; its status is moltd's.
        assert_eq!(
            sup.step(t0, Event::Signal(libc::SIGTERM)),
            vec![signal(-70, libc::SIGTERM)]
        );
        let actions = sup.step(t0, exited(70, ExitStatus::Signaled(libc::SIGTERM), false));
        assert_eq!(actions.last(), Some(&Action::Exit(143)));
    }

    #[test]
    fn main_command_ignoring_its_stop_signal_is_killed_after_svwait() {
        let t0 = Instant::now();
        let mut sup = with_main(t0);
        sup.step(t0, request(Op::Down, MAIN_NAME, Some(20)));
        assert_eq!(sup.next_deadline(), Some(t0 + SVWAIT));
        assert_eq!(
            sup.step(t0 + SVWAIT, Event::Tick),
            vec![signal(-50, libc::SIGKILL)]
        );
        sup.step(t0 + SVWAIT, exited(50, ExitStatus::Signaled(9), false));
        assert_eq!(main_phase(&sup, t0 + SVWAIT), (Phase::Down, None));
        // TERM while it is down for an update: leave with the status it
        // stopped with.
        assert_eq!(
            sup.step(t0 + SVWAIT, Event::Signal(libc::SIGTERM)),
            vec![Action::Exit(137)]
        );
    }

    #[test]
    fn main_command_is_listed_first_and_a_failed_restart_when_released_ends_moltd() {
        let t0 = Instant::now();
        let mut sup = with_main(t0);
        let all = Event::Command {
            client: ClientId::Socket(9),
            request: Request {
                op: Op::Status,
                names: Vec::new(),
                wait: None,
                kill_on_timeout: false,
            },
        };
        match &answers(&sup.step(t0, all))[..] {
            [Answer::Done(status)] => assert_eq!(status.name, MAIN_NAME),
            other => panic!("{other:?}"),
        }
        sup.step(t0, request(Op::Down, MAIN_NAME, Some(10)));
        sup.step(t0, exited(50, ExitStatus::Exited(0), false));
        sup.step(t0, request(Op::Up, MAIN_NAME, Some(10)));
        assert_eq!(sup.step(t0, Event::MainSpawned(Err(1))), vec![]);
        assert_eq!(main_phase(&sup, t0), (Phase::Down, None));
        let actions = sup.step(t0, request(Op::Once, MAIN_NAME, None));
        assert_eq!(actions.first(), Some(&Action::SpawnMain));
        let actions = sup.step(t0, Event::MainSpawned(Err(2)));
        assert_eq!(actions, vec![Action::Exit(2)]);
    }

    #[test]
    fn new_services_start_unless_down() {
        let t0 = Instant::now();
        let mut lazy = def("lazy");
        lazy.main.down = true;
        let mut sup = Supervisor::new(settings());
        assert_eq!(
            sup.step(t0, listing(&[def("web"), lazy])),
            vec![spawn("web", Which::Main, Program::Run)]
        );
        assert_eq!(sup.next_deadline(), None, "idle means no timer");
    }

    #[test]
    fn quick_deaths_back_off_exponentially_up_to_the_cap() {
        let t0 = Instant::now();
        let mut sup = running(t0, &[def("a")]);
        let mut now = t0;
        let mut pid = 100;
        // Delays after each quick death: 1 s (runit's minimum), then
        // doubling up to the 4 s cap.
        for (n, delay) in [1u64, 2, 4, 4].into_iter().enumerate() {
            now += Duration::from_millis(100);
            let actions = sup.step(now, exited(pid, ExitStatus::Exited(1), false));
            assert_eq!(actions, vec![], "death {n}");
            let phase = sup.status_of("a", now).unwrap().main.phase;
            let expected = if n == 0 {
                Phase::Backoff
            } else {
                Phase::CrashLoop
            };
            assert_eq!(phase, expected, "death {n}");
            let due = sup.next_deadline().unwrap();
            let wanted = now + Duration::from_secs(delay);
            assert_eq!(due, wanted, "death {n}");
            assert_eq!(
                sup.step(due - Duration::from_millis(1), Event::Tick),
                vec![]
            );
            assert_eq!(
                sup.step(due, Event::Tick),
                vec![spawn("a", Which::Main, Program::Run)]
            );
            now = due;
            pid += 1;
            sup.step(now, spawned("a", Which::Main, Program::Run, pid));
        }
        // A run that stayed up resets the count: restart at once.
        now += STABLE;
        assert_eq!(
            sup.step(now, exited(pid, ExitStatus::Exited(1), false)),
            vec![spawn("a", Which::Main, Program::Run)]
        );
    }

    #[test]
    fn leftovers_are_stopped_before_finish_runs_with_runits_arguments() {
        let t0 = Instant::now();
        let mut d = def("a");
        d.main.finish = true;
        d.main.down_signal = libc::SIGQUIT;
        let mut sup = running(t0, &[d]);
        let t1 = t0 + STABLE;
        assert_eq!(
            sup.step(t1, exited(100, ExitStatus::Signaled(libc::SIGSEGV), true)),
            vec![signal(-100, libc::SIGQUIT), signal(-100, libc::SIGCONT)]
        );
        assert_eq!(sup.lingering_groups(), vec![100]);
        assert_eq!(sup.status_of("a", t1).unwrap().main.phase, Phase::Stopping);
        assert_eq!(
            sup.step(t1, Event::GroupGone { pgid: 100 }),
            vec![spawn(
                "a",
                Which::Main,
                Program::Finish {
                    code: -1,
                    signal: libc::SIGSEGV
                }
            )]
        );
        sup.step(
            t1,
            spawned(
                "a",
                Which::Main,
                Program::Finish {
                    code: -1,
                    signal: 11,
                },
                200,
            ),
        );
        // finish is killed if it hangs, and the service restarts after it.
        let late = t1 + SVWAIT;
        assert_eq!(
            sup.step(late, Event::Tick),
            vec![signal(-200, libc::SIGKILL)]
        );
        assert_eq!(
            sup.step(
                late,
                exited(200, ExitStatus::Signaled(libc::SIGKILL), false)
            ),
            vec![spawn("a", Which::Main, Program::Run)]
        );
    }

    #[test]
    fn sv_down_waits_for_the_group_and_kills_it_after_svwait() {
        let t0 = Instant::now();
        let mut sup = running(t0, &[def("a")]);
        let actions = sup.step(t0, request(Op::Down, "a", Some(30)));
        assert_eq!(
            actions,
            vec![signal(-100, libc::SIGTERM), signal(-100, libc::SIGCONT)]
        );
        // run exits, but its group lives on: not down yet.
        assert_eq!(
            sup.step(t0, exited(100, ExitStatus::Signaled(libc::SIGTERM), true)),
            vec![]
        );
        assert_eq!(
            sup.step(t0 + SVWAIT, Event::Tick),
            vec![signal(-100, libc::SIGKILL)]
        );
        let done = sup.step(t0 + SVWAIT, Event::GroupGone { pgid: 100 });
        match &answers(&done)[..] {
            [Answer::Ok(status)] => assert_eq!(status.main.phase, Phase::Down),
            other => panic!("{other:?}"),
        }
        assert_eq!(sup.next_deadline(), None);
    }

    #[test]
    fn waits_time_out_and_force_kills() {
        let t0 = Instant::now();
        let mut sup = running(t0, &[def("a")]);
        let mut force = request(Op::Down, "a", Some(2));
        if let Event::Command { request, .. } = &mut force {
            request.kill_on_timeout = true;
        }
        sup.step(t0, force);
        let actions = sup.step(t0 + Duration::from_secs(2), Event::Tick);
        assert_eq!(actions[0], signal(-100, libc::SIGKILL));
        assert!(matches!(answers(&actions)[..], [Answer::Killed(_)]));
        let unknown = sup.step(t0, request(Op::Up, "nope", Some(2)));
        assert_eq!(answers(&unknown), vec![Answer::Unknown("nope".into())]);
    }

    /// runit's `sv -v term` and `sv -v kill` wait for the service to be up
    /// again, or down if it is meant to stay down.
    #[test]
    fn term_and_kill_waits_end_when_the_service_is_back_or_meant_down() {
        for sig in [libc::SIGTERM, libc::SIGKILL] {
            let t0 = Instant::now();
            let t1 = t0 + Duration::from_secs(10);
            let mut sup = running(t0, &[def("a")]);
            let actions = sup.step(t1, request(Op::Signal(sig), "a", Some(5)));
            assert_eq!(actions, vec![signal(100, sig)]);
            let actions = sup.step(t1, exited(100, ExitStatus::Signaled(sig), false));
            assert_eq!(actions, vec![spawn("a", Which::Main, Program::Run)]);
            let actions = sup.step(t1, spawned("a", Which::Main, Program::Run, 200));
            assert!(
                matches!(answers(&actions)[..], [Answer::Ok(_)]),
                "{actions:?}"
            );
            // Run once: it stays down, and that is what the wait ends on.
            sup.step(t1, request(Op::Once, "a", None));
            sup.step(t1, request(Op::Signal(sig), "a", Some(5)));
            let actions = sup.step(t1, exited(200, ExitStatus::Signaled(sig), false));
            assert!(
                matches!(answers(&actions)[..], [Answer::Ok(_)]),
                "{actions:?}"
            );
        }
    }

    #[test]
    fn shutdown_exit_codes_follow_the_signal() {
        for (sig, code) in [
            (libc::SIGTERM, 0),
            (libc::SIGINT, 130),
            (libc::SIGQUIT, 131),
        ] {
            let t0 = Instant::now();
            let mut sup = running(t0, &[def("a"), def("b")]);
            let actions = sup.step(t0, Event::Signal(sig));
            assert_eq!(actions.len(), 4, "TERM and CONT to both groups");
            assert_eq!(
                sup.step(t0, exited(100, ExitStatus::Signaled(15), false)),
                vec![]
            );
            assert_eq!(
                sup.step(t0, exited(101, ExitStatus::Signaled(15), false)),
                vec![Action::Exit(code)]
            );
        }
    }

    #[test]
    fn signals_reach_the_group_of_each_running_run_its_file_allows() {
        use libc::{
            SIGABRT, SIGALRM, SIGCHLD, SIGCONT, SIGHUP, SIGPIPE, SIGPWR, SIGRTMIN, SIGSEGV, SIGSYS,
            SIGTERM, SIGTSTP, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2, SIGWINCH,
        };
        let t0 = Instant::now();
        let mut logged = def("a");
        logged.log = Some(part());
        let mut hup_only = def("b");
        hup_only.forward_signals = [SIGHUP].into_iter().collect();
        let mut none = def("c");
        none.forward_signals = SignalSet::default();
        let mut down = def("d");
        down.main.down = true;
        let mut sup = Supervisor::new(settings());
        sup.step(t0, listing(&[logged, hup_only, none, down]));
        sup.step(t0, spawned("a", Which::Log, Program::Run, 99));
        for (pid, name) in (100..).zip(["a", "b", "c"]) {
            sup.step(t0, spawned(name, Which::Main, Program::Run, pid));
        }
        let to_a = |sig: i32| vec![signal(-100, sig)];
        let table = [
            (SIGHUP, vec![signal(-100, SIGHUP), signal(-101, SIGHUP)]),
            (SIGUSR1, to_a(SIGUSR1)),
            (SIGUSR2, to_a(SIGUSR2)),
            (SIGWINCH, to_a(SIGWINCH)),
            (SIGPIPE, to_a(SIGPIPE)),
            (SIGALRM, to_a(SIGALRM)),
            (SIGPWR, to_a(SIGPWR)),
            (SIGRTMIN() + 3, to_a(SIGRTMIN() + 3)),
            (64, to_a(64)),
            (SIGCHLD, vec![]),
            (SIGTSTP, vec![]),
            (SIGTTIN, vec![]),
            (SIGTTOU, vec![]),
            (SIGCONT, vec![]),
            (SIGSEGV, vec![]),
            (SIGABRT, vec![]),
            (SIGSYS, vec![]),
        ];
        for (sig, expected) in table {
            let actions = sup.step(t0, Event::Signal(sig));
            assert_eq!(actions, expected, "{}", signals::name(sig));
        }
        // Once shutdown has begun, stopping services get nothing more.
        assert_eq!(sup.step(t0, Event::Signal(SIGTERM)).len(), 6);
        assert_eq!(sup.step(t0, Event::Signal(SIGHUP)), vec![]);
    }

    #[test]
    fn combined_mode_forwards_to_the_main_command_and_to_services() {
        let t0 = Instant::now();
        let mut sup = Supervisor::new(settings());
        sup.step(t0, Event::MainSpawned(Ok(main_command(50))));
        sup.step(t0, listing(&[def("a")]));
        sup.step(t0, spawned("a", Which::Main, Program::Run, 100));
        assert_eq!(
            sup.step(t0, Event::Signal(libc::SIGUSR1)),
            vec![signal(-50, libc::SIGUSR1), signal(-100, libc::SIGUSR1)]
        );
        // TERM is the main command's alone: its exit stops the services.
        assert_eq!(
            sup.step(t0, Event::Signal(libc::SIGTERM)),
            vec![signal(-50, libc::SIGTERM)]
        );
    }

    #[test]
    fn log_service_stops_after_its_service_by_closing_its_input() {
        let t0 = Instant::now();
        let mut d = def("web");
        d.log = Some(part());
        let mut sup = Supervisor::new(settings());
        assert_eq!(
            sup.step(t0, listing(&[d])),
            vec![
                spawn("web", Which::Log, Program::Run),
                spawn("web", Which::Main, Program::Run)
            ]
        );
        sup.step(t0, spawned("web", Which::Log, Program::Run, 50));
        sup.step(t0, spawned("web", Which::Main, Program::Run, 51));
        assert_eq!(sup.step(t0, Event::Signal(libc::SIGTERM)).len(), 2);
        assert_eq!(
            sup.step(t0, exited(51, ExitStatus::Signaled(15), false)),
            vec![Action::CloseLogInput {
                service: "web".into()
            }]
        );
        assert_eq!(
            sup.step(t0, exited(50, ExitStatus::Exited(0), false)),
            vec![Action::Exit(0)]
        );
    }

    #[test]
    fn log_folder_added_to_a_running_service_starts_without_restarting_it() {
        let t0 = Instant::now();
        let mut sup = running(t0, &[def("web")]);
        let mut with_log = def("web");
        with_log.log = Some(part());
        let mut down_log = def("db");
        down_log.log = Some(Part {
            down: true,
            ..part()
        });
        // (what a scan finds, what it starts)
        let table = [
            (&with_log, vec![spawn("web", Which::Log, Program::Run)]),
            // Seen again: nothing new.
            (&with_log, vec![]),
        ];
        for (d, expected) in table {
            assert_eq!(sup.step(t0, listing(std::slice::from_ref(d))), expected);
            assert!(sup.definition("web").unwrap().log.is_some());
        }
        sup.step(t0, spawned("web", Which::Log, Program::Run, 60));
        let status = sup.status_of("web", t0).unwrap();
        assert_eq!(status.main.pid, Some(100), "run was not restarted");
        assert_eq!(status.log.unwrap().pid, Some(60));
        assert_eq!(status.dir, Some(PathBuf::from("/svc/web")));
        let log_dir = sup.status_of("web/log", t0).unwrap().dir;
        assert_eq!(log_dir, Some(PathBuf::from("/svc/web/log")));
        // A log/ with a down file is defined, not started.
        let mut sup = running(t0, &[def("db")]);
        assert_eq!(sup.step(t0, listing(&[down_log])), vec![]);
        let status = sup.status_of("db", t0).unwrap();
        assert_eq!(status.log.map(|l| l.phase), Some(Phase::Down));
        // Shutting down: not started.
        let mut sup = running(t0, &[def("web")]);
        sup.step(t0, Event::Signal(libc::SIGTERM));
        assert_eq!(sup.step(t0, listing(&[with_log])), vec![]);
    }

    #[test]
    fn essential_service_whose_finish_says_125_stops_the_container() {
        let t0 = Instant::now();
        let mut d = def("db");
        d.essential = true;
        d.main.finish = true;
        let mut sup = running(t0, &[d, def("other")]);
        sup.step(t0, exited(100, ExitStatus::Exited(1), false));
        sup.step(
            t0,
            spawned(
                "db",
                Which::Main,
                Program::Finish { code: 1, signal: 0 },
                300,
            ),
        );
        let actions = sup.step(
            t0,
            exited(300, ExitStatus::Exited(FINISH_NO_RESTART), false),
        );
        assert_eq!(
            actions,
            vec![signal(-101, libc::SIGTERM), signal(-101, libc::SIGCONT)]
        );
        assert_eq!(
            sup.step(t0, exited(101, ExitStatus::Signaled(15), false)),
            vec![Action::Exit(ESSENTIAL_FAILED)]
        );
    }

    #[test]
    fn removed_folder_is_stopped_then_forgotten() {
        let t0 = Instant::now();
        let mut sup = running(t0, &[def("a"), def("b")]);
        assert_eq!(
            sup.step(t0, listing(&[def("b")])),
            vec![signal(-100, libc::SIGTERM), signal(-100, libc::SIGCONT)]
        );
        assert_eq!(
            sup.step(t0, exited(100, ExitStatus::Signaled(15), false)),
            vec![Action::Forget {
                service: "a".into()
            }]
        );
        // The scan that follows picks the folder up again if it came back.
        assert_eq!(sup.step(t0, Event::Tick), vec![Action::Scan]);
        assert_eq!(sup.step(t0, listing(&[def("b")])), vec![]);
    }

    #[test]
    fn exec_failure_counts_as_exit_111() {
        let t0 = Instant::now();
        let mut d = def("a");
        d.main.finish = true;
        let mut sup = Supervisor::new(settings());
        sup.step(t0, listing(&[d]));
        sup.step(
            t0,
            Event::Spawned {
                service: "a".into(),
                which: Which::Main,
                program: Program::Run,
                result: Err(SpawnFailure {
                    pid: Some(70),
                    reason: "Permission denied".into(),
                }),
            },
        );
        assert_eq!(
            sup.step(t0, exited(70, ExitStatus::Exited(127), false)),
            vec![spawn(
                "a",
                Which::Main,
                Program::Finish {
                    code: COULD_NOT_START,
                    signal: 0
                }
            )]
        );
    }
}
