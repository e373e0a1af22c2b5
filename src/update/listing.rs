//! The release list as moltd keeps it between checks: what the policy can
//! choose from the pages read, the first page's ETag and tags, how many
//! pages and releases were read, and where reading stopped.
//!
//! Why a type of its own: the reader ([`super::source`]) fills it page by
//! page and the state file ([`super::state`]) stores it; with the caps and
//! the rule for when a stored list still applies here, neither of those
//! two needs the other. Its fields are stored flat in `state.json`
//! (`etag`, `listing`, `listing_url`, ...), as before it was a type.

use super::release::{Release, fingerprint};
use serde::{Deserialize, Serialize};

/// The most pages of the release list read and stored for one first page
/// (one set of first-page tags), over all checks.
pub const MAX_PAGES: usize = 10;

/// The most releases read from the list, over all its pages: GitHub's
/// [`MAX_PAGES`] pages of 100. A page is read up to the room left and the
/// rest of it is parsed past and dropped, so a feed that serves ten
/// thousand releases a page costs what a thousand cost.
pub const MAX_RELEASES: usize = 1000;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Listing {
    /// The ETag of the list's first page, for If-None-Match.
    pub etag: Option<String>,
    /// Which URL the list came from: a different feed ignores it.
    #[serde(rename = "listing_url")]
    pub url: Option<String>,
    /// The policy (`MOLTD_TAG_PREFIX`, `MOLTD_VERSION`, `MOLTD_PRERELEASE`)
    /// the list was kept for: another one reads the list anew. A file
    /// without it (from before it) is read anew too.
    #[serde(rename = "listing_policy")]
    pub policy: Option<String>,
    /// The releases of the pages read that the policy can choose, in the
    /// feed's order (newest first): only those, so the file stays small
    /// however long the list is.
    #[serde(rename = "listing")]
    pub releases: Vec<Release>,
    /// The first page's set of tags, as a digest: the same set with a new
    /// ETag (download counts) keeps the pages read after it.
    #[serde(rename = "listing_first")]
    pub first: Option<String>,
    /// How many releases the pages read held, kept or not: reading stops
    /// at [`MAX_RELEASES`].
    #[serde(rename = "listing_read")]
    pub read: usize,
    /// The `rel="next"` link of the last page read, when reading stopped
    /// before the end: where to go on if the policy needs more while the
    /// first page stays the same (a 304).
    #[serde(rename = "listing_next")]
    pub next: Option<String>,
    /// How many pages were read: reading stops at [`MAX_PAGES`] until the
    /// first page's tags change.
    #[serde(rename = "listing_pages")]
    pub pages: usize,
    /// Whether the pages read held a release the policy allows that is
    /// older than the installed ones (not kept): a list that still holds
    /// older releases but not the current one lost it (see
    /// [`Listing::lost`]).
    #[serde(rename = "listing_older")]
    pub older: bool,
}

impl Listing {
    /// Whether the stored list was read from `url` for `policy`, so that
    /// its ETag may be sent and its pages kept. A list from a state file
    /// written before lists were kept per policy has none: it is read anew.
    pub fn kept_for(&self, url: &str, policy: &str) -> bool {
        self.url.as_deref() == Some(url) && self.policy.as_deref() == Some(policy)
    }

    /// The caps are reached: no more pages are read for this first page.
    pub fn capped(&self) -> bool {
        self.pages >= MAX_PAGES || self.read >= MAX_RELEASES
    }

    /// Whether `tag`, a release of the policy's of version `version`, was
    /// removed from the feed (deleted, or a draft again): the list was read
    /// to its end, not cut by the caps, and no longer holds it while it
    /// still holds older releases (a feed that answers an empty or cut list
    /// withdraws nothing).
    pub fn lost(&self, tag: &str, version: &semver::Version, prefix: &str) -> bool {
        let complete = self.next.is_none() && !self.capped() && self.url.is_some();
        let older = self.older
            || (self.releases.iter())
                .filter_map(|r| super::select::tag_version(&r.tag, prefix))
                .any(|v| v < *version);
        complete && older && !self.releases.iter().any(|r| r.tag == tag)
    }

    /// How many more releases may be read.
    pub fn room(&self) -> usize {
        MAX_RELEASES.saturating_sub(self.read)
    }
}

/// Identifies a first page by its set of tags (not their order, nor their
/// details), in a fixed size whatever the page holds.
pub fn tags_digest(releases: &[Release]) -> String {
    let mut tags: Vec<&str> = releases.iter().map(|r| r.tag.as_str()).collect();
    tags.sort_unstable();
    format!("sha256:{}", fingerprint(tags))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(tags: &[&str], next: Option<&str>, read: usize, older: bool) -> Listing {
        Listing {
            url: Some("https://h/r".into()),
            releases: tags.iter().map(|tag| Release::named(tag)).collect(),
            next: next.map(String::from),
            read,
            pages: 1,
            older,
            ..Listing::default()
        }
    }

    /// A release is lost only from a list read to its end that still
    /// holds older releases: an empty, cut or paged list loses nothing.
    #[test]
    fn a_release_is_lost_only_from_a_whole_list_with_older_ones() {
        let v2 = semver::Version::new(2, 0, 0);
        let table = [
            (listing(&["v1.0.0"], None, 1, false), true),
            (listing(&["v3.0.0"], None, 2, true), true),
            (listing(&["v2.0.0", "v1.0.0"], None, 2, false), false),
            (listing(&[], None, 0, false), false),
            (listing(&["v3.0.0"], None, 1, false), false),
            (
                listing(&["v1.0.0"], Some("https://h/r?page=2"), 1, false),
                false,
            ),
            (listing(&["v1.0.0"], None, MAX_RELEASES, false), false),
        ];
        for (i, (listing, lost)) in table.into_iter().enumerate() {
            assert_eq!(listing.lost("v2.0.0", &v2, ""), lost, "row {i}");
        }
    }
}
