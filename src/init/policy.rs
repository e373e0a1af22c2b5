//! What single-command mode does with each signal and each exit: a pure core
//! with no syscalls, so every rule can be checked in a table.
//!
//! The event loop in `init::run` feeds it what the kernel reports and carries
//! out the [`Action`]s it returns.

use crate::sys::reap::ExitStatus;
use crate::sys::signals::FAULT_SIGNALS;
use nix::libc;

/// Who receives forwarded signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Only the direct child.
    Child,
    /// The child's whole process group (the child leads it).
    Group,
}

/// What the job-control signals TSTP, TTIN and TTOU do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobControl {
    /// Forwarded like any signal, then moltd stops itself until CONT.
    ForwardThenStop,
    /// TSTP is forwarded; TTIN and TTOU, which only mean "a background
    /// process touched the terminal", are dropped. moltd never stops.
    ForwardTstpOnly,
}

/// The rules single-command mode forwards and exits by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    pub delivery: Delivery,
    pub job_control: JobControl,
    /// Pairs `(s, r)`: signal `s` is forwarded as `r`, or dropped when `r = 0`.
    /// When `s` appears more than once, the last pair wins.
    pub rewrites: Vec<(i32, i32)>,
    /// Exit codes of the child that moltd reports as 0.
    pub success_codes: Vec<u8>,
    /// Once the child exits, send TERM (rewritten like any signal) to what is
    /// left of its group. In child delivery nothing is left to send it to.
    pub term_group_on_exit: bool,
    /// Forward the fault signals (SEGV, ABRT, ...) that arrive by kill(2), as
    /// dumb-init does, instead of dropping them.
    pub forward_faults: bool,
}

/// Something for the event loop to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `kill(target, signal)`: a pid, or minus a process-group id.
    Send { target: i32, signal: i32 },
    /// Stop moltd itself until SIGCONT.
    StopSelf,
    /// Send nothing; `why` says which rule kept the signal back.
    Drop { signal: i32, why: Dropped },
}

/// Why a signal was not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// A rule of the personality (fault signals, tini's TTIN and TTOU).
    Rule,
    /// Rewritten to 0.
    Rewritten,
    /// A side effect of handing over the terminal (taken off the pending
    /// set before the event loop starts, see `init::spawn_command`).
    HandOff,
    /// Meant for the child alone, which has already exited and been reaped
    /// (its pid may already be someone else's).
    ChildGone,
}

/// The state of one supervised command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forwarder {
    rules: Rules,
    child: i32,
}

impl Forwarder {
    pub fn new(rules: Rules, child: i32) -> Forwarder {
        Forwarder { rules, child }
    }

    pub fn child(&self) -> i32 {
        self.child
    }

    fn target(&self) -> i32 {
        match self.rules.delivery {
            Delivery::Child => self.child,
            Delivery::Group => -self.child,
        }
    }

    /// What to do with a signal moltd received (never SIGCHLD: that one means
    /// "reap", and the event loop handles it).
    pub fn on_signal(&self, signal: i32) -> Vec<Action> {
        if !self.rules.forward_faults && FAULT_SIGNALS.iter().any(|&fault| fault as i32 == signal) {
            return vec![keep_back(signal, Dropped::Rule)];
        }
        let job_control = matches!(signal, libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU);
        if job_control
            && self.rules.job_control == JobControl::ForwardTstpOnly
            && signal != libc::SIGTSTP
        {
            return vec![keep_back(signal, Dropped::Rule)];
        }
        let forwarded = self.rewrite(signal).unwrap_or(signal);
        let mut actions = vec![if forwarded == 0 {
            keep_back(signal, Dropped::Rewritten)
        } else {
            Action::Send {
                target: self.target(),
                signal: forwarded,
            }
        }];
        if job_control && self.rules.job_control == JobControl::ForwardThenStop {
            actions.push(Action::StopSelf);
        }
        actions
    }

