//! Which program moltd is being: itself, or a drop-in for tini or dumb-init.
//!
//! The name moltd is invoked under decides its option syntax, its defaults and
//! the wording of its messages, so that a symlink named `tini` or `dumb-init`
//! behaves like the program it replaces, down to the lines users grep for.

use std::ffi::OsStr;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Personality {
    Moltd,
    Tini,
    DumbInit,
}

impl Personality {
    /// Picks the personality from `argv[0]`'s file name.
    pub fn from_argv0(argv0: &OsStr) -> Personality {
        match Path::new(argv0).file_name().and_then(OsStr::to_str) {
            Some("tini" | "tini-static") => Personality::Tini,
            Some("dumb-init") => Personality::DumbInit,
            _ => Personality::Moltd,
        }
    }

    /// The program name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Personality::Moltd => "moltd",
            Personality::Tini => "tini",
            Personality::DumbInit => "dumb-init",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn personality_follows_the_invoked_name() {
        let table = [
            ("moltd", Personality::Moltd),
            ("/usr/local/bin/moltd", Personality::Moltd),
            ("/sbin/tini", Personality::Tini),
            ("tini-static", Personality::Tini),
            ("/usr/bin/dumb-init", Personality::DumbInit),
            ("something-else", Personality::Moltd),
        ];
        for (argv0, expected) in table {
            assert_eq!(
                Personality::from_argv0(OsStr::new(argv0)),
                expected,
                "{argv0}"
            );
        }
    }
}
