//! Which release, and which of its assets.
//!
//! Pure functions over the parsed list, so every rule is table-tested:
//!
//! * A tag is `MOLTD_TAG_PREFIX`, then an optional `v`, then semver. Tags that
//!   do not parse belong to something else and are ignored.
//! * Drafts, releases marked bad, and prereleases (unless allowed) are out.
//! * The newest release meeting `MOLTD_VERSION` wins, if it is newer than the
//!   current one. An exact pin (`=1.2.3`) may also go back to an older one.
//! * Assets: `MOLTD_ASSET` (a glob with `{version}`, `{os}`, `{arch}`), else
//!   the one `.tar.gz`/`.tgz` naming Linux and this machine's architecture.

use super::config::Policy;
use super::release::{Asset, Release};
use semver::{Op, Version};
use std::collections::BTreeSet;

/// A release that passed the version policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub version: Version,
    pub release: Release,
}

/// The version a tag stands for under `prefix`, if it is one of ours.
pub fn tag_version(tag: &str, prefix: &str) -> Option<Version> {
    let rest = tag.strip_prefix(prefix)?;
    let rest = rest.strip_prefix(['v', 'V']).unwrap_or(rest);
    Version::parse(rest).ok()
}

/// An exact pin: `=1.2.3` with all three numbers.
pub fn pinned(policy: &Policy) -> bool {
    matches!(
        policy.requirement.comparators.as_slice(),
        [c] if c.op == Op::Exact && c.minor.is_some() && c.patch.is_some()
    )
}

fn eligible(policy: &Policy, version: &Version, release: &Release) -> bool {
    let is_pre = release.prerelease || !version.pre.is_empty();
    if is_pre && !policy.prerelease {
        return false;
    }
    if policy.requirement.matches(version) {
        return true;
    }
    // semver only lets a prerelease match a requirement naming the same
    // major.minor.patch; once prereleases are wanted, judge them by their
    // release version (1.5.0-rc.1 meets ^1.4).
    is_pre && {
        let mut base = version.clone();
        base.pre = semver::Prerelease::EMPTY;
        policy.requirement.matches(&base)
    }
}

/// The version of `release` if the policy allows it (not a draft, a tag of
/// ours, a version it accepts), whether or not it is marked bad.
fn allowed_version(policy: &Policy, release: &Release) -> Option<Version> {
    let version = tag_version(&release.tag, &policy.tag_prefix)?;
    (!release.draft && eligible(policy, &version, release)).then_some(version)
}

/// The oldest version the policy can move to from the installed releases:
/// `current`, or `previous` if older (a rollback to it makes the releases
/// in between newer than current again). None when anything may be chosen:
/// nothing installed, a tag not of ours, or an exact pin (which goes back).
pub fn floor(policy: &Policy, current: Option<&str>, previous: Option<&str>) -> Option<Version> {
    if pinned(policy) {
        return None;
    }
    let current = tag_version(current?, &policy.tag_prefix)?;
    let previous = previous.and_then(|tag| tag_version(tag, &policy.tag_prefix));
    Some(previous.map_or(current.clone(), |p| p.min(current)))
}

/// Whether the policy can ever choose `release` with nothing older than
/// `floor` installed: what the state file keeps of the list. Releases marked
/// bad count (a mark can be cleared), and so does the floor itself, the
/// installed release, which tells more pages need not be read.
pub fn can_choose(policy: &Policy, floor: Option<&Version>, release: &Release) -> bool {
    allowed_version(policy, release).is_some_and(|v| floor.is_none_or(|floor| v >= *floor))
}

/// Whether `release` is one the policy allows but older than `floor`: not
/// kept, only noted (see [`super::listing::Listing::lost`]).
pub fn below_floor(policy: &Policy, floor: Option<&Version>, release: &Release) -> bool {
    allowed_version(policy, release).is_some_and(|v| floor.is_some_and(|floor| v < *floor))
}

/// The releases the policy allows (not drafts, not bad), with their versions.
pub fn allowed<'r>(
    releases: &'r [Release],
    policy: &'r Policy,
    bad: &'r BTreeSet<String>,
) -> impl Iterator<Item = (Version, &'r Release)> {
    releases
        .iter()
        .filter(|r| !bad.contains(&r.tag))
        .filter_map(|r| Some((allowed_version(policy, r)?, r)))
}

/// Every release the policy allows, newest first: what a first boot walks
/// down until one installs and passes its health gate.
pub fn ranked(releases: &[Release], policy: &Policy, bad: &BTreeSet<String>) -> Vec<Candidate> {
    let mut all: Vec<Candidate> = allowed(releases, policy, bad)
        .map(|(version, release)| Candidate {
            version,
            release: release.clone(),
        })
        .collect();
    all.sort_by(|a, b| b.version.cmp(&a.version));
    all
}

