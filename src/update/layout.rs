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

/// Makes sure the unpacked release at `root` holds `entry`
/// (`MOLTD_ENTRY`), the program its services run, before it can be
/// switched to. Archives are commonly flat (goreleaser's default: the
/// program under the project's name beside README and LICENSE) where the
/// services expect `bin/app`: when `entry` is missing and the release holds
/// exactly one executable file at its top or in `bin/`, `entry` becomes a
/// relative link to it, whose name is returned. Otherwise the release is
/// refused, saying which variable fixes it.
pub fn ensure_entry(root: &Path, entry: &Path, asset: &str) -> Result<Option<String>, Error> {
    let refuse = |problem: String| Error::NoEntry {
        asset: asset.to_owned(),
        problem,
    };
    let path = root.join(entry);
    let executable = |meta: &fs::Metadata| meta.is_file() && meta.permissions().mode() & 0o111 != 0;
    // Links in a release were checked to stay inside it while unpacking.
    match fs::metadata(&path) {
        Ok(meta) if executable(&meta) => return Ok(None),
        Ok(_) => {
            return Err(refuse(format!(
                "{} (MOLTD_ENTRY) is not an executable file",
                entry.display()
            )));
        }
        Err(_) if fs::symlink_metadata(&path).is_ok() => {
            return Err(refuse(format!(
                "{} (MOLTD_ENTRY) is a dangling link",
                entry.display()
            )));
        }
        Err(_) => {}
    }
    let mut programs: Vec<PathBuf> = Vec::new();
    for folder in [Path::new(""), Path::new("bin")] {
        let Ok(list) = fs::read_dir(root.join(folder)) else {
            continue;
        };
        for item in list.flatten() {
            let is_program = fs::metadata(item.path()).is_ok_and(|m| executable(&m));
            if is_program && item.file_name() != VERSION_FILE {
                programs.push(folder.join(item.file_name()));
            }
        }
    }
    programs.sort();
    let fix = "set MOLTD_ENTRY to the program's path inside the release (below its single top folder, or after MOLTD_STRIP_COMPONENTS)";
    let program = match programs.as_slice() {
        [one] => one,
        [] => {
            return Err(refuse(format!(
                "it has no {} (MOLTD_ENTRY), and no executable file at its top or in bin/ to run instead; {fix}",
                entry.display()
            )));
        }
        many => {
            let names: Vec<String> = many.iter().map(|p| p.display().to_string()).collect();
            return Err(refuse(format!(
                "it has no {} (MOLTD_ENTRY), and {} programs that could be it: {}; {fix}",
                entry.display(),
                many.len(),
                names.join(", ")
            )));
        }
    };
    // `bin/app` -> `../app`: relative, so the release can move.
    let parent = entry.parent().unwrap_or(Path::new(""));
    let target: PathBuf = parent
        .components()
        .map(|_| Path::new(".."))
        .chain([program.as_path()])
        .collect();
    let dir = root.join(parent);
    if !dir.is_dir() {
        fs::create_dir_all(&dir).map_err(Error::io("create folder", &dir))?;
        // Whatever moltd's umask: services of other users traverse it.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
            .map_err(Error::io("set the mode of", &dir))?;
    }
    std::os::unix::fs::symlink(&target, &path).map_err(Error::io("create the link", &path))?;
    Ok(Some(program.display().to_string()))
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

    /// Flat archives (goreleaser's default) get `bin/app` pointing at their
    /// one program; anything ambiguous is refused, naming MOLTD_ENTRY.
    #[test]
    fn the_entry_is_found_linked_or_refused() {
        let entry = Path::new("bin/app");
        let release = |name: &str, files: &[(&str, u32)]| {
            let root = temp(name);
            for (file, mode) in files {
                let path = root.join(file);
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(&path, "x").unwrap();
                fs::set_permissions(&path, fs::Permissions::from_mode(*mode)).unwrap();
            }
            root
        };
        let as_is = release("entry-as-is", &[("bin/app", 0o755), ("bin/other", 0o755)]);
        assert_eq!(ensure_entry(&as_is, entry, "a.tgz").unwrap(), None);

        let flat = release(
            "entry-flat",
            &[("myapp", 0o755), ("README.md", 0o644), ("LICENSE", 0o644)],
        );
        assert_eq!(
            ensure_entry(&flat, entry, "a.tgz").unwrap().as_deref(),
            Some("myapp")
        );
        assert_eq!(
            fs::read_link(flat.join("bin/app")).unwrap(),
            Path::new("../myapp")
        );
        assert_eq!(ensure_entry(&flat, entry, "a.tgz").unwrap(), None);

        let in_bin = release("entry-bin", &[("bin/server", 0o755), ("etc/conf", 0o644)]);
        assert_eq!(
            ensure_entry(&in_bin, entry, "a.tgz").unwrap().as_deref(),
            Some("bin/server")
        );
        assert_eq!(
            fs::read_link(in_bin.join("bin/app")).unwrap(),
            Path::new("../bin/server")
        );

        let refused = [
            (
                "entry-two",
                vec![("app1", 0o755), ("app2", 0o755)],
                "2 programs that could be it: app1, app2",
            ),
            (
                "entry-none",
                vec![("README.md", 0o644)],
                "no executable file at its top or in bin/",
            ),
            (
                "entry-plain",
                vec![("bin/app", 0o644)],
                "bin/app (MOLTD_ENTRY) is not an executable file",
            ),
        ];
        for (name, files, why) in refused {
            let root = release(name, &files);
            let err = ensure_entry(&root, entry, "a.tgz").unwrap_err().to_string();
            assert!(
                err.starts_with("a.tgz cannot run: ") && err.contains(why),
                "{err}"
            );
            if why.contains("could be it") || why.contains("no executable") {
                assert!(err.contains("set MOLTD_ENTRY"), "{err}");
            }
            let _ = fs::remove_dir_all(&root);
        }
        for root in [as_is, flat, in_bin] {
            let _ = fs::remove_dir_all(&root);
        }
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
