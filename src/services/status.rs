//! What the supervisor reports about a service, and the two ways it is
//! shown: runit's one-line `sv status` format, which scripts parse, and the
//! `moltd status` table, which people read.

pub use crate::control::Phase;
use crate::signals;
use crate::sys::reap::ExitStatus;
use std::fmt::Write as _;
use std::path::PathBuf;

/// runit's three states, the first word of an `sv status` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Run,
    Down,
    Finish,
}

impl State {
    /// runit's state of a program in `phase`.
    pub fn of(phase: Phase) -> State {
        match phase {
            Phase::Running | Phase::Stopping => State::Run,
            Phase::Finishing => State::Finish,
            Phase::Backoff | Phase::CrashLoop | Phase::Down => State::Down,
        }
    }
}

/// Which way the supervisor is trying to move a program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    Up,
    Down,
}

/// One program (`run` or `log/run`) at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramStatus {
    pub phase: Phase,
    /// `run`'s pid while it runs, `finish`'s while that runs.
    pub pid: Option<i32>,
    /// Seconds in the current state.
    pub secs: u64,
    /// No `down` file.
    pub normally_up: bool,
    pub want: Want,
    /// Running, and said it is ready (or its check passed, or it stayed up
    /// its grace period).
    pub ready: bool,
    pub paused: bool,
    pub got_term: bool,
    /// How many times `run` was started again after its first start.
    pub restarts: u32,
    pub last_exit: Option<ExitStatus>,
}

/// A service and its `log/` sub-service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub name: String,
    pub main: ProgramStatus,
    pub log: Option<ProgramStatus>,
    /// The program's folder (`.../web`, or `.../web/log` for `web/log`), so
    /// that `sv` can run its `./check` without guessing where it lives.
    pub dir: Option<PathBuf>,
}

impl ProgramStatus {
    /// runit's words for one program: `run: NAME: (pid 12) 3s, want down`.
    fn sv_words(&self, name: &str) -> String {
        let state = State::of(self.phase);
        let mut text = match state {
            State::Run => "run",
            State::Down => "down",
            State::Finish => "finish",
        }
        .to_owned();
        let _ = write!(text, ": {name}: ");
        if let Some(pid) = self.pid.filter(|_| state != State::Down) {
            let _ = write!(text, "(pid {pid}) ");
        }
        let _ = write!(text, "{}s", self.secs);
        let running = state != State::Down;
        if running && !self.normally_up {
            text.push_str(", normally down");
        }
        if !running && self.normally_up {
            text.push_str(", normally up");
        }
        if running && self.paused {
            text.push_str(", paused");
        }
        if !running && self.want == Want::Up {
            text.push_str(", want up");
        }
        if running && self.want == Want::Down {
            text.push_str(", want down");
        }
        if running && self.got_term {
            text.push_str(", got TERM");
        }
        text
    }
}

impl Status {
    /// The line `sv status` prints, the log sub-service after a `; `.
    pub fn sv_line(&self, shown_as: &str) -> String {
        let mut line = self.main.sv_words(shown_as);
        if let Some(log) = &self.log {
            let _ = write!(line, "; {}", log.sv_words("log"));
        }
        line
    }

    /// The status of `web` or of `web/log`, as `sv` names them.
    pub fn program(&self, log: bool) -> Option<&ProgramStatus> {
        if log {
            self.log.as_ref()
        } else {
            Some(&self.main)
        }
    }

    /// One line on the wire: fields separated by tabs. Only the folder, last,
    /// may hold tabs; one that holds a newline or is not UTF-8 is left out.
    pub fn encode(&self) -> String {
        let mut line = self.name.clone();
        for program in std::iter::once(Some(&self.main)).chain([self.log.as_ref()]) {
            line.push('\t');
            match program {
                None => line.push('-'),
                Some(p) => {
                    let _ = write!(
                        line,
                        "{} {} {} {} {} {} {} {} {} {}",
                        p.phase.word(),
                        p.pid.unwrap_or(0),
                        p.secs,
                        u8::from(p.normally_up),
                        if p.want == Want::Up { "up" } else { "down" },
                        u8::from(p.paused),
                        u8::from(p.got_term),
                        p.restarts,
                        encode_exit(p.last_exit),
                        u8::from(p.ready),
                    );
                }
            }
        }
        line.push('\t');
        if let Some(dir) = self.dir.as_ref().and_then(|d| d.to_str()) {
            if !dir.contains('\n') {
                line.push_str(dir);
            }
        }
        line
    }

    /// Reads what [`Status::encode`] wrote.
    pub fn decode(line: &str) -> Option<Status> {
        let mut fields = line.splitn(4, '\t');
        let name = fields.next()?.to_owned();
        let main = decode_program(fields.next()?)?;
        let log = match fields.next()? {
            "-" => None,
            text => Some(decode_program(text)?),
        };
        let dir = fields.next()?;
        Some(Status {
            name,
            main,
            log,
            dir: (!dir.is_empty()).then(|| PathBuf::from(dir)),
        })
    }
}

fn encode_exit(exit: Option<ExitStatus>) -> String {
    match exit {
        None => "-".into(),
        Some(ExitStatus::Exited(code)) => format!("e{code}"),
        Some(ExitStatus::Signaled(signal)) => format!("s{signal}"),
    }
}