/// The release to move to, if any: the newest eligible one that is newer
/// than `current` (or, under an exact pin, the pinned one unless current).
pub fn choose(
    releases: &[Release],
    policy: &Policy,
    current: Option<&str>,
    bad: &BTreeSet<String>,
) -> Option<Candidate> {
    let current_version = current.and_then(|tag| tag_version(tag, &policy.tag_prefix));
    let best = allowed(releases, policy, bad).max_by(|(a, _), (b, _)| a.cmp(b))?;
    let (version, release) = best;
    let wanted = match (&current_version, current) {
        (_, Some(tag)) if tag == release.tag => false,
        (Some(cur), _) => version > *cur || pinned(policy),
        (None, _) => true,
    };
    wanted.then(|| Candidate {
        version,
        release: release.clone(),
    })
}

/// The architecture's names as they appear in asset names; the first is
/// used for `{arch}` in messages.
pub fn arch_aliases(arch: &str) -> Vec<&str> {
    match arch {
        "x86_64" | "amd64" => vec!["amd64", "x86_64", "x64"],
        "aarch64" | "arm64" => vec!["arm64", "aarch64"],
        "arm" | "armv7" => vec!["armv7", "arm"],
        other => vec![other],
    }
}

/// How the asset is chosen.
pub enum AssetRule<'a> {
    /// `MOLTD_ASSET`.
    Glob(&'a str),
    /// A `.tar.gz`/`.tgz` naming Linux and the architecture.
    Default,
    /// The manifest names exactly one asset: take it.
    Only,
}

/// A signature or checksum published beside an asset, never one itself.
fn is_beside(name: &str) -> bool {
    [".minisig", ".sig", ".asc", ".sha256", ".sha256sum"]
        .iter()
        .any(|suffix| name.ends_with(suffix))
}

fn is_archive(name: &str) -> bool {
    name.ends_with(".tar.gz") || name.ends_with(".tgz")
}

