//! moltd's secrets: which variables hold them, reading a token from a file
//! instead (`MOLTD_TOKEN_FILE`, `MOLTD_API_TOKEN_FILE`: Kubernetes mounts
//! secrets as files), and the environment children get without them.
//!
//! Why withhold them: services and hooks run code moltd does not control. A
//! release token can publish releases, the API token can trigger updates and
//! rollbacks, and a webhook URL usually carries its own credential; none of
//! it is the app's business, and `/proc/<pid>/environ` or a crash report
//! would show it. moltd reads them once at start and keeps them in memory;
//! whenever it supervises (service mode, combined mode, a command with an
//! update source) every child gets the environment without them, unless the
//! operator names one in `MOLTD_PASS_ENV`. Plain `moltd -- CMD` without an
//! update source reads none of them, and tini and dumb-init have no secrets:
//! those pass the environment on untouched.

use crate::Env;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// The variables children never see unless passed on.
pub const WITHHELD: &[&str] = &[
    "GITHUB_TOKEN",
    "GH_TOKEN",
    "MOLTD_TOKEN",
    "MOLTD_TOKEN_FILE",
    "MOLTD_API_TOKEN",
    "MOLTD_API_TOKEN_FILE",
    "MOLTD_WEBHOOK",
];

/// Names the variables to hand to children after all.
const PASS_ENV: &str = "MOLTD_PASS_ENV";

/// A secret that cannot be read, or a bad `MOLTD_PASS_ENV`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("both {var} and {var}_FILE are set: set only one")]
    Both { var: &'static str },
    #[error("cannot read {var}_FILE {}", .path.display())]
    Unreadable {
        var: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{var}_FILE {} is empty", .path.display())]
    Empty { var: &'static str, path: PathBuf },
    #[error("bad MOLTD_PASS_ENV {name:?}: expected some of {}, separated by commas", WITHHELD.join(", "))]
    NotWithheld { name: String },
}

/// `var`, or the contents of the file `var_FILE` names (read now, once,
/// surrounding white space such as the trailing newline trimmed). Setting
/// both is an error rather than a precedence rule: one of them would be a
/// stale leftover the operator believes in.
pub fn read(env: Env, var: &'static str) -> Result<Option<String>, Error> {
    let given = |name: &str| env(name).filter(|value| !value.is_empty());
    let file_var = format!("{var}_FILE");
    match (given(var), given(&file_var)) {
        (Some(_), Some(_)) => Err(Error::Both { var }),
        (Some(value), None) => {
            Ok(Some(value.to_string_lossy().trim().to_owned()).filter(|value| !value.is_empty()))
        }
        (None, Some(path)) => {
            let path = PathBuf::from(path);
            let text = std::fs::read_to_string(&path).map_err(|source| Error::Unreadable {
                var,
                path: path.clone(),
                source,
            })?;
            match text.trim() {
                "" => Err(Error::Empty { var, path }),
                token => Ok(Some(token.to_owned())),
            }
        }
        (None, None) => Ok(None),
    }
}

/// The release API's token and the variable it came from: `MOLTD_TOKEN`
/// (or its `_FILE`), else the seed's `GITHUB_TOKEN`, else `GH_TOKEN`.
pub fn release_token(env: Env) -> Result<Option<(String, &'static str)>, Error> {
    if let Some(token) = read(env, "MOLTD_TOKEN")? {
        let from_file = env("MOLTD_TOKEN").is_none_or(|v| v.is_empty());
        let origin = if from_file {
            "MOLTD_TOKEN_FILE"
        } else {
            "MOLTD_TOKEN"
        };
        return Ok(Some((token, origin)));
    }
    Ok(["GITHUB_TOKEN", "GH_TOKEN"].into_iter().find_map(|name| {
        let value = env(name)?.to_string_lossy().trim().to_owned();
        (!value.is_empty()).then_some((value, name))
    }))
}

/// The names of [`WITHHELD`] that `MOLTD_PASS_ENV` does not pass on. A name
/// outside the list is an error: it would be passed anyway, so it is most
/// likely a typo that leaves the intended variable withheld.
pub fn withheld(env: Env) -> Result<Vec<&'static str>, Error> {
    let passed = env(PASS_ENV).unwrap_or_default();
    let passed: Vec<String> = passed
        .to_string_lossy()
        .split([',', ' '])
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect();
    if let Some(name) = passed.iter().find(|n| !WITHHELD.contains(&n.as_str())) {
        return Err(Error::NotWithheld { name: name.clone() });
    }
    Ok(WITHHELD
        .iter()
        .copied()
        .filter(|name| !passed.iter().any(|p| p == name))
        .collect())
}

/// `vars` (the process environment) without the `withheld` names.
pub fn without(
    vars: impl Iterator<Item = (OsString, OsString)>,
    withheld: &[&str],
) -> Vec<(OsString, OsString)> {
    vars.filter(|(name, _)| !withheld.iter().any(|w| w.as_bytes() == name.as_bytes()))
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An environment of `pairs`, for tests of code that reads one.
    pub(crate) fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + use<> {
        let pairs: Vec<(String, OsString)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn variable_or_file() {
        let dir = std::env::temp_dir().join(format!("moltd-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "from-file\n").unwrap();
        let empty = dir.join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let file = file.to_str().unwrap();
        let empty = empty.to_str().unwrap();
        let read_with = |pairs: &[(&str, &str)]| read(&env_of(pairs), "MOLTD_TOKEN");

        assert_eq!(read_with(&[]).unwrap(), None);
        assert_eq!(
            read_with(&[("MOLTD_TOKEN", " t0k ")]).unwrap().as_deref(),
            Some("t0k")
        );
        assert_eq!(
            read_with(&[("MOLTD_TOKEN_FILE", file)]).unwrap().as_deref(),
            Some("from-file")
        );
        let both = read_with(&[("MOLTD_TOKEN", "t"), ("MOLTD_TOKEN_FILE", file)]);
        assert!(matches!(both, Err(Error::Both { .. })), "{both:?}");
        let missing = read_with(&[("MOLTD_TOKEN_FILE", "/nonexistent/token")]).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "cannot read MOLTD_TOKEN_FILE /nonexistent/token"
        );
        assert!(std::error::Error::source(&missing).is_some());
        let blank = read_with(&[("MOLTD_TOKEN_FILE", empty)]).unwrap_err();
        assert!(matches!(blank, Error::Empty { .. }), "{blank:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pass_env_keeps_named_secrets() {
        assert_eq!(withheld(&env_of(&[])).unwrap(), WITHHELD);
        let kept = withheld(&env_of(&[(PASS_ENV, "GITHUB_TOKEN, MOLTD_WEBHOOK")])).unwrap();
        assert!(!kept.contains(&"GITHUB_TOKEN") && !kept.contains(&"MOLTD_WEBHOOK"));
        assert_eq!(kept.len(), WITHHELD.len() - 2);
        let typo = withheld(&env_of(&[(PASS_ENV, "github_token")])).unwrap_err();
        assert!(typo.to_string().contains("github_token"), "{typo}");
    }

    #[test]
    fn without_drops_only_withheld_names() {
        let vars = [("PATH", "/bin"), ("GH_TOKEN", "x"), ("XGH_TOKEN", "y")]
            .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let left = without(vars.into_iter(), &["GH_TOKEN"]);
        let names: Vec<_> = left.iter().map(|(k, _)| k.to_str().unwrap()).collect();
        assert_eq!(names, ["PATH", "XGH_TOKEN"]);
    }
}