fn decode_program(text: &str) -> Option<ProgramStatus> {
    let f: Vec<&str> = text.split(' ').collect();
    let [
        phase,
        pid,
        secs,
        normally_up,
        want,
        paused,
        got_term,
        restarts,
        exit,
        ready,
    ] = f[..]
    else {
        return None;
    };
    let flag = |t: &str| t == "1";
    let last_exit = match exit.split_at_checked(1)? {
        ("-", "") => None,
        ("e", code) => Some(ExitStatus::Exited(code.parse().ok()?)),
        ("s", signal) => Some(ExitStatus::Signaled(signal.parse().ok()?)),
        _ => return None,
    };
    Some(ProgramStatus {
        phase: Phase::parse(phase)?,
        pid: Some(pid.parse().ok()?).filter(|&p| p != 0),
        secs: secs.parse().ok()?,
        normally_up: flag(normally_up),
        want: if want == "up" { Want::Up } else { Want::Down },
        ready: flag(ready),
        paused: flag(paused),
        got_term: flag(got_term),
        restarts: restarts.parse().ok()?,
        last_exit,
    })
}

/// The `moltd status` table: one row per program, log sub-services as
/// `NAME/log`.
pub fn table(statuses: &[Status]) -> String {
    let mut rows = vec![[
        "SERVICE".to_owned(),
        "STATE".into(),
        "READY".into(),
        "PID".into(),
        "UPTIME".into(),
        "RESTARTS".into(),
        "LAST EXIT".into(),
    ]];
    for status in statuses {
        let log_name = format!("{}/log", status.name);
        let programs = std::iter::once((status.name.as_str(), &status.main))
            .chain(status.log.iter().map(|log| (log_name.as_str(), log)));
        for (name, p) in programs {
            let pid = p.pid.filter(|_| State::of(p.phase) != State::Down);
            rows.push([
                name.to_owned(),
                p.phase.word().to_owned(),
                match (State::of(p.phase), p.ready) {
                    (State::Down, _) => "-",
                    (_, true) => "yes",
                    (_, false) => "no",
                }
                .to_owned(),
                pid.map_or("-".into(), |p| p.to_string()),
                format!("{}s", p.secs),
                p.restarts.to_string(),
                match p.last_exit {
                    None => "-".into(),
                    Some(ExitStatus::Exited(code)) => format!("exit {code}"),
                    Some(ExitStatus::Signaled(signal)) => signals::name(signal),
                },
            ]);
        }
    }
    let mut widths = [0; 7];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut text = String::new();
    for row in rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(widths) {
            let _ = write!(line, "{cell:width$}  ");
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn program(phase: Phase, pid: Option<i32>, secs: u64) -> ProgramStatus {
        ProgramStatus {
            phase,
            pid,
            secs,
            normally_up: true,
            want: Want::Up,
            ready: phase == Phase::Running,
            paused: false,
            got_term: false,
            restarts: 0,
            last_exit: None,
        }
    }

    #[test]
    fn sv_lines_match_runit() {
        let run = program(Phase::Running, Some(123), 45);
        let with_log = Status {
            name: "web".into(),
            main: run.clone(),
            log: Some(program(Phase::Running, Some(124), 45)),
            dir: Some("/srv/a\tservice/web".into()),
        };
        let down = Status {
            name: "web".into(),
            main: ProgramStatus {
                want: Want::Down,
                ..program(Phase::Down, None, 3)
            },
            log: None,
            dir: None,
        };
        let stopping = Status {
            name: "db".into(),
            main: ProgramStatus {
                normally_up: false,
                want: Want::Down,
                got_term: true,
                paused: true,
                ..program(Phase::Stopping, Some(9), 0)
            },
            log: None,
            dir: None,
        };
        let backoff = Status {
            name: "x".into(),
            main: program(Phase::CrashLoop, Some(5), 2),
            log: None,
            dir: None,
        };
        let finishing = Status {
            name: "x".into(),
            main: program(Phase::Finishing, Some(7), 1),
            log: None,
            dir: None,
        };
        let table = [
            (
                &with_log,
                "run: web: (pid 123) 45s; run: log: (pid 124) 45s",
            ),
            (&down, "down: web: 3s, normally up"),
            (
                &stopping,
                "run: db: (pid 9) 0s, normally down, paused, want down, got TERM",
            ),
            (&backoff, "down: x: 2s, normally up, want up"),
            (&finishing, "finish: x: (pid 7) 1s"),
        ];
        for (status, line) in table {
            assert_eq!(status.sv_line(&status.name), line);
            assert_eq!(Status::decode(&status.encode()).as_ref(), Some(status));
        }
    }

    #[test]
    fn wire_round_trips_exits() {
        for exit in [
            None,
            Some(ExitStatus::Exited(3)),
            Some(ExitStatus::Signaled(9)),
        ] {
            let status = Status {
                name: "a b".into(),
                main: ProgramStatus {
                    last_exit: exit,
                    restarts: 7,
                    ..program(Phase::Down, None, 0)
                },
                log: None,
                dir: None,
            };
            assert_eq!(Status::decode(&status.encode()), Some(status));
        }
        assert_eq!(Status::decode("x\tgarbage\t-"), None);
    }

    #[test]
    fn table_has_a_row_per_program() {
        let status = Status {
            name: "web".into(),
            main: ProgramStatus {
                restarts: 2,
                last_exit: Some(ExitStatus::Exited(1)),
                ..program(Phase::Running, Some(10), 5)
            },
            log: Some(program(Phase::Running, Some(11), 5)),
            dir: None,
        };
        let text = table(&[status]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("SERVICE"));
        assert!(lines[1].starts_with("web "));
        assert!(lines[0].contains("READY"));
        assert!(lines[1].contains(" yes "));
        assert!(lines[1].contains("exit 1"));
        assert!(lines[2].starts_with("web/log"));
    }
}
