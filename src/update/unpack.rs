//! Unpacking a release archive without trusting it.
//!
//! The archive comes from the network, so every entry is checked before it
//! touches the disk:
//!
//! * paths must be relative and free of `..`; `.` parts are dropped;
//! * only files, folders, hard links to files already unpacked, and
//!   symlinks are allowed; devices, fifos and sparse files are refused;
//! * symlinks are created last, after every target is known, and each one
//!   is resolved through the other links of the archive: one that ends up
//!   outside the release folder, or that would have another entry written
//!   through it, is refused. Because links come last, nothing is ever
//!   written through a link while unpacking;
//! * entry count and bytes written are capped (the caps are checked on the
//!   bytes actually written, not on what the headers claim). Folders an
//!   entry's path implies are created one by one and count as entries too,
//!   so deep paths cannot make thousands of inodes out of one header; every
//!   inode and block is also charged to the staging [`Room`], which stops
//!   before the reserve of free space and inodes is touched;
//! * permission bits are kept (not setuid/setgid, and folders stay writable
//!   by their owner; a folder's sticky bit is kept, so a world-writable
//!   `tmp/` stays safe to share); ownership and times are not restored.
//!
//! A single top-level folder is stripped by default: the release root is
//! then that folder. `MOLTD_STRIP_COMPONENTS` strips a fixed count instead.

use super::Error;
use super::config::Limits;
use super::error::Cap;
use super::staging::Room;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// What was unpacked.
#[derive(Debug)]
pub struct Unpacked {
    /// The release's root: `tree`, or its single top-level folder.
    pub root: PathBuf,
    pub entries: u64,
    pub bytes: u64,
}

/// An entry's path inside the release, after stripping `strip` leading
/// folders; `None` for entries that are stripped away (or the root itself).
pub fn entry_path(raw: &Path, strip: usize) -> Result<Option<PathBuf>, &'static str> {
    let mut parts = Vec::new();
    for component in raw.components() {
        match component {
            Component::Normal(part) => parts.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("path contains .."),
            Component::RootDir | Component::Prefix(_) => return Err("absolute path"),
        }
    }
    Ok((parts.len() > strip).then(|| parts[strip..].iter().collect()))
}

/// Where the link at `link` (relative to the release root) pointing at
/// `target` ends up, following the other links in `links` (keyed the same
/// way). Errors when the path leaves the release at any point.
pub fn resolve_link(
    links: &BTreeMap<PathBuf, PathBuf>,
    link: &Path,
    target: &Path,
) -> Result<PathBuf, &'static str> {
    let mut at: Vec<OsString> = link
        .parent()
        .map(|p| p.iter().map(OsString::from).collect())
        .unwrap_or_default();
    walk(links, &mut at, target, 0)?;
    Ok(at.iter().collect())
}

fn walk(
    links: &BTreeMap<PathBuf, PathBuf>,
    at: &mut Vec<OsString>,
    target: &Path,
    depth: usize,
) -> Result<(), &'static str> {
    if depth > 40 {
        return Err("too many levels of links");
    }
    for component in target.components() {
        match component {
            Component::Normal(part) => {
                at.push(part.to_os_string());
                let here: PathBuf = at.iter().collect();
                if let Some(next) = links.get(&here) {
                    at.pop();
                    walk(links, at, next, depth + 1)?;
                }
            }
            Component::CurDir => {}
            Component::ParentDir => {
                at.pop().ok_or("link points outside the release")?;
            }
            Component::RootDir | Component::Prefix(_) => return Err("link target is absolute"),
        }
    }
    Ok(())
}

/// The folder to strip when every entry lives below one top-level folder.
pub fn single_top(paths: &BTreeSet<PathBuf>, dirs: &BTreeSet<PathBuf>) -> Option<OsString> {
    let mut tops = paths.iter().filter_map(|p| p.iter().next());
    let first = tops.next()?;
    let only_one = tops.all(|t| t == first);
    let is_dir = dirs.contains(Path::new(first)) || paths.iter().any(|p| p.iter().count() > 1);
    let is_plain_dir = !paths.contains(Path::new(first)) || dirs.contains(Path::new(first));
    (only_one && is_dir && is_plain_dir).then(|| first.to_os_string())
}

