//! Reading the release list from GitHub, Gitea/Forgejo or a manifest.
//!
//! The list is read (not `/releases/latest`) so that version policy and
//! prereleases work. Requests are conditional: the ETag of the last list
//! goes out as If-None-Match and a 304 reuses the stored list. Rate limits
//! (403/429 with `Retry-After`, `X-RateLimit-Reset` or no quota left) come
//! back as [`Error::RateLimited`] with the wait the server asked for.
//!
//! Pages: the APIs list releases newest first, a page at a time (GitHub at
//! most 100, Gitea and Forgejo 50 by default), and name the next page in a
//! `Link: <url>; rel="next"` header. Further pages are read only while the
//! pages read hold no release the policy allows (a tag prefix in a monorepo,
//! a pin to an old release), and only on the first page's origin. The ETag
//! is the first page's; the stored list holds every page read after it, how
//! many, and where reading stopped, so a 304 goes on from there when the
//! policy changed or an earlier check was cut short (a rate limit on page
//! 3). At most [`MAX_PAGES`] pages are read and stored for one first page,
//! over all checks: without a token GitHub allows 60 requests an hour, so a
//! policy that matches nothing (a typo in `MOLTD_TAG_PREFIX`) must settle
//! into one request a check rather than read on to the end of the list.
//! "One first page" is its set of tags, not its ETag: GitHub's list carries
//! each asset's `download_count`, so a fleet downloading changes the ETag
//! between two checks, and a server may send none. A fetched first page
//! with the stored tags replaces their entries and keeps the pages after
//! them; only a release published or deleted there starts over.

use super::Error;
use super::config::Source;
use super::http::Http;
use super::poll::rate_limit_wait;
use super::release::{Release, parse_api, parse_manifest};
use super::state::State;
use reqwest::Url;
use reqwest::header::{ACCEPT, ETAG, HeaderMap, IF_NONE_MATCH, LINK, RETRY_AFTER};
use std::collections::BTreeSet;
use std::time::SystemTime;

/// The URL the list is read from.
pub fn listing_url(source: &Source) -> String {
    match source {
        // The largest pages each API serves by default.
        Source::GitHub { api, owner, repo } => {
            format!("{api}/repos/{owner}/{repo}/releases?per_page=100")
        }
        Source::Gitea { api, owner, repo } => {
            format!("{api}/repos/{owner}/{repo}/releases?limit=50")
        }
        Source::Manifest { url } => url.clone(),
    }
}

/// Whether the first page came fresh or was confirmed by a 304.
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

/// The most pages of the release list read and stored for one first page
/// (one set of first-page tags), over all checks.
pub const MAX_PAGES: usize = 10;

/// One page of the list as the server sent it.
struct Page {
    releases: Vec<Release>,
    /// Its `rel="next"` link, resolved against its URL.
    next: Option<String>,
    etag: Option<String>,
}

/// The target of the first `rel="next"` link in a `Link` header value
/// (RFC 8288: `<url>; rel="next", <url>; rel="last"`; `rel` may hold several
/// space-separated types, and parameter values may be quoted).
pub fn next_link(value: &str) -> Option<&str> {
    let mut rest = value;
    loop {
        let open = rest.find('<')?;
        let close = open + rest[open..].find('>')?;
        let target = &rest[open + 1..close];
        rest = &rest[close + 1..];
        // The parameters run to the next comma outside quotes.
        let mut quoted = false;
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                quoted ^= c == '"';
                c == ',' && !quoted
            })
            .map_or(rest.len(), |(i, _)| i);
        let (params, after) = rest.split_at(end);
        rest = after;
        let is_next = params.split(';').any(|param| {
            let Some((name, types)) = param.split_once('=') else {
                return false;
            };
            name.trim().eq_ignore_ascii_case("rel")
                && types
                    .trim()
                    .trim_matches('"')
                    .split_ascii_whitespace()
                    .any(|t| t.eq_ignore_ascii_case("next"))
        });
        if is_next {
            return Some(target);
        }
    }
}

