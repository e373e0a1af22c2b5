//! The control types every surface shares: the requests for the updater
//! and their replies, and the phases of a service's life.
//!
//! `moltd update`, `moltd rollback`, `moltd unmark` and `moltd status` send
//! an [`UpdateRequest`] over the control socket, `POST /update` and `POST
//! /rollback` build the same value, and the updater takes it whole: one
//! type, so a flag cannot be dropped on one path and honoured on another.
//! [`UpdateRequest::update`] turns "check?" and "force?" into a request
//! for the socket and HTTP, and refuses the two together (a check changes
//! nothing, so there is nothing to force); the command line refuses
//! `--check --force` in its parser, with its other flags that do not go
//! together.
//!
//! Why a leaf: the socket, the HTTP listener and the updater all depend on
//! these types, so they depend on nothing of the crate, and no surface has
//! to import another to speak to the updater.
//!
//! On the socket a request is one line, `update\t<verb>[\t<field>...]`; the
//! reply is `ok` or `error` on the first line, then free text (the status
//! document, for [`UpdateRequest::Status`]). What the updater carries out is
//! first acknowledged with one `pending\t<what it does>` line, so a client
//! always hears back at once and knows what it waits for.

/// A request for the updater.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpdateRequest {
    /// Look for a newer release and report it; change nothing.
    Check,
    /// Look for a newer release and apply it; `force` first accepts a tree
    /// changed by hand (which otherwise suspends updates).
    Apply { force: bool },
    /// Go back to the previous release.
    Rollback,
    /// Clear the bad mark of these tags (`moltd unmark`); tags hold no tab
    /// or newline (git refuses control characters in names).
    Unmark(Vec<String>),
    /// The status document, as JSON.
    Status,
    /// Replace PID 1 with this binary (`POST /self-update?file=PATH`), or,
    /// with none, look for a newer moltd in `MOLTD_SELF_REPO` and apply it
    /// (`POST /self-update`). On the socket: `update\tself-update` and the
    /// self-update line's fields.
    Itself(Option<SelfUpdate>),
}

/// The updater's answer: whether it worked, and what to tell the user.
pub type UpdateReply = Result<String, String>;

/// A request for the updater that cannot be carried out as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    #[error("bad request: check and force do not go together (a check changes nothing)")]
    CheckWithForce,
    #[error("bad request: unmark needs the tag of a release marked bad")]
    NoTags,
    #[error("bad request: unknown update request {0:?}")]
    Unknown(String),
    #[error(transparent)]
    SelfUpdate(BadSelfUpdate),
}

/// How every updater request line starts (PID 1 forwards such lines to the
/// update agent unparsed).
pub const UPDATE_PREFIX: &str = "update\t";

/// The error an updater request gets when no release source is set.
pub const NOT_CONFIGURED: &str = "updates are not configured (set MOLTD_REPO or MOLTD_URL)";

/// How a pending line starts.
pub const PENDING: &str = "pending\t";

impl UpdateRequest {
    /// The request to look for a newer release: a check, or an update
    /// (forced or not). Every surface builds it here.
    pub fn update(check: bool, force: bool) -> Result<UpdateRequest, BadRequest> {
        match (check, force) {
            (true, true) => Err(BadRequest::CheckWithForce),
            (true, false) => Ok(UpdateRequest::Check),
            (false, force) => Ok(UpdateRequest::Apply { force }),
        }
    }

    /// The request line, newline included.
    pub fn encode(&self) -> String {
        let fields = match self {
            UpdateRequest::Check => "check".to_owned(),
            UpdateRequest::Apply { force: false } => "apply".to_owned(),
            UpdateRequest::Apply { force: true } => "apply\tforce".to_owned(),
            UpdateRequest::Rollback => "rollback".to_owned(),
            UpdateRequest::Unmark(tags) => format!("unmark\t{}", tags.join("\t")),
            UpdateRequest::Status => "status".to_owned(),
            // A path that cannot be sent was refused where the request
            // was built; one that slips through asks for no file.
            UpdateRequest::Itself(request) => (request.as_ref())
                .and_then(|request| request.encode().ok())
                .unwrap_or_else(|| SELF_UPDATE_PREFIX.trim_end().to_owned()),
        };
        format!("{UPDATE_PREFIX}{fields}\n")
    }

