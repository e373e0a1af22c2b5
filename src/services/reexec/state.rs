//! PID 1's frozen state: what one moltd writes into a memfd before it
//! execs another, and what the other (and the self-test) reads back.
//!
//! Tab-separated lines, versioned like the agent's link: `moltd-state\t1`
//! first, `end` last (a state cut short does not read). Names and paths
//! are escaped (`\\`, `\t`, `\n`), so any folder name fits in a field.
//! Descriptors are numbers in the writer's table; they stay open across
//! `execve` (close-on-exec cleared on exactly these) and the reader takes
//! each one back once ([`crate::sys::exec::adopt`]). Times are in the
//! slot records, as nanoseconds from the freeze; `clock` is the freeze on
//! `CLOCK_MONOTONIC`, which `execve` does not reset, so the reader knows
//! how long the exec took.

use crate::services::machine::{FrozenSlot, Which};
use std::collections::BTreeSet;
use std::os::fd::RawFd;
use std::path::PathBuf;

/// The format's version: a reader refuses any other.
pub const FORMAT: u32 = 1;

/// Everything PID 1 carries across `execve`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    /// The writer's version.
    pub from: String,
    /// `CLOCK_MONOTONIC` at the freeze, in nanoseconds.
    pub clock: u128,
    /// The writer's own binary, open: a reader that cannot resume execs it
    /// back with this state.
    pub previous: RawFd,
    /// The signal state the first moltd was started with
    /// ([`crate::sys::signals::Inherited::encode`]).
    pub signals: String,
    /// Processes reaped so far, for the metrics.
    pub reaped: u64,
    pub control: Option<(RawFd, PathBuf)>,
    pub notify: Option<(RawFd, PathBuf)>,
    /// The control client that asked, answered by the reader.
    pub requester: Option<RawFd>,
    pub agent: Option<Agent>,
    pub io: Vec<Io>,
    pub sockets: Vec<Socket>,
    pub slots: Vec<FrozenSlot>,
}

/// What PID 1 holds for the update agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agent {
    /// The running agent, which the reader stops and starts anew on itself.
    pub pid: Option<i32>,
    /// The `MOLTD_LISTEN` socket.
    pub listen: Option<RawFd>,
    /// `supervisor.lock`.
    pub lock: Option<RawFd>,
}

/// One service's pipes: stdout and stderr (read, write), then with a
/// `log/`: the log pipe and the log's stdout and stderr. A write end moltd
/// closed is `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Io {
    pub service: String,
    pub fds: Vec<(RawFd, Option<RawFd>)>,
}

/// A held listening socket of a service, by its address as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Socket {
    pub service: String,
    pub fd: RawFd,
    pub address: String,
}

/// Why a state does not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("not a moltd state (expected moltd-state\\t{FORMAT} first)")]
    Format,
    #[error("the state ends early (no end line)")]
    Truncated,
    #[error("bad line {line} of the state: {problem}")]
    Line { line: usize, problem: &'static str },
    #[error("descriptor {0} is named twice in the state")]
    Duplicate(RawFd),
}

/// Escapes a field: `\`, tab and newline.
pub fn escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n")
}

/// The inverse of [`escape`]; `None` for an escape that [`escape`] never
/// writes.
pub fn unescape(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        out.push(match c {
            '\\' => match chars.next()? {
                '\\' => '\\',
                't' => '\t',
                'n' => '\n',
                _ => return None,
            },
            c => c,
        });
    }
    Some(out)
}

fn opt_fd(fd: Option<RawFd>) -> String {
    fd.map_or("-".to_owned(), |fd| fd.to_string())
}

