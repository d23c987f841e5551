//! What the base's layers hold, known rather than guessed: each layer's tar headers read once
//! (streamed, no file contents kept) into a compact record cached by the layer's digest, and the
//! records merged into the tree the app's layers land on. From it: a DEST placed through the
//! base's symlinks (as Docker's COPY follows `/bin -> usr/bin`), each parent the layer names
//! written with the base's mode and owner (a missing `tmp/` entry made podman create it 0755 over
//! the base's 1777), and a path hidden again only where a lower layer really holds it.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::build::entry::{Entry, Kind, Mapping};
use crate::error::{Error, Result};

/// What a path of a layer is, as the record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Node {
    Dir {
        mode: u32,
        uid: u64,
        gid: u64,
    },
    Symlink {
        target: String,
    },
    /// A file, a hardlink, a device: something that is not a directory or a symlink.
    Other,
}

/// One layer's tar headers, in the order layerup needs them: paths (relative, `/`-separated,
/// cleaned), whiteouts and opaque directories.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Format of this record; a cached record of another format is read again.
    pub version: u32,
    pub nodes: Vec<(String, Node)>,
    /// Paths a whiteout hides (`dir/.wh.name` → `dir/name`).
    pub hidden: Vec<String>,
    /// Directories an opaque whiteout empties of what is below.
    pub opaque: Vec<String>,
}

const VERSION: u32 = 1;

/// The most symlinks followed placing one path (Linux's `MAXSYMLINKS` is 40).
const MAX_LINKS: usize = 40;

/// Reads one layer's tar headers (`tar`: the uncompressed stream), skipping every file's bytes.
/// An error is the reader's (a broken or wrong stream) or the tar's.
pub fn record(tar: impl Read) -> std::io::Result<Record> {
    let mut archive = tar::Archive::new(tar);
    let mut out = Record {
        version: VERSION,
        ..Record::default()
    };
    for entry in archive.entries()? {
        let entry = entry?;
        let raw = entry.path()?;
        let Some(path) = clean(&raw.to_string_lossy()) else {
            continue;
        };
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (d.to_string(), n),
            None => (String::new(), path.as_str()),
        };
        if name == ".wh..wh..opq" {
            out.opaque.push(dir);
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            out.hidden.push(join(&dir, hidden));
            continue;
        }
        let h = entry.header();
        let node = match h.entry_type() {
            // Fields a writer left empty read as what an applier would make of them.
            tar::EntryType::Directory => Node::Dir {
                mode: h.mode().unwrap_or(0o755) & 0o7777,
                uid: h.uid().unwrap_or(0),
                gid: h.gid().unwrap_or(0),
            },
            tar::EntryType::Symlink => Node::Symlink {
                target: entry
                    .link_name()?
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            },
            _ => Node::Other,
        };
        out.nodes.push((path, node));
    }
    Ok(out)
}

