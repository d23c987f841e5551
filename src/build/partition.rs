//! A full app layer, split into a few layers by a stable partition of the paths, so that a full
//! push re-uploads only the pieces whose files changed and a failed upload costs one piece.
//!
//! The partition, documented in docs/design.md:
//! - A tree of less than [`BIG`] bytes is one layer: splitting it would buy nothing.
//! - A *group* is one top-level name under a mapping's destination (`/app/pkg`, `/app/main.py`);
//!   a file mapped on its own is its own group. A directory group holding more than
//!   [`SPLIT`] bytes is split one level deeper, down to [`MAX_DEPTH`] levels.
//! - The largest groups of at least [`BIG`] bytes stand alone, at most [`MAX_ALONE`] of them.
//! - Every other group goes to one of [`BUCKETS`] parts by the sha256 of its path, so a group
//!   stays in its part whatever happens to the others.
//! - A hardlink goes where the file it names goes. Each part carries its parent directories.
//!
//! So a full app layer is at most `MAX_ALONE + BUCKETS` = 12 layers.

use std::collections::{BTreeMap, HashMap};

use sha2::{Digest as _, Sha256};

use crate::build::entry::{Entry, Kind};

/// A directory group above this many bytes is split by its children.
pub const SPLIT: u64 = 64 << 20;
/// How many levels below a destination splitting may go.
pub const MAX_DEPTH: usize = 4;
/// A group of at least this many bytes is a layer of its own.
pub const BIG: u64 = 16 << 20;
pub const MAX_ALONE: usize = 8;
pub const BUCKETS: usize = 4;

/// Splits the sorted entries of a full tree into parts, each sorted, in a stable order.
/// `roots` are the mappings' destinations (image paths without the leading `/`).
pub fn split(entries: &[Entry], roots: &[String]) -> Vec<Vec<Entry>> {
    let total: u64 = entries
        .iter()
        .map(|e| match &e.kind {
            Kind::File { size, .. } => *size,
            _ => 0,
        })
        .sum();
    if total < BIG {
        return vec![entries.to_vec()];
    }
    let mut depth: HashMap<usize, usize> = HashMap::new();
    let mut keys: Vec<Option<String>> = Vec::new();
    for level in 1..=MAX_DEPTH {
        keys = entries
            .iter()
            .enumerate()
            .map(|(i, e)| group(&e.path, &e.kind, roots, *depth.get(&i).unwrap_or(&1)))
            .collect();
        if level == MAX_DEPTH {
            break;
        }
        let mut sizes: HashMap<&str, u64> = HashMap::new();
        for (k, e) in keys.iter().zip(entries) {
            if let (Some(k), Kind::File { size, .. }) = (k, &e.kind) {
                *sizes.entry(k).or_default() += size;
            }
        }
        let mut deeper = false;
        for (i, (k, e)) in keys.iter().zip(entries).enumerate() {
            // Entries strictly inside a big group move one level down; the group's own
            // directory entry stays as it is.
            if let Some(k) = k {
                if sizes.get(k.as_str()).copied().unwrap_or(0) > SPLIT && e.path.len() > k.len() {
                    *depth.entry(i).or_insert(1) += 1;
                    deeper = true;
                }
            }
        }
        if !deeper {
            break;
        }
    }

    let mut sizes: BTreeMap<&str, u64> = BTreeMap::new();
    for (k, e) in keys.iter().zip(entries) {
        if let Some(k) = k {
            let s = sizes.entry(k).or_default();
            if let Kind::File { size, .. } = &e.kind {
                *s += size;
            }
        }
    }
    let mut big: Vec<(&str, u64)> = sizes
        .iter()
        .filter(|(_, s)| **s >= BIG)
        .map(|(k, s)| (*k, *s))
        .collect();
    big.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    big.truncate(MAX_ALONE);
    big.sort();
    let alone: HashMap<&str, usize> = big.iter().enumerate().map(|(i, (k, _))| (*k, i)).collect();
    let part_of = |k: &str| match alone.get(k) {
        Some(i) => *i,
        None => alone.len() + (Sha256::digest(k.as_bytes())[0] as usize % BUCKETS),
    };

    let mut part: Vec<Option<usize>> = keys.iter().map(|k| k.as_deref().map(part_of)).collect();
    let index: HashMap<&str, usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.path.as_str(), i))
        .collect();
    for (i, e) in entries.iter().enumerate() {
        if let Kind::Hardlink { target } = &e.kind {
            if let Some(&t) = index.get(target.as_str()) {
                part[i] = part[t];
            }
        }
    }

    let mut parts: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, p) in part.iter().enumerate() {
        if let Some(p) = p {
            parts.entry(*p).or_default().push(i);
        }
    }
    if parts.is_empty() {
        return vec![entries.to_vec()];
    }
    parts
        .into_values()
        .map(|members| with_parents(entries, &index, &members))
        .collect()
}

/// The group of a path, `None` for a directory at or above a destination (shared by all).
fn group(path: &str, kind: &Kind, roots: &[String], depth: usize) -> Option<String> {
    let root = roots
        .iter()
        .filter(|r| r.is_empty() || path == r.as_str() || path.starts_with(&format!("{r}/")))
        .max_by_key(|r| r.len());
    let Some(root) = root else {
        return (*kind != Kind::Dir).then(|| path.to_string());
    };
    if path == root {
        return (*kind != Kind::Dir).then(|| path.to_string());
    }
    let rest = if root.is_empty() {
        path
    } else {
        &path[root.len() + 1..]
    };
    let take: Vec<&str> = rest.split('/').take(depth).collect();
    Some(if root.is_empty() {
        take.join("/")
    } else {
        format!("{root}/{}", take.join("/"))
    })
}

