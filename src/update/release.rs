//! What a feed says about releases, in one shape for every source.
//!
//! GitHub, Gitea/Forgejo and the manifest each have their own JSON; they are
//! parsed here into [`Release`] and [`Asset`], so selection, verification
//! and the state file never see a source's quirks. The parsers take bytes
//! and return plain values, so they can be fuzzed without a network.

use serde::{Deserialize, Serialize};

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

/// Parses a GitHub or Gitea `/releases` answer (a JSON array).
pub fn parse_api(body: &[u8]) -> Result<Vec<Release>, serde_json::Error> {
    let releases: Vec<ApiRelease> = serde_json::from_slice(body)?;
    Ok(releases
        .into_iter()
        .map(|r| Release {
            tag: r.tag_name,
            draft: r.draft,
            prerelease: r.prerelease,
            notes: r.body,
            url: r.html_url,
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
        .collect())
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
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Manifest {
    One(ManifestEntry),
    Many { releases: Vec<ManifestEntry> },
}

/// Parses a manifest: one entry, or `{"releases": [...]}`. Relative URLs are
/// resolved against `base`, the manifest's own URL.
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
                notes: e.notes,
                url: None,
                assets,
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
        let releases = parse_api(body).unwrap();
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
                parse_api(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
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

        let many = br#"{"releases":[{"version":"1.0.0","url":"https://o/a.tgz"},{"version":"1.1.0","url":"https://o/b.tgz","prerelease":true}]}"#;
        let releases = parse_manifest(many, "http://h/m.json").unwrap();
        assert_eq!(releases.len(), 2);
        assert!(releases[1].prerelease);
        assert_eq!(releases[0].assets[0].download_url, "https://o/a.tgz");

        assert!(parse_manifest(br#"{"version":"1"}"#, "http://h/").is_err());
        assert!(parse_manifest(br#"{"version":"1","url":"u","typo":1}"#, "http://h/").is_err());
    }
}
