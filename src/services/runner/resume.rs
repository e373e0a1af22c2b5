//! The other side of a self-update: a moltd started as `moltd --resume FD
//! ARGS...` takes over the state the previous PID 1 froze (see
//! [`crate::services::reexec`]): the same sockets, pipes and services,
//! with the same pids, nothing restarted.
//!
//! The state is read before anything else, and until the loop runs any
//! failure (an error, or a panic: the hook [`reexec::fall_back_on_panic`]
//! installs) execs the previous binary, kept open in the state, with the
//! same state. That one resumes with `--fallback WHY` and tells the
//! requester why the update did not take.

use super::{Kept, Runner, ServiceIo, set_up};
use crate::control;
use crate::services::ServicesConfig;
use crate::services::agent_link::AgentLink;
use crate::services::machine::Event;
use crate::services::output::Output;
use crate::services::reexec::{self, State};
use crate::services::scan::Listing;
use crate::sys::exec;
use crate::sys::io::Pipe;
use crate::sys::process;
use crate::sys::signals::Inherited;
use log::{error, info, warn};
use nix::fcntl::{Flock, FlockArg};
use nix::libc;
use std::fs::File;
use std::io::Write;
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

/// Resumes the state on descriptor `fd` and runs the loop; `fallback` is
/// set when this is the previous binary taking the state back, with why.
pub fn resume(config: ServicesConfig, fd: RawFd, fallback: Option<String>) -> i32 {
    let file = match exec::adopt(fd) {
        Ok(fd) => File::from(fd),
        Err(err) => {
            error!("cannot resume: no state on descriptor {fd}: {}", err.desc());
            return 1;
        }
    };
    let state = match reexec::read_state(&file) {
        Ok(state) => state,
        Err(problem) => {
            // Nothing was taken yet: the previous binary's descriptor is
            // found however much of the state reads.
            if let Some(previous) = previous_in(&file) {
                reexec::fall_back(previous, fd, &[], &problem);
            }
            error!("cannot resume: {problem}");
            return 1;
        }
    };
    if fallback.is_none() {
        reexec::fall_back_on_panic(state.previous, fd, state.fds());
    }
    let failed = |problem: String| {
        if fallback.is_none() {
            reexec::fall_back(state.previous, fd, &state.fds(), &problem);
        }
        error!("cannot resume: {problem}");
        1
    };
    reexec::crash_on_resume("resume:read", fallback.is_some());
    // Every descriptor checked before any is taken: a failure after the
    // first is taken would close it on the way out, and the previous
    // binary needs them all.
    if let Some(fd) = state.fds().into_iter().find(|&fd| !exec::is_open(fd)) {
        return failed(format!("descriptor {fd} of the state is not open"));
    }
    let Some(inherited) = Inherited::decode(&state.signals) else {
        return failed("the state's signals do not read".into());
    };
    let (mut runner, listing) = match adopt(config, inherited, &state) {
        Ok(adopted) => adopted,
        Err(problem) => return failed(problem),
    };
    reexec::crash_on_resume("resume:adopt", fallback.is_some());
    let listing = runner.watch_listing(listing);
    let base = freeze_instant(state.clock);
    let strays = match &listing {
        Ok(listing) => runner.supervisor.thaw(base, listing, state.slots.clone()),
        Err(_) => runner
            .supervisor
            .thaw(base, &Listing::default(), state.slots.clone()),
    };
    let strays = match strays {
        Ok(strays) => strays,
        Err(problem) => return failed(problem),
    };
    if let Ok(listing) = &listing {
        runner.adopt_sockets(&state, listing);
    }
    reexec::crash_on_resume("resume:agent", fallback.is_some());
    for pid in strays {
        warn!("the folder of pid {pid} is gone since the self-update began: stopping it");
        let _ = process::send_signal(-pid, libc::SIGTERM);
    }
    if let (Some(link), Some(pid)) = (&mut runner.agent, state.agent.as_ref().and_then(|a| a.pid)) {
        link.retire(pid);
    }
    reexec::crash_on_resume("resume:loop", fallback.is_some());
    reexec::hold_on_resume();
    // Children that died in the gap, and signals that came then (pending,
    // blocked), are the loop's first events; the scan starts what appeared.
    runner.reap();
    runner.handle(Event::Scanned(listing));
    reexec::resumed();
    let own = crate::version::version();
    let gap = since_freeze(state.clock);
    let reply = match &fallback {
        None => {
            info!(
                "resumed moltd {own} (from {}): {} programs kept, {:.1} ms from freeze to loop",
                state.from,
                state.slots.len(),
                gap.as_secs_f64() * 1000.0
            );
            Ok(format!(
                "moltd {own} replaced moltd {}; every service kept its process",
                state.from
            ))
        }
        Some(why) => {
            let app_dir = crate::update::config::app_dir(&|name| std::env::var_os(name));
            reexec::boot::undo(&app_dir);
            warn!("self-update undone: {why}; moltd {own} runs on with the same state");
            Err(format!(
                "self-update failed: {why}; moltd {own} runs on, every service kept"
            ))
        }
    };
    if let Some(fd) = state.requester {
        if let Ok(fd) = exec::adopt(fd) {
            let mut stream = UnixStream::from(fd);
            let _ = stream.write_all(control::encode_reply(&reply).as_bytes());
        }
    }
    runner.run()
}

