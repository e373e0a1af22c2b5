//! The link between PID 1 and the update agent: frames over a socketpair.
//!
//! Each frame is a 4-byte big-endian length, then that many bytes of UTF-8:
//! a kind and tab-separated fields on the first line, a body after the
//! first newline. Both sides use this one module, so what one writes the
//! other reads. Anything else (a frame over [`MAX_FRAME`], bytes that are
//! not UTF-8, an unknown kind, a field that does not parse) is a
//! [`ProtocolError`]: PID 1 then kills the agent, which it trusts no more
//! than a control client.
//!
//! Why frames of text: they need no serialization crate in PID 1, a
//! truncated or oversized message is caught by its length before anything
//! is parsed, and the bodies are the control protocol's own lines
//! ([`Request`], [`Answer`]), parsed by the code that parses them from
//! `sv`.

use crate::control::{SELF_UPDATE_PREFIX, SelfUpdate, UpdateReply};
use crate::observe::{ServiceState, Services};
use crate::services::control::{Answer, Request};
use crate::services::status::Phase;
use crate::sys::reap::ExitStatus;

/// The version both sides speak; the agent says it in `hello`.
pub const VERSION: u32 = 1;
/// The longest frame either side accepts.
pub const MAX_FRAME: usize = 4 << 20;

/// What the agent sends PID 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FromAgent {
    /// The first frame: the protocol version and moltd's.
    Hello { version: u32, moltd: String },
    /// A control request for the supervisor; answered with
    /// [`FromInit::Answers`].
    Command(Request),
    /// Start this command line as a hook, in folder `cwd` if given (else
    /// PID 1's).
    Hook {
        argv: Vec<String>,
        cwd: Option<String>,
    },
    /// KILL the process group of this hook.
    KillHook(i32),
    /// A release is installed: the services may start. `updating` is false
    /// when updates are off (then the trigger file is not watched).
    Ready { updating: bool },
    /// Tell control client `client` what it now waits for.
    Pending { client: u64, text: String },
    /// Answer control client `client` and close its connection.
    Reply { client: u64, reply: UpdateReply },
    /// Replace PID 1 with this binary (`self-update\tPATH\t0|1`, the
    /// control socket's line); answered with [`FromInit::SelfUpdate`].
    SelfUpdate(SelfUpdate),
}

/// PID 1's answer to [`FromAgent::SelfUpdate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SelfUpdateAnswer {
    /// Nothing changed, for this reason (one line).
    Refused(String),
    /// PID 1 execs the new binary, of this version, right after this frame:
    /// the link closes and the agent is started again on the new binary.
    /// Should the `execve` itself fail, a [`SelfUpdateAnswer::Refused`]
    /// follows on the same link.
    Exec(String),
}

/// What PID 1 sends the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FromInit {
    /// The answer to `hello`, with the services held down for a dead agent.
    Welcome {
        version: u32,
        held: Vec<String>,
    },
    /// The supervisor's answers to the last [`FromAgent::Command`] (or to
    /// the hold of the main command after [`FromAgent::Ready`]).
    Answers(Vec<Answer>),
    HookStarted(i32),
    HookFailed(String),
    HookExited {
        pid: i32,
        status: ExitStatus,
    },
    /// An `update\t...` request line from control client `client`,
    /// forwarded unparsed.
    Client {
        client: u64,
        line: String,
    },
    /// The trigger file was taken.
    Trigger,
    /// The services as the observers show them.
    Services(Services),
    SelfUpdate(SelfUpdateAnswer),
}

/// A frame that breaks the protocol.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("a frame of {0} bytes is over the limit of {MAX_FRAME}")]
    TooBig(usize),
    #[error("a frame is not UTF-8")]
    NotUtf8,
    #[error("unknown message kind {0:?}")]
    UnknownKind(String),
    #[error("bad {kind} message: {problem}")]
    Bad {
        kind: &'static str,
        problem: &'static str,
    },
}