struct Writer<'a> {
    tree: &'a Path,
    limits: &'a Limits,
    asset: &'a str,
    room: &'a mut Room,
    bytes: u64,
    entries: u64,
    /// Folders created so far, so that each implied one is made and
    /// counted once.
    made: BTreeSet<PathBuf>,
}

impl<'a> Writer<'a> {
    fn new(tree: &'a Path, limits: &'a Limits, asset: &'a str, room: &'a mut Room) -> Writer<'a> {
        Writer {
            tree,
            limits,
            asset,
            room,
            bytes: 0,
            entries: 0,
            made: BTreeSet::new(),
        }
    }

    fn limit(&self, cap: Cap, limit: u64) -> Error {
        Error::Limit {
            asset: self.asset.to_string(),
            cap,
            limit,
        }
    }

    /// One more entry against `MOLTD_MAX_ENTRIES`.
    fn count(&mut self) -> Result<(), Error> {
        self.entries += 1;
        if self.entries > self.limits.entries {
            return Err(self.limit(Cap::Entries, self.limits.entries));
        }
        Ok(())
    }

    /// Creates `rel` and each missing folder above it that the archive
    /// did not list (each one an entry).
    fn parents(&mut self, rel: &Path) -> Result<(), Error> {
        let missing: Vec<PathBuf> = rel
            .ancestors()
            .filter(|a| !a.as_os_str().is_empty() && !self.made.contains(*a))
            .map(Path::to_path_buf)
            .collect();
        for dir in missing.iter().rev() {
            self.count()?;
            // Whatever moltd's umask: services of other users traverse it.
            self.make(dir, 0o755)?;
        }
        Ok(())
    }

    /// Creates the folder `rel`, whose parent exists.
    fn make(&mut self, rel: &Path, mode: u32) -> Result<(), Error> {
        self.room.folder()?;
        let path = self.tree.join(rel);
        fs::create_dir(&path).map_err(self.fail("create folder", &path))?;
        self.made.insert(rel.to_path_buf());
        self.chmod(rel, mode)
    }

    fn chmod(&self, rel: &Path, mode: u32) -> Result<(), Error> {
        let path = self.tree.join(rel);
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(self.fail("set the mode of", &path))
    }

    fn fail(&self, action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error {
        let tree = self.tree.to_path_buf();
        let path = path.to_path_buf();
        move |source| {
            // Out of space or over a quota (EDQUOT): the disk's state, not
            // the release's fault.
            if matches!(
                source.kind(),
                io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
            ) {
                Error::DiskFull { dir: tree, source }
            } else {
                Error::Io {
                    action,
                    path,
                    source,
                }
            }
        }
    }

    /// A folder the archive lists (already counted as its entry).
    fn dir(&mut self, rel: &Path, mode: u32) -> Result<(), Error> {
        let mode = mode & 0o1777 | 0o700;
        if self.made.contains(rel) {
            return self.chmod(rel, mode);
        }
        if let Some(parent) = rel.parent() {
            self.parents(parent)?;
        }
        self.make(rel, mode)
    }

    fn file(&mut self, rel: &Path, mode: u32, data: &mut dyn Read) -> Result<(), Error> {
        if let Some(parent) = rel.parent() {
            self.parents(parent)?;
        }
        self.room.inode()?;
        let path = self.tree.join(rel);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode & 0o777 | 0o600)
            .open(&path)
            .map_err(self.fail("create", &path))?;
        let mut buf = vec![0; 64 * 1024];
        let mut size = 0;
        loop {
            let n = data.read(&mut buf).map_err(|source| Error::BadArchive {
                asset: self.asset.to_string(),
                source,
            })?;
            if n == 0 {
                break;
            }
            self.bytes += n as u64;
            if self.bytes > self.limits.unpacked {
                return Err(self.limit(Cap::Unpacked, self.limits.unpacked));
            }
            self.room.grow(size, size + n as u64)?;
            size += n as u64;
            file.write_all(&buf[..n])
                .map_err(self.fail("write", &path))?;
        }
        // Keep exactly the archive's bits (the umask may have cleared some).
        fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o777))
            .map_err(self.fail("set the mode of", &path))
    }
}