/// The previous binary's descriptor in a state that does not read whole.
fn previous_in(file: &File) -> Option<RawFd> {
    let mut text = String::new();
    let _ = std::io::Read::read_to_string(&mut &*file, &mut text);
    let line = text.lines().find_map(|l| l.strip_prefix("previous\t"))?;
    line.parse().ok().filter(|&fd| fd > 2)
}

fn monotonic() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(Duration::from)
        .unwrap_or_default()
}

/// The time since the freeze, on the clock `execve` does not reset.
fn since_freeze(clock: u128) -> Duration {
    monotonic().saturating_sub(Duration::from_nanos(clock.min(u64::MAX as u128) as u64))
}

/// The moment of the freeze on this program's clock.
fn freeze_instant(clock: u128) -> Instant {
    let now = Instant::now();
    now.checked_sub(since_freeze(clock)).unwrap_or(now)
}

/// Takes every descriptor of the state back and sets the loop up around
/// them; what is wrong is the error.
fn adopt(
    config: ServicesConfig,
    inherited: Inherited,
    state: &State,
) -> Result<(Runner, Result<Listing, super::DirError>), String> {
    let take =
        |fd: RawFd| exec::adopt(fd).map_err(|err| format!("descriptor {fd}: {}", err.desc()));
    let listener = match &state.control {
        Some((fd, _)) => Some(UnixListener::from(take(*fd)?)),
        None => None,
    };
    let notify = match &state.notify {
        Some((fd, path)) => Some(super::ready::NotifySocket::adopt(take(*fd)?, path.clone())),
        None => None,
    };
    let agent = match &state.agent {
        None => None,
        Some(agent) => {
            let listen = agent.listen.map(take).transpose()?;
            let lock = match agent.lock.map(take).transpose()? {
                Some(fd) => Some(
                    Flock::lock(File::from(fd), FlockArg::LockExclusiveNonblock)
                        .map_err(|(_, errno)| format!("supervisor.lock: {}", errno.desc()))?,
                ),
                None => None,
            };
            let entry = config.updates.as_ref().and_then(|u| u.entry.clone());
            Some(AgentLink::new(listen, lock, entry.as_deref()))
        }
    };
    let mut io = std::collections::BTreeMap::new();
    for record in &state.io {
        let mut pipes = Vec::new();
        for (read, write) in &record.fds {
            pipes.push(Pipe {
                read: take(*read)?,
                write: write.map(take).transpose()?,
            });
        }
        let mut pipes = pipes.into_iter();
        let name = &record.service;
        let log_label = format!("{name}/log");
        let (Some(out), Some(err)) = (pipes.next(), pipes.next()) else {
            return Err(format!("{name}: its pipes are missing"));
        };
        let mut service = ServiceIo {
            out: Output::adopt(name.clone(), false, out),
            err: Output::adopt(name.clone(), true, err),
            log_pipe: None,
            log_out: None,
            log_err: None,
        };
        if let (Some(log), Some(out), Some(err)) = (pipes.next(), pipes.next(), pipes.next()) {
            service.log_pipe = Some(log);
            service.log_out = Some(Output::adopt(log_label.clone(), false, out));
            service.log_err = Some(Output::adopt(log_label, true, err));
        }
        io.insert(name.clone(), service);
    }
    let kept = Kept {
        listener,
        notify,
        agent,
    };
    let (mut runner, listing) = set_up(config, inherited, Some(kept))
        .map_err(|code| format!("setting up failed (exit code {code})"))?;
    runner.io = io;
    runner.reaped = state.reaped;
    Ok((runner, listing))
}

impl Runner {
    /// The held sockets of the state, matched by address to what the
    /// services' `listen` files say now; one no longer named is closed.
    fn adopt_sockets(&mut self, state: &State, listing: &Listing) {
        for socket in &state.sockets {
            let Ok(fd) = exec::adopt(socket.fd) else {
                continue;
            };
            let address = listing
                .services
                .iter()
                .filter(|def| def.name == socket.service)
                .filter_map(|def| def.listen.as_ref().ok())
                .flatten()
                .find(|listen| listen.address.to_string() == socket.address);
            match address {
                Some(listen) => self
                    .sockets
                    .adopt(&socket.service, listen.address.clone(), fd),
                None => drop::<OwnedFd>(fd),
            }
        }
    }
}