impl State {
    pub fn encode(&self) -> String {
        let mut lines = vec![
            format!("moltd-state\t{FORMAT}"),
            format!("from\t{}", escape(&self.from)),
            format!("clock\t{}", self.clock),
            format!("previous\t{}", self.previous),
            format!("signals\t{}", self.signals),
            format!("reaped\t{}", self.reaped),
        ];
        let path = |p: &PathBuf| escape(&p.to_string_lossy());
        if let Some((fd, p)) = &self.control {
            lines.push(format!("control\t{fd}\t{}", path(p)));
        }
        if let Some((fd, p)) = &self.notify {
            lines.push(format!("notify\t{fd}\t{}", path(p)));
        }
        if let Some(fd) = self.requester {
            lines.push(format!("requester\t{fd}"));
        }
        if let Some(agent) = &self.agent {
            let pid = agent.pid.map_or("-".to_owned(), |p| p.to_string());
            lines.push(format!(
                "agent\t{pid}\t{}\t{}",
                opt_fd(agent.listen),
                opt_fd(agent.lock)
            ));
        }
        for io in &self.io {
            let fds: Vec<String> = io
                .fds
                .iter()
                .map(|(read, write)| format!("{read} {}", opt_fd(*write)))
                .collect();
            lines.push(format!("io\t{}\t{}", escape(&io.service), fds.join("\t")));
        }
        for socket in &self.sockets {
            lines.push(format!(
                "socket\t{}\t{}\t{}",
                escape(&socket.service),
                socket.fd,
                escape(&socket.address)
            ));
        }
        for slot in &self.slots {
            let which = match slot.which {
                Which::Main => "main",
                Which::Log => "log",
                Which::Next => "next",
            };
            lines.push(format!(
                "slot\t{}\t{which}\t{}",
                escape(&slot.service),
                slot.record
            ));
        }
        lines.push("end\n".to_owned());
        lines.join("\n")
    }

    pub fn decode(text: &str) -> Result<State, StateError> {
        let mut lines = text.lines().enumerate();
        if lines.next().map(|(_, l)| l) != Some(&format!("moltd-state\t{FORMAT}")) {
            return Err(StateError::Format);
        }
        let mut state = State {
            from: String::new(),
            clock: 0,
            previous: -1,
            signals: String::new(),
            reaped: 0,
            control: None,
            notify: None,
            requester: None,
            agent: None,
            io: Vec::new(),
            sockets: Vec::new(),
            slots: Vec::new(),
        };
        let mut ended = false;
        for (at, line) in lines {
            let bad = |problem| StateError::Line {
                line: at + 1,
                problem,
            };
            if ended {
                return Err(bad("after the end"));
            }
            let fields: Vec<&str> = line.split('\t').collect();
            let text = |t: &str| unescape(t).ok_or(bad("a bad escape"));
            let fd = |t: &str| {
                t.parse::<RawFd>()
                    .ok()
                    .filter(|&fd| fd > 2)
                    .ok_or(bad("not a descriptor"))
            };
            let opt = |t: &str| match t {
                "-" => Ok(None),
                t => fd(t).map(Some),
            };
            let number = |t: &str| t.parse::<u128>().map_err(|_| bad("not a number"));
            match fields[..] {
                ["from", version] => state.from = text(version)?,
                ["clock", ns] => state.clock = number(ns)?,
                ["previous", previous] => state.previous = fd(previous)?,
                ["signals", signals] => state.signals = signals.to_owned(),
                ["reaped", n] => state.reaped = number(n)? as u64,
                ["control", f, p] => state.control = Some((fd(f)?, text(p)?.into())),
                ["notify", f, p] => state.notify = Some((fd(f)?, text(p)?.into())),
                ["requester", f] => state.requester = Some(fd(f)?),
                ["agent", pid, listen, lock] => {
                    state.agent = Some(Agent {
                        pid: match pid {
                            "-" => None,
                            p => Some(
                                p.parse()
                                    .ok()
                                    .filter(|&p: &i32| p > 1)
                                    .ok_or(bad("not a pid"))?,
                            ),
                        },
                        listen: opt(listen)?,
                        lock: opt(lock)?,
                    })
                }
                ["io", service, ref pairs @ ..] if pairs.len() == 2 || pairs.len() == 5 => {
                    let fds = pairs
                        .iter()
                        .map(|pair| match pair.split_once(' ') {
                            Some((read, write)) => Ok((fd(read)?, opt(write)?)),
                            None => Err(bad("not a pair of descriptors")),
                        })
                        .collect::<Result<_, _>>()?;
                    state.io.push(Io {
                        service: text(service)?,
                        fds,
                    });
                }
                ["socket", service, f, address] => state.sockets.push(Socket {
                    service: text(service)?,
                    fd: fd(f)?,
                    address: text(address)?,
                }),
                ["slot", service, which, record] => state.slots.push(FrozenSlot {
                    service: text(service)?,
                    which: match which {
                        "main" => Which::Main,
                        "log" => Which::Log,
                        _ => return Err(bad("not main or log")),
                    },
                    record: record.to_owned(),
                }),
                ["end"] => ended = true,
                _ => return Err(bad("unknown or malformed")),
            }
        }
        if !ended {
            return Err(StateError::Truncated);
        }
        if state.previous < 0 || state.from.is_empty() || state.signals.is_empty() {
            return Err(StateError::Truncated);
        }
        let mut seen = BTreeSet::new();
        for fd in state.fds() {
            if !seen.insert(fd) {
                return Err(StateError::Duplicate(fd));
            }
        }
        Ok(state)
    }

