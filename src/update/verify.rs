//! Where the expected SHA-256 comes from, and the minisign check.
//!
//! A download is only as trustworthy as the digest it is compared with, so
//! the sources are tried in a fixed order: the API's own `digest` field, then
//! a checksum asset of the same release (`<asset>.sha256`, `SHA256SUMS`,
//! `checksums.txt` and the like). Both are fetched *before* the download,
//! because the digest is checked while the bytes stream. A signature adds
//! authenticity: with `MOLTD_MINISIGN_KEY`, `<asset>.minisig` must verify,
//! also computed on the stream (minisign's prehashed mode, its default).

use super::release::{Asset, Release};

/// The digest a download must have, and where it was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    /// Lowercase hex.
    pub sha256: String,
    /// `digest field` or the checksum asset's name, for messages.
    pub origin: String,
}

fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The API's `digest` field (`sha256:<hex>`): `Ok(None)` without one, and
/// what is wrong with it when it holds something else, so that a release
/// without another checksum is refused for that reason.
pub fn from_digest_field(asset: &Asset) -> Result<Option<Expected>, String> {
    let Some(digest) = asset.digest.as_deref() else {
        return Ok(None);
    };
    match digest.split_once(':') {
        Some(("sha256", hex)) if is_sha256_hex(hex) => Ok(Some(Expected {
            sha256: hex.to_ascii_lowercase(),
            origin: "the digest field".into(),
        })),
        Some(("sha256", _)) => Err("a sha256 that is not 64 hex digits".into()),
        Some((algorithm, _)) => Err(format!("unsupported digest algorithm {algorithm}")),
        None => Err("no algorithm: prefix".into()),
    }
}

/// The release's checksum asset for `name`, most specific first.
pub fn checksum_asset<'r>(release: &'r Release, name: &str) -> Option<&'r Asset> {
    let own = [format!("{name}.sha256"), format!("{name}.sha256sum")];
    let shared = [
        "SHA256SUMS",
        "SHA256SUMS.txt",
        "sha256sums.txt",
        "checksums.txt",
    ];
    own.iter()
        .find_map(|n| release.asset(n))
        .or_else(|| shared.iter().find_map(|n| release.asset(n)))
        .or_else(|| {
            // goreleaser names it `<project>_<version>_checksums.txt`.
            release
                .assets
                .iter()
                .find(|a| a.name.ends_with("_checksums.txt"))
        })
}

/// The SHA-256 for `name` in a checksum file. Understands GNU lines
/// (`<hex>  name`, `<hex> *name`), BSD lines (`SHA256 (name) = <hex>`) and a
/// bare `<hex>` (a per-asset `.sha256` file).
pub fn parse_sums(text: &str, name: &str) -> Option<String> {
    let same = |listed: &str| {
        let listed = listed.trim();
        listed == name || listed.rsplit('/').next() == Some(name)
    };
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("SHA256 (") {
            if let Some((listed, hex)) = rest.split_once(") = ") {
                if same(listed) && is_sha256_hex(hex.trim()) {
                    return Some(hex.trim().to_ascii_lowercase());
                }
            }
            continue;
        }
        let mut parts = line.splitn(2, char::is_whitespace);
        let hex = parts.next().unwrap_or_default();
        if !is_sha256_hex(hex) {
            continue;
        }
        match parts.next().map(|n| n.trim().trim_start_matches('*')) {
            None | Some("") => return Some(hex.to_ascii_lowercase()),
            Some(listed) if same(listed) => return Some(hex.to_ascii_lowercase()),
            Some(_) => {}
        }
    }
    None
}

/// `MOLTD_MINISIGN_KEY`: the key itself (`RW...`), or a path to a `.pub`
/// file as written by `minisign -G`.
pub fn public_key(value: &str) -> Result<minisign_verify::PublicKey, minisign_verify::Error> {
    let path = std::path::Path::new(value);
    if path.is_file() {
        minisign_verify::PublicKey::from_file(path)
    } else {
        minisign_verify::PublicKey::from_base64(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";

    #[test]
    fn checksum_files() {
        let b = B.to_ascii_lowercase();
        let gnu = format!("{A}  other.tar.gz\n{B}  app.tar.gz\n");
        let star = format!("{A} *other\n{B} *app.tar.gz\n");
        let dotted = format!("# sums\n\n{B}  ./dist/app.tar.gz\n");
        let bsd = format!("SHA256 (other) = {A}\nSHA256 (app.tar.gz) = {B}\n");
        let bare = format!("{B}\n");
        let short = "abc  app.tar.gz\n".to_string();
        let table: [(&str, Option<&str>); 7] = [
            (&gnu, Some(&b)),
            (&star, Some(&b)),
            (&dotted, Some(&b)),
            (&bsd, Some(&b)),
            (&bare, Some(&b)),
            (&short, None),
            ("", None),
        ];
        for (text, expected) in table {
            assert_eq!(
                parse_sums(text, "app.tar.gz").as_deref(),
                expected,
                "{text}"
            );
        }
        assert_eq!(parse_sums(&gnu, "missing.tar.gz"), None);
    }

    #[test]
    fn digest_field() {
        let asset = |digest: Option<&str>| Asset {
            name: "a".into(),
            size: None,
            download_url: String::new(),
            api_url: None,
            digest: digest.map(String::from),
        };
        let table = [
            (
                Some(format!("sha256:{B}")),
                Ok(Some(B.to_ascii_lowercase())),
            ),
            (
                Some(format!("sha512:{B}")),
                Err("unsupported digest algorithm sha512"),
            ),
            (
                Some("md5:9e107d9d372bb6826bd81d3542a419d6".into()),
                Err("unsupported digest algorithm md5"),
            ),
            (
                Some("sha256:xyz".into()),
                Err("a sha256 that is not 64 hex digits"),
            ),
            (Some(B.into()), Err("no algorithm: prefix")),
            (None, Ok(None)),
        ];
        for (digest, expected) in table {
            let got = from_digest_field(&asset(digest.as_deref())).map(|e| e.map(|e| e.sha256));
            assert_eq!(got, expected.map_err(String::from), "{digest:?}");
        }
    }

    #[test]
    fn checksum_asset_order() {
        let release = |names: &[&str]| Release {
            tag: "v1".into(),
            draft: false,
            prerelease: false,
            notes: None,
            published: None,
            rollout: None,
            url: None,
            assets: names
                .iter()
                .map(|n| Asset {
                    name: n.to_string(),
                    size: None,
                    download_url: String::new(),
                    api_url: None,
                    digest: None,
                })
                .collect(),
        };
        let table: [(&[&str], Option<&str>); 4] = [
            (
                &["a.tgz", "SHA256SUMS", "a.tgz.sha256"],
                Some("a.tgz.sha256"),
            ),
            (&["a.tgz", "checksums.txt"], Some("checksums.txt")),
            (
                &["a.tgz", "app_1.0_checksums.txt"],
                Some("app_1.0_checksums.txt"),
            ),
            (&["a.tgz", "b.tgz.sha256"], None),
        ];
        for (names, expected) in table {
            let r = release(names);
            assert_eq!(
                checksum_asset(&r, "a.tgz").map(|a| a.name.as_str()),
                expected,
                "{names:?}"
            );
        }
    }
}