/// Reads one page; `None` for a 304 to `etag`.
fn fetch_page(
    http: &Http,
    source: &Source,
    url: &str,
    etag: Option<&str>,
    limit: u64,
) -> Result<Option<Page>, Error> {
    let accept = match source {
        Source::GitHub { .. } => "application/vnd.github+json",
        _ => "application/json",
    };
    let mut request = http.get(url).header(ACCEPT, accept);
    if matches!(source, Source::GitHub { .. }) {
        request = request.header("X-GitHub-Api-Version", "2022-11-28");
    }
    if let Some(etag) = etag {
        request = request.header(IF_NONE_MATCH, etag);
    }
    let response = http.send(request, url)?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    if status == 304 && etag.is_some() {
        return Ok(None);
    }
    if status == 429 || status == 403 {
        let retry_after = header(&headers, RETRY_AFTER.as_str());
        let exhausted = header(&headers, "x-ratelimit-remaining") == Some("0");
        if status == 429 || retry_after.is_some() || exhausted {
            return Err(Error::RateLimited {
                url: url.to_owned(),
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
            .read_limited(response, url, 64 * 1024, "error answer")
            .unwrap_or_default();
        let mut message = message(&body);
        if matches!(status, 401 | 404) && !matches!(source, Source::Manifest { .. }) {
            message.push_str(" (a private repository needs GITHUB_TOKEN)");
        }
        return Err(Error::Status {
            url: url.to_owned(),
            status,
            message,
        });
    }
    let body = http.read_limited(response, url, limit, "release list")?;
    let releases: Vec<Release> = match source {
        Source::Manifest { .. } => parse_manifest(&body, url),
        _ => parse_api(&body),
    }
    .map_err(|source| Error::Parse {
        url: url.to_owned(),
        source,
    })?;
    // A manifest is one document; only the APIs page.
    let next = match source {
        Source::Manifest { .. } => None,
        _ => headers
            .get_all(LINK)
            .iter()
            .filter_map(|v| next_link(v.to_str().ok()?))
            .next()
            .and_then(|target| Url::parse(url).ok()?.join(target).ok())
            .map(String::from),
    };
    Ok(Some(Page {
        releases,
        next,
        etag: header(&headers, ETAG.as_str()).map(String::from),
    }))
}

/// Reads the first page of the list into `state` (which keeps the last
/// good list, its ETag, its URL, how many pages it holds and where reading
/// stopped); on a 304 `state` stays as it was, and on the same tags only
/// their entries and the ETag change.
pub fn first_page(
    http: &Http,
    source: &Source,
    state: &mut State,
    limit: u64,
) -> Result<Freshness, Error> {
    let url = listing_url(source);
    let cached = state.listing_url.as_deref() == Some(url.as_str());
    let etag = state.etag.as_deref().filter(|_| cached);
    let Some(page) = fetch_page(http, source, &url, etag, limit)? else {
        return Ok(Freshness::NotModified);
    };
    if cached && let Some(n) = stored_first_page(state, &page) {
        // Same releases, new details (GitHub's ETag covers download counts):
        // the pages read after them and the cap stay.
        state.listing.splice(..n, page.releases);
        state.etag = page.etag;
        return Ok(Freshness::Fetched);
    }
    state.listing = page.releases;
    state.listing_next = page.next;
    state.listing_pages = 1;
    state.etag = page.etag;
    state.listing_url = Some(url);
    Ok(Freshness::Fetched)
}

/// How many releases of `state.listing` are the stored first page, when
/// `page`, a fetched first page, lists the same tags: a release published or
/// deleted changes them, a download or an edited note does not.
fn stored_first_page(state: &State, page: &Page) -> Option<usize> {
    let n = page.releases.len();
    let stored = state.listing.get(..n)?;
    // A first page without a next link is the whole list; with one it was
    // full, and the stored list begins with it.
    if page.next.is_none() && (n != state.listing.len() || state.listing_next.is_some()) {
        return None;
    }
    fn tags(releases: &[Release]) -> BTreeSet<&str> {
        releases.iter().map(|r| r.tag.as_str()).collect()
    }
    (tags(stored) == tags(&page.releases)).then_some(n)
}

/// Reads the pages after those `state` holds while `enough` says they hold
/// no release the policy allows, until it holds [`MAX_PAGES`]; returns how
/// many it read. Each page goes into `state` as it arrives, so an error
/// keeps the ones before it and the next check goes on from there.
pub fn more_pages(
    http: &Http,
    source: &Source,
    state: &mut State,
    limit: u64,
    enough: &dyn Fn(&[Release]) -> bool,
) -> Result<usize, Error> {
    let origin = Url::parse(&listing_url(source)).map(|u| u.origin()).ok();
    let mut read = 0;
    while let Some(link) = state.listing_next.clone() {
        if enough(&state.listing) {
            break;
        }
        // Only the API's own pages: the token goes nowhere else either.
        if Url::parse(&link).map(|u| u.origin()).ok() != origin {
            log::warn!("not following the release list's next page to another origin: {link}");
            state.listing_next = None;
            break;
        }
        // The cap is on what is stored for this first page, not per check:
        // a 304 then costs one request, whatever the policy finds.
        if state.listing_pages >= MAX_PAGES {
            if read > 0 {
                log::warn!(
                    "no eligible release in the newest {} releases (the first {MAX_PAGES} pages of the release list): check MOLTD_TAG_PREFIX, MOLTD_VERSION, MOLTD_PRERELEASE and the bad releases; older releases are not searched, and the list is read again when a release is published",
                    state.listing.len()
                );
            }
            break;
        }
        log::info!(
            "no eligible release in the newest {} releases: reading {link}",
            state.listing.len()
        );
        let Some(page) = fetch_page(http, source, &link, None, limit)? else {
            break;
        };
        read += 1;
        state.listing_pages += 1;
        // Pages shift when releases come or go between two requests.
        let new: Vec<Release> = page
            .releases
            .into_iter()
            .filter(|r| state.listing.iter().all(|known| known.tag != r.tag))
            .collect();
        state.listing.extend(new);
        state.listing_next = page.next;
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links() {
        let table = [
            (
                r#"<https://api.github.com/repositories/1/releases?per_page=100&page=2>; rel="next", <https://api.github.com/repositories/1/releases?per_page=100&page=5>; rel="last""#,
                Some("https://api.github.com/repositories/1/releases?per_page=100&page=2"),
            ),
            (
                r#"<https://h/r?page=1>; rel="prev", <https://h/r?page=3>; rel="next""#,
                Some("https://h/r?page=3"),
            ),
            // Unquoted, upper case, several types, other parameters first.
            (
                "</r?page=2>; title=\"a, b; rel=next\"; REL=Next",
                Some("/r?page=2"),
            ),
            (r#"<https://h/x,y>; rel="last next""#, Some("https://h/x,y")),
            (
                r#"<https://h/a>; rel="nextish", <https://h/b>; rel="next""#,
                Some("https://h/b"),
            ),
            (r#"<https://h/r?page=1>; rel="first""#, None),
            (r#"<https://h/r?page=2>"#, None),
            ("rel=\"next\"", None),
            ("<https://h/unclosed; rel=\"next\"", None),
            ("", None),
        ];
        for (value, expected) in table {
            assert_eq!(next_link(value), expected, "{value}");
        }
    }
}
