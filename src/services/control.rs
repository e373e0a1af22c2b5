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
//! `update\t`; they are
//! answered with [`UpdateReply`]: `ok` or `error`, then free text (the
//! status document, for [`UpdateOp::Status`]). Status, and whatever cannot
//! run now (an update while one is in progress), is answered at once from
//! the updater's snapshot; what the updater thread carries out is first
//! acknowledged with one `pending\t<what it does>` line, then answered
//! when done, so a client always hears back at once and knows what it
//! waits for.

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

/// A request for the updater.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpdateOp {
    /// Check now and apply (or only report, with `check_only`); `force`
    /// updates even when the release was changed by hand.
    Update {
        check_only: bool,
        force: bool,
    },
    Rollback,
    /// Clear the bad mark of these tags (`moltd unmark`); tags hold no tab
    /// or newline (git refuses control characters in names).
    Unmark(Vec<String>),
    /// The status document, as JSON.
    Status,
}

impl UpdateOp {
    /// The request line, newline included.
    pub fn encode(&self) -> String {
        let verb = match self {
            UpdateOp::Update {
                check_only: true, ..
            } => "check",
            UpdateOp::Update { force: true, .. } => "force",
            UpdateOp::Update { .. } => "apply",
            UpdateOp::Rollback => "rollback",
            UpdateOp::Unmark(tags) => return format!("update\tunmark\t{}\n", tags.join("\t")),
            UpdateOp::Status => "status",
        };
        format!("update\t{verb}\n")
    }

    pub fn decode(line: &str) -> Option<UpdateOp> {
        let line = line.trim_end_matches('\n').strip_prefix(UPDATE_PREFIX)?;
        let (verb, rest) = line.split_once('\t').unwrap_or((line, ""));
        let update = |check_only, force| UpdateOp::Update { check_only, force };
        Some(match (verb, rest) {
            ("check", "") => update(true, false),
            ("force", "") => update(false, true),
            ("apply", "") => update(false, false),
            ("rollback", "") => UpdateOp::Rollback,
            ("status", "") => UpdateOp::Status,
            ("unmark", tags) if !tags.is_empty() => {
                UpdateOp::Unmark(tags.split('\t').map(str::to_owned).collect())
            }
            _ => return None,
        })
    }
}

/// How every request for the updater starts.
pub const UPDATE_PREFIX: &str = "update\t";

/// The error an `update` request gets when no release source is set.
pub const NOT_CONFIGURED: &str = "updates are not configured (set MOLTD_REPO or MOLTD_URL)";

/// The updater's answer: whether it worked, and what to tell the user.
pub type UpdateReply = crate::update::ApplyReply;

/// The reply text: `ok` or `error` on the first line, then the text.
pub fn encode_update_reply(reply: &UpdateReply) -> String {
    match reply {
        Ok(text) => format!("ok\n{text}\n"),
        Err(text) => format!("error\n{text}\n"),
    }
}

/// The line that tells a client its request was taken and what it now
/// waits for, before the reply (requests the updater thread carries out).
pub fn encode_pending(text: &str) -> String {
    format!("{PENDING}{}\n", text.replace('\n', " "))
}

/// How a pending line starts.
pub const PENDING: &str = "pending\t";

/// The inverse of [`encode_update_reply`]; `None` for anything else.
pub fn decode_update_reply(text: &str) -> Option<UpdateReply> {
    let (kind, body) = text.split_once('\n')?;
    let body = body.trim_end_matches('\n').to_owned();
    match kind {
        "ok" => Some(Ok(body)),
        "error" => Some(Err(body)),
        _ => None,
    }
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
    fn update_requests_and_replies_round_trip() {
        let ops = [
            UpdateOp::Update {
                check_only: true,
                force: false,
            },
            UpdateOp::Update {
                check_only: false,
                force: true,
            },
            UpdateOp::Update {
                check_only: false,
                force: false,
            },
            UpdateOp::Rollback,
            UpdateOp::Unmark(vec!["v3.0.0".into()]),
            UpdateOp::Unmark(vec!["v3.0.0".into(), "web-v1.0.0".into()]),
            UpdateOp::Status,
        ];
        for op in ops {
            assert_eq!(Request::decode(&op.encode()), None);
            assert_eq!(UpdateOp::decode(&op.encode()), Some(op));
        }
        for garbage in [
            "update\tdance",
            "update\tunmark",
            "update\tunmark\t",
            "update\tstatus\tx",
        ] {
            assert_eq!(UpdateOp::decode(garbage), None, "{garbage:?}");
        }
        for reply in [Ok("a\nb".to_owned()), Err("no".to_owned())] {
            assert_eq!(
                decode_update_reply(&encode_update_reply(&reply)),
                Some(reply)
            );
        }
        assert_eq!(decode_update_reply("maybe\n"), None);
    }

    #[test]
    fn unknown_answer_round_trips() {
        let answer = Answer::Unknown("nope".into());
        assert_eq!(Answer::decode(&answer.encode()), Some(answer));
        assert_eq!(Answer::decode("maybe\tx"), None);
    }
}
