//! Who the update agent runs as and how much memory it may map
//! (`MOLTD_AGENT_USER`, `MOLTD_AGENT_MEMORY`), and handing the parts of the
//! app dir that moltd writes to that user.
//!
//! Why a user of its own: the agent parses everything that comes from the
//! network. As root, a flaw in that code would own the container; as the
//! owner of the app dir it can at worst spoil what it may write anyway. So
//! when moltd runs as root the agent gives up root wherever the image
//! allows it: to the configured user, or else to the owner of the app dir
//! when that is not root and owns what moltd writes in it. Otherwise it
//! stays root and says why once at start.
//!
//! Users are looked up in `/etc/passwd` by reading the file: no NSS, so a
//! static binary in a scratch image behaves like a dynamic one.

use crate::cli::Env;
use crate::update::config::parse_size;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The address space the agent may map unless `MOLTD_AGENT_MEMORY` says
/// otherwise: far above what it needs (BENCHMARKS.md), far below what a
/// runaway parser would take from the services.
pub const DEFAULT_MEMORY: u64 = 1024 * 1024 * 1024;

/// The agent's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// `MOLTD_AGENT_USER`.
    pub user: Option<UserSpec>,
    /// `MOLTD_AGENT_MEMORY`: the `RLIMIT_AS` in bytes; `None` is unlimited.
    pub memory: Option<u64>,
}

/// A user as `MOLTD_AGENT_USER` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserSpec {
    /// `uid` or `uid:gid` (the group defaults to the uid).
    Id { uid: u32, gid: Option<u32> },
    /// A name from `/etc/passwd`, with its primary group.
    Name(String),
}

/// A bad setting, or a user that cannot be found.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bad {var} {value:?}: expected {expected}")]
    Bad {
        var: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("MOLTD_AGENT_USER {0:?}: no such user in /etc/passwd")]
    UnknownUser(String),
    #[error("MOLTD_AGENT_USER {name:?}: cannot read /etc/passwd")]
    Passwd {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot hand {} to uid {uid}", .path.display())]
    HandOver {
        path: std::path::PathBuf,
        uid: u32,
        #[source]
        source: std::io::Error,
    },
}

impl Settings {
    /// Reads and checks the settings (a parameter, so tests need no process
    /// environment).
    pub fn from_env(env: Env) -> Result<Settings, Error> {
        let var = |name: &str| {
            env(name)
                .map(|v| v.to_string_lossy().trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let user = var("MOLTD_AGENT_USER")
            .map(|text| parse_user(&text))
            .transpose()?;
        let memory = match var("MOLTD_AGENT_MEMORY") {
            None => Some(DEFAULT_MEMORY),
            Some(text) if matches!(text.as_str(), "0" | "unlimited") => None,
            Some(text) => Some(parse_size(&text).ok_or(Error::Bad {
                var: "MOLTD_AGENT_MEMORY",
                value: text,
                expected: "a size such as 512M or 1G, or unlimited",
            })?),
        };
        Ok(Settings { user, memory })
    }
}

fn parse_user(text: &str) -> Result<UserSpec, Error> {
    let bad = || Error::Bad {
        var: "MOLTD_AGENT_USER",
        value: text.to_owned(),
        expected: "a user name, a uid, or uid:gid",
    };
    if !text.starts_with(|c: char| c.is_ascii_digit()) {
        let valid = text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        return valid
            .then(|| UserSpec::Name(text.to_owned()))
            .ok_or_else(bad);
    }
    let (uid, gid) = match text.split_once(':') {
        Some((uid, gid)) => (uid, Some(gid)),
        None => (text, None),
    };
    Ok(UserSpec::Id {
        uid: uid.parse().map_err(|_| bad())?,
        gid: gid.map(|g| g.parse().map_err(|_| bad())).transpose()?,
    })
}

/// Who the agent becomes, and why (said once at start).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    /// `(uid, gid)` to switch to; `None`: stay who moltd is.
    pub user: Option<(u32, u32)>,
    /// Whether the app dir's moltd-owned parts must be handed to the user
    /// first ([`hand_over`]): only for a configured user.
    pub hand_over: bool,
    pub why: String,
}

/// Decides who the agent runs as. `passwd` reads `/etc/passwd` (a
/// parameter for the tests).
pub fn choose_user(
    settings: &Settings,
    app_dir: Option<&Path>,
    root: bool,
    passwd: impl FnOnce() -> std::io::Result<String>,
) -> Result<Choice, Error> {
    let stay = |why: String| Choice {
        user: None,
        hand_over: false,
        why,
    };
    if !root {
        let why = match settings.user {
            Some(_) => "as moltd's own user: MOLTD_AGENT_USER needs moltd to run as root",
            None => "as moltd's own user",
        };
        return Ok(stay(why.into()));
    }
    if let Some(spec) = &settings.user {
        let (uid, gid) = match spec {
            UserSpec::Id { uid, gid } => (*uid, gid.unwrap_or(*uid)),
            UserSpec::Name(name) => {
                let text = passwd().map_err(|source| Error::Passwd {
                    name: name.clone(),
                    source,
                })?;
                find_user(&text, name).ok_or_else(|| Error::UnknownUser(name.clone()))?
            }
        };
        return Ok(Choice {
            user: (uid != 0).then_some((uid, gid)),
            hand_over: uid != 0,
            why: format!("as uid {uid}, gid {gid} (MOLTD_AGENT_USER)"),
        });
    }
    let root_why = "as root: set MOLTD_AGENT_USER, or give the app dir to a user other than root";
    let Some(dir) = app_dir else {
        return Ok(stay(root_why.into()));
    };
    let Ok(meta) = std::fs::metadata(dir) else {
        return Ok(stay(root_why.into()));
    };
    // Everything moltd writes must be the owner's already, or the agent
    // could not prune, stage or switch as that user.
    let owned = ["releases", ".moltd"].iter().all(|part| {
        std::fs::symlink_metadata(dir.join(part)).map_or(true, |m| m.uid() == meta.uid())
    });
    if meta.uid() == 0 || !owned {
        return Ok(stay(root_why.into()));
    }
    Ok(Choice {
        user: Some((meta.uid(), meta.gid())),
        hand_over: false,
        why: format!(
            "as uid {}, gid {}, the owner of {}",
            meta.uid(),
            meta.gid(),
            dir.display()
        ),
    })
}

/// The uid and primary gid of `name` in the text of `/etc/passwd`.
fn find_user(passwd: &str, name: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let _password = fields.next()?;
        Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
    })
}

