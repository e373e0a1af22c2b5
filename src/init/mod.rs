//! Single-command mode: run one command as moltd's child, forward signals to
//! it, reap every zombie, and exit with the child's status.
//!
//! This file is the event loop; the decisions are made by the pure
//! [`policy::Forwarder`], and the syscalls live in [`crate::sys`].

pub mod messages;
pub mod policy;

use crate::personality::Personality;
use crate::sys::signals::{Inherited, SignalSource, take_hand_off_signals};
use crate::sys::{process, reap, spawn};
use messages::Messages;
use nix::libc;
use policy::{Action, Dropped, Forwarder, Rules};
use std::ffi::OsString;

pub use spawn::Isolation;

/// How orphans get reaped when moltd is not PID 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reaping {
    /// Register as child subreaper (PR_SET_CHILD_SUBREAPER).
    Subreaper,
    /// Do nothing, but warn that zombies will pile up unless the subreaper
    /// bit is already set (tini without `-s`).
    WarnIfNotPid1,
    /// Do nothing and say nothing (dumb-init).
    Silent,
}

/// Everything single-command mode needs, whichever personality parsed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitConfig {
    pub personality: Personality,
    pub command: Vec<OsString>,
    pub isolation: Isolation,
    pub rules: Rules,
    pub reaping: Reaping,
    pub parent_death_signal: Option<i32>,
    pub warn_on_reap: bool,
}

/// Runs the command and returns the code moltd should exit with.
pub fn run(config: InitConfig, inherited: Inherited) -> i32 {
    let say = Messages(config.personality);
    let started = prepare(
        config.personality,
        config.reaping,
        config.parent_death_signal,
        inherited,
    )
    .and_then(|signals| {
        let forwarder = start(&config, &signals)?;
        Ok((signals, forwarder))
    });
    let (mut signals, forwarder) = match started {
        Ok(started) => started,
        Err(code) => return code,
    };
    // dumb-init's rule: PID 1 must not pin the mount it was started in.
    if config.personality == Personality::DumbInit {
        if let Err(err) = process::leave_working_directory() {
            say.chdir_failed(err);
        }
    }
    loop {
        let signal = match signals.wait() {
            Ok(signal) => signal,
            Err(err) => return say.fatal_setup("read signals", err),
        };
        if signal == libc::SIGCHLD {
            say.received_sigchld();
        } else {
            say.received(signal);
            let actions = forwarder.on_signal(signal);
            perform_all(&say, &forwarder, signal, actions);
        }
        // Reap after every signal, not only SIGCHLD: the signalfd hands out
        // lower-numbered signals first, so a flood of them must not starve
        // reaping.
        let mut child_code = None;
        // The SIGCHLD of these exits is still pending; dumb-init's log says
        // it came first, whatever signal woke moltd.
        let mut announced = signal == libc::SIGCHLD;
        let reaped = reap::reap_terminated(|pid, status| {
            if !announced {
                say.sigchld_pending();
                announced = true;
            }
            match forwarder.on_exit(pid, status) {
                Some(code) => {
                    say.child_exited(pid, status, code);
                    child_code = Some(code);
                }
                None => say.reaped(pid, status, config.warn_on_reap),
            }
        });
        match reaped {
            Ok(children_left) => say.reaping_done(children_left),
            Err(err) => return say.fatal_setup("wait for children", err),
        }
        if let Some(code) = child_code {
            perform_all(&say, &forwarder, libc::SIGTERM, forwarder.on_child_gone());
            say.leaving(code);
            return code;
        }
    }
}

