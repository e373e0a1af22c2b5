//! The control protocol between `sv` (or `moltd status`) and the supervisor.
//!
//! One request per connection, one line: fields separated by tabs (service
//! names never hold one; see [`super::scan`]). The supervisor answers with
//! one line per service, in the order asked, then closes the connection.
//! Waiting (`sv -w`) happens in the supervisor, which knows when a service
//! changes state, so clients never poll.
//!
//! Requests for the updater (`moltd update`, `moltd rollback`, `moltd
//! unmark`, the update part of `moltd status`) are lines starting with
//! `update\t`, shared with the HTTP listener: see [`crate::control`].

use super::status::Status;
use crate::signals;
use std::time::Duration;

/// What to do to each service named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Status,
    /// Start it, and restart it whenever it stops.
    Up,
    /// Stop it (its down-signal and CONT to its group) and leave it down.
    Down,
    /// Start it, but do not restart it when it stops.
    Once,
    /// Send this signal to its `run` process.
    Signal(i32),
    /// Stop it, then start it again.
    Restart {
        only_if_running: bool,
    },
    /// Change nothing; with a wait, wait for the state it should be in.
    Check,
    /// On `NAME/next`: start a second generation of the service beside the
    /// running one (the overlap strategy of an update); a wait ends when it
    /// is ready. Stopped again with `Down` on the same name.
    Overlap,
    /// On `NAME`: stop the first generation (down-signal, SVWAIT) and make
    /// the second the service; a wait ends when the first is down.
    Retire,
}

/// One request from a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub op: Op,
    /// Service names (`web`, or `web/log` for its log); none means all.
    pub names: Vec<String>,
    /// How long to wait for the command to take effect; none replies at once.
    pub wait: Option<Duration>,
    /// On timeout, KILL the service's process group (`force-stop`).
    pub kill_on_timeout: bool,
}

/// What became of one service named in a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The command was carried out; nothing was waited for.
    Done(Status),
    /// The command took effect within the wait.
    Ok(Status),
    Timeout(Status),
    /// Timed out, and the service's group was sent KILL.
    Killed(Status),
    /// No service by that name.
    Unknown(String),
}

impl Op {
    fn encode(self) -> String {
        match self {
            Op::Status => "status".into(),
            Op::Up => "up".into(),
            Op::Down => "down".into(),
            Op::Once => "once".into(),
            Op::Signal(signal) => format!("signal:{signal}"),
            Op::Restart { only_if_running } => if only_if_running {
                "try-restart"
            } else {
                "restart"
            }
            .into(),
            Op::Check => "check".into(),
            Op::Overlap => "overlap".into(),
            Op::Retire => "retire".into(),
        }
    }

    fn decode(text: &str) -> Option<Op> {
        Some(match text {
            "status" => Op::Status,
            "up" => Op::Up,
            "down" => Op::Down,
            "once" => Op::Once,
            "restart" => Op::Restart {
                only_if_running: false,
            },
            "try-restart" => Op::Restart {
                only_if_running: true,
            },
            "check" => Op::Check,
            "overlap" => Op::Overlap,
            "retire" => Op::Retire,
            _ => Op::Signal(signals::parse(text.strip_prefix("signal:")?)?),
        })
    }
}

impl Request {
    /// The request line, newline included.
    pub fn encode(&self) -> String {
        let mut line = format!(
            "{}\t{}\t{}",
            self.op.encode(),
            self.wait.map_or("-".into(), |w| w.as_millis().to_string()),
            u8::from(self.kill_on_timeout)
        );
        for name in &self.names {
            line.push('\t');
            line.push_str(name);
        }
        line.push('\n');
        line
    }

    pub fn decode(line: &str) -> Option<Request> {
        let mut fields = line.trim_end_matches('\n').split('\t');
        let op = Op::decode(fields.next()?)?;
        let wait = match fields.next()? {
            "-" => None,
            ms => Some(Duration::from_millis(ms.parse().ok()?)),
        };
        let kill_on_timeout = fields.next()? == "1";
        Some(Request {
            op,
            names: fields.map(str::to_owned).collect(),
            wait,
            kill_on_timeout,
        })
    }
}

impl Answer {
    pub fn encode(&self) -> String {
        let (kind, body) = match self {
            Answer::Done(s) => ("done", s.encode()),
            Answer::Ok(s) => ("ok", s.encode()),
            Answer::Timeout(s) => ("timeout", s.encode()),
            Answer::Killed(s) => ("kill", s.encode()),
            Answer::Unknown(name) => ("unknown", name.clone()),
        };
        format!("{kind}\t{body}\n")
    }

    pub fn decode(line: &str) -> Option<Answer> {
        let (kind, body) = line.trim_end_matches('\n').split_once('\t')?;
        if kind == "unknown" {
            return Some(Answer::Unknown(body.to_owned()));
        }
        let status = Status::decode(body)?;
        Some(match kind {
            "done" => Answer::Done(status),
            "ok" => Answer::Ok(status),
            "timeout" => Answer::Timeout(status),
            "kill" => Answer::Killed(status),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let ops = [
            Op::Status,
            Op::Up,
            Op::Down,
            Op::Once,
            Op::Signal(1),
            Op::Signal(40),
            Op::Restart {
                only_if_running: true,
            },
            Op::Restart {
                only_if_running: false,
            },
            Op::Check,
            Op::Overlap,
            Op::Retire,
        ];
        for op in ops {
            let request = Request {
                op,
                names: vec!["web".into(), "web/log".into(), "a b".into()],
                wait: Some(Duration::from_millis(1500)),
                kill_on_timeout: true,
            };
            assert_eq!(Request::decode(&request.encode()), Some(request));
        }
        let all = Request {
            op: Op::Status,
            names: vec![],
            wait: None,
            kill_on_timeout: false,
        };
        assert_eq!(Request::decode(&all.encode()), Some(all));
        for garbage in ["", "fly\t-\t0", "up\tsoon\t0", "signal:99\t-\t0"] {
            assert_eq!(Request::decode(garbage), None, "{garbage:?}");
        }
    }

    #[test]
    fn unknown_answer_round_trips() {
        let answer = Answer::Unknown("nope".into());
        assert_eq!(Answer::decode(&answer.encode()), Some(answer));
        assert_eq!(Answer::decode("maybe\tx"), None);
    }
}