/// A tar path made relative and `/`-separated, without `.` parts; `None` for the root itself
/// or a path with `..` (which no applier writes either).
fn clean(raw: &str) -> Option<String> {
    let mut parts = Vec::new();
    for p in raw.split('/') {
        match p {
            "" | "." => {}
            ".." => return None,
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// The tree the base's layers make, applied bottom to top as overlay and containerd do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lower {
    nodes: BTreeMap<String, Node>,
}

impl Lower {
    /// The layers' records merged, bottom layer first.
    pub fn merge<'a>(records: impl IntoIterator<Item = &'a Record>) -> Lower {
        let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
        for r in records {
            for dir in &r.opaque {
                remove_below(&mut nodes, dir);
            }
            for p in &r.hidden {
                nodes.remove(p);
                remove_below(&mut nodes, p);
            }
            for (p, n) in &r.nodes {
                // A directory replaced by something else takes what was below it with it.
                if !matches!(n, Node::Dir { .. }) && matches!(nodes.get(p), Some(Node::Dir { .. }))
                {
                    remove_below(&mut nodes, p);
                }
                nodes.insert(p.clone(), n.clone());
            }
        }
        Lower { nodes }
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// Whether the base holds `path`, or anything below it.
    pub fn holds(&self, path: &str) -> bool {
        self.nodes.contains_key(path) || self.holds_below(path)
    }

    /// Whether the base holds anything below the directory `path`.
    pub fn holds_below(&self, path: &str) -> bool {
        let prefix = format!("{path}/");
        self.nodes
            .range(prefix.clone()..)
            .next()
            .is_some_and(|(p, _)| p.starts_with(&prefix))
    }

    /// `path` (relative, cleaned) with each directory part that is a symlink in the base
    /// replaced by where it leads, as the kernel resolves a path in the container — and the
    /// last part too when it leads to a directory. A symlink leads at most to the image's root
    /// (`..` stops there); a loop is an error naming the path.
    pub fn place(&self, path: &str) -> Result<String> {
        let whole = self.follow(path, true)?;
        if matches!(self.nodes.get(&whole), Some(Node::Dir { .. })) {
            return Ok(whole);
        }
        match path.rsplit_once('/') {
            Some((dir, name)) => Ok(join(&self.follow(dir, true)?, name)),
            None => Ok(path.to_string()),
        }
    }

    /// `path` with every symlink on the way followed — the last part's too when `last`.
    pub fn follow(&self, path: &str, last: bool) -> Result<String> {
        let mut todo: Vec<String> = path
            .split('/')
            .filter(|p| !p.is_empty())
            .map(String::from)
            .rev()
            .collect();
        let mut done: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(part) = todo.pop() {
            match part.as_str() {
                "." => continue,
                ".." => {
                    done.pop();
                    continue;
                }
                _ => {}
            }
            let here = join(&done.join("/"), &part);
            match self.nodes.get(&here) {
                Some(Node::Symlink { target }) if last || !todo.is_empty() => {
                    hops += 1;
                    if hops > MAX_LINKS {
                        return Err(Error::image(format!(
                            "the base's symlinks at `/{path}` loop"
                        )));
                    }
                    if target.starts_with('/') {
                        done.clear();
                    }
                    todo.extend(
                        target
                            .split('/')
                            .filter(|p| !p.is_empty())
                            .map(String::from)
                            .rev(),
                    );
                }
                _ => done.push(part),
            }
        }
        Ok(done.join("/"))
    }

    /// The directory entries a layer must hold for `dest` (relative, placed) and every
    /// directory above it: the base's own mode and owner where it has them, else 0755 root
    /// (what Docker gives the directories COPY makes). `include_dest`: `dest` itself is a
    /// directory the layer fills (a directory mapping), not a file.
    pub fn parents(&self, dest: &str, include_dest: bool) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut at = String::new();
        let parts: Vec<&str> = dest.split('/').filter(|p| !p.is_empty()).collect();
        let n = if include_dest {
            parts.len()
        } else {
            parts.len().saturating_sub(1)
        };
        for p in &parts[..n] {
            at = join(&at, p);
            let (mode, uid, gid) = match self.nodes.get(&at) {
                Some(Node::Dir { mode, uid, gid }) => (*mode, *uid, *gid),
                _ => (0o755, 0, 0),
            };
            out.push(Entry {
                path: at.clone(),
                kind: Kind::Dir,
                mode,
                uid,
                gid,
            });
        }
        out
    }

    /// The first directory of `entries` (a layer's tree) that the base holds as a symlink:
    /// the layer's directory would replace it — `bin/` over `/bin -> usr/bin` loses `/bin/sh`.
    pub fn replaced_link<'a>(&self, entries: &'a [Entry]) -> Option<(&'a Entry, &str)> {
        entries
            .iter()
            .find_map(|e| match (&e.kind, self.nodes.get(&e.path)) {
                (Kind::Dir, Some(Node::Symlink { target })) => Some((e, target.as_str())),
                _ => None,
            })
    }
}

