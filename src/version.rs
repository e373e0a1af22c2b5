//! The version moltd states for itself: in `--version`, the agent's
//! `hello`, the status, and the self-update's "newer than" check.
//!
//! One accessor, so every surface says the same thing:
//!
//! - Normally, `MOLTD_BUILD_VERSION` from the build's environment
//!   (`option_env!`), else the crate's version. A build made with
//!   `MOLTD_BUILD_VERSION=0.1.1 cargo build` is a second, different moltd
//!   for the self-update benchmark without editing the source.
//! - With the `test-hooks` feature only (the binary the integration tests
//!   run): if a file `<path of /proc/self/exe>.version` exists, its
//!   trimmed content is the version, so a test can make "newer" and
//!   "older" copies of one binary. Builds users get never read it.

/// moltd's own version.
pub fn version() -> &'static str {
    #[cfg(feature = "test-hooks")]
    if let Some(version) = from_file() {
        return version;
    }
    built()
}

/// The version this build was made as.
fn built() -> &'static str {
    option_env!("MOLTD_BUILD_VERSION").unwrap_or(env!("CARGO_PKG_VERSION"))
}

/// The content of `<exe>.version`, read once.
#[cfg(feature = "test-hooks")]
fn from_file() -> Option<&'static str> {
    static FILE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let exe = std::fs::read_link("/proc/self/exe").ok()?;
        let mut path = exe.into_os_string();
        path.push(".version");
        let text = std::fs::read_to_string(path).ok()?;
        Some(text.trim().to_owned()).filter(|v| !v.is_empty())
    })
    .as_deref()
}

/// With `test-hooks`, a binary kept under another name (the self-update's
/// copy) keeps the version file of the one it was copied from; otherwise
/// nothing to do.
pub fn keep_beside(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    #[cfg(feature = "test-hooks")]
    {
        let sidecar = |path: &std::path::Path| {
            let mut name = path.as_os_str().to_owned();
            name.push(".version");
            std::path::PathBuf::from(name)
        };
        match std::fs::copy(sidecar(from), sidecar(to)) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
    }
    let _ = (from, to);
    Ok(())
}
