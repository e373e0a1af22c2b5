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
//! is the first page's; the [`Listing`] keeps, of the pages read after it, the
//! releases the policy can choose, how many pages and releases were read,
//! and where reading stopped, so a 304 goes on from there when an earlier
//! check was cut short (a rate limit on page 3). The releases kept depend
//! on the policy, so a list kept for another one is read anew. At most
//! [`MAX_PAGES`] pages and [`MAX_RELEASES`] releases are read for one first
//! page, over all checks: without a token GitHub allows 60 requests an
//! hour, so a policy that matches nothing (a typo in `MOLTD_TAG_PREFIX`)
//! must settle into one request a check rather than read on to the end of
//! the list; and a server that lists ten thousand releases a page must not
//! cost PID 1 more than a thousand do.
//! "One first page" is its set of tags, not its ETag: GitHub's list carries
//! each asset's `download_count`, so a fleet downloading changes the ETag
//! between two checks, and a server may send none. A fetched first page
//! with the stored tags replaces their entries and keeps the pages after
//! them; only a release published or deleted there starts over.

use super::Error;
use super::config::{Policy, Source};
use super::http::Http;
use super::listing::{Listing, MAX_PAGES, MAX_RELEASES, tags_digest};
use super::poll::rate_limit_wait;
use super::release::{Parsed, Release, parse_api, parse_manifest};
use super::select;
use reqwest::Url;
use reqwest::header::{ACCEPT, ETAG, HeaderMap, IF_NONE_MATCH, LINK, RETRY_AFTER};
use std::collections::HashSet;
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

/// What the first page's request found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// A new list: reading started over from it.
    Fetched,
    /// The stored first page's tags with new details (download counts,
    /// notes): the pages read after it stay.
    Refreshed,
    /// A 304: the stored list is current.
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

/// Where pages are read from, the byte cap of each, and the policy that
/// says which of their releases are kept.
pub struct Reader<'a> {
    pub http: &'a Http,
    pub source: &'a Source,
    /// Bytes of one page (`Limits::document`).
    pub limit: u64,
    pub policy: &'a Policy,
    /// [`select::floor`]: older releases are not kept.
    pub floor: Option<semver::Version>,
    /// The installed release's tag: kept whatever the version policy says
    /// (a pin elsewhere, a draft again) when it is a tag of the prefix's,
    /// so that a list read to its end tells whether it is still published
    /// (see [`Listing::lost`]).
    pub current: Option<&'a str>,
}

/// One page of the list as the server sent it.
struct Page {
    /// At most the room asked for, newest first; not yet filtered.
    releases: Vec<Release>,
    /// Its `rel="next"` link, resolved against its URL.
    next: Option<String>,
    etag: Option<String>,
}

/// What the stored list is filtered by: a list kept for another policy
/// lacks releases this one may choose, so it is read anew.
fn policy_key(policy: &Policy) -> String {
    format!(
        "prefix={:?} version={} prerelease={}",
        policy.tag_prefix, policy.requirement, policy.prerelease
    )
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

/// Reads one page, keeping at most `room` releases; `None` for a 304 to
/// `etag`. The body is parsed as it arrives.
fn fetch_page(
    reader: &Reader,
    url: &str,
    etag: Option<&str>,
    room: usize,
) -> Result<Option<Page>, Error> {
    let (http, source, limit) = (reader.http, reader.source, reader.limit);
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
    let unparsable = |source| Error::Parse {
        url: url.to_owned(),
        source,
    };
    let parsed = match source {
        // A manifest is one document, read whole (serde buffers an untagged
        // one anyway) within the byte limit: its order is its own, so
        // its first entries need not be the newest.
        Source::Manifest { .. } => {
            let body = http.read_limited(response, url, limit, "release list")?;
            let releases = parse_manifest(&body, url).map_err(unparsable)?;
            Parsed {
                releases,
                skipped: 0,
            }
        }
        _ => {
            let mut body = http.body(response, url, limit, "release list");
            parse_api(&mut body, room).map_err(|err| match err.is_io() {
                true => body.failure(err.into()),
                false => unparsable(err),
            })?
        }
    };
    if parsed.skipped > 0 {
        log::warn!(
            "read {} of the {} releases of {url}: at most {MAX_RELEASES} releases of the release list are read",
            parsed.releases.len(),
            parsed.releases.len() + parsed.skipped
        );
    }
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
        releases: parsed.releases,
        next,
        etag: header(&headers, ETAG.as_str()).map(String::from),
    }))
}