/// The members, with every parent directory they need, in layer (path) order.
fn with_parents(entries: &[Entry], index: &HashMap<&str, usize>, members: &[usize]) -> Vec<Entry> {
    let mut keep: std::collections::BTreeSet<usize> = members.iter().copied().collect();
    for &m in members {
        let mut at = entries[m].path.as_str();
        while let Some((parent, _)) = at.rsplit_once('/') {
            if let Some(&p) = index.get(parent) {
                if !keep.insert(p) {
                    break;
                }
            }
            at = parent;
        }
    }
    keep.into_iter().map(|i| entries[i].clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::entry::Stat;

    fn dir(p: &str) -> Entry {
        Entry {
            path: p.into(),
            kind: Kind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
        }
    }

    fn file(p: &str, size: u64) -> Entry {
        Entry {
            path: p.into(),
            kind: Kind::File {
                src: p.into(),
                size,
                stat: Stat::default(),
            },
            mode: 0o644,
            uid: 0,
            gid: 0,
        }
    }

    fn tree(files: &[(&str, u64)]) -> Vec<Entry> {
        let mut all: BTreeMap<String, Entry> = BTreeMap::new();
        for (p, size) in files {
            let mut at = *p;
            while let Some((parent, _)) = at.rsplit_once('/') {
                all.insert(parent.into(), dir(parent));
                at = parent;
            }
            all.insert(p.to_string(), file(p, *size));
        }
        all.into_values().collect()
    }

    fn names(parts: &[Vec<Entry>]) -> Vec<Vec<&str>> {
        parts
            .iter()
            .map(|p| p.iter().map(|e| e.path.as_str()).collect())
            .collect()
    }

    #[test]
    fn every_entry_lands_in_exactly_one_part_with_its_parents() {
        let entries = tree(&[
            ("app/a.py", 10),
            ("app/pkg/m.py", 10),
            ("app/pkg/sub/n.py", 10),
            ("app/static/big.bin", BIG),
            ("app/z/y", 1),
        ]);
        let parts = split(&entries, &["app".into()]);
        let mut seen: Vec<&str> = parts
            .iter()
            .flatten()
            .filter(|e| e.kind != Kind::Dir || e.path.matches('/').count() > 0)
            .map(|e| e.path.as_str())
            .collect();
        seen.sort();
        seen.dedup();
        let all: Vec<&str> = entries.iter().skip(1).map(|e| e.path.as_str()).collect();
        assert_eq!(seen, all);
        assert_eq!(
            names(&parts)[0],
            ["app", "app/static", "app/static/big.bin"]
        );
        for p in &parts {
            assert_eq!(p[0].path, "app", "each part carries the destination");
        }
    }

    #[test]
    fn an_edit_in_one_group_leaves_the_other_parts_as_they_were() {
        let files: Vec<(String, u64)> = (0..40).map(|i| (format!("app/g{i}/f"), 1 << 20)).collect();
        let as_ref: Vec<(&str, u64)> = files.iter().map(|(p, s)| (p.as_str(), *s)).collect();
        let before = split(&tree(&as_ref), &["app".into()]);
        let mut edited = as_ref.clone();
        edited[7].1 = 5_000_000;
        edited.push(("app/new/f", 1));
        let after = split(&tree(&edited), &["app".into()]);
        assert_eq!(before.len(), BUCKETS);
        let same = before.iter().zip(&after).filter(|(a, b)| a == b).count();
        assert!(same >= BUCKETS - 2, "{same} of {BUCKETS} parts unchanged");
    }

    #[test]
    fn a_small_tree_is_one_layer() {
        let entries = tree(&[("app/a/x", 100), ("app/b/y", 100), ("app/c/z", BIG - 201)]);
        assert_eq!(split(&entries, &["app".into()]), vec![entries]);
    }

    #[test]
    fn a_huge_directory_is_split_by_its_children() {
        let entries = tree(&[
            ("app/lib/a/x", SPLIT),
            ("app/lib/b/y", BIG),
            ("app/lib/c", 1),
            ("app/main.py", 1),
        ]);
        let parts = split(&entries, &["app".into()]);
        let firsts: Vec<&str> = parts
            .iter()
            .map(|p| p.last().unwrap().path.as_str())
            .collect();
        assert!(firsts.contains(&"app/lib/a/x") && firsts.contains(&"app/lib/b/y"));
        assert!(parts.len() >= 3);
    }

    #[test]
    fn a_hardlink_goes_with_its_file() {
        let mut entries = tree(&[("app/a/f", 1), ("app/zz/g", 1)]);
        entries.push(Entry {
            path: "app/zz/link".into(),
            kind: Kind::Hardlink {
                target: "app/a/f".into(),
            },
            mode: 0o644,
            uid: 0,
            gid: 0,
        });
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        let parts = split(&entries, &["app".into()]);
        let with_link = parts
            .iter()
            .find(|p| p.iter().any(|e| e.path == "app/zz/link"))
            .unwrap();
        assert!(with_link.iter().any(|e| e.path == "app/a/f"));
    }

    #[test]
    fn the_number_of_parts_is_bounded() {
        let files: Vec<(String, u64)> = (0..30).map(|i| (format!("app/g{i:02}/f"), BIG)).collect();
        let as_ref: Vec<(&str, u64)> = files.iter().map(|(p, s)| (p.as_str(), *s)).collect();
        let parts = split(&tree(&as_ref), &["app".into()]);
        assert!(parts.len() <= MAX_ALONE + BUCKETS);
        assert_eq!(
            parts
                .iter()
                .flatten()
                .filter(|e| e.kind != Kind::Dir)
                .count(),
            30
        );
    }
}