    /// `None` when `line` is not for the updater (a service request); an
    /// error when it is but asks for nothing the updater does.
    pub fn decode(line: &str) -> Option<Result<UpdateRequest, BadRequest>> {
        let line = line.trim_end_matches('\n').strip_prefix(UPDATE_PREFIX)?;
        if line == SELF_UPDATE_PREFIX.trim_end() {
            return Some(Ok(UpdateRequest::Itself(None)));
        }
        if let Some(request) = SelfUpdate::decode(line) {
            return Some(
                request
                    .map(|request| UpdateRequest::Itself(Some(request)))
                    .map_err(BadRequest::SelfUpdate),
            );
        }
        let mut fields = line.split('\t');
        let verb = fields.next().unwrap_or_default();
        let rest: Vec<&str> = fields.collect();
        Some(match (verb, rest.as_slice()) {
            ("check" | "apply", []) => UpdateRequest::update(verb == "check", false),
            ("check" | "apply", ["force"]) => UpdateRequest::update(verb == "check", true),
            ("rollback", []) => Ok(UpdateRequest::Rollback),
            ("status", []) => Ok(UpdateRequest::Status),
            ("unmark", tags) if !tags.is_empty() && tags.iter().all(|t| !t.is_empty()) => Ok(
                UpdateRequest::Unmark(tags.iter().map(|&t| t.to_owned()).collect()),
            ),
            ("unmark", _) => Err(BadRequest::NoTags),
            _ => Err(BadRequest::Unknown(line.to_owned())),
        })
    }
}

/// How a self-update request line starts, on the control socket and on
/// the agent's link alike.
pub const SELF_UPDATE_PREFIX: &str = "self-update\t";

/// A request to replace the running PID 1 with the binary at `path`
/// (`moltd self-update [--force] FILE`, `POST /self-update`). The line is
/// `self-update\tPATH\t0|1` (1: forced, any version goes), on the control
/// socket and as the agent's frame; a path holding a tab or a newline
/// cannot be sent (the line would not read back the same).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelfUpdate {
    pub path: std::path::PathBuf,
    pub force: bool,
}

/// A self-update request that cannot be carried out as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadSelfUpdate {
    #[error(
        "bad request: the binary's path must be absolute and valid UTF-8 with no tab or newline"
    )]
    Path,
    #[error("bad request: expected self-update, a path, and 0 or 1")]
    Fields,
}

impl SelfUpdate {
    /// The request line, without the newline; refuses a path that would
    /// not read back the same.
    pub fn encode(&self) -> Result<String, BadSelfUpdate> {
        let path = self.path.to_str().ok_or(BadSelfUpdate::Path)?;
        if !self.path.is_absolute() || path.contains(['\t', '\n']) {
            return Err(BadSelfUpdate::Path);
        }
        Ok(format!(
            "{SELF_UPDATE_PREFIX}{path}\t{}",
            u8::from(self.force)
        ))
    }

    /// `None` when `line` is not a self-update request.
    pub fn decode(line: &str) -> Option<Result<SelfUpdate, BadSelfUpdate>> {
        let rest = line
            .trim_end_matches('\n')
            .strip_prefix(SELF_UPDATE_PREFIX)?;
        let fields: Vec<&str> = rest.split('\t').collect();
        Some(match fields[..] {
            [path, force @ ("0" | "1")] if path.starts_with('/') => Ok(SelfUpdate {
                path: path.into(),
                force: force == "1",
            }),
            [_, "0" | "1"] => Err(BadSelfUpdate::Path),
            _ => Err(BadSelfUpdate::Fields),
        })
    }
}

/// The reply text: `ok` or `error` on the first line, then the text.
pub fn encode_reply(reply: &UpdateReply) -> String {
    match reply {
        Ok(text) => format!("ok\n{text}\n"),
        Err(text) => format!("error\n{text}\n"),
    }
}

/// The inverse of [`encode_reply`]; `None` for anything else.
pub fn decode_reply(text: &str) -> Option<UpdateReply> {
    let (kind, body) = text.split_once('\n')?;
    let body = body.trim_end_matches('\n').to_owned();
    match kind {
        "ok" => Some(Ok(body)),
        "error" => Some(Err(body)),
        _ => None,
    }
}

/// The line that tells a client its request was taken and what it now
/// waits for, before the reply (requests the updater carries out).
pub fn encode_pending(text: &str) -> String {
    format!("{PENDING}{}\n", text.replace('\n', " "))
}

/// Where a service's program is in its life, in more detail than runit
/// shows: the supervisor reports it on the socket, the observers in
/// `/healthz` and the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// Asked to stop, or its `run` exited and the rest of its group is being
    /// stopped: not down until the whole group is gone.
    Stopping,
    Finishing,
    /// Waiting to be restarted.
    Backoff,
    /// Waiting to be restarted after several quick deaths in a row.
    CrashLoop,
    Down,
}