impl Reader<'_> {
    /// Whether the listing keeps `release`: [`select::can_choose`], or
    /// the installed one.
    fn keeps(&self, release: &Release) -> bool {
        let tag = release.tag.as_str();
        select::can_choose(self.policy, self.floor.as_ref(), release)
            || (self.current == Some(tag)
                && select::tag_version(tag, &self.policy.tag_prefix).is_some())
    }

    /// Whether `releases` holds one older than those kept.
    fn older(&self, releases: &[Release]) -> bool {
        (releases.iter()).any(|r| select::below_floor(self.policy, self.floor.as_ref(), r))
    }

    /// The releases of `releases` the listing keeps.
    fn keep(&self, releases: Vec<Release>) -> impl Iterator<Item = Release> {
        releases.into_iter().filter(|r| self.keeps(r))
    }
}

/// Reads the first page of the list into `listing` (what the policy can
/// choose from the last good list, its ETag, its URL, how many pages and
/// releases were read and where reading stopped); on a 304 `listing`
/// stays as it was, and on the same tags only their entries and the ETag
/// change.
pub fn first_page(reader: &Reader, listing: &mut Listing) -> Result<Freshness, Error> {
    let url = listing_url(reader.source);
    let policy = policy_key(reader.policy);
    let cached = listing.kept_for(&url, &policy);
    let etag = listing.etag.as_deref().filter(|_| cached);
    if cached {
        // What an update since the list was read left behind.
        listing.older |= reader.older(&listing.releases);
        listing.releases.retain(|r| reader.keeps(r));
    }
    let Some(page) = fetch_page(reader, &url, etag, MAX_RELEASES)? else {
        return Ok(Freshness::NotModified);
    };
    let first = tags_digest(&page.releases);
    // A first page without a next link is the whole list; with one it was
    // full, and the stored list goes on from it.
    let same = cached
        && listing.first.as_deref() == Some(first.as_str())
        && (page.next.is_some() || (listing.pages == 1 && listing.next.is_none()));
    if same {
        // Same releases, new details (GitHub's ETag covers download counts):
        // the pages read after them and the caps stay.
        let tags: HashSet<&str> = page.releases.iter().map(|r| r.tag.as_str()).collect();
        listing.releases.retain(|r| !tags.contains(r.tag.as_str()));
        drop(tags);
        listing.older |= reader.older(&page.releases);
        let kept: Vec<Release> = reader.keep(page.releases).collect();
        listing.releases.splice(..0, kept);
        listing.etag = page.etag;
        return Ok(Freshness::Refreshed);
    }
    *listing = Listing {
        etag: page.etag,
        url: Some(url),
        policy: Some(policy),
        older: reader.older(&page.releases),
        read: page.releases.len(),
        releases: reader.keep(page.releases).collect(),
        first: Some(first),
        next: page.next,
        pages: 1,
    };
    Ok(Freshness::Fetched)
}

/// Reads the pages after those `listing` holds while `enough` says they
/// hold no release the policy allows, until it holds [`MAX_PAGES`] pages or
/// [`MAX_RELEASES`] releases; returns how many it read. Each page goes into
/// `listing` as it arrives, so an error keeps the ones before it and the next
/// check goes on from there. `fresh`: the first page was just read as a new
/// list, so a cap it already reached is news.
pub fn more_pages(
    reader: &Reader,
    listing: &mut Listing,
    fresh: bool,
    enough: &dyn Fn(&[Release]) -> bool,
) -> Result<usize, Error> {
    let origin = Url::parse(&listing_url(reader.source))
        .map(|u| u.origin())
        .ok();
    let mut known: HashSet<String> = listing.releases.iter().map(|r| r.tag.clone()).collect();
    let mut read = 0;
    while let Some(link) = listing.next.clone() {
        if enough(&listing.releases) {
            break;
        }
        // Only the API's own pages: the token goes nowhere else either.
        if Url::parse(&link).map(|u| u.origin()).ok() != origin {
            log::warn!("not following the release list's next page to another origin: {link}");
            listing.next = None;
            break;
        }
        // The caps are on what is stored for this first page, not per check:
        // a 304 then costs one request, whatever the policy finds.
        if listing.capped() {
            if read > 0 || fresh {
                log::warn!(
                    "no eligible release in the newest {} releases (at most {MAX_PAGES} pages and {MAX_RELEASES} releases of the release list are read): check MOLTD_TAG_PREFIX, MOLTD_VERSION, MOLTD_PRERELEASE and the bad releases; older releases are not searched, and the list is read again when a release is published",
                    listing.read
                );
            }
            break;
        }
        log::info!(
            "no eligible release in the newest {} releases: reading {link}",
            listing.read
        );
        let Some(page) = fetch_page(reader, &link, None, listing.room())? else {
            break;
        };
        read += 1;
        listing.pages += 1;
        listing.read += page.releases.len();
        listing.older |= reader.older(&page.releases);
        // Pages shift when releases come or go between two requests.
        let new = reader
            .keep(page.releases)
            .filter(|r| known.insert(r.tag.clone()));
        listing.releases.extend(new);
        listing.next = page.next;
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