/// Gives `uid:gid` what the agent writes in `app_dir`: the folder itself
/// (where `current` is switched), `current`, and everything under
/// `releases/` and `.moltd/`. Symlinks are changed themselves, never
/// followed; entries already owned are left alone.
pub fn hand_over(app_dir: &Path, uid: u32, gid: u32) -> Result<(), Error> {
    let give = |path: &Path| -> Result<(), Error> {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(handing(path, uid, source)),
        };
        if (meta.uid(), meta.gid()) != (uid, gid) {
            std::os::unix::fs::lchown(path, Some(uid), Some(gid))
                .map_err(|source| handing(path, uid, source))?;
        }
        Ok(())
    };
    give(app_dir)?;
    give(&app_dir.join("current"))?;
    for part in ["releases", ".moltd"] {
        let mut stack = vec![app_dir.join(part)];
        while let Some(path) = stack.pop() {
            give(&path)?;
            if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                let entries =
                    std::fs::read_dir(&path).map_err(|source| handing(&path, uid, source))?;
                stack.extend(entries.flatten().map(|entry| entry.path()));
            }
        }
    }
    Ok(())
}

fn handing(path: &Path, uid: u32, source: std::io::Error) -> Error {
    Error::HandOver {
        path: path.to_owned(),
        uid,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::os::unix::fs::PermissionsExt;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, Error> {
        let env = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        };
        Settings::from_env(&env)
    }

    #[test]
    fn settings_from_the_environment() {
        type Row<'a> = (&'a [(&'a str, &'a str)], Option<UserSpec>, Option<u64>);
        let table: &[Row] = &[
            (&[], None, Some(DEFAULT_MEMORY)),
            (&[("MOLTD_AGENT_MEMORY", "256M")], None, Some(256 << 20)),
            (&[("MOLTD_AGENT_MEMORY", "unlimited")], None, None),
            (&[("MOLTD_AGENT_MEMORY", "0")], None, None),
            (
                &[("MOLTD_AGENT_USER", "1000")],
                Some(UserSpec::Id {
                    uid: 1000,
                    gid: None,
                }),
                Some(DEFAULT_MEMORY),
            ),
            (
                &[("MOLTD_AGENT_USER", "1000:2000")],
                Some(UserSpec::Id {
                    uid: 1000,
                    gid: Some(2000),
                }),
                Some(DEFAULT_MEMORY),
            ),
            (
                &[("MOLTD_AGENT_USER", "nobody")],
                Some(UserSpec::Name("nobody".into())),
                Some(DEFAULT_MEMORY),
            ),
        ];
        for (pairs, user, memory) in table {
            let parsed = settings(pairs).unwrap();
            assert_eq!((&parsed.user, parsed.memory), (user, *memory), "{pairs:?}");
        }
        for (var, value) in [
            ("MOLTD_AGENT_MEMORY", "lots"),
            ("MOLTD_AGENT_MEMORY", "-1"),
            ("MOLTD_AGENT_USER", "1000:"),
            ("MOLTD_AGENT_USER", "10x"),
            ("MOLTD_AGENT_USER", "a b"),
            ("MOLTD_AGENT_USER", "99999999999"),
        ] {
            let err = settings(&[(var, value)]).unwrap_err();
            assert!(
                matches!(err, Error::Bad { var: v, .. } if v == var),
                "{err}"
            );
        }
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                          nobody:x:65534:65534:nobody:/:/bin/false\n\
                          app:x:1000:1001::/home/app:/bin/sh\n";

    fn choose(user: Option<UserSpec>, dir: Option<&Path>, root: bool) -> Result<Choice, Error> {
        let settings = Settings { user, memory: None };
        choose_user(&settings, dir, root, || Ok(PASSWD.into()))
    }

    #[test]
    fn configured_users() {
        let name = |n: &str| Some(UserSpec::Name(n.into()));
        let choice = choose(name("app"), None, true).unwrap();
        assert_eq!((choice.user, choice.hand_over), (Some((1000, 1001)), true));
        let id = Some(UserSpec::Id { uid: 7, gid: None });
        assert_eq!(choose(id.clone(), None, true).unwrap().user, Some((7, 7)));
        // Not root: nobody to switch from; the reason says so.
        let choice = choose(id, None, false).unwrap();
        assert_eq!(choice.user, None);
        assert!(
            choice.why.contains("needs moltd to run as root"),
            "{}",
            choice.why
        );
        assert!(matches!(
            choose(name("ghost"), None, true),
            Err(Error::UnknownUser(_))
        ));
        let root = choose(name("root"), None, true).unwrap();
        assert_eq!((root.user, root.hand_over), (None, false));
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("moltd-confine-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("releases/v1/bin")).unwrap();
        std::fs::create_dir_all(dir.join(".moltd")).unwrap();
        std::fs::write(dir.join("releases/v1/bin/app"), "x").unwrap();
        std::os::unix::fs::symlink("releases/v1", dir.join("current")).unwrap();
        dir
    }

    #[test]
    fn the_app_dir_owner_when_it_owns_what_moltd_writes() {
        if !crate::sys::confine::is_root() {
            return;
        }
        let dir = temp_dir("owner");
        // Root's: the agent stays root and says how to change that.
        let choice = choose(None, Some(&dir), true).unwrap();
        assert_eq!(choice.user, None);
        assert!(choice.why.contains("MOLTD_AGENT_USER"), "{}", choice.why);
        // The folder is another user's but releases/ is still root's.
        std::os::unix::fs::chown(&dir, Some(4242), Some(4343)).unwrap();
        assert_eq!(choose(None, Some(&dir), true).unwrap().user, None);
        hand_over(&dir, 4242, 4343).unwrap();
        let choice = choose(None, Some(&dir), true).unwrap();
        assert_eq!((choice.user, choice.hand_over), (Some((4242, 4343)), false));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hand_over_changes_links_not_their_targets() {
        if !crate::sys::confine::is_root() {
            return;
        }
        let dir = temp_dir("links");
        let outside = dir.with_extension("outside");
        std::fs::write(&outside, "keep").unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("releases/v1/escape")).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        hand_over(&dir, 4242, 4343).unwrap();
        for path in [
            "",
            "current",
            "releases/v1/bin/app",
            "releases/v1/escape",
            ".moltd",
        ] {
            let meta = std::fs::symlink_metadata(dir.join(path)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (4242, 4343), "{path}");
        }
        assert_eq!(std::fs::metadata(&outside).unwrap().uid(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_file(&outside).unwrap();
    }

    #[test]
    fn passwd_lookup() {
        assert_eq!(find_user(PASSWD, "nobody"), Some((65534, 65534)));
        assert_eq!(find_user(PASSWD, "app"), Some((1000, 1001)));
        assert_eq!(find_user(PASSWD, "no"), None);
        assert_eq!(find_user("broken:x:y:z\n", "broken"), None);
    }
}
