//! Links the release build's code in the order PID 1 runs it.
//!
//! An idle PID 1 maps its code in 64 KiB windows of the page cache (the
//! kernel's fault-around), so what counts is how many windows its loop
//! touches, not how many bytes it runs. The linker places functions in
//! the order of `src/pid1.order` (the functions PID 1 ran after start-up
//! under `bench/pid1_pages.py order`, which regenerates it) at the start
//! of `.text`, together, and the rest after them: PID 1's loop then maps
//! a few windows instead of most of them (BENCHMARKS.md, "PID 1's
//! footprint"). The names carry hashes that change with the code, the
//! release profile and the toolchain: names the list no longer matches
//! only leave those functions where they would be anyway, so regenerate it
//! after such changes.
//!
//! Only for release builds linked by lld (`--symbol-ordering-file` is
//! lld's), which rustc uses by default on x86_64 Linux since 1.90; a build
//! told to use another linker links as before.

use std::env;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=src/pid1.order");
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    if env::var("PROFILE").as_deref() == Ok("release") && links_with_lld() {
        let order = concat!(env!("CARGO_MANIFEST_DIR"), "/src/pid1.order");
        println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={order}");
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}

/// Whether rustc links this target with its own lld: x86_64 GNU/Linux
/// with rustc 1.90 or later, unless the flags choose a linker or turn lld off.
fn links_with_lld() -> bool {
    let cfg = |name| env::var(format!("CARGO_CFG_TARGET_{name}")).unwrap_or_default();
    if cfg("ARCH") != "x86_64" || cfg("OS") != "linux" || cfg("ENV") != "gnu" {
        return false;
    }
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if flags.contains("linker") {
        return false;
    }
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("--version").output() else {
        return false;
    };
    // "rustc 1.95.0 (...)"
    let version = String::from_utf8_lossy(&out.stdout);
    let minor = version
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').nth(1))
        .and_then(|m| m.parse::<u32>().ok());
    minor.is_some_and(|m| m >= 90)
}