/// Picks the one asset to install; an error text (listing the candidates)
/// when none or several match.
pub fn pick_asset<'r>(
    release: &'r Release,
    version: &Version,
    rule: &AssetRule,
    arch: &str,
) -> Result<&'r Asset, String> {
    let aliases = arch_aliases(arch);
    let (matches, described): (Vec<&Asset>, String) = match rule {
        AssetRule::Glob(glob) => {
            let patterns: Vec<glob::Pattern> = aliases
                .iter()
                .filter_map(|arch| {
                    let text = glob
                        .replace("{version}", &version.to_string())
                        .replace("{os}", "linux")
                        .replace("{arch}", arch);
                    glob::Pattern::new(&text).ok()
                })
                .collect();
            if patterns.is_empty() {
                return Err(format!("the glob {glob:?} is not valid"));
            }
            // A glob ending in `*` (moltd's own default) would also match
            // the signature and checksum files published beside an asset.
            let matches = release
                .assets
                .iter()
                .filter(|a| patterns.iter().any(|p| p.matches(&a.name)))
                .filter(|a| !is_beside(&a.name))
                .collect();
            (matches, format!("the glob {glob:?}"))
        }
        AssetRule::Default => {
            let matches = release
                .assets
                .iter()
                .filter(|a| {
                    let name = a.name.to_ascii_lowercase();
                    is_archive(&name)
                        && name.contains("linux")
                        && aliases.iter().any(|alias| name.contains(alias))
                })
                .collect();
            (
                matches,
                format!("a .tar.gz or .tgz for linux and {}", aliases[0]),
            )
        }
        AssetRule::Only => (
            release
                .assets
                .iter()
                .filter(|a| !a.name.ends_with(".minisig"))
                .collect(),
            "the manifest's asset".into(),
        ),
    };
    let names = |assets: &mut dyn Iterator<Item = &Asset>| {
        let names: Vec<&str> = assets.map(|a| a.name.as_str()).collect();
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    };
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(format!(
            "no asset matches {described}; assets: {}",
            names(&mut release.assets.iter())
        )),
        several => Err(format!(
            "{} assets match {described}: {}; set MOLTD_ASSET to choose one",
            several.len(),
            names(&mut several.iter().copied())
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(tag: &str, prerelease: bool) -> Release {
        Release {
            tag: tag.into(),
            draft: false,
            prerelease,
            notes: None,
            published: None,
            rollout: None,
            url: None,
            assets: Vec::new(),
        }
    }

    fn policy(prefix: &str, req: &str, prerelease: bool) -> Policy {
        Policy {
            tag_prefix: prefix.into(),
            requirement: semver::VersionReq::parse(req).unwrap(),
            prerelease,
        }
    }

    #[test]
    fn tags() {
        let table = [
            ("v1.2.3", "", Some("1.2.3")),
            ("1.2.3", "", Some("1.2.3")),
            ("V2.0.0-rc.1", "", Some("2.0.0-rc.1")),
            ("backend-v0.8.7", "backend-", Some("0.8.7")),
            ("frontend-v0.9.1", "backend-", None),
            ("backend-v0.8.7", "", None),
            ("latest", "", None),
            ("v1.2", "", None),
        ];
        for (tag, prefix, expected) in table {
            assert_eq!(
                tag_version(tag, prefix),
                expected.map(|v| Version::parse(v).unwrap()),
                "{tag} {prefix}"
            );
        }
    }

    #[test]
    fn choosing_a_release() {
        let mut draft = release("v9.0.0", false);
        draft.draft = true;
        let list = vec![
            release("v1.0.0", false),
            release("v1.4.2", false),
            release("v1.5.0-rc.1", true),
            release("v2.0.0", false),
            release("v2.1.0-beta", false),
            release("backend-v3.0.0", false),
            release("backend-v3.1.0", false),
            release("frontend-v4.0.0", false),
            release("nightly", false),
            draft,
        ];
        let bad: BTreeSet<String> = ["v2.0.0".to_string()].into();
        let none = BTreeSet::new();
        type Row<'a> = (
            Policy,
            Option<&'a str>,
            &'a BTreeSet<String>,
            Option<&'a str>,
        );
        #[rustfmt::skip]
        let table: [Row; 13] = [
            (policy("", "*", false), None, &none, Some("v2.0.0")),
            (policy("", "*", false), Some("v2.0.0"), &none, None),
            (policy("", "*", false), Some("v1.0.0"), &none, Some("v2.0.0")),
            (policy("", "*", false), Some("v1.0.0"), &bad, Some("v1.4.2")),
            (policy("", "*", true), None, &none, Some("v2.1.0-beta")),
            (policy("", "^1.4", false), Some("v1.0.0"), &none, Some("v1.4.2")),
            (policy("", "^1.4", true), Some("v1.0.0"), &none, Some("v1.5.0-rc.1")),
            (policy("", "~1.4", false), Some("v1.4.2"), &none, None),
            (policy("", "=1.0.0", false), Some("v2.0.0"), &none, Some("v1.0.0")),
            (policy("", "=1.0.0", false), Some("v1.0.0"), &none, None),
            (policy("", "<1.0.0", false), Some("v1.0.0"), &none, None),
            (policy("backend-", "*", false), Some("backend-v3.0.0"), &none, Some("backend-v3.1.0")),
            (policy("frontend-", "*", false), None, &none, Some("frontend-v4.0.0")),
        ];
        for (policy, current, bad, expected) in table {
            let got = choose(&list, &policy, current, bad).map(|c| c.release.tag);
            assert_eq!(got.as_deref(), expected, "{policy:?} current {current:?}");
        }
    }

    #[test]
    fn ranking_walks_down_from_the_newest() {
        let list = vec![
            release("v1.0.0", false),
            release("v3.0.0", false),
            release("v2.0.0-rc.1", true),
            release("v2.0.0", false),
            release("other", false),
        ];
        let bad: BTreeSet<String> = ["v3.0.0".to_string()].into();
        let tags = |p: Policy, bad: &BTreeSet<String>| {
            ranked(&list, &p, bad)
                .into_iter()
                .map(|c| c.release.tag)
                .collect::<Vec<_>>()
        };
        let none = BTreeSet::new();
        assert_eq!(
            tags(policy("", "*", false), &none),
            ["v3.0.0", "v2.0.0", "v1.0.0"]
        );
        assert_eq!(tags(policy("", "*", false), &bad), ["v2.0.0", "v1.0.0"]);
        assert_eq!(
            tags(policy("", "<3", true), &none),
            ["v2.0.0", "v2.0.0-rc.1", "v1.0.0"]
        );
        assert_eq!(tags(policy("", "=1.0.0", false), &none), ["v1.0.0"]);
    }

    /// What the state keeps: nothing older than both installed releases,
    /// unless a pin may go back; never drafts or tags of others.
    #[test]
    fn what_the_state_keeps() {
        let v = |text: &str| Version::parse(text).unwrap();
        let any = policy("", "*", false);
        let pin = policy("", "=1.0.0", false);
        type Row<'a> = (
            &'a Policy,
            Option<&'a str>,
            Option<&'a str>,
            Option<Version>,
        );
        #[rustfmt::skip]
        let floors: [Row; 6] = [
            (&any, Some("v2.0.0"), Some("v1.0.0"), Some(v("1.0.0"))),
            (&any, Some("v1.0.0"), Some("v2.0.0"), Some(v("1.0.0"))),
            (&any, Some("v2.0.0"), Some("nightly"), Some(v("2.0.0"))),
            (&any, None, Some("v1.0.0"), None),
            (&any, Some("nightly"), None, None),
            (&pin, Some("v2.0.0"), None, None),
        ];
        for (policy, current, previous, expected) in floors {
            assert_eq!(
                floor(policy, current, previous),
                expected,
                "{current:?} {previous:?}"
            );
        }
        let mut draft = release("v3.0.0", false);
        draft.draft = true;
        let floor = v("2.0.0");
        let table = [
            (release("v3.0.0", false), true),
            (release("v2.0.0", false), true),
            (release("v1.9.0", false), false),
            (release("v3.1.0", true), false),
            (release("api-v3.0.0", false), false),
            (draft, false),
        ];
        for (release, expected) in table {
            assert_eq!(
                can_choose(&any, Some(&floor), &release),
                expected,
                "{}",
                release.tag
            );
        }
        assert!(can_choose(&any, None, &release("v0.1.0", false)));
    }

    fn with_assets(names: &[&str]) -> Release {
        let mut r = release("v1.2.3", false);
        r.assets = names
            .iter()
            .map(|n| Asset {
                name: n.to_string(),
                size: None,
                download_url: format!("http://h/{n}"),
                api_url: None,
                digest: None,
            })
            .collect();
        r
    }

    #[test]
    fn picking_an_asset() {
        let v = Version::parse("1.2.3").unwrap();
        let standard = with_assets(&[
            "app-1.2.3-linux-amd64.tar.gz",
            "app-1.2.3-linux-arm64.tar.gz",
            "app-1.2.3-darwin-amd64.tar.gz",
            "app-1.2.3-linux-amd64.zip",
            "SHA256SUMS",
        ]);
        let table: [(&Release, AssetRule, &str, Result<&str, &str>); 11] = [
            (
                &standard,
                AssetRule::Default,
                "x86_64",
                Ok("app-1.2.3-linux-amd64.tar.gz"),
            ),
            (
                &standard,
                AssetRule::Default,
                "aarch64",
                Ok("app-1.2.3-linux-arm64.tar.gz"),
            ),
            (
                &standard,
                AssetRule::Default,
                "riscv64",
                Err("no asset matches"),
            ),
            (
                &standard,
                AssetRule::Glob("app-{version}-{os}-{arch}.tar.gz"),
                "x86_64",
                Ok("app-1.2.3-linux-amd64.tar.gz"),
            ),
            (
                &standard,
                AssetRule::Glob("*-darwin-*.tar.gz"),
                "x86_64",
                Ok("app-1.2.3-darwin-amd64.tar.gz"),
            ),
            (
                &standard,
                AssetRule::Glob("*.tar.gz"),
                "x86_64",
                Err("3 assets match"),
            ),
            (
                &with_assets(&["x_Linux_x86_64.tgz", "x_Linux_x86_64.tgz.sha256"]),
                AssetRule::Default,
                "x86_64",
                Ok("x_Linux_x86_64.tgz"),
            ),
            (
                &with_assets(&["a-linux-amd64-musl.tar.gz", "a-linux-amd64-gnu.tar.gz"]),
                AssetRule::Default,
                "x86_64",
                Err("2 assets match"),
            ),
            (
                &with_assets(&[
                    "moltd-1.2.3-linux-amd64",
                    "moltd-1.2.3-linux-amd64.minisig",
                    "moltd-1.2.3-linux-amd64.sha256",
                    "moltd-1.2.3-linux-arm64",
                ]),
                AssetRule::Glob(crate::update::config::SELF_ASSET),
                "x86_64",
                Ok("moltd-1.2.3-linux-amd64"),
            ),
            (
                &with_assets(&[
                    "moltd-1.2.3-linux-arm64.tar.gz",
                    "moltd-1.2.3-linux-arm64.tar.gz.minisig",
                ]),
                AssetRule::Glob(crate::update::config::SELF_ASSET),
                "aarch64",
                Ok("moltd-1.2.3-linux-arm64.tar.gz"),
            ),
            (
                &with_assets(&["app.tar.gz", "app.tar.gz.minisig"]),
                AssetRule::Only,
                "x86_64",
                Ok("app.tar.gz"),
            ),
        ];
        for (release, rule, arch, expected) in table {
            let got = pick_asset(release, &v, &rule, arch).map(|a| a.name.as_str());
            match (got, expected) {
                (Ok(name), Ok(want)) => assert_eq!(name, want),
                (Err(text), Err(want)) => assert!(text.contains(want), "{text}"),
                (got, want) => panic!("got {got:?}, expected {want:?}"),
            }
        }
    }
}