/// The mappings with their DESTs placed through every platform's base (which must agree: one
/// app layer goes on all of them). `file`: whether a mapping's source is a file — a file that
/// lands at its DEST replaces a symlink there rather than following it.
pub fn place_all(
    lowers: &[Lower],
    mappings: &[Mapping],
    file: &dyn Fn(&Mapping) -> bool,
) -> Result<Vec<Mapping>> {
    mappings
        .iter()
        .map(|m| {
            let rel = m.dest.trim_start_matches('/');
            let mut placed: Option<String> = None;
            for l in lowers {
                let p = match rel.rsplit_once('/') {
                    _ if rel.is_empty() => String::new(),
                    Some((dir, name)) if file(m) && !m.into_dir => {
                        join(&l.follow(dir, true)?, name)
                    }
                    None if file(m) && !m.into_dir => rel.to_string(),
                    _ => l.place(rel)?,
                };
                match &placed {
                    Some(q) if *q != p => return Err(differ(&m.dest)),
                    _ => placed = Some(p),
                }
            }
            Ok(Mapping {
                dest: format!("/{}", placed.unwrap_or_else(|| rel.to_string())),
                ..m.clone()
            })
        })
        .collect()
}

/// The directory entries every layer of these (placed) mappings must hold above what they add:
/// each DEST a directory fills and the directories above it, with the base's mode and owner
/// ([`Lower::parents`]); the same on every platform.
pub fn chain(
    lowers: &[Lower],
    mappings: &[Mapping],
    file: &dyn Fn(&Mapping) -> bool,
) -> Result<Vec<Entry>> {
    let mut out: BTreeMap<String, Entry> = BTreeMap::new();
    for m in mappings {
        let rel = m.dest.trim_start_matches('/');
        let fills = !file(m) || m.into_dir;
        let mut first: Option<Vec<Entry>> = None;
        for l in lowers {
            let p = l.parents(rel, fills);
            match &first {
                Some(q) if *q != p => return Err(differ(&m.dest)),
                _ => first = Some(p),
            }
        }
        for e in first.into_iter().flatten() {
            out.entry(e.path.clone()).or_insert(e);
        }
    }
    Ok(out.into_values().collect())
}

fn differ(dest: &str) -> Error {
    Error::image(format!(
        "the base's platforms differ at `{dest}` or above (a symlink on one, a directory on \
         another, or other modes): one app layer goes on all of them; give a DEST that is the \
         same on every platform, or push them one at a time"
    ))
}

/// A directory of `entries` the base holds as a symlink is an error naming both: the layer's
/// directory would replace the link (`bin/` over `/bin -> usr/bin` loses `/bin/sh`).
pub fn check_links(lowers: &[Lower], entries: &[Entry]) -> Result<()> {
    for l in lowers {
        if let Some((e, target)) = l.replaced_link(entries) {
            return Err(Error::input(format!(
                "`/{}` is a symlink in the base image (to `{target}`), and the files to add \
                 have a directory there, which would replace it: map them to where it leads \
                 (a DEST through the link is followed)",
                e.path
            )));
        }
    }
    Ok(())
}

fn remove_below(nodes: &mut BTreeMap<String, Node>, dir: &str) {
    let prefix = format!("{dir}/");
    let below: Vec<String> = nodes
        .range(prefix.clone()..)
        .take_while(|(p, _)| p.starts_with(&prefix))
        .map(|(p, _)| p.clone())
        .collect();
    for p in below {
        nodes.remove(&p);
    }
}

/// The cached record of the layer `hex` in `dir`, if there is one of this format.
pub fn load(dir: &Path, hex: &str) -> Option<Record> {
    let bytes = std::fs::read(dir.join(format!("{hex}.json"))).ok()?;
    serde_json::from_slice::<Record>(&bytes)
        .ok()
        .filter(|r| r.version == VERSION)
}