    /// Every descriptor the state names: those to keep open across
    /// `execve`.
    pub fn fds(&self) -> Vec<RawFd> {
        let mut fds = vec![self.previous];
        fds.extend(self.control.as_ref().map(|(fd, _)| *fd));
        fds.extend(self.notify.as_ref().map(|(fd, _)| *fd));
        fds.extend(self.requester);
        if let Some(agent) = &self.agent {
            fds.extend(agent.listen);
            fds.extend(agent.lock);
        }
        for io in &self.io {
            for (read, write) in &io.fds {
                fds.push(*read);
                fds.extend(*write);
            }
        }
        fds.extend(self.sockets.iter().map(|s| s.fd));
        fds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        State {
            from: "0.1.0".into(),
            clock: 123_456_789,
            previous: 9,
            signals: "- 0 0".into(),
            reaped: 4,
            control: Some((3, "/run/moltd/control.sock".into())),
            notify: Some((4, "/run/moltd/notify\tx".into())),
            requester: Some(5),
            agent: Some(Agent {
                pid: Some(40),
                listen: Some(6),
                lock: None,
            }),
            io: vec![
                Io {
                    service: "web".into(),
                    fds: vec![(10, Some(11)), (12, Some(13))],
                },
                Io {
                    service: "db\\1".into(),
                    fds: vec![
                        (14, Some(15)),
                        (16, Some(17)),
                        (18, None),
                        (19, Some(20)),
                        (21, Some(22)),
                    ],
                },
            ],
            sockets: vec![Socket {
                service: "web".into(),
                fd: 23,
                address: "tcp://127.0.0.1:8080".into(),
            }],
            slots: vec![FrozenSlot {
                service: "web".into(),
                which: Which::Main,
                record: "up 0 1 - - 0 0 0 running 42 0 ready".into(),
            }],
        }
    }

    #[test]
    fn a_state_reads_back_as_written() {
        let state = sample();
        assert_eq!(State::decode(&state.encode()), Ok(state));
        for text in ["", "a\tb", "c\\d\ne", "\\t"] {
            assert_eq!(unescape(&escape(text)).as_deref(), Some(text));
        }
    }

    #[test]
    fn a_state_cut_short_or_changed_does_not_read() {
        let text = sample().encode();
        assert_eq!(
            State::decode(&text[..text.len() - 5]),
            Err(StateError::Truncated)
        );
        assert_eq!(
            State::decode(&text.replace("moltd-state\t1", "moltd-state\t2")),
            Err(StateError::Format)
        );
        assert_eq!(
            State::decode(&text.replace("previous\t9", "previous\t3")),
            Err(StateError::Duplicate(3))
        );
        assert!(matches!(
            State::decode(&text.replace("slot\tweb\tmain", "slot\tweb\tnext")),
            Err(StateError::Line { .. })
        ));
        assert!(matches!(
            State::decode(&text.replace("requester\t5", "requester\t1")),
            Err(StateError::Line { .. })
        ));
    }
}
