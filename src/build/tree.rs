//! Source trees → the sorted entries one layer holds: each path's kind, mode and owner.
//!
//! Nothing here follows a symlink inside a source tree (symlinks are stored as symlinks), and no
//! entry path ever holds `..`: image paths are cleaned and clamped at `/` before use.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::build::entry::{
    unsupported, whiteout_named, Entry, Kind, Mapping, Own, OwnRel, WHITEOUT,
};
use crate::build::ignore::IgnoreRules;
use crate::build::walk::{self, Item};
use crate::error::{Error, Result};
use crate::oci::digest::Sha;

/// Walks every mapping and returns the layer's entries in byte order of their paths, parents
/// before children. Later mappings win over earlier ones at the same path.
/// `ignore` patterns apply to every directory source after its `.layerupignore`; `own` paths
/// (layerup's own files) are left out wherever they are.
pub fn collect(
    mappings: &[Mapping],
    owner: Option<(u32, u32)>,
    ignore: &[String],
    own: &[Own],
) -> Result<Vec<Entry>> {
    let mut found: Vec<Item> = Vec::new();
    // Directories left out by ignore rules, remembered in case a `!` rule keeps something inside.
    let mut skipped_dirs: HashMap<String, u32> = HashMap::new();
    for m in mappings {
        // The source itself is what the user named: follow it if it is a symlink.
        let meta = std::fs::metadata(&m.src).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Error::input(format!("source `{}` does not exist", m.src.display()))
            }
            _ => Error::io("read source", &m.src, &e),
        })?;
        let dest = m.dest.trim_start_matches('/').to_string();
        let mode = meta.mode() & 0o7777;
        if meta.is_file() {
            let path = if m.into_dir || dest.is_empty() {
                let name = m.src.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
                    Error::input(format!(
                        "source `{}` has no usable file name",
                        m.src.display()
                    ))
                })?;
                if name.starts_with(WHITEOUT) {
                    return Err(whiteout_named(&m.src, name));
                }
                join(&dest, name)
            } else {
                dest
            };
            let (kind, inode) = Kind::file(m.src.clone(), &meta);
            found.push(Item {
                path,
                kind,
                mode,
                inode,
            });
            continue;
        }
        if !meta.is_dir() {
            return Err(unsupported(&m.src, meta.file_type()));
        }
        // The directory the contents land in is not the layer's: see `add_parents`.
        let rules = IgnoreRules::load(&m.src)?.with(ignore)?;
        let inside: Vec<OwnRel> = match std::fs::canonicalize(&m.src) {
            Ok(root) if !own.is_empty() => own.iter().filter_map(|o| o.within(&root)).collect(),
            _ => Vec::new(),
        };
        let walked = walk::walk(
            m.src.clone(),
            &dest,
            &dest,
            &rules,
            &inside,
            walk::threads(),
        )?;
        found.extend(walked.items);
        skipped_dirs.extend(walked.skipped);
    }
    // Byte order; at one path, the stable sort keeps the mappings' order, and the last mapping
    // wins: `dedup_by` drops the later of two equal neighbours, so it is first swapped down.
    if mappings.len() == 1 {
        // One source: every path once, so an unstable sort (no buffer, fewer moves) will do.
        found.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    } else {
        found.sort_by(|a, b| a.path.cmp(&b.path));
    }
    found.dedup_by(|later, kept| {
        let same = later.path == kept.path;
        if same {
            std::mem::swap(later, kept);
        }
        same
    });
    let (uid, gid) = owner.map_or((0, 0), |(u, g)| (u as u64, g as u64));
    let mut entries = link_hardlinks(found.into_iter(), uid, gid);
    add_parents(&mut entries, &skipped_dirs, (uid, gid))?;
    Ok(entries)
}

/// Files read since a walk, by source path, and their hashes.
pub type Hashed = HashMap<PathBuf, Sha>;