impl Phase {
    /// Every phase, in the order metrics list them.
    pub const ALL: [Phase; 6] = [
        Phase::Running,
        Phase::Stopping,
        Phase::Finishing,
        Phase::Backoff,
        Phase::CrashLoop,
        Phase::Down,
    ];

    /// The word `sv status` and the metrics use.
    pub fn word(self) -> &'static str {
        match self {
            Phase::Running => "run",
            Phase::Stopping => "stopping",
            Phase::Finishing => "finish",
            Phase::Backoff => "backoff",
            Phase::CrashLoop => "crash-loop",
            Phase::Down => "down",
        }
    }

    /// The inverse of [`Phase::word`].
    pub fn parse(word: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.word() == word)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_requests_and_replies_round_trip() {
        let requests = [
            UpdateRequest::Check,
            UpdateRequest::Apply { force: true },
            UpdateRequest::Apply { force: false },
            UpdateRequest::Rollback,
            UpdateRequest::Unmark(vec!["v3.0.0".into()]),
            UpdateRequest::Unmark(vec!["v3.0.0".into(), "web-v1.0.0".into()]),
            UpdateRequest::Status,
            UpdateRequest::Itself(None),
            UpdateRequest::Itself(Some(SelfUpdate {
                path: "/tmp/moltd new".into(),
                force: true,
            })),
        ];
        for request in requests {
            assert_eq!(UpdateRequest::decode(&request.encode()), Some(Ok(request)));
        }
        for reply in [Ok("a\nb".to_owned()), Err("no".to_owned())] {
            assert_eq!(decode_reply(&encode_reply(&reply)), Some(reply));
        }
        assert_eq!(decode_reply("maybe\n"), None);
        assert_eq!(UpdateRequest::decode("up\t-\t0\tweb"), None);
    }

    #[test]
    fn bad_update_requests_say_why() {
        let cases = [
            ("update\tdance", BadRequest::Unknown("dance".into())),
            ("update\tstatus\tx", BadRequest::Unknown("status\tx".into())),
            (
                "update\tapply\tgently",
                BadRequest::Unknown("apply\tgently".into()),
            ),
            ("update\tunmark", BadRequest::NoTags),
            ("update\tunmark\t", BadRequest::NoTags),
        ];
        for (line, why) in cases {
            assert_eq!(UpdateRequest::decode(line), Some(Err(why)), "{line:?}");
        }
    }

    /// `moltd update --check --force` used to lose `force` on the socket
    /// and `POST /update?check&force` to accept a hand-edited tree and
    /// then only check: the combination is refused where it is built.
    #[test]
    fn check_with_force_is_refused() {
        assert_eq!(
            UpdateRequest::update(true, true),
            Err(BadRequest::CheckWithForce)
        );
        assert_eq!(
            UpdateRequest::decode("update\tcheck\tforce\n"),
            Some(Err(BadRequest::CheckWithForce))
        );
        assert_eq!(UpdateRequest::update(true, false), Ok(UpdateRequest::Check));
        assert_eq!(
            UpdateRequest::update(false, true),
            Ok(UpdateRequest::Apply { force: true })
        );
    }

    #[test]
    fn self_update_lines_round_trip_and_bad_ones_say_why() {
        for force in [false, true] {
            let request = SelfUpdate {
                path: "/app/.moltd/bin/moltd 2".into(),
                force,
            };
            let line = request.encode().unwrap();
            assert_eq!(SelfUpdate::decode(&format!("{line}\n")), Some(Ok(request)));
        }
        let relative = SelfUpdate {
            path: "moltd".into(),
            force: false,
        };
        assert_eq!(relative.encode(), Err(BadSelfUpdate::Path));
        let tab = SelfUpdate {
            path: "/a\tb".into(),
            force: false,
        };
        assert_eq!(tab.encode(), Err(BadSelfUpdate::Path));
        assert_eq!(SelfUpdate::decode("update\tcheck"), None);
        assert_eq!(
            SelfUpdate::decode("self-update\tmoltd\t0"),
            Some(Err(BadSelfUpdate::Path))
        );
        for bad in [
            "self-update\t/m",
            "self-update\t/m\tyes",
            "self-update\t/m\t1\tx",
        ] {
            assert_eq!(
                SelfUpdate::decode(bad),
                Some(Err(BadSelfUpdate::Fields)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn phases_round_trip_through_their_words() {
        for phase in Phase::ALL {
            assert_eq!(Phase::parse(phase.word()), Some(phase));
        }
        assert_eq!(Phase::parse("asleep"), None);
    }
}