/// Sets moltd up as PID 1 before anything is started: blocks signals, makes
/// sure orphans come to it, and asks for the parent-death signal. Returns
/// the exit code to leave with on failure.
pub fn prepare(
    personality: Personality,
    reaping: Reaping,
    parent_death_signal: Option<i32>,
    inherited: Inherited,
) -> Result<SignalSource, i32> {
    let say = Messages(personality);
    let mut signals =
        SignalSource::install(inherited).map_err(|err| say.fatal_setup("read signals", err))?;
    if !process::is_pid1() {
        match reaping {
            Reaping::Subreaper => {
                if let Err(err) = process::become_subreaper() {
                    say.subreaper_failed(err);
                }
            }
            // tini asks the kernel rather than trusting its own flags: a
            // wrapper may have made it a subreaper before exec. An unreadable
            // bit counts as unset, as in tini.
            Reaping::WarnIfNotPid1 => {
                if !process::is_subreaper().unwrap_or(false) {
                    say.not_reaping();
                }
            }
            Reaping::Silent => {}
        }
    }
    if personality == Personality::Tini {
        signals
            .unblock_faults()
            .map_err(|err| say.fatal_setup("unblock fault signals", err))?;
    }
    if let Some(signal) = parent_death_signal {
        process::set_parent_death_signal(signal)
            .map_err(|err| say.fatal_setup("set the parent-death signal", err))?;
    }
    Ok(signals)
}

/// Starts the command and returns what forwards signals to it, or the exit
/// code to leave with. A child that failed to exec is not reaped here: moltd
/// is leaving, and reaping outside the event loop could take the exit of a
/// process someone else owns; whoever adopts the zombie collects it.
pub fn start(config: &InitConfig, signals: &SignalSource) -> Result<Forwarder, i32> {
    spawn_command(config, signals)
        .map_err(|err| Messages(config.personality).spawn_failed(&config.command[0], err))
}

/// Spawns the command and returns what forwards signals to it. Reaps
/// nothing: a child that failed to exec is left for the caller (its pid is
/// in the error).
pub fn spawn_command(
    config: &InitConfig,
    signals: &SignalSource,
) -> Result<Forwarder, spawn::SpawnError> {
    let say = Messages(config.personality);
    let new_session = config.isolation == Isolation::NewSession;
    if new_session {
        let released = process::release_controlling_tty();
        say.terminal_released(released);
        if released == Ok(true) {
            for signal in take_hand_off_signals() {
                say.received(signal);
                say.dropped(signal, Dropped::HandOff);
            }
        }
    }
    // dumb-init gives its child a clean signal state; tini and moltd hand
    // on the one they were started with.
    let clean_slate = Inherited::clean_slate();
    let inherited = if config.personality == Personality::DumbInit {
        &clean_slate
    } else {
        signals.inherited()
    };
    let path = std::env::var_os("PATH");
    let child = spawn::Program::new(&config.command, path.as_deref()).and_then(|program| {
        spawn::spawn(&program, &spawn::Options::new(config.isolation, inherited))
    });
    let child = child?;
    say.spawned(&config.command[0], child);
    if new_session {
        say.new_session();
    }
    Ok(Forwarder::new(config.rules.clone(), child))
}

/// Carries out what the forwarder decided about `signal`, first saying how
/// it was rewritten when it was.
fn perform_all(say: &Messages, forwarder: &Forwarder, signal: i32, actions: Vec<Action>) {
    let rewritten = matches!(
        actions.first(),
        Some(
            Action::Send { .. }
                | Action::Drop {
                    why: Dropped::Rewritten | Dropped::ChildGone,
                    ..
                }
        )
    );
    if let Some(to) = forwarder.rewrite(signal).filter(|_| rewritten) {
        say.rewriting(signal, to);
    }
    for action in actions {
        perform(say, action);
    }
}

fn perform(say: &Messages, action: Action) {
    match action {
        Action::Send { target, signal } => match process::send_signal(target, signal) {
            Ok(()) => say.forwarded(signal, target),
            Err(err) => say.forward_failed(signal, target, err),
        },
        Action::StopSelf => {
            say.stopping_self();
            if let Err(err) = process::stop_self() {
                say.forward_failed(libc::SIGSTOP, 0, err);
            }
        }
        Action::Drop { signal, why } => say.dropped(signal, why),
    }
}
