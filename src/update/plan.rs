//! What a download must pass, known before its first byte: the release
//! list read up to a release worth taking, the asset chosen, its expected
//! SHA-256 and its signature. The payload's releases and moltd's own
//! (`itself`) share it.

use super::http::Http;
use super::select::{AssetRule, Candidate};
use super::source::Freshness;
use super::state::State;
use super::{Config, Error, config, fetch, listing, release, select, source, verify};
use std::sync::atomic::AtomicBool;

/// Reads the release list `reader` names into `listing`: the first page
/// (whose failure is the outer error), then as many more as it takes to
/// find a release allowed and not skipped by `marks` (whose failure is the
/// inner one: the pages read are kept).
pub(super) fn read_listing(
    reader: &source::Reader,
    listing: &mut listing::Listing,
    marks: &State,
) -> Result<Result<usize, Error>, Error> {
    let freshness = source::first_page(reader, listing)?;
    let stored = listing.pages;
    let more = source::more_pages(
        reader,
        listing,
        freshness == Freshness::Fetched,
        &|releases| {
            let skipped = marks.skipped(releases);
            select::allowed(releases, reader.policy, &skipped)
                .next()
                .is_some()
        },
    );
    match (freshness, &more) {
        (Freshness::NotModified, Ok(0)) => {
            log::info!("release list not modified since the last check");
        }
        (Freshness::NotModified, Ok(n)) => log::info!(
            "first page of the release list not modified; read {n} more page(s) after the {stored} stored"
        ),
        _ => {}
    }
    Ok(more)
}

/// How a release's asset is chosen and what its download must pass.
pub(super) struct Checks<'a> {
    pub(super) rule: AssetRule<'a>,
    /// Whether a download with no SHA-256 is accepted.
    pub(super) unchecked: Unchecked,
    pub(super) key: Option<&'a minisign_verify::PublicKey>,
    /// The variable that set `key`, for messages.
    pub(super) key_var: &'static str,
}

/// Whether a download without a SHA-256 may be accepted, else the hint its
/// refusal gives.
#[derive(Clone, Copy)]
pub(super) enum Unchecked {
    Accepted,
    Refused { hint: &'static str },
}

/// For the app's releases, `MOLTD_REQUIRE_CHECKSUM` decides.
pub(super) fn app_unchecked(require_checksum: bool) -> Unchecked {
    match require_checksum {
        true => Unchecked::Refused {
            hint: "set MOLTD_REQUIRE_CHECKSUM=false to accept it unchecked",
        },
        false => Unchecked::Accepted,
    }
}

/// The asset to download and what it is checked against, known before its
/// first byte.
pub(super) struct Plan<'r> {
    pub(super) asset: &'r release::Asset,
    pub(super) expected: Option<verify::Expected>,
    pub(super) signature: Option<minisign_verify::Signature>,
    pub(super) url: &'r str,
}

impl Plan<'_> {
    /// The download of the planned asset, checked as planned.
    pub(super) fn request<'p>(
        &'p self,
        checks: &Checks<'p>,
        cancel: &'p AtomicBool,
    ) -> fetch::Request<'p> {
        fetch::Request {
            url: self.url,
            accept: "application/octet-stream",
            size: self.asset.size,
            name: &self.asset.name,
            expected: self.expected.as_ref(),
            signature: checks.key.zip(self.signature.as_ref()),
            key_var: checks.key_var,
            cancel,
        }
    }
}

/// Picks `candidate`'s asset under `checks` and finds its expected SHA-256
/// (the digest field, else a checksums file) and signature; `source` is
/// the feed it came from.
pub(super) fn plan<'r>(
    http: &Http,
    config: &Config,
    source: &config::Source,
    candidate: &'r Candidate,
    checks: &Checks,
) -> Result<Plan<'r>, Error> {
    let release = &candidate.release;
    let tag = &release.tag;
    let asset = select::pick_asset(
        release,
        &candidate.version,
        &checks.rule,
        std::env::consts::ARCH,
    )
    .map_err(|problem| Error::Asset {
        tag: tag.clone(),
        problem,
    })?;
    let field = verify::from_digest_field(asset);
    let expected = match &field {
        Ok(Some(expected)) => Some(expected.clone()),
        Ok(None) | Err(_) => match verify::checksum_asset(release, &asset.name) {
            Some(sums) => {
                let text = http.document(
                    &sums.download_url,
                    "application/octet-stream",
                    config.limits.document,
                )?;
                let sha256 = verify::parse_sums(&String::from_utf8_lossy(&text), &asset.name)
                    .ok_or_else(|| Error::ChecksumNotListed {
                        file: sums.name.clone(),
                        asset: asset.name.clone(),
                    })?;
                Some(verify::Expected {
                    sha256,
                    origin: sums.name.clone(),
                })
            }
            None => match checks.unchecked {
                Unchecked::Refused { hint } => {
                    return Err(match field {
                        Err(problem) => Error::UnusableDigest {
                            tag: tag.clone(),
                            asset: asset.name.clone(),
                            problem,
                            hint,
                        },
                        Ok(_) => Error::MissingChecksum {
                            tag: tag.clone(),
                            asset: asset.name.clone(),
                            hint,
                        },
                    });
                }
                Unchecked::Accepted => {
                    let why = field.err().unwrap_or_else(|| "no checksum".into());
                    log::warn!(
                        "{why} for {}: installing it unchecked (MOLTD_REQUIRE_CHECKSUM=false)",
                        asset.name
                    );
                    None
                }
            },
        },
    };
    let signature = match checks.key {
        None => None,
        Some(_) => {
            let sig_asset = release
                .asset(&format!("{}.minisig", asset.name))
                .ok_or_else(|| Error::MissingSignature {
                    tag: tag.clone(),
                    asset: asset.name.clone(),
                    var: checks.key_var,
                })?;
            let text = http.document(
                &sig_asset.download_url,
                "application/octet-stream",
                config.limits.document,
            )?;
            Some(
                minisign_verify::Signature::decode(&String::from_utf8_lossy(&text)).map_err(
                    |source| Error::BadSignature {
                        asset: asset.name.clone(),
                        var: checks.key_var,
                        source,
                    },
                )?,
            )
        }
    };
    // Private GitHub repositories serve assets only through the API URL.
    let url = match (&config.token, &asset.api_url, source) {
        (Some(_), Some(api_url), config::Source::GitHub { .. }) => api_url,
        _ => &asset.download_url,
    };
    Ok(Plan {
        asset,
        expected,
        signature,
        url,
    })
}