/// The tree of one push: its mappings (DEST resolved), their entries, and what a delta needs
/// to know of the walk.
#[derive(Clone)]
pub struct Walked {
    pub mappings: Vec<Mapping>,
    pub entries: std::sync::Arc<Vec<Entry>>,
    /// When the walk started (ns since the epoch), for the index's racy-file guard.
    pub scanned_at: i64,
    /// Image paths file events named: hashed even when their stat looks unchanged.
    pub suspects: Vec<String>,
    /// Files already read since the walk, by source path, and their hashes: the delta does
    /// not read them again (`stack::may_differ` fills it).
    pub hashed: Hashed,
    /// The directories above the mappings, as the base has them (`build::lower::chain`),
    /// in `entries` too.
    pub chain: Vec<Entry>,
}

/// Adds the directories above the mappings (`chain`) to `entries` (sorted), where the tree does
/// not hold them already: the tree's own directory is the user's.
pub fn with_chain(entries: &mut Vec<Entry>, chain: &[Entry]) {
    for c in chain {
        if let Err(i) = entries.binary_search_by(|e| e.path.as_str().cmp(&c.path)) {
            entries.insert(i, c.clone());
        }
    }
}

/// What an update of the tree from file events came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Update {
    /// The entries are the tree now; `suspects` are the image paths of the files events
    /// named, sorted: their stat cannot be trusted to show a change (see `index::diff`).
    Done { suspects: Vec<String> },
    /// Only a whole walk can tell, and why.
    WalkAll(&'static str),
}

/// A directory mapping, as an update looks at it.
struct Root {
    /// The source, its symlinks resolved (events name paths so).
    src: PathBuf,
    dest: String,
    rules: IgnoreRules,
    own: Vec<OwnRel>,
}

/// Brings `entries` (the tree as [`collect`] last gave it) up to date with the paths events
/// named (absolute), reading only those: a file's stat, a new directory's contents. Cost follows
/// the edit, not the tree. Anything it cannot be sure of — a changed ignore file, ignore rules
/// with `!` exceptions, hardlinks, overlapping mappings, a path whose parent is unknown — asks
/// for a whole walk instead.
pub fn update(
    entries: &mut Vec<Entry>,
    mappings: &[Mapping],
    owner: Option<(u32, u32)>,
    ignore: &[String],
    own: &[Own],
    paths: &[PathBuf],
) -> Result<Update> {
    let dests: Vec<&str> = mappings
        .iter()
        .map(|m| m.dest.trim_start_matches('/'))
        .collect();
    if let Some(why) = unsure(entries, &dests) {
        return Ok(Update::WalkAll(why));
    }
    let (roots, files) = match sources(mappings, ignore, own)? {
        Ok(found) => found,
        Err(why) => return Ok(Update::WalkAll(why)),
    };
    let owner = owner.map_or((0, 0), |(u, g)| (u as u64, g as u64));
    let mut paths = paths.to_vec();
    paths.sort();
    paths.dedup();
    let mut changes = Changes::default();
    for p in &paths {
        if own.iter().any(|o| o.covers(p)) {
            continue;
        }
        if files.iter().any(|src| src == p) {
            // A file source changed: cheap enough to read again with the rest.
            return Ok(Update::WalkAll("a file source changed"));
        }
        let Some(root) = roots.iter().find(|r| p.starts_with(&r.src)) else {
            continue;
        };
        if let Err(why) = look(p, root, entries, owner, &mut changes)? {
            return Ok(Update::WalkAll(why));
        }
    }
    apply(entries, &mut changes);
    // Every new entry's parent inside its mapping must be a directory of the tree.
    for e in &changes.added {
        let Some((parent, _)) = e.path.rsplit_once('/') else {
            continue;
        };
        if dests.contains(&parent) {
            continue;
        }
        match entries.binary_search_by(|x| x.path.as_str().cmp(parent)) {
            Ok(i) if entries[i].kind == Kind::Dir => {}
            _ => return Ok(Update::WalkAll("a path whose directory is not in the tree")),
        }
    }
    changes.suspects.sort();
    Ok(Update::Done {
        suspects: changes.suspects,
    })
}

/// What the paths events named came to, before it is applied to the tree.
#[derive(Default)]
struct Changes {
    /// Paths whose entry (and everything once under it) goes.
    removed: Vec<String>,
    /// What is there now.
    added: Vec<Entry>,
    /// Image paths of files events named (see [`Update::Done`]).
    suspects: Vec<String>,
}