/// Frames the text of one message.
pub fn frame(text: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(4 + text.len());
    bytes.extend_from_slice(&(text.len() as u32).to_be_bytes());
    bytes.extend_from_slice(text.as_bytes());
    bytes
}

/// Collects bytes read from the link and cuts them into frames.
///
/// Frames are taken from a read position, and what was taken is dropped
/// once per [`Frames::push`], not once per frame: a read holding thousands
/// of small frames costs its length, not its length times their number.
#[derive(Debug, Default)]
pub struct Frames {
    buf: Vec<u8>,
    /// Where the next frame starts in `buf`.
    start: usize,
}

impl Frames {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.drain(..self.start);
        self.start = 0;
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame's text, if one has arrived. A length over the
    /// limit is an error as soon as the length is read.
    pub fn next_text(&mut self) -> Result<Option<String>, ProtocolError> {
        let rest = &self.buf[self.start..];
        let Some(head) = rest.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*head) as usize;
        if len > MAX_FRAME {
            return Err(ProtocolError::TooBig(len));
        }
        let Some(text) = rest.get(4..4 + len) else {
            return Ok(None);
        };
        let text = text.to_vec();
        self.start += 4 + len;
        String::from_utf8(text)
            .map(Some)
            .map_err(|_| ProtocolError::NotUtf8)
    }
}

/// A message split into kind, fields and body.
struct Parts<'a> {
    kind: &'a str,
    fields: Vec<&'a str>,
    body: &'a str,
}

impl<'a> Parts<'a> {
    fn split(text: &'a str) -> Parts<'a> {
        let (head, body) = text.split_once('\n').unwrap_or((text, ""));
        let mut fields = head.split('\t');
        let kind = fields.next().unwrap_or_default();
        Parts {
            kind,
            fields: fields.collect(),
            body,
        }
    }

    /// The fields, exactly `N` of them.
    fn fields<const N: usize>(&self, kind: &'static str) -> Result<[&'a str; N], ProtocolError> {
        <[&str; N]>::try_from(self.fields.as_slice()).map_err(|_| ProtocolError::Bad {
            kind,
            problem: "wrong number of fields",
        })
    }
}

fn number<T: std::str::FromStr>(text: &str, kind: &'static str) -> Result<T, ProtocolError> {
    text.parse().map_err(|_| ProtocolError::Bad {
        kind,
        problem: "a field is not a number",
    })
}

fn bad(kind: &'static str, problem: &'static str) -> ProtocolError {
    ProtocolError::Bad { kind, problem }
}

/// Lines of a body, without the final newline's empty one.
fn lines(body: &str) -> impl Iterator<Item = &str> {
    body.lines().filter(|line| !line.is_empty())
}

/// A pid from the other side: never 0 or negative, which `kill` would take
/// for a group or everyone.
fn pid(text: &str, kind: &'static str) -> Result<i32, ProtocolError> {
    let pid: i32 = number(text, kind)?;
    if pid <= 0 {
        return Err(bad(kind, "not a pid"));
    }
    Ok(pid)
}

impl FromAgent {
    pub fn encode(&self) -> String {
        match self {
            FromAgent::Hello { version, moltd } => format!("hello\t{version}\t{moltd}"),
            FromAgent::Command(request) => format!("command\n{}", request.encode()),
            FromAgent::Hook { argv, cwd: None } => format!("hook\n{}", argv.join("\0")),
            // The folder goes first in the body: a path may hold a tab.
            FromAgent::Hook {
                argv,
                cwd: Some(cwd),
            } => format!("hook\tin\n{cwd}\0{}", argv.join("\0")),
            FromAgent::KillHook(pid) => format!("kill-hook\t{pid}"),
            FromAgent::Ready { updating } => {
                format!("ready\t{}", if *updating { "on" } else { "off" })
            }
            FromAgent::Pending { client, text } => format!("pending\t{client}\n{text}"),
            FromAgent::Reply { client, reply } => match reply {
                Ok(text) => format!("reply\t{client}\tok\n{text}"),
                Err(text) => format!("reply\t{client}\terror\n{text}"),
            },
            // Paths that cannot be encoded are refused by the agent before
            // it asks; one that slips through is sent as a path PID 1
            // cannot find.
            FromAgent::SelfUpdate(request) => request
                .encode()
                .unwrap_or_else(|_| format!("{SELF_UPDATE_PREFIX}/\t{}", u8::from(request.force))),
        }
    }

