//! Any tar stream: the unpacker must return (never panic), and must never
//! create anything outside the folder it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moltd::update::config::Limits;
use moltd::update::unpack::unpack;

fuzz_target!(|data: &[u8]| {
    let base = std::env::temp_dir().join(format!("moltd-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let tree = base.join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    let limits = Limits {
        download: 1 << 20,
        unpacked: 1 << 20,
        entries: 1000,
        document: 1 << 20,
    };
    let _ = unpack(data, &tree, &limits, None, "fuzz.tar");
    // Only `tree` may have appeared in `base`.
    let names: Vec<_> = std::fs::read_dir(&base).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(names, ["tree"], "something was written beside the tree");
    let _ = std::fs::remove_dir_all(&base);
});