/// Why only a whole walk can bring `entries` up to date, whatever the events: hardlinks, or
/// mappings that overlap.
fn unsure(entries: &[Entry], dests: &[&str]) -> Option<&'static str> {
    if entries
        .iter()
        .any(|e| matches!(e.kind, Kind::Hardlink { .. }))
    {
        return Some("the tree holds hardlinks");
    }
    for (i, a) in dests.iter().enumerate() {
        for b in &dests[i + 1..] {
            let inside =
                |x: &str, y: &str| x.is_empty() || y == x || y.starts_with(&format!("{x}/"));
            if inside(a, b) || inside(b, a) {
                return Some("the mappings overlap");
            }
        }
    }
    None
}

/// The mappings as an update looks at them: the directory sources, and the file sources (both
/// with symlinks resolved, as events name them); or why only a whole walk will do.
#[allow(clippy::type_complexity)]
fn sources(
    mappings: &[Mapping],
    ignore: &[String],
    own: &[Own],
) -> Result<std::result::Result<(Vec<Root>, Vec<PathBuf>), &'static str>> {
    let mut roots = Vec::new();
    let mut files = Vec::new();
    for m in mappings {
        let Ok(src) = std::fs::canonicalize(&m.src) else {
            return Ok(Err("a source is gone"));
        };
        if src.is_file() {
            files.push(src);
            continue;
        }
        let rules = IgnoreRules::load(&m.src)?.with(ignore)?;
        if rules.has_exceptions() {
            return Ok(Err("ignore rules with `!` exceptions"));
        }
        let own = own.iter().filter_map(|o| o.within(&src)).collect();
        roots.push(Root {
            src,
            dest: m.dest.trim_start_matches('/').to_string(),
            rules,
            own,
        });
    }
    Ok(Ok((roots, files)))
}

/// Whether `rel` (a path in `root`'s source) is left out of the layer, at any level: by an
/// ignore rule, or as layerup's own.
fn left_out(root: &Root, rel: &str) -> bool {
    let mut dir = "";
    for part in rel.split('/') {
        let at = if dir.is_empty() {
            part.to_string()
        } else {
            format!("{dir}/{part}")
        };
        if root.own.iter().any(|o| o.is(dir, part)) || root.rules.excludes(&at) {
            return true;
        }
        dir = &rel[..at.len()];
    }
    false
}

/// Reads one path events named (`p`, in `root`) into `changes`; `Err` is why only a whole walk
/// can tell what changed.
fn look(
    p: &Path,
    root: &Root,
    entries: &mut [Entry],
    (uid, gid): (u64, u64),
    changes: &mut Changes,
) -> Result<std::result::Result<(), &'static str>> {
    let Some(rel) = p.strip_prefix(&root.src).ok().and_then(Path::to_str) else {
        return Ok(Err("a path that is not UTF-8"));
    };
    if rel.is_empty() {
        return Ok(Ok(()));
    }
    if rel == crate::build::ignore::FILE_NAME {
        return Ok(Err("the ignore file changed"));
    }
    if left_out(root, rel) {
        return Ok(Ok(()));
    }
    let path = join(&root.dest, rel);
    let meta = match std::fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            changes.removed.push(path);
            return Ok(Ok(()));
        }
        Err(e) => return Err(Error::io("read", p, &e)),
    };
    let known = entries.binary_search_by(|e| e.path.as_str().cmp(&path));
    if let (true, Ok(i)) = (meta.is_dir(), known) {
        if entries[i].kind == Kind::Dir {
            // A directory that stays one: its own metadata only; its contents have events of
            // their own.
            entries[i].mode = meta.mode() & 0o7777;
            return Ok(Ok(()));
        }
    }
    changes.removed.push(path.clone());
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.starts_with(WHITEOUT) {
        return Err(whiteout_named(p, name));
    }
    let mode = meta.mode() & 0o7777;
    let ftype = meta.file_type();
    let kind = if ftype.is_dir() {
        let walked = walk::walk(
            p.to_path_buf(),
            &path,
            &root.dest,
            &root.rules,
            &root.own,
            1,
        )?;
        if walked.items.iter().any(|i| i.inode.is_some()) {
            return Ok(Err("a file with several names"));
        }
        if !walked.skipped.is_empty() {
            return Ok(Err("ignored directories"));
        }
        changes
            .added
            .extend(walked.items.into_iter().map(|i| Entry {
                path: i.path,
                kind: i.kind,
                mode: i.mode,
                uid,
                gid,
            }));
        Kind::Dir
    } else if ftype.is_file() {
        let (kind, inode) = Kind::file(p.to_path_buf(), &meta);
        if inode.is_some() {
            return Ok(Err("a file with several names"));
        }
        changes.suspects.push(path.clone());
        kind
    } else if ftype.is_symlink() {
        let target = std::fs::read_link(p).map_err(|e| Error::io("read symlink", p, &e))?;
        Kind::Symlink { target }
    } else {
        return Err(unsupported(p, ftype));
    };
    changes.added.push(Entry {
        path,
        kind,
        mode,
        uid,
        gid,
    });
    Ok(Ok(()))
}