    pub fn decode(text: &str) -> Result<FromAgent, ProtocolError> {
        let parts = Parts::split(text);
        Ok(match parts.kind {
            "hello" => {
                let [version, moltd] = parts.fields("hello")?;
                FromAgent::Hello {
                    version: number(version, "hello")?,
                    moltd: moltd.to_owned(),
                }
            }
            "command" => {
                parts.fields::<0>("command")?;
                let request = Request::decode(parts.body.trim_end_matches('\n'))
                    .ok_or(bad("command", "not a control request"))?;
                FromAgent::Command(request)
            }
            "hook" => {
                let mut body = parts.body.split('\0').map(str::to_owned);
                let cwd = match parts.fields.as_slice() {
                    [] => None,
                    ["in"] => Some(
                        body.next()
                            .filter(|d| d.starts_with('/'))
                            .ok_or(bad("hook", "the folder is not an absolute path"))?,
                    ),
                    _ => return Err(bad("hook", "wrong number of fields")),
                };
                let argv: Vec<String> = body.collect();
                if argv.first().is_none_or(String::is_empty) {
                    return Err(bad("hook", "no command"));
                }
                FromAgent::Hook { argv, cwd }
            }
            "kill-hook" => {
                let [target] = parts.fields("kill-hook")?;
                FromAgent::KillHook(pid(target, "kill-hook")?)
            }
            "ready" => match parts.fields("ready")? {
                ["on"] => FromAgent::Ready { updating: true },
                ["off"] => FromAgent::Ready { updating: false },
                _ => return Err(bad("ready", "expected on or off")),
            },
            "pending" => {
                let [client] = parts.fields("pending")?;
                FromAgent::Pending {
                    client: number(client, "pending")?,
                    text: parts.body.to_owned(),
                }
            }
            "reply" => {
                let [client, outcome] = parts.fields("reply")?;
                let text = parts.body.to_owned();
                FromAgent::Reply {
                    client: number(client, "reply")?,
                    reply: match outcome {
                        "ok" => Ok(text),
                        "error" => Err(text),
                        _ => return Err(bad("reply", "expected ok or error")),
                    },
                }
            }
            "self-update" => FromAgent::SelfUpdate(
                SelfUpdate::decode(text)
                    .and_then(Result::ok)
                    .ok_or(bad("self-update", "expected an absolute path and 0 or 1"))?,
            ),
            other => return Err(ProtocolError::UnknownKind(other.to_owned())),
        })
    }
}

impl FromInit {
    pub fn encode(&self) -> String {
        match self {
            FromInit::Welcome { version, held } => {
                let mut text = format!("welcome\t{version}\n");
                held.iter().for_each(|name| text.extend([name, "\n"]));
                text
            }
            FromInit::Answers(answers) => {
                let mut text = "answers\n".to_owned();
                answers.iter().for_each(|a| text.push_str(&a.encode()));
                text
            }
            FromInit::HookStarted(pid) => format!("hook-started\t{pid}"),
            FromInit::HookFailed(reason) => format!("hook-failed\n{reason}"),
            FromInit::HookExited { pid, status } => match status {
                ExitStatus::Exited(code) => format!("hook-exited\t{pid}\texit\t{code}"),
                ExitStatus::Signaled(signal) => format!("hook-exited\t{pid}\tsignal\t{signal}"),
            },
            FromInit::Client { client, line } => format!("client\t{client}\n{line}"),
            FromInit::Trigger => "trigger".to_owned(),
            FromInit::Services(services) => {
                let mut text = format!(
                    "services\t{}\t{}\n",
                    u8::from(services.shutting_down),
                    services.reaped
                );
                for s in &services.list {
                    let essential = u8::from(s.essential);
                    let line = format!(
                        "{}\t{}\t{}\t{essential}\n",
                        s.name,
                        s.phase.word(),
                        s.restarts
                    );
                    text.push_str(&line);
                }
                text
            }
            // One line: the reason's own newlines (a self-test's output)
            // become spaces.
            FromInit::SelfUpdate(SelfUpdateAnswer::Refused(reason)) => {
                format!("self-update\trefused\t{}", reason.replace('\n', " "))
            }
            FromInit::SelfUpdate(SelfUpdateAnswer::Exec(version)) => {
                format!("self-update\texec\t{version}")
            }
        }
    }

