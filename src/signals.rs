//! Signal names and numbers, and parsing them from the command line.
//!
//! Signals are plain `i32` numbers everywhere in moltd, because real-time
//! signals have no name of their own and must be forwarded all the same.

use nix::libc;

/// Names of the standard signals, without the `SIG` prefix.
const NAMES: [(&str, i32); 31] = [
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

/// The highest signal number Linux knows (the last real-time signal).
pub const MAX_SIGNAL: i32 = 64;

/// Parses a signal given by name (`TERM`, `SIGTERM`, any case) or number.
pub fn parse(text: &str) -> Option<i32> {
    if let Ok(number) = text.parse::<i32>() {
        return (1..=MAX_SIGNAL).contains(&number).then_some(number);
    }
    let upper = text.to_ascii_uppercase();
    by_name(upper.strip_prefix("SIG").unwrap_or(&upper))
}

/// The number of a standard signal named exactly as in [`NAMES`]: upper
/// case, no `SIG` prefix.
pub fn by_name(bare: &str) -> Option<i32> {
    NAMES
        .iter()
        .find(|(name, _)| *name == bare)
        .map(|&(_, number)| number)
}

/// The conventional name of a signal (`SIGTERM`), or its number for signals
/// without one.
pub fn name(number: i32) -> String {
    match NAMES.iter().find(|&&(_, n)| n == number) {
        Some((name, _)) => format!("SIG{name}"),
        None => format!("signal {number}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_and_without_prefix_and_numbers() {
        let cases = [
            ("TERM", Some(15)),
            ("SIGTERM", Some(15)),
            ("sigquit", Some(3)),
            ("9", Some(9)),
            ("64", Some(64)),
            ("0", None),
            ("65", None),
            ("-1", None),
            ("SIGFOO", None),
            ("", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text), expected, "parse({text:?})");
        }
    }

    #[test]
    fn names_round_trip() {
        for number in 1..=31 {
            assert_eq!(parse(&name(number)), Some(number));
        }
        assert_eq!(name(40), "signal 40");
    }
}