/// Each changed path, and everything once under it, goes; what is there now comes back.
/// Entries are sorted: a path's descendants (`P/…`) are one run right after it.
fn apply(entries: &mut Vec<Entry>, changes: &mut Changes) {
    let removed = &mut changes.removed;
    removed.sort();
    removed.dedup();
    for r in removed.iter() {
        let prefix = format!("{r}/");
        let start = entries.partition_point(|e| e.path.as_str() < prefix.as_str());
        let run = entries[start..].partition_point(|e| e.path.starts_with(&prefix));
        entries.drain(start..start + run);
        if let Ok(i) = entries.binary_search_by(|e| e.path.as_str().cmp(r)) {
            entries.remove(i);
        }
    }
    let added = &mut changes.added;
    added.sort_by(|a, b| a.path.cmp(&b.path));
    if added.len() < 64 {
        for e in added.iter().cloned() {
            match entries.binary_search_by(|x| x.path.cmp(&e.path)) {
                Ok(i) => entries[i] = e,
                Err(i) => entries.insert(i, e),
            }
        }
    } else {
        entries.extend(added.iter().cloned());
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        entries.dedup_by(|later, kept| later.path == kept.path);
    }
}

fn join(dest: &str, rel: &str) -> String {
    if dest.is_empty() {
        rel.to_string()
    } else {
        format!("{dest}/{rel}")
    }
}

/// The parent directories the layer owns are in it: `skipped` ones (left out by ignore rules but
/// holding a kept path; the user's, with their modes, and `owner`). A mapping's DEST and the
/// directories above it are not: the base may have them (`/tmp` 1777, `/usr/local/bin`), and an
/// entry would replace their mode and owner with ones layerup cannot know, since it never reads
/// the base's layers. Appliers create the missing ones, as `COPY` in a Dockerfile does (0755,
/// root). Checks that no parent is a file. `entries` are sorted by path, and stay so.
fn add_parents(
    entries: &mut Vec<Entry>,
    skipped: &HashMap<String, u32>,
    owner: (u64, u64),
) -> Result<()> {
    let mut missing: BTreeMap<&str, Entry> = BTreeMap::new();
    // Sorted paths share their parent with their neighbours: check each parent once.
    let mut checked = "";
    for entry in entries.iter() {
        let mut parent = entry.path.as_str();
        while let Some((p, _)) = parent.rsplit_once('/') {
            parent = p;
            if parent == checked {
                break;
            }
            match entries.binary_search_by(|e| e.path.as_str().cmp(parent)) {
                Ok(i) if entries[i].kind == Kind::Dir => break,
                Ok(_) => {
                    return Err(Error::input(format!(
                        "`/{}` needs `/{parent}` to be a directory, but another mapping puts a file there",
                        entry.path
                    )))
                }
                Err(_) => {
                    if let Some(mode) = skipped.get(parent) {
                        missing.entry(parent).or_insert_with(|| Entry {
                            path: parent.to_string(),
                            kind: Kind::Dir,
                            mode: *mode,
                            uid: owner.0,
                            gid: owner.1,
                        });
                    }
                }
            }
        }
        if let Some((p, _)) = entry.path.rsplit_once('/') {
            checked = p;
        }
    }
    if !missing.is_empty() {
        let missing: Vec<Entry> = missing.into_values().collect();
        entries.extend(missing);
        // Two sorted runs: a stable sort merges them in one pass.
        entries.sort_by(|a, b| a.path.cmp(&b.path));
    }
    Ok(())
}

