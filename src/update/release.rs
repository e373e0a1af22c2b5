//! What a feed says about releases, in one shape for every source.
//!
//! GitHub, Gitea/Forgejo and the manifest each have their own JSON; they are
//! parsed here into [`Release`] and [`Asset`], so selection, verification
//! and the state file never see a source's quirks. The parsers take bytes
//! and return plain values, so they can be fuzzed without a network.
//!
//! An API's list is read as it streams in, into structs that hold only the
//! fields moltd uses (serde skips the rest without keeping them), and at
//! most a given number of releases are kept: the rest of the list is parsed
//! past and dropped. A page of ten thousand releases then costs the
//! releases kept, not the page.

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::io::{BufReader, Read};
use std::marker::PhantomData;

/// A SHA-256 over `fields`, each one delimited, in hex.
pub fn fingerprint<'a>(fields: impl IntoIterator<Item = &'a str>) -> String {
    let mut hash = Sha256::new();
    for field in fields {
        hash.update(field.as_bytes());
        hash.update([0]);
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub tag: String,
    pub draft: bool,
    pub prerelease: bool,
    /// Release notes, for the status document.
    pub notes: Option<String>,
    /// The release's web page.
    pub url: Option<String>,
    pub assets: Vec<Asset>,
    /// When it was published (Unix time), for `MOLTD_MIN_AGE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<u64>,
    /// A manifest entry's `rollout` object (see [`super::rollout::Fields`]),
    /// checked when the release is judged: a bad one makes only this
    /// release ineligible, not the whole manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<serde_json::Value>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asset {
    pub name: String,
    pub size: Option<u64>,
    /// Where a browser downloads it (public repositories).
    pub download_url: String,
    /// GitHub's API URL for the asset, which takes a token and
    /// `Accept: application/octet-stream` (private repositories).
    pub api_url: Option<String>,
    /// `sha256:<hex>` when the source publishes one.
    pub digest: Option<String>,
}

impl Release {
    /// A release known only by its tag: one installed that the list no
    /// longer holds.
    pub fn named(tag: &str) -> Release {
        Release {
            tag: tag.to_owned(),
            draft: false,
            prerelease: false,
            notes: None,
            url: None,
            assets: Vec::new(),
            published: None,
            rollout: None,
        }
    }

    pub fn asset(&self, name: &str) -> Option<&Asset> {
        self.assets.iter().find(|a| a.name == name)
    }
}

#[derive(Deserialize)]
struct ApiRelease {
    tag_name: String,
    #[serde(default)]
    draft: bool,
    #[serde(default)]
    prerelease: bool,
    body: Option<String>,
    html_url: Option<String>,
    published_at: Option<String>,
    #[serde(default)]
    assets: Vec<ApiAsset>,
}

#[derive(Deserialize)]
struct ApiAsset {
    name: String,
    size: Option<u64>,
    browser_download_url: String,
    url: Option<String>,
    digest: Option<String>,
}

/// The releases of one list, newest first, at most as many as asked for.
#[derive(Debug)]
pub struct Parsed {
    pub releases: Vec<Release>,
    /// How many more the list held, past the cap: read and dropped.
    pub skipped: usize,
}

/// A JSON array of which the first `max` elements are kept and the rest
/// only counted.
struct Capped<T> {
    max: usize,
    element: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for Capped<T> {
    type Value = (Vec<T>, usize);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for Capped<T> {
    type Value = (Vec<T>, usize);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of releases")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut kept = Vec::new();
        while kept.len() < self.max {
            match seq.next_element()? {
                Some(element) => kept.push(element),
                None => return Ok((kept, 0)),
            }
        }
        let mut skipped = 0;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            skipped += 1;
        }
        Ok((kept, skipped))
    }
}

/// The most of a release's notes kept: more than GitHub allows (125,000
/// characters), so real notes pass whole, while a hostile feed's megabytes
/// do not make every `moltd status` and `GET /status` as long.
pub const MAX_NOTES: usize = 128 * 1024;

/// `notes`, cut at [`MAX_NOTES`] bytes (on a character boundary) and saying
/// so.
fn shorten_notes(mut notes: String) -> String {
    if notes.len() > MAX_NOTES {
        let end = (0..=MAX_NOTES)
            .rev()
            .find(|&i| notes.is_char_boundary(i))
            .unwrap_or(0);
        notes.truncate(end);
        notes.push_str("\n[notes cut at 128 KiB]");
    }
    notes
}

/// Parses a GitHub or Gitea `/releases` answer (a JSON array) as it is
/// read, keeping the first `max` releases.
pub fn parse_api(body: impl Read, max: usize) -> Result<Parsed, serde_json::Error> {
    // serde_json reads a byte at a time from a reader.
    let mut json = serde_json::Deserializer::from_reader(BufReader::new(body));
    let (releases, skipped) = Capped::<ApiRelease> {
        max,
        element: PhantomData,
    }
    .deserialize(&mut json)?;
    json.end()?;
    let releases = releases
        .into_iter()
        .map(|r| Release {
            tag: r.tag_name,
            draft: r.draft,
            prerelease: r.prerelease,
            notes: r.body.map(shorten_notes),
            url: r.html_url,
            published: r
                .published_at
                .as_deref()
                .and_then(super::rollout::parse_rfc3339),
            rollout: None,
            assets: r
                .assets
                .into_iter()
                .map(|a| Asset {
                    name: a.name,
                    size: a.size,
                    download_url: a.browser_download_url,
                    api_url: a.url,
                    digest: a.digest,
                })
                .collect(),
        })
        .collect();
    Ok(Parsed { releases, skipped })
}

/// One entry of a manifest.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestEntry {
    version: String,
    url: String,
    sha256: Option<String>,
    size: Option<u64>,
    /// URL of a minisign signature of the asset.
    minisig_url: Option<String>,
    #[serde(default)]
    prerelease: bool,
    notes: Option<String>,
    /// RFC 3339, for `MOLTD_MIN_AGE`.
    published_at: Option<String>,
    /// The rollout's fields (see [`super::rollout::Fields`]).
    rollout: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Manifest {
    One(ManifestEntry),
    Many { releases: Vec<ManifestEntry> },
}

/// Parses a manifest: one entry, or `{"releases": [...]}`. Relative URLs are
/// resolved against `base`, the manifest's own URL. All of it: a manifest
/// lists releases in an order of its own, so its first entries need not be
/// the newest.
pub fn parse_manifest(body: &[u8], base: &str) -> Result<Vec<Release>, serde_json::Error> {
    let entries = match serde_json::from_slice(body)? {
        Manifest::One(entry) => vec![entry],
        Manifest::Many { releases } => releases,
    };
    let base = reqwest::Url::parse(base).ok();
    let resolve = |url: &str| {
        base.as_ref()
            .and_then(|b| b.join(url).ok())
            .map_or_else(|| url.to_string(), String::from)
    };
    Ok(entries
        .into_iter()
        .map(|e| {
            let url = resolve(&e.url);
            let name = file_name(&url);
            let mut assets = vec![Asset {
                name: name.clone(),
                size: e.size,
                download_url: url,
                api_url: None,
                digest: e
                    .sha256
                    .map(|hex| format!("sha256:{}", hex.to_ascii_lowercase())),
            }];
            if let Some(sig) = e.minisig_url {
                assets.push(Asset {
                    name: format!("{name}.minisig"),
                    size: None,
                    download_url: resolve(&sig),
                    api_url: None,
                    digest: None,
                });
            }
            Release {
                tag: e.version,
                draft: false,
                prerelease: e.prerelease,
                notes: e.notes.map(shorten_notes),
                url: None,
                assets,
                published: e
                    .published_at
                    .as_deref()
                    .and_then(super::rollout::parse_rfc3339),
                rollout: e.rollout,
            }
        })
        .collect())
}

/// The last path segment of a URL, without query or fragment.
fn file_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    path.rsplit('/').next().unwrap_or(path).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_shape() {
        let body = br#"[{"tag_name":"v1.2.0","draft":false,"prerelease":true,"body":"notes",
            "html_url":"https://h/r","extra":1,"assets":[{"name":"a.tar.gz","size":5,
            "browser_download_url":"https://h/a.tar.gz","url":"https://api/a","digest":"sha256:ab"}]},
            {"tag_name":"v1.1.0","assets":[{"name":"b.tgz","browser_download_url":"https://h/b.tgz"}]}]"#;
        let releases = parse_api(&body[..], 100).unwrap().releases;
        assert_eq!(releases.len(), 2);
        assert_eq!(releases[0].tag, "v1.2.0");
        assert!(releases[0].prerelease);
        assert_eq!(releases[0].assets[0].digest.as_deref(), Some("sha256:ab"));
        assert_eq!(
            releases[0].assets[0].api_url.as_deref(),
            Some("https://api/a")
        );
        assert_eq!(releases[1].assets[0].size, None);
    }

    #[test]
    fn malformed_lists_are_errors() {
        for body in [
            &b""[..],
            b"{}",
            b"[{}]",
            b"[{\"tag_name\":1}]",
            b"not json",
            b"[",
            b"null",
        ] {
            assert!(
                parse_api(body, 100).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn long_notes_are_cut_on_a_character_boundary() {
        let short = "é".repeat(10);
        assert_eq!(shorten_notes(short.clone()), short);
        let long = shorten_notes("é".repeat(MAX_NOTES));
        assert!(
            long.ends_with("\n[notes cut at 128 KiB]"),
            "{}",
            &long[long.len() - 40..]
        );
        assert!(long.len() <= MAX_NOTES + 30);
        let body = format!(
            r#"[{{"tag_name":"v1","body":"{}","assets":[]}}]"#,
            "x".repeat(1 << 20)
        );
        let parsed = parse_api(body.as_bytes(), 10).unwrap();
        assert!(parsed.releases[0].notes.as_ref().unwrap().len() <= MAX_NOTES + 30);
    }

    #[test]
    fn manifest_shapes() {
        let one = br#"{"version":"2.0.0","url":"dl/app.tar.gz?x=1","sha256":"AB","minisig_url":"dl/app.tar.gz.minisig"}"#;
        let releases = parse_manifest(one, "http://h:1/m/manifest.json").unwrap();
        assert_eq!(releases.len(), 1);
        let asset = &releases[0].assets[0];
        assert_eq!(asset.name, "app.tar.gz");
        assert_eq!(asset.download_url, "http://h:1/m/dl/app.tar.gz?x=1");
        assert_eq!(asset.digest.as_deref(), Some("sha256:ab"));
        assert_eq!(releases[0].assets[1].name, "app.tar.gz.minisig");

        // The rollout's fields are kept as given, judged per release.
        let phased = br#"{"version":"2.0.0","url":"a.tgz","published_at":"2026-12-07T10:00:00Z","rollout":{"percent":5,"typo":1}}"#;
        let releases = parse_manifest(phased, "http://h/m.json").unwrap();
        assert_eq!(releases[0].published, Some(1_796_637_600));
        let meta = super::super::rollout::meta_of(None, releases[0].rollout.as_ref(), None);
        assert!(meta.unwrap_err().contains("unknown field `typo`"));

        let many = br#"{"releases":[{"version":"1.0.0","url":"https://o/a.tgz"},{"version":"1.1.0","url":"https://o/b.tgz","prerelease":true}]}"#;
        let releases = parse_manifest(many, "http://h/m.json").unwrap();
        assert_eq!(releases.len(), 2);
        assert!(releases[1].prerelease);
        assert_eq!(releases[0].assets[0].download_url, "https://o/a.tgz");

        assert!(parse_manifest(br#"{"version":"1"}"#, "http://h/").is_err());
        assert!(parse_manifest(br#"{"version":"1","url":"u","typo":1}"#, "http://h/").is_err());
    }

    /// Past the cap, releases are parsed as JSON (broken JSON is still an
    /// error) but neither kept nor converted.
    #[test]
    fn a_list_past_the_cap_keeps_the_newest_and_counts_the_rest() {
        let list = |n: usize| {
            let entries: Vec<String> = (0..n)
                .map(|i| format!(r#"{{"tag_name":"v1.0.{i}","body":"notes","assets":[]}}"#))
                .collect();
            format!("[{}]", entries.join(","))
        };
        let parsed = parse_api(list(5).as_bytes(), 3).unwrap();
        let tags: Vec<&str> = parsed.releases.iter().map(|r| r.tag.as_str()).collect();
        assert_eq!(
            (tags, parsed.skipped),
            (vec!["v1.0.0", "v1.0.1", "v1.0.2"], 2)
        );
        let parsed = parse_api(list(3).as_bytes(), 3).unwrap();
        assert_eq!((parsed.releases.len(), parsed.skipped), (3, 0));
        // Past the cap only the JSON must hold, not the shape of a release.
        let odd = &b"[{\"tag_name\":\"v1\"}, {\"tag_name\":2}]"[..];
        assert_eq!(parse_api(odd, 1).unwrap().skipped, 1);
        assert!(parse_api(odd, 2).is_err());
        assert!(parse_api(&b"[{\"tag_name\":\"v1\"}, ]"[..], 1).is_err());
        assert!(parse_api(&b"[{\"tag_name\":\"v1\"}] x"[..], 1).is_err());
    }
}