/// Writes `reader`, an asset that is one program rather than an archive,
/// into the empty folder `tree` as the executable `name`, within the same
/// caps and `room`. `asset` names the download in messages.
pub fn single_file(
    mut reader: impl Read,
    tree: &Path,
    room: &mut Room,
    limits: &Limits,
    name: &Path,
    asset: &str,
) -> Result<Unpacked, Error> {
    let mut writer = Writer::new(tree, limits, asset, room);
    writer.count()?;
    writer.file(name, 0o755, &mut reader)?;
    Ok(Unpacked {
        root: tree.to_path_buf(),
        entries: writer.entries,
        bytes: writer.bytes,
    })
}

/// Unpacks the tar stream `reader` into the empty folder `tree`, within
/// `room`. `asset` names the archive in messages.
pub fn unpack(
    reader: impl Read,
    tree: &Path,
    room: &mut Room,
    limits: &Limits,
    strip: Option<usize>,
    asset: &str,
) -> Result<Unpacked, Error> {
    let bad_archive = |source| Error::BadArchive {
        asset: asset.to_string(),
        source,
    };
    let mut writer = Writer::new(tree, limits, asset, room);
    let mut archive = tar::Archive::new(reader);
    let mut paths = BTreeSet::new();
    let mut dirs = BTreeSet::new();
    let mut files = BTreeSet::new();
    let mut links = BTreeMap::new();
    for entry in archive.entries().map_err(bad_archive)? {
        let mut entry = entry.map_err(bad_archive)?;
        writer.count()?;
        let raw = entry.path().map_err(bad_archive)?.into_owned();
        let refuse = |reason| Error::UnsafeEntry {
            asset: asset.to_string(),
            path: raw.display().to_string(),
            reason,
        };
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue;
        }
        let Some(rel) = entry_path(&raw, strip.unwrap_or(0)).map_err(refuse)? else {
            continue;
        };
        let mode = entry.header().mode().map_err(bad_archive)?;
        if kind.is_dir() {
            if files.contains(&rel) || links.contains_key(&rel) {
                return Err(refuse("duplicate entry"));
            }
            writer.dir(&rel, mode)?;
            dirs.insert(rel.clone());
        } else {
            if !paths.insert(rel.clone()) {
                return Err(refuse("duplicate entry"));
            }
            if kind.is_file() {
                writer.file(&rel, mode, &mut entry)?;
                files.insert(rel.clone());
            } else if kind.is_hard_link() {
                let target = entry
                    .link_name()
                    .map_err(bad_archive)?
                    .ok_or_else(|| refuse("hard link without a target"))?;
                let target = entry_path(&target, strip.unwrap_or(0))
                    .map_err(refuse)?
                    .filter(|t| files.contains(t))
                    .ok_or_else(|| refuse("hard link to something that is not an unpacked file"))?;
                if let Some(parent) = rel.parent() {
                    writer.parents(parent)?;
                }
                let path = tree.join(&rel);
                fs::hard_link(tree.join(&target), &path).map_err(writer.fail("link", &path))?;
                files.insert(rel.clone());
            } else if kind.is_symlink() {
                let target = entry
                    .link_name()
                    .map_err(bad_archive)?
                    .ok_or_else(|| refuse("symlink without a target"))?;
                if target.is_absolute() {
                    return Err(refuse("link target is absolute"));
                }
                links.insert(rel.clone(), target.into_owned());
            } else if kind.is_character_special() || kind.is_block_special() {
                return Err(refuse("device entries are not allowed"));
            } else if kind.is_fifo() {
                return Err(refuse("fifo entries are not allowed"));
            } else {
                return Err(refuse("unsupported entry type"));
            }
        }
        paths.insert(rel);
    }

    let top = match strip {
        Some(_) => None,
        None => single_top(&paths, &dirs),
    };
    let release = |p: &Path| -> PathBuf {
        top.as_ref()
            .and_then(|t| p.strip_prefix(t).ok())
            .unwrap_or(p)
            .to_path_buf()
    };
    let relative: BTreeMap<PathBuf, PathBuf> =
        links.iter().map(|(p, t)| (release(p), t.clone())).collect();
    for (rel, target) in &links {
        let refuse = |reason| Error::UnsafeEntry {
            asset: asset.to_string(),
            path: rel.display().to_string(),
            reason,
        };
        if rel.ancestors().skip(1).any(|a| links.contains_key(a)) {
            return Err(refuse("entry below a symlink"));
        }
        resolve_link(&relative, &release(rel), target).map_err(refuse)?;
        if files.iter().chain(&dirs).any(|p| p.starts_with(rel)) {
            return Err(refuse("duplicate entry"));
        }
        if let Some(parent) = rel.parent() {
            writer.parents(parent)?;
        }
        writer.room.inode()?;
        let path = tree.join(rel);
        std::os::unix::fs::symlink(target, &path).map_err(writer.fail("create link", &path))?;
    }
    Ok(Unpacked {
        root: top.map_or_else(|| tree.to_path_buf(), |t| tree.join(t)),
        entries: writer.entries,
        bytes: writer.bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths() {
        let table = [
            ("app/bin/x", 0, Ok(Some("app/bin/x"))),
            ("./app/bin/x", 0, Ok(Some("app/bin/x"))),
            ("app/bin/x", 1, Ok(Some("bin/x"))),
            ("app/", 1, Ok(None)),
            ("./", 0, Ok(None)),
            ("a/b", 5, Ok(None)),
            ("/etc/passwd", 0, Err("absolute path")),
            ("../x", 0, Err("path contains ..")),
            ("a/../../x", 0, Err("path contains ..")),
            ("a/b/..", 1, Err("path contains ..")),
        ];
        for (raw, strip, expected) in table {
            let got = entry_path(Path::new(raw), strip);
            assert_eq!(
                got,
                expected.map(|o| o.map(PathBuf::from)),
                "{raw} strip {strip}"
            );
        }
    }

    #[test]
    fn link_resolution() {
        let links: BTreeMap<PathBuf, PathBuf> = [
            ("here", "."),
            ("up", ".."),
            ("deep/d", "a/b/c"),
            ("loop1", "loop2"),
            ("loop2", "loop1"),
        ]
        .into_iter()
        .map(|(a, b)| (PathBuf::from(a), PathBuf::from(b)))
        .collect();
        let table = [
            ("bin/app", "../lib/app", Ok("lib/app")),
            ("lib/libx.so", "libx.so.1", Ok("lib/libx.so.1")),
            ("a", "here/x", Ok("x")),
            ("bin/x", "../..", Err("link points outside the release")),
            ("x", "../x", Err("link points outside the release")),
            ("x", "/etc/passwd", Err("link target is absolute")),
            // A lexical check would accept these two; resolving through the
            // archive's own links does not.
            ("x", "here/y/../..", Err("link points outside the release")),
            // deep/d is deep/a/b/c, so four steps up from it is the root.
            ("x", "deep/d/../../../..", Ok("")),
            (
                "x",
                "deep/d/../../../../..",
                Err("link points outside the release"),
            ),
            ("x", "loop1", Err("too many levels of links")),
        ];
        for (link, target, expected) in table {
            let got = resolve_link(&links, Path::new(link), Path::new(target));
            assert_eq!(got, expected.map(PathBuf::from), "{link} -> {target}");
        }
    }

    #[test]
    fn top_level_folder() {
        let set = |items: &[&str]| items.iter().map(PathBuf::from).collect::<BTreeSet<_>>();
        let table = [
            (set(&["app/bin", "app/lib/x"]), set(&[]), Some("app")),
            (set(&["app/bin"]), set(&["app"]), Some("app")),
            (set(&[]), set(&["app"]), Some("app")),
            (set(&["app/bin", "README"]), set(&[]), None),
            (set(&["app"]), set(&[]), None),
            (set(&["a/x", "b/y"]), set(&[]), None),
        ];
        for (paths, dirs, expected) in table {
            let mut all = paths.clone();
            all.extend(dirs.iter().cloned());
            assert_eq!(
                single_top(&all, &dirs).map(|t| t.to_string_lossy().into_owned()),
                expected.map(String::from),
                "{paths:?} {dirs:?}"
            );
        }
    }
}