/// Keeps the record of the layer `hex` in `dir` (written whole, then renamed: a reader never
/// sees half of one). A failure costs only the next run a read of the layer.
pub fn save(dir: &Path, hex: &str, record: &Record) {
    // Half-written records of runs that were killed.
    crate::stale::remove(dir, ".", ".json.tmp");
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".{hex}.json.tmp"));
        std::fs::write(
            &tmp,
            serde_json::to_vec(record).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(&tmp, dir.join(format!("{hex}.json")))
    };
    if let Err(e) = write() {
        tracing::info!("cannot keep the record of base layer {hex}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, char, &str, u32)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, target, mode) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(*mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_size(0);
            match kind {
                'd' => h.set_entry_type(tar::EntryType::Directory),
                'l' => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_link_name(target).unwrap();
                }
                _ => h.set_entry_type(tar::EntryType::Regular),
            }
            h.set_cksum();
            b.append_data(&mut h, path, std::io::empty()).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn debian() -> Lower {
        let bottom = record(
            &tar_of(&[
                ("./", 'd', "", 0o755),
                ("bin", 'l', "usr/bin", 0o777),
                ("tmp/", 'd', "", 0o1777),
                ("usr/", 'd', "", 0o755),
                ("usr/bin/", 'd', "", 0o755),
                ("usr/bin/sh", 'f', "", 0o755),
                ("var/", 'd', "", 0o755),
                ("var/run", 'l', "/run", 0o777),
                ("run/", 'd', "", 0o755),
                ("etc/", 'd', "", 0o755),
                ("etc/old.conf", 'f', "", 0o644),
                ("loop", 'l', "loop2", 0o777),
                ("loop2", 'l', "loop", 0o777),
            ])[..],
        )
        .unwrap();
        let top = record(
            &tar_of(&[
                ("etc/.wh.old.conf", 'f', "", 0o644),
                ("app/", 'd', "", 0o775),
            ])[..],
        )
        .unwrap();
        Lower::merge([&bottom, &top])
    }

    #[test]
    fn a_dest_is_placed_through_the_bases_symlinks() {
        let l = debian();
        assert_eq!(l.place("bin").unwrap(), "usr/bin");
        assert_eq!(l.place("bin/tool").unwrap(), "usr/bin/tool");
        assert_eq!(l.place("var/run/app").unwrap(), "run/app");
        assert_eq!(l.place("app/x").unwrap(), "app/x");
        assert_eq!(l.place("new/dir").unwrap(), "new/dir");
        assert!(l.place("loop/x").unwrap_err().to_string().contains("loop"));
    }

    #[test]
    fn parents_take_the_bases_mode_and_owner() {
        let l = debian();
        let p = l.parents("tmp/cfg", true);
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].path.as_str(), p[0].mode), ("tmp", 0o1777));
        assert_eq!((p[1].path.as_str(), p[1].mode), ("tmp/cfg", 0o755));
        let file = l.parents("app/conf.yaml", false);
        assert_eq!(file.len(), 1);
        assert_eq!((file[0].path.as_str(), file[0].mode), ("app", 0o775));
    }

    #[test]
    fn whiteouts_above_remove_what_is_below() {
        let l = debian();
        assert!(l.get("etc/old.conf").is_none());
        assert!(l.holds("usr/bin/sh"));
        assert!(l.holds("usr"));
        assert!(!l.holds("etc/old.conf"));
        assert!(!l.holds_below("etc"));
        assert!(!l.holds("adv/gen/new"));
    }

    #[test]
    fn a_directory_over_a_base_symlink_is_found() {
        let l = debian();
        let entries = vec![Entry {
            path: "bin".into(),
            kind: Kind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
        }];
        let (e, target) = l.replaced_link(&entries).unwrap();
        assert_eq!((e.path.as_str(), target), ("bin", "usr/bin"));
    }
}
