//! Reading the release list from GitHub, Gitea/Forgejo or a manifest.
//!
//! The whole list is read (not `/releases/latest`) so that version policy
//! and prereleases work. Requests are conditional: the ETag of the last list
//! goes out as If-None-Match and a 304 reuses the stored list. Rate limits
//! (403/429 with `Retry-After`, `X-RateLimit-Reset` or no quota left) come
//! back as [`Error::RateLimited`] with the wait the server asked for.

use super::Error;
use super::config::Source;
use super::http::Http;
use super::poll::rate_limit_wait;
use super::release::{Release, parse_api, parse_manifest};
use super::state::State;
use reqwest::header::{ACCEPT, ETAG, HeaderMap, IF_NONE_MATCH, RETRY_AFTER};
use std::time::SystemTime;

/// The URL the list is read from.
pub fn listing_url(source: &Source) -> String {
    match source {
        Source::GitHub { api, owner, repo } => {
            format!("{api}/repos/{owner}/{repo}/releases?per_page=100")
        }
        Source::Gitea { api, owner, repo } => {
            format!("{api}/repos/{owner}/{repo}/releases?limit=50")
        }
        Source::Manifest { url } => url.clone(),
    }
}

/// Whether the list came fresh or was confirmed by a 304.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    Fetched,
    NotModified,
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A short reason from an error body: GitHub's and Gitea's `message`.
fn message(body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let text = parsed
        .as_ref()
        .and_then(|v| v.get("message")?.as_str().map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    text.chars()
        .take(200)
        .collect::<String>()
        .trim()
        .to_string()
}

/// Fetches the list into `state` (which keeps the last good one, its ETag
/// and its URL).
pub fn refresh(
    http: &Http,
    source: &Source,
    state: &mut State,
    limit: u64,
) -> Result<Freshness, Error> {
    let url = listing_url(source);
    let accept = match source {
        Source::GitHub { .. } => "application/vnd.github+json",
        _ => "application/json",
    };
    let mut request = http.get(&url).header(ACCEPT, accept);
    if matches!(source, Source::GitHub { .. }) {
        request = request.header("X-GitHub-Api-Version", "2022-11-28");
    }
    let cached = state.listing_url.as_deref() == Some(url.as_str());
    if let (true, Some(etag)) = (cached, &state.etag) {
        request = request.header(IF_NONE_MATCH, etag);
    }
    let response = http.send(request, &url)?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    if status == 304 && cached {
        return Ok(Freshness::NotModified);
    }
    if status == 429 || status == 403 {
        let retry_after = header(&headers, RETRY_AFTER.as_str());
        let exhausted = header(&headers, "x-ratelimit-remaining") == Some("0");
        if status == 429 || retry_after.is_some() || exhausted {
            return Err(Error::RateLimited {
                url,
                status,
                wait: rate_limit_wait(
                    retry_after,
                    header(&headers, "x-ratelimit-reset"),
                    SystemTime::now(),
                ),
            });
        }
    }
    if !(200..300).contains(&status) {
        let body = http
            .read_limited(response, &url, 64 * 1024, "error answer")
            .unwrap_or_default();
        let mut message = message(&body);
        if matches!(status, 401 | 404) && !matches!(source, Source::Manifest { .. }) {
            message.push_str(" (a private repository needs GITHUB_TOKEN)");
        }
        return Err(Error::Status {
            url,
            status,
            message,
        });
    }
    let body = http.read_limited(response, &url, limit, "release list")?;
    let releases: Vec<Release> = match source {
        Source::Manifest { .. } => parse_manifest(&body, &url),
        _ => parse_api(&body),
    }
    .map_err(|source| Error::Parse {
        url: url.clone(),
        source,
    })?;
    state.listing = releases;
    state.etag = header(&headers, ETAG.as_str()).map(String::from);
    state.listing_url = Some(url);
    Ok(Freshness::Fetched)
}