/// The first name of a multiply-linked file (in layer order) holds its bytes; later names become
/// hardlink entries pointing at it, as `tar` itself writes them.
fn link_hardlinks(items: impl Iterator<Item = Item>, uid: u64, gid: u64) -> Vec<Entry> {
    let mut first_name: HashMap<(u64, u64), String> = HashMap::new();
    items
        .map(|i| {
            let kind = match i.inode {
                Some(id) => match first_name.get(&id) {
                    Some(target) => Kind::Hardlink {
                        target: target.clone(),
                    },
                    None => {
                        first_name.insert(id, i.path.clone());
                        i.kind
                    }
                },
                None => i.kind,
            };
            Entry {
                path: i.path,
                kind,
                mode: i.mode,
                uid,
                gid,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::path::Path;

    fn mapping(src: &Path, dest: &str) -> Mapping {
        Mapping {
            src: src.into(),
            dest: dest.into(),
            into_dir: false,
        }
    }

    fn paths(entries: &[Entry]) -> Vec<&str> {
        entries.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn a_directory_lands_under_dest_sorted_without_dest_or_its_parents() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("b/c")).unwrap();
        std::fs::write(t.path().join("b/c/f.txt"), "x").unwrap();
        std::fs::write(t.path().join("a.txt"), "y").unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let got = collect(&[mapping(t.path(), "/srv/app")], None, &[], &[]).unwrap();
        // `/srv` and `/srv/app` may be the base's: their modes are not the layer's to set.
        assert_eq!(
            paths(&got),
            [
                "srv/app/a.txt",
                "srv/app/b",
                "srv/app/b/c",
                "srv/app/b/c/f.txt"
            ]
        );
    }

    #[test]
    fn symlinks_are_stored_not_followed_even_out_of_the_tree() {
        let t = tempfile::tempdir().unwrap();
        symlink("/etc", t.path().join("etc-link")).unwrap();
        symlink("../../outside", t.path().join("up")).unwrap();
        let got = collect(&[mapping(t.path(), "/app")], None, &[], &[]).unwrap();
        let kinds: Vec<_> = got.iter().map(|e| e.kind.clone()).collect();
        assert_eq!(
            kinds,
            [
                Kind::Symlink {
                    target: "/etc".into()
                },
                Kind::Symlink {
                    target: "../../outside".into()
                }
            ]
        );
    }

    #[test]
    fn hardlinks_point_at_the_first_name_in_layer_order() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("z"), "data").unwrap();
        std::fs::hard_link(t.path().join("z"), t.path().join("a")).unwrap();
        let got = collect(&[mapping(t.path(), "/app")], None, &[], &[]).unwrap();
        assert!(
            matches!(got[0].kind, Kind::File { .. }),
            "app/a holds the bytes"
        );
        assert_eq!(
            got[1].kind,
            Kind::Hardlink {
                target: "app/a".into()
            }
        );
    }

    #[test]
    fn modes_are_kept_and_owner_is_root_unless_chowned() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("run.sh");
        std::fs::write(&f, "#!/bin/sh").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o4750)).unwrap();
        let got = collect(&[mapping(t.path(), "/app")], None, &[], &[]).unwrap();
        assert_eq!((got[0].mode, got[0].uid, got[0].gid), (0o4750, 0, 0));
        let got = collect(&[mapping(t.path(), "/app")], Some((1000, 2000)), &[], &[]).unwrap();
        assert_eq!((got[0].uid, got[0].gid), (1000, 2000));
    }

    #[test]
    fn a_file_source_lands_in_or_at_dest() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("config.yaml");
        std::fs::write(&f, "k: v").unwrap();
        let into = Mapping {
            src: f.clone(),
            dest: "/etc/app".into(),
            into_dir: true,
        };
        assert_eq!(
            paths(&collect(&[into], None, &[], &[]).unwrap()),
            ["etc/app/config.yaml"]
        );
        let at = Mapping {
            src: f,
            dest: "/etc/app.yaml".into(),
            into_dir: false,
        };
        assert_eq!(
            paths(&collect(&[at], None, &[], &[]).unwrap()),
            ["etc/app.yaml"]
        );
    }

    #[test]
    fn a_later_mapping_overrides_a_file_of_an_earlier_one() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("app")).unwrap();
        std::fs::write(t.path().join("app/cfg"), "old").unwrap();
        std::fs::write(t.path().join("cfg"), "new").unwrap();
        let got = collect(
            &[
                mapping(&t.path().join("app"), "/app"),
                mapping(&t.path().join("cfg"), "/app/cfg"),
            ],
            None,
            &[],
            &[],
        )
        .unwrap();
        assert!(
            matches!(&got[0].kind, Kind::File { src, size: 3, .. } if src == &t.path().join("cfg"))
        );
    }

    #[test]
    fn a_file_where_a_directory_is_needed_is_refused() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("d/x")).unwrap();
        std::fs::write(t.path().join("d/x/f"), "").unwrap();
        std::fs::write(t.path().join("file"), "").unwrap();
        let err = collect(
            &[
                mapping(&t.path().join("d"), "/app"),
                mapping(&t.path().join("file"), "/app/x"),
            ],
            None,
            &[],
            &[],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`/app/x/f` needs `/app/x` to be a directory, but another mapping puts a file there"
        );
    }

    #[test]
    fn ignored_paths_are_left_out_and_exceptions_keep_their_parents() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("vendor/deep")).unwrap();
        std::fs::write(t.path().join("vendor/deep/keep.txt"), "k").unwrap();
        std::fs::write(t.path().join("vendor/drop.txt"), "d").unwrap();
        std::fs::write(t.path().join("main.pyc"), "c").unwrap();
        std::fs::write(
            t.path().join(".layerupignore"),
            "*.pyc\nvendor\n!vendor/deep/keep.txt\n",
        )
        .unwrap();
        let got = collect(&[mapping(t.path(), "/app")], None, &[], &[]).unwrap();
        assert_eq!(
            paths(&got),
            [
                "app/.layerupignore",
                "app/vendor",
                "app/vendor/deep",
                "app/vendor/deep/keep.txt"
            ]
        );
    }

    #[test]
    fn whiteout_names_are_refused_unless_ignored() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join(".wh.server.sh"), "").unwrap();
        let err = collect(&[mapping(t.path(), "/app")], None, &[], &[]).unwrap_err();
        assert!(
            err.to_string()
                .contains(".wh.server.sh` is named like a whiteout")
                && err
                    .to_string()
                    .contains("delete the base image's `server.sh`"),
            "{err}"
        );
        assert_eq!(err.code(), crate::error::ExitCode::Input);
        std::fs::remove_file(t.path().join(".wh.server.sh")).unwrap();
        std::fs::create_dir(t.path().join("lib")).unwrap();
        std::fs::write(t.path().join("lib/.wh..wh..opq"), "").unwrap();
        let err = collect(&[mapping(t.path(), "/app")], None, &[], &[]).unwrap_err();
        assert!(
            err.to_string()
                .contains("everything the base image has in its directory"),
            "{err}"
        );
        let kept = collect(
            &[mapping(t.path(), "/app")],
            None,
            &["**/.wh.*".into()],
            &[],
        )
        .unwrap();
        assert_eq!(paths(&kept), ["app/lib"]);
        let file = Mapping {
            src: t.path().join("lib/.wh..wh..opq"),
            dest: "/app".into(),
            into_dir: true,
        };
        assert!(collect(&[file], None, &[], &[]).is_err());
    }

    #[test]
    fn an_update_from_the_paths_events_name_gives_what_a_whole_walk_gives() {
        let t = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(t.path()).unwrap();
        let at = |p: &str| root.join(p);
        std::fs::create_dir_all(at("d/e")).unwrap();
        std::fs::write(at("a.txt"), "a").unwrap();
        std::fs::write(at("d/b.txt"), "b").unwrap();
        std::fs::write(at("d/e/c.txt"), "c").unwrap();
        std::fs::write(at(".layerupignore"), "*.log\n").unwrap();
        let maps = [mapping(&root, "/app")];
        let walk = || collect(&maps, None, &[], &[]).unwrap();
        let mut entries = walk();
        type Edit = Box<dyn Fn(&dyn Fn(&str) -> PathBuf) -> Vec<&'static str>>;
        let edits: Vec<(&str, Edit)> = vec![
            (
                "a new file",
                Box::new(|at| {
                    std::fs::write(at("n.txt"), "n").unwrap();
                    vec!["n.txt"]
                }),
            ),
            (
                "a longer file",
                Box::new(|at| {
                    std::fs::write(at("a.txt"), "aaaa").unwrap();
                    vec!["a.txt"]
                }),
            ),
            (
                "a deleted file",
                Box::new(|at| {
                    std::fs::remove_file(at("d/b.txt")).unwrap();
                    vec!["d/b.txt"]
                }),
            ),
            (
                "a directory moved in",
                Box::new(|at| {
                    std::fs::create_dir_all(at("x/y")).unwrap();
                    std::fs::write(at("x/y/z.txt"), "z").unwrap();
                    vec!["x"]
                }),
            ),
            (
                "a renamed directory",
                Box::new(|at| {
                    std::fs::rename(at("x"), at("w")).unwrap();
                    vec!["x", "w"]
                }),
            ),
            (
                "a deleted directory",
                Box::new(|at| {
                    std::fs::remove_dir_all(at("d")).unwrap();
                    vec!["d"]
                }),
            ),
            (
                "a mode",
                Box::new(|at| {
                    std::fs::set_permissions(at("a.txt"), std::fs::Permissions::from_mode(0o600))
                        .unwrap();
                    vec!["a.txt"]
                }),
            ),
            (
                "a file where a directory was",
                Box::new(|at| {
                    std::fs::remove_dir_all(at("w")).unwrap();
                    std::fs::write(at("w"), "now a file").unwrap();
                    vec!["w"]
                }),
            ),
            (
                "a symlink",
                Box::new(|at| {
                    symlink("a.txt", at("l")).unwrap();
                    vec!["l"]
                }),
            ),
            (
                "an ignored file",
                Box::new(|at| {
                    std::fs::write(at("debug.log"), "x").unwrap();
                    vec!["debug.log"]
                }),
            ),
            (
                "an event for a path that did not change",
                Box::new(|_| vec!["a.txt", "n.txt"]),
            ),
        ];
        for (what, edit) in edits {
            let paths: Vec<PathBuf> = edit(&at).into_iter().map(at).collect();
            let done = super::update(&mut entries, &maps, None, &[], &[], &paths).unwrap();
            assert!(matches!(done, Update::Done { .. }), "{what}: {done:?}");
            assert_eq!(entries, walk(), "after {what}");
        }
    }

    #[test]
    fn what_an_update_cannot_be_sure_of_asks_for_a_whole_walk() {
        let t = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(t.path()).unwrap();
        std::fs::write(root.join("a"), "a").unwrap();
        let maps = [mapping(&root, "/app")];
        let mut entries = collect(&maps, None, &[], &[]).unwrap();
        std::fs::write(root.join(".layerupignore"), "a\n").unwrap();
        let paths = [root.join(".layerupignore")];
        let done = super::update(&mut entries, &maps, None, &[], &[], &paths).unwrap();
        assert_eq!(done, Update::WalkAll("the ignore file changed"));
        std::fs::remove_file(root.join(".layerupignore")).unwrap();
        std::fs::hard_link(root.join("a"), root.join("b")).unwrap();
        let paths = [root.join("b")];
        let done = super::update(&mut entries, &maps, None, &[], &[], &paths).unwrap();
        assert_eq!(done, Update::WalkAll("a file with several names"));
    }

    #[test]
    fn a_socket_is_refused_by_name() {
        let t = tempfile::tempdir().unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(t.path().join("app.sock")).unwrap();
        let err = collect(&[mapping(t.path(), "/app")], None, &[], &[]).unwrap_err();
        assert!(err.to_string().ends_with("app.sock` is a socket; a layer holds only files, directories and symlinks (list it in .layerupignore to leave it out)"), "{err}");
        assert_eq!(err.code(), crate::error::ExitCode::Input);
    }

    #[test]
    fn a_missing_source_is_named() {
        let err = collect(
            &[mapping(Path::new("/nonexistent/src"), "/app")],
            None,
            &[],
            &[],
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "source `/nonexistent/src` does not exist");
    }
}
