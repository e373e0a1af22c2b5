//! Any bytes as a GitHub/Gitea release list or a manifest: an error or a
//! list, never a panic; and whatever parses must select without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moltd::update::config::Policy;
use moltd::update::release::{parse_api, parse_manifest};
use moltd::update::select::{AssetRule, choose, pick_asset};

fuzz_target!(|data: &[u8]| {
    let policy = Policy {
        tag_prefix: String::new(),
        requirement: semver::VersionReq::STAR,
        prerelease: true,
    };
    let parsed = [
        parse_api(data, 1000).map(|p| p.releases),
        parse_manifest(data, "http://127.0.0.1/m.json"),
    ];
    for releases in parsed.into_iter().flatten() {
        if let Some(candidate) = choose(&releases, &policy, None, &Default::default()) {
            let _ = pick_asset(&candidate.release, &candidate.version, &AssetRule::Default, "x86_64");
        }
    }
});