    /// What `signal` is rewritten to, if a rewrite names it (the last one).
    pub fn rewrite(&self, signal: i32) -> Option<i32> {
        self.rules
            .rewrites
            .iter()
            .rev()
            .find(|&&(from, _)| from == signal)
            .map(|&(_, to)| to)
    }

    /// The exit code moltd should leave with, if `pid` was the child.
    pub fn on_exit(&self, pid: i32, status: ExitStatus) -> Option<i32> {
        if pid != self.child {
            return None;
        }
        let code = status.shell_code() % 256;
        let remapped = self
            .rules
            .success_codes
            .iter()
            .any(|&c| i32::from(c) == code);
        Some(if remapped { 0 } else { code })
    }

    /// What to do once the child has exited, before moltd leaves.
    pub fn on_child_gone(&self) -> Vec<Action> {
        if !self.rules.term_group_on_exit {
            return Vec::new();
        }
        let signal = self.rewrite(libc::SIGTERM).unwrap_or(libc::SIGTERM);
        vec![match (signal, self.rules.delivery) {
            (0, _) => keep_back(libc::SIGTERM, Dropped::Rewritten),
            (_, Delivery::Group) => Action::Send {
                target: -self.child,
                signal,
            },
            (_, Delivery::Child) => keep_back(signal, Dropped::ChildGone),
        }]
    }
}

