//! Signals sent to moltd: TERM, INT and QUIT start the shutdown (every
//! service stopped, then the exit); most others are passed on to the
//! services whose `forward-signals` allows them. Apart from the routing of
//! events in the module, since it is one policy: which signal does what.

use super::main_command::MainCommand;
use super::slot::{Intent, SlotEvent, StopHow};
use super::{Action, Slot, Supervisor, Which};
use crate::signals;
use crate::sys::signals::FAULT_SIGNALS;
use log::{debug, info};
use nix::libc;
use std::time::Instant;

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
    pub(super) fn signal(&mut self, now: Instant, signal: i32, actions: &mut Vec<Action>) {
        let stops = shutdown_code(signal).is_some();
        let to_main = (self.main.as_mut()).is_some_and(|main| main.signal(signal, stops, actions));
        // A running main command takes the signal; its exit stops the services.
        if !to_main {
            match shutdown_code(signal) {
                Some(code) if self.shutdown.is_none() => {
                    info!("received {}, stopping all services", signals::name(signal));
                    // A main command stopped for an update leaves with the
                    // status it stopped with.
                    let code = self
                        .main
                        .as_ref()
                        .and_then(MainCommand::exit_code)
                        .unwrap_or(code);
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
            let runs = std::iter::once(&service.main).chain(&service.next);
            for pid in runs.filter_map(Slot::forwarded_to) {
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

    pub(super) fn begin_shutdown(&mut self, now: Instant, code: i32, actions: &mut Vec<Action>) {
        if self.shutdown.is_some() {
            return;
        }
        self.shutdown = Some(code);
        if let Some(main) = &mut self.main {
            // Only an essential service's failure gets here with the main
            // command alive: it is stopped like a service.
            main.shut_down(now, self.settings.svwait, actions);
        }
        let names: Vec<String> = self.services.keys().cloned().collect();
        for name in names {
            for which in [Which::Main, Which::Next] {
                self.with_slot(now, &name, which, actions, |slot, cx| {
                    slot.intent = Intent::Down;
                    slot.on(cx, SlotEvent::Stop(StopHow::Signal));
                });
            }
        }
    }
}
