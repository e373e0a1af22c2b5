//! The installed tree: `releases/<tag>/`, the `current` link, the version
//! file, the manifest that notices hand edits, and pruning.
//!
//! Service `run` scripts exec the app through `$MOLTD_APP_DIR/current`, so
//! the link is the one thing a switch changes. It is replaced the only way
//! that is atomic: a new link under a temporary name, renamed over the old
//! one, then an fsync of the folder. Whatever moment moltd dies at, `current`
//! names one whole release.
//!
//! The manifest (kind, size, mode and mtime of every entry of the current
//! release, recorded when it was installed) is how moltd tells that someone
//! edited the running release by hand. Hashing every file would catch more,
//! but would read the whole release at each check; an edit changes the mtime.

use super::Error;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The file in each release that names its tag, for the app to read.
pub const VERSION_FILE: &str = "VERSION";

/// The tag `current` points to, if it points into `releases/`.
pub fn current_tag(app_dir: &Path) -> Option<String> {
    let target = fs::read_link(app_dir.join("current")).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

/// Points `current` at `releases/<tag>` atomically (relative link, so the
/// app dir can be mounted anywhere).
pub fn switch_current(app_dir: &Path, tag: &str) -> Result<(), Error> {
    let link = app_dir.join("current");
    let tmp = app_dir.join(format!(".current.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let target = Path::new("releases").join(tag);
    std::os::unix::fs::symlink(&target, &tmp).map_err(Error::io("create the link", &tmp))?;
    fs::rename(&tmp, &link).map_err(Error::io("replace the link", &link))?;
    fs::File::open(app_dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("sync", app_dir))
}

/// Writes `VERSION` into a release that does not ship one.
pub fn ensure_version_file(release: &Path, tag: &str) -> Result<(), Error> {
    let path = release.join(VERSION_FILE);
    if path.exists() {
        return Ok(());
    }
    let version = tag.trim_start_matches('v');
    fs::write(&path, format!("{version}\n")).map_err(Error::io("write", &path))
}

/// The installed releases (folders under `releases/` not starting with a
/// dot), oldest installed first.
pub fn installed(releases: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(releases) else {
        return Vec::new();
    };
    let mut found: Vec<((i64, i64), String)> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let meta = e.metadata().ok()?;
            let changed = (meta.ctime(), meta.ctime_nsec());
            (!name.starts_with('.')).then_some((changed, name))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, name)| name).collect()
}

/// Removes the oldest releases beyond `keep`, never one in `spare`.
pub fn prune(releases: &Path, keep: usize, spare: &[Option<&str>]) -> Vec<String> {
    let all = installed(releases);
    let excess = all.len().saturating_sub(keep);
    let mut removed = Vec::new();
    for tag in all.into_iter().take(excess) {
        if spare.contains(&Some(tag.as_str())) {
            continue;
        }
        match fs::remove_dir_all(releases.join(&tag)) {
            Ok(()) => removed.push(tag),
            Err(err) => log::warn!("cannot remove the old release {tag}: {err}"),
        }
    }
    removed
}

/// What one entry of a release looked like when it was installed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    kind: char,
    size: u64,
    mode: u32,
    mtime: i64,
    mtime_nsec: i64,
}

/// Every entry of one installed release.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub tag: String,
    entries: BTreeMap<String, Entry>,
}

impl Manifest {
    /// Records the release folder as it is now.
    pub fn record(release: &Path, tag: &str) -> Manifest {
        let mut entries = BTreeMap::new();
        walk(release, release, &mut entries);
        Manifest {
            tag: tag.to_owned(),
            entries,
        }
    }

    /// The first difference between the recorded and the present tree, in
    /// words (`bin/app was modified`), or `None` when they match.
    pub fn changed(&self, release: &Path) -> Option<String> {
        let now = Manifest::record(release, &self.tag);
        for (path, entry) in &self.entries {
            match now.entries.get(path) {
                None => return Some(format!("{path} was removed")),
                Some(e) if e != entry => return Some(format!("{path} was modified")),
                Some(_) => {}
            }
        }
        let added = now.entries.keys().find(|p| !self.entries.contains_key(*p));
        added.map(|path| format!("{path} was added"))
    }
}

fn walk(root: &Path, dir: &Path, entries: &mut BTreeMap<String, Entry>) {
    let Ok(list) = fs::read_dir(dir) else { return };
    for item in list.flatten() {
        let path = item.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let kind = match meta.file_type() {
            t if t.is_dir() => 'd',
            t if t.is_symlink() => 'l',
            _ => 'f',
        };
        let relative = path
            .strip_prefix(root)
            .map_or_else(|_| PathBuf::new(), Path::to_path_buf);
        entries.insert(
            relative.to_string_lossy().into_owned(),
            Entry {
                kind,
                size: if kind == 'd' { 0 } else { meta.len() },
                mode: meta.permissions().mode(),
                mtime: if kind == 'd' { 0 } else { meta.mtime() },
                mtime_nsec: if kind == 'd' { 0 } else { meta.mtime_nsec() },
            },
        );
        if kind == 'd' {
            walk(root, &path, entries);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("moltd-layout-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn switching_the_link_and_reading_it_back() {
        let app = temp("switch");
        fs::create_dir_all(app.join("releases/v1")).unwrap();
        fs::create_dir_all(app.join("releases/v2")).unwrap();
        assert_eq!(current_tag(&app), None);
        switch_current(&app, "v1").unwrap();
        assert_eq!(current_tag(&app).as_deref(), Some("v1"));
        switch_current(&app, "v2").unwrap();
        assert_eq!(current_tag(&app).as_deref(), Some("v2"));
        assert!(app.join("current/.").is_dir());
        let _ = fs::remove_dir_all(&app);
    }

    #[test]
    fn manifest_notices_edits_additions_and_removals() {
        let release = temp("manifest");
        fs::create_dir_all(release.join("bin")).unwrap();
        fs::write(release.join("bin/app"), "one").unwrap();
        fs::write(release.join("VERSION"), "1").unwrap();
        let manifest = Manifest::record(&release, "v1");
        assert_eq!(manifest.changed(&release), None);
        fs::write(release.join("extra"), "x").unwrap();
        assert_eq!(
            manifest.changed(&release).as_deref(),
            Some("extra was added")
        );
        fs::remove_file(release.join("extra")).unwrap();
        fs::write(release.join("bin/app"), "two!").unwrap();
        assert_eq!(
            manifest.changed(&release).as_deref(),
            Some("bin/app was modified")
        );
        fs::remove_file(release.join("VERSION")).unwrap();
        assert_eq!(
            manifest.changed(&release).as_deref(),
            Some("VERSION was removed")
        );
        let _ = fs::remove_dir_all(&release);
    }

    #[test]
    fn pruning_spares_current_and_previous() {
        let releases = temp("prune");
        for tag in ["v1", "v2", "v3", "v4", "v5"] {
            fs::create_dir_all(releases.join(tag)).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let removed = prune(&releases, 2, &[Some("v1"), Some("v5")]);
        assert_eq!(removed, ["v2", "v3"]);
        assert_eq!(installed(&releases), ["v1", "v4", "v5"]);
        let _ = fs::remove_dir_all(&releases);
    }
}