fn keep_back(signal: i32, why: Dropped) -> Action {
    Action::Drop { signal, why }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libc::*;

    const CHILD: i32 = 42;

    fn dumb_init_like() -> Rules {
        Rules {
            delivery: Delivery::Group,
            job_control: JobControl::ForwardThenStop,
            rewrites: vec![(SIGTSTP, SIGSTOP), (SIGTTIN, SIGSTOP), (SIGTTOU, SIGSTOP)],
            success_codes: vec![],
            term_group_on_exit: true,
            forward_faults: true,
        }
    }

    fn tini_like() -> Rules {
        Rules {
            delivery: Delivery::Child,
            job_control: JobControl::ForwardTstpOnly,
            rewrites: vec![],
            success_codes: vec![],
            term_group_on_exit: false,
            forward_faults: false,
        }
    }

    fn send(target: i32, signal: i32) -> Action {
        Action::Send { target, signal }
    }

    #[test]
    fn signal_table() {
        let mut user_rewrites = dumb_init_like();
        user_rewrites
            .rewrites
            .extend([(SIGUSR1, SIGUSR2), (SIGHUP, 0), (SIGTSTP, SIGTSTP)]);
        let table: Vec<(&str, Rules, i32, Vec<Action>)> = vec![
            (
                "group term",
                dumb_init_like(),
                SIGTERM,
                vec![send(-CHILD, SIGTERM)],
            ),
            (
                "child term",
                tini_like(),
                SIGTERM,
                vec![send(CHILD, SIGTERM)],
            ),
            ("realtime", tini_like(), 40, vec![send(CHILD, 40)]),
            (
                "tstp becomes stop",
                dumb_init_like(),
                SIGTSTP,
                vec![send(-CHILD, SIGSTOP), Action::StopSelf],
            ),
            (
                "ttou becomes stop",
                dumb_init_like(),
                SIGTTOU,
                vec![send(-CHILD, SIGSTOP), Action::StopSelf],
            ),
            (
                "tini tstp",
                tini_like(),
                SIGTSTP,
                vec![send(CHILD, SIGTSTP)],
            ),
            (
                "tini ttin",
                tini_like(),
                SIGTTIN,
                vec![keep_back(SIGTTIN, Dropped::Rule)],
            ),
            (
                "fault",
                tini_like(),
                SIGSEGV,
                vec![keep_back(SIGSEGV, Dropped::Rule)],
            ),
            (
                "rewrite",
                user_rewrites.clone(),
                SIGUSR1,
                vec![send(-CHILD, SIGUSR2)],
            ),
            (
                "drop",
                user_rewrites.clone(),
                SIGHUP,
                vec![keep_back(SIGHUP, Dropped::Rewritten)],
            ),
            (
                "later rewrite wins",
                user_rewrites,
                SIGTSTP,
                vec![send(-CHILD, SIGTSTP), Action::StopSelf],
            ),
        ];
        for (name, rules, signal, expected) in table {
            let forwarder = Forwarder::new(rules, CHILD);
            assert_eq!(forwarder.on_signal(signal), expected, "{name}");
        }
    }

    /// dumb-init forwards the fault signals that arrive by kill(2) (to the
    /// group, or to the child with `-c`); tini and moltd drop them.
    #[test]
    fn fault_signals_are_forwarded_only_where_the_rules_say() {
        let mut single_child = dumb_init_like();
        single_child.delivery = Delivery::Child;
        for fault in [SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE, SIGSEGV, SIGSYS] {
            let table = [
                (dumb_init_like(), vec![send(-CHILD, fault)]),
                (single_child.clone(), vec![send(CHILD, fault)]),
                (tini_like(), vec![keep_back(fault, Dropped::Rule)]),
            ];
            for (rules, expected) in table {
                let forwarder = Forwarder::new(rules.clone(), CHILD);
                assert_eq!(forwarder.on_signal(fault), expected, "{fault} {rules:?}");
            }
        }
    }

    /// The TERM sent once the child is gone is rewritten like any signal;
    /// in child delivery it is never sent, the pid being free for reuse.
    #[test]
    fn term_after_exit_follows_rewrites_and_spares_a_reaped_child() {
        let mut rules = dumb_init_like();
        let table = [
            (None, Delivery::Group, vec![send(-CHILD, SIGTERM)]),
            (Some(SIGKILL), Delivery::Group, vec![send(-CHILD, SIGKILL)]),
            (
                Some(0),
                Delivery::Group,
                vec![keep_back(SIGTERM, Dropped::Rewritten)],
            ),
            (
                None,
                Delivery::Child,
                vec![keep_back(SIGTERM, Dropped::ChildGone)],
            ),
            (
                Some(SIGKILL),
                Delivery::Child,
                vec![keep_back(SIGKILL, Dropped::ChildGone)],
            ),
        ];
        for (rewrite, delivery, expected) in table {
            rules.rewrites = rewrite.map(|to| (SIGTERM, to)).into_iter().collect();
            rules.delivery = delivery;
            let forwarder = Forwarder::new(rules.clone(), CHILD);
            assert_eq!(
                forwarder.on_child_gone(),
                expected,
                "{rewrite:?} {delivery:?}"
            );
        }
    }

    #[test]
    fn exit_codes() {
        let mut rules = tini_like();
        rules.success_codes = vec![3, 143];
        let forwarder = Forwarder::new(rules, CHILD);
        let table = [
            (ExitStatus::Exited(0), 0),
            (ExitStatus::Exited(1), 1),
            (ExitStatus::Exited(3), 0),
            (ExitStatus::Exited(255), 255),
            (ExitStatus::Signaled(SIGKILL), 137),
            (ExitStatus::Signaled(SIGTERM), 0),
            (ExitStatus::Signaled(64), 192),
        ];
        for (status, code) in table {
            assert_eq!(forwarder.on_exit(CHILD, status), Some(code), "{status:?}");
        }
        assert_eq!(forwarder.on_exit(CHILD + 1, ExitStatus::Exited(0)), None);
    }

    #[test]
    fn group_gets_term_after_child_exits_only_in_group_mode() {
        let group = Forwarder::new(dumb_init_like(), CHILD);
        assert_eq!(group.on_child_gone(), vec![send(-CHILD, SIGTERM)]);
        let child_only = Forwarder::new(tini_like(), CHILD);
        assert_eq!(child_only.on_child_gone(), vec![]);
    }
}