    pub fn decode(text: &str) -> Result<FromInit, ProtocolError> {
        let parts = Parts::split(text);
        Ok(match parts.kind {
            "welcome" => {
                let [version] = parts.fields("welcome")?;
                FromInit::Welcome {
                    version: number(version, "welcome")?,
                    held: lines(parts.body).map(str::to_owned).collect(),
                }
            }
            "answers" => {
                parts.fields::<0>("answers")?;
                let answers = lines(parts.body).map(Answer::decode).collect::<Option<_>>();
                FromInit::Answers(answers.ok_or(bad("answers", "not a control answer"))?)
            }
            "hook-started" => {
                let [started] = parts.fields("hook-started")?;
                FromInit::HookStarted(pid(started, "hook-started")?)
            }
            "hook-failed" => {
                parts.fields::<0>("hook-failed")?;
                FromInit::HookFailed(parts.body.to_owned())
            }
            "hook-exited" => {
                let [exited, how, value] = parts.fields("hook-exited")?;
                let value = number(value, "hook-exited")?;
                FromInit::HookExited {
                    pid: pid(exited, "hook-exited")?,
                    status: match how {
                        "exit" => ExitStatus::Exited(value),
                        "signal" => ExitStatus::Signaled(value),
                        _ => return Err(bad("hook-exited", "expected exit or signal")),
                    },
                }
            }
            "client" => {
                let [client] = parts.fields("client")?;
                FromInit::Client {
                    client: number(client, "client")?,
                    line: parts.body.to_owned(),
                }
            }
            "trigger" => {
                parts.fields::<0>("trigger")?;
                FromInit::Trigger
            }
            "services" => {
                let [shutting_down, reaped] = parts.fields("services")?;
                let list = lines(parts.body).map(service).collect::<Result<_, _>>()?;
                FromInit::Services(Services {
                    list,
                    shutting_down: flag(shutting_down, "services")?,
                    reaped: number(reaped, "services")?,
                })
            }
            "self-update" => match parts.fields.as_slice() {
                ["refused", reason @ ..] if !reason.is_empty() && parts.body.is_empty() => {
                    FromInit::SelfUpdate(SelfUpdateAnswer::Refused(reason.join("\t")))
                }
                ["exec", version] if !version.is_empty() && parts.body.is_empty() => {
                    FromInit::SelfUpdate(SelfUpdateAnswer::Exec((*version).to_owned()))
                }
                _ => return Err(bad("self-update", "expected refused or exec and a field")),
            },
            other => return Err(ProtocolError::UnknownKind(other.to_owned())),
        })
    }
}

fn flag(text: &str, kind: &'static str) -> Result<bool, ProtocolError> {
    match text {
        "0" => Ok(false),
        "1" => Ok(true),
        _ => Err(bad(kind, "expected 0 or 1")),
    }
}

/// One line of a `services` body.
fn service(line: &str) -> Result<ServiceState, ProtocolError> {
    let fields: Vec<&str> = line.split('\t').collect();
    let [name, phase, restarts, essential] = fields[..] else {
        return Err(bad("services", "wrong number of fields in a service"));
    };
    Ok(ServiceState {
        name: name.to_owned(),
        phase: Phase::ALL
            .into_iter()
            .find(|p| p.word() == phase)
            .ok_or(bad("services", "unknown phase"))?,
        restarts: number(restarts, "services")?,
        essential: flag(essential, "services")?,
    })
}

#[cfg(test)]
mod tests;
