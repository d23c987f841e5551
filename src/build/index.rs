//! The file index (what the last pushed image holds under the mappings) and the delta against
//! it: which entries changed, which paths went away — computed from stat data alone, reading a
//! file only when its stat changed or is too recent to trust.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

use crate::build::entry::{Entry, Kind, WHITEOUT};
use crate::error::Result;
use crate::oci::digest::Sha;

/// A file modified less than this before the walk that recorded it may change again without
/// its mtime moving — Linux stamps files from a clock that ticks every 1–10 ms — so its stat
/// proves nothing: it is re-hashed, not trusted. git calls these entries "racily clean".
pub const RACY_NS: i64 = 50_000_000;
/// The same for an mtime of whole seconds: a filesystem that keeps no fractions (FAT: 2 s).
pub const RACY_COARSE_NS: i64 = 2_000_000_000;

fn is_racy(mtime: i64, scanned_at: i64) -> bool {
    let window = if mtime % 1_000_000_000 == 0 {
        RACY_COARSE_NS
    } else {
        RACY_NS
    };
    mtime >= scanned_at - window
}

/// What a path of the index is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    Dir,
    File,
    Symlink,
    Hardlink,
}

impl RecordKind {
    /// Its letter in the index file.
    fn letter(self) -> char {
        match self {
            RecordKind::Dir => 'd',
            RecordKind::File => 'f',
            RecordKind::Symlink => 'l',
            RecordKind::Hardlink => 'h',
        }
    }

    fn from_letter(c: char) -> Option<Self> {
        Some(match c {
            'd' => RecordKind::Dir,
            'f' => RecordKind::File,
            'l' => RecordKind::Symlink,
            'h' => RecordKind::Hardlink,
            _ => return None,
        })
    }
}

/// One path of the image, as the last push stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: RecordKind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: i64,
    pub ctime: i64,
    pub ino: u64,
    pub dev: u64,
    /// A link's target.
    pub to: Option<String>,
    /// sha256 of a file's bytes.
    pub sha: Option<Sha>,
}

/// Every path the app layers hold, and when the tree was read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Index {
    /// Wall clock (ns since the epoch) just before the walk that produced these records.
    pub scanned_at: i64,
    /// In byte order of their paths, each path once: a sorted list rather than a map, since
    /// it is built in order, walked in order, and otherwise only looked up by bisection.
    pub files: Vec<(String, Record)>,
}

impl Index {
    pub fn get_mut(&mut self, path: &str) -> Option<&mut Record> {
        let at = self
            .files
            .binary_search_by(|(p, _)| p.as_str().cmp(path))
            .ok()?;
        Some(&mut self.files[at].1)
    }

    /// A `scanned-at <ns>` line, then one line per path: `k mode uid gid size mtime ctime ino
    /// dev sha path[\tlink]`, with `\\`, `\t` and `\n` escaped in names. Ten times smaller
    /// and faster than JSON on a 100,000-file tree, where the index is read and written on
    /// every push.
    pub fn write_lines(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        writeln!(out, "scanned-at {}", self.scanned_at)?;
        for (path, r) in &self.files {
            write!(
                out,
                "{} {:o} {} {} {} {} {} {} {} {} {}",
                r.kind.letter(),
                r.mode,
                r.uid,
                r.gid,
                r.size,
                r.mtime,
                r.ctime,
                r.ino,
                r.dev,
                Hex(r.sha.as_ref()),
                escape(path)
            )?;
            if let Some(to) = &r.to {
                write!(out, "\t{}", escape(to))?;
            }
            out.write_all(b"\n")?;
        }
        Ok(())
    }

    /// Reads what [`Index::write_lines`] wrote; `None` for anything else. A large index is
    /// read in two halves at once (a 100,000-file index is read on every push).
    pub fn parse_lines(text: &str) -> Option<Index> {
        let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
        let scanned_at = first.strip_prefix("scanned-at ")?.parse().ok()?;
        let seam = if rest.len() < (1 << 20) {
            0
        } else {
            // Bytes, not chars: the middle may fall inside a name's UTF-8.
            let half = rest.len() / 2;
            rest.as_bytes()[half..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(0, |i| half + i + 1)
        };
        let (low, high) = rest.split_at(seam);
        let (low, high) = std::thread::scope(|s| {
            let high = s.spawn(|| parse_records(high));
            (parse_records(low), high.join().ok().flatten())
        });
        let (mut files, high) = (low?, high?);
        // Each half is in order; so must the seam be.
        if let (Some((a, _)), Some((b, _))) = (files.last(), high.first()) {
            if a >= b {
                return None;
            }
        }
        files.extend(high);
        Some(Index { scanned_at, files })
    }
}

/// The record lines of [`Index::write_lines`], in order, each path once; `None` for anything
/// else.
fn parse_records(text: &str) -> Option<Vec<(String, Record)>> {
    let mut files: Vec<(String, Record)> = Vec::with_capacity(text.len() / 100);
    for line in text.lines() {
        let mut f = line.splitn(11, ' ');
        let mut next = || f.next();
        let kind = RecordKind::from_letter(next()?.chars().next()?)?;
        let mode = u32::from_str_radix(next()?, 8).ok()?;
        let mut num = || next()?.parse::<i64>().ok();
        let (uid, gid, size) = (num()?, num()?, num()?);
        let (mtime, ctime, ino, dev) = (num()?, num()?, num()?, num()?);
        let sha = match next()? {
            "-" => None,
            hex => {
                let mut sha = [0u8; 32];
                hex::decode_to_slice(hex, &mut sha).ok()?;
                Some(sha)
            }
        };
        let rest = next()?;
        let (path, to) = match rest.split_once('\t') {
            Some((p, t)) => (p, Some(unescape(t))),
            None => (rest, None),
        };
        let rec = Record {
            kind,
            mode,
            uid: uid as u64,
            gid: gid as u64,
            size: size as u64,
            mtime,
            ctime,
            ino: ino as u64,
            dev: dev as u64,
            to,
            sha,
        };
        let path = unescape(path);
        if !crate::build::entry::is_clean(&path) {
            return None;
        }
        // Out of order or twice: not what `write_lines` wrote.
        if files.last().is_some_and(|(p, _)| *p >= path) {
            return None;
        }
        files.push((path, rec));
    }
    Some(files)
}

/// A hash as the index writes it: 64 hex digits, or `-` for none.
struct Hex<'a>(Option<&'a Sha>);

impl std::fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some(sha) = self.0 else {
            return f.write_str("-");
        };
        let mut buf = [0u8; 64];
        hex::encode_to_slice(sha, &mut buf).map_err(|_| std::fmt::Error)?;
        f.write_str(std::str::from_utf8(&buf).map_err(|_| std::fmt::Error)?)
    }
}

fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.bytes().any(|b| matches!(b, b'\\' | b'\t' | b'\n')) {
        return s.into();
    }
    s.replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n")
        .into()
}

fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('t') => out.push('\t'),
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Record {
    /// The record of a freshly walked entry; a file's hash is filled in once its bytes are read.
    pub fn of(e: &Entry) -> Record {
        let mut r = Record {
            kind: RecordKind::Dir,
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            size: 0,
            mtime: 0,
            ctime: 0,
            ino: 0,
            dev: 0,
            to: None,
            sha: None,
        };
        match &e.kind {
            Kind::Dir | Kind::Whiteout => {}
            Kind::File { size, stat, .. } => {
                r.kind = RecordKind::File;
                r.size = *size;
                r.mtime = stat.mtime_ns;
                r.ctime = stat.ctime_ns;
                r.ino = stat.ino;
                r.dev = stat.dev;
            }
            Kind::Symlink { target } => {
                r.kind = RecordKind::Symlink;
                r.to = Some(target.to_string_lossy().into_owned());
            }
            Kind::Hardlink { target } => {
                r.kind = RecordKind::Hardlink;
                r.to = Some(target.clone());
            }
        }
        r
    }

    /// Same content and metadata as stored: everything but the stat data.
    fn same_as_stored(&self, old: &Record) -> bool {
        self.kind == old.kind
            && self.mode == old.mode
            && self.uid == old.uid
            && self.gid == old.gid
            && self.to == old.to
            && (self.kind != RecordKind::File || (self.size == old.size && self.sha == old.sha))
    }

    fn same_stat(&self, old: &Record) -> bool {
        (self.size, self.mtime, self.ctime, self.ino, self.dev)
            == (old.size, old.mtime, old.ctime, old.ino, old.dev)
    }
}

/// What changed between the index and the tree as walked now.
#[derive(Debug)]
pub struct Delta {
    /// The delta layer's entries in layer order: whiteouts first within each directory, then
    /// added and changed entries, with their parent directories.
    pub entries: Vec<Entry>,
    /// Paths added or changed (directories whose metadata changed included).
    pub changed: usize,
    /// Paths gone, counting everything under a deleted directory.
    pub deleted: usize,
    /// Paths unchanged whose stat data moved (a touch, a checkout of the same bytes): the
    /// index should be saved even when nothing changed, or they are read again next time.
    pub restat: usize,
    /// The index for the tree as walked now; files without a hash get it when written.
    pub index: Index,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.changed == 0 && self.deleted == 0
    }
}

/// The index of a tree written whole (a full push): no hashes yet, the layer writer gives them.
pub fn index_of(entries: &[Entry], scanned_at: i64) -> Index {
    Index {
        scanned_at,
        files: entries
            .iter()
            .map(|e| (e.path.clone(), Record::of(e)))
            .collect(),
    }
}

/// Compares the walked `entries` (sorted, parents first, as [`crate::build::tree::collect`]
/// gives them) with `old`. `hash` reads a file's bytes; it is called only for files whose stat
/// changed or was racy, and whose size still matches.
/// `suspects` (sorted image paths) are hashed even when their stat matches: file events said
/// they changed, and a write within the clock's tick leaves the mtime unmoved.
pub fn diff(
    old: &Index,
    entries: &[Entry],
    scanned_at: i64,
    suspects: &[String],
    hash: impl FnMut(&Path) -> Result<Sha>,
) -> Result<Delta> {
    let mut m = merge(old, entries, suspects, hash)?;
    let changed = with_links(entries, &mut m.changed);
    let gone_set: HashSet<&str> = m.gone.iter().copied().collect();
    let opaque = opaque_dirs(old, entries, &gone_set, &m.dir_replaced, !m.gone.is_empty());
    // A path needs its own whiteout unless something above it already hides it.
    let hidden_above = |p: &str| {
        let mut at = p;
        while let Some((parent, _)) = at.rsplit_once('/') {
            if gone_set.contains(parent)
                || m.dir_replaced.contains(parent)
                || opaque.contains(parent)
            {
                return true;
            }
            at = parent;
        }
        false
    };
    let mut out: BTreeMap<Vec<u8>, Entry> = BTreeMap::new();
    for p in m
        .gone
        .iter()
        .chain(m.dir_replaced.iter())
        .chain(m.became_dir.iter())
    {
        if hidden_above(p) {
            continue;
        }
        let w = whiteout(p);
        out.insert(layer_order(&w.path), w);
    }
    for dir in &opaque {
        let w = opaque_in(dir);
        out.insert(layer_order(&w.path), w);
    }
    for p in &m.changed {
        out.insert(
            layer_order(p),
            find(entries, p).expect("changed paths were walked").clone(),
        );
    }
    with_parents(&mut out, entries);
    Ok(Delta {
        entries: out.into_values().collect(),
        changed,
        deleted: m.gone.len(),
        restat: m.restat,
        // The entries are in byte order, each path once: so are the records.
        index: Index {
            scanned_at,
            files: m.records,
        },
    })
}

/// The walked `entries` (sorted) may differ from `old`: a path added, a file or link gone, a
/// record moved, or a file's bytes (`hash` reads those whose stat moved at the same size, as
/// [`diff`] would; a racy stat is taken as it reads). A hint — upload sessions opened ahead of
/// a delta — never a decision: [`diff`] decides. A directory of `old` not walked is not
/// counted: the directories above the mappings are added after the walk, and a directory that
/// went with files in it shows by them.
pub fn may_differ(
    old: &Index,
    entries: &[Entry],
    mut hash: impl FnMut(&Path) -> Result<Sha>,
) -> bool {
    let mut olds = old.files.iter().peekable();
    for e in entries {
        while let Some((_, r)) = olds.next_if(|(p, _)| p.as_str() < e.path.as_str()) {
            if r.kind != RecordKind::Dir {
                return true;
            }
        }
        let Some((_, prev)) = olds.next_if(|(p, _)| **p == e.path) else {
            return true;
        };
        let mut rec = Record::of(e);
        rec.sha = prev.sha;
        if !rec.same_as_stored(prev) {
            return true;
        }
        if rec.same_stat(prev) {
            continue;
        }
        let moved = match &e.kind {
            Kind::File { src, .. } => prev.sha.is_none() || hash(src).ok() != prev.sha,
            // A directory's or a link's stat moves with what is in it, or by itself.
            _ => false,
        };
        if moved {
            return true;
        }
    }
    olds.any(|(_, r)| r.kind != RecordKind::Dir)
}

/// The walk merged with the old index, path by path.
struct Merged<'a> {
    records: Vec<(String, Record)>,
    /// Paths added or modified.
    changed: BTreeSet<&'a str>,
    /// Paths unchanged whose stat moved.
    restat: usize,
    /// Paths whose kind changed from a directory: everything the lower layers hold under them
    /// goes.
    dir_replaced: BTreeSet<&'a str>,
    /// Paths that became a directory: the file or link below goes first (a whiteout, written
    /// before the directory), so that no applier keeps it or follows it — `tar -x` over a
    /// symlink to elsewhere would write through it.
    became_dir: Vec<&'a str>,
    /// Old paths no longer walked.
    gone: Vec<&'a str>,
}

/// Both sides are in byte order of their paths: one merge finds each entry's old record and
/// the old paths no longer walked, with no lookup per path.
fn merge<'a>(
    old: &'a Index,
    entries: &'a [Entry],
    suspects: &[String],
    mut hash: impl FnMut(&Path) -> Result<Sha>,
) -> Result<Merged<'a>> {
    let mut m = Merged {
        records: Vec::with_capacity(entries.len()),
        changed: BTreeSet::new(),
        restat: 0,
        dir_replaced: BTreeSet::new(),
        became_dir: Vec::new(),
        gone: Vec::new(),
    };
    let mut olds = old.files.iter().peekable();
    for e in entries {
        while let Some((p, _)) = olds.next_if(|(p, _)| p.as_str() < e.path.as_str()) {
            m.gone.push(p);
        }
        let prev = olds.next_if(|(p, _)| **p == e.path).map(|(_, r)| r);
        let mut rec = Record::of(e);
        if let (Some(prev), Kind::File { src, .. }) = (prev, &e.kind) {
            let racy = is_racy(prev.mtime, old.scanned_at)
                || (!suspects.is_empty() && suspects.binary_search(&e.path).is_ok());
            if prev.kind == RecordKind::File && prev.size == rec.size {
                rec.sha = if rec.same_stat(prev) && !racy {
                    prev.sha
                } else {
                    Some(hash(src)?)
                };
            }
        }
        match prev {
            Some(p) if rec.same_as_stored(p) => {
                if !rec.same_stat(p) {
                    m.restat += 1;
                }
            }
            Some(p) => {
                if p.kind == RecordKind::Dir && rec.kind != RecordKind::Dir {
                    m.dir_replaced.insert(&e.path);
                }
                if p.kind != RecordKind::Dir && rec.kind == RecordKind::Dir {
                    m.became_dir.push(&e.path);
                }
                m.changed.insert(&e.path);
            }
            None => {
                m.changed.insert(&e.path);
            }
        }
        m.records.push((e.path.clone(), rec));
    }
    m.gone.extend(olds.map(|(p, _)| p.as_str()));
    Ok(m)
}

/// A hardlink is written with the file it names: a new name for a changed file, or a changed
/// name for a file in a lower layer, would otherwise point at nothing in this layer. Returns
/// how many paths changed by themselves (links to a changed file included), before the targets
/// brought in for their links.
fn with_links<'a>(entries: &'a [Entry], changed: &mut BTreeSet<&'a str>) -> usize {
    // `entries` are sorted by path: look paths up by bisection rather than build a map.
    let links: Vec<(&str, &str)> = entries
        .iter()
        .filter_map(|e| match &e.kind {
            Kind::Hardlink { target } => Some((e.path.as_str(), target.as_str())),
            _ => None,
        })
        .collect();
    for (path, target) in &links {
        if changed.contains(target) {
            changed.insert(path);
        }
    }
    let n_changed = changed.len();
    for (path, target) in &links {
        if changed.contains(path) {
            if let Some(t) = find(entries, target) {
                changed.insert(&t.path);
            }
        }
    }
    n_changed
}

/// Directories kept as directories whose every old child went: replaced wholesale, one opaque
/// whiteout hides them all (image-spec layer.md, "Opaque Whiteout").
fn opaque_dirs<'a>(
    old: &'a Index,
    entries: &[Entry],
    gone: &HashSet<&str>,
    dir_replaced: &BTreeSet<&str>,
    anything_gone: bool,
) -> BTreeSet<&'a str> {
    let mut children: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let anything_went = anything_gone || !dir_replaced.is_empty();
    for (p, _) in old.files.iter().filter(|_| anything_went) {
        if let Some((parent, _)) = p.rsplit_once('/') {
            let c = children.entry(parent).or_default();
            c.0 += 1;
            if gone.contains(p.as_str()) || dir_replaced.contains(p.as_str()) {
                c.1 += 1;
            }
        }
    }
    children
        .iter()
        .filter(|(dir, (all, went))| {
            all == went
                && find(entries, dir)
                    .is_some_and(|e| e.kind == Kind::Dir && !dir_replaced.contains(*dir))
        })
        .map(|(dir, _)| *dir)
        .collect()
}

/// Parents of everything written, as they are now, so appliers never guess a directory's mode.
fn with_parents(out: &mut BTreeMap<Vec<u8>, Entry>, entries: &[Entry]) {
    let written: Vec<String> = out.values().map(|e| e.path.clone()).collect();
    for p in written {
        let mut at = p.as_str();
        while let Some((parent, _)) = at.rsplit_once('/') {
            if let Some(e) = find(entries, parent) {
                out.entry(layer_order(parent)).or_insert_with(|| e.clone());
            }
            at = parent;
        }
    }
}

/// A fingerprint of a tree from its entries alone — path, kind, mode, owner, size, stat and
/// link target — for a layer built whole each push (the per-platform ones): the same stamp,
/// and no file written within the racy window of `built_at`, mean the same layer bytes,
/// without reading a file.
pub fn stamp(entries: &[Entry]) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for e in entries {
        let r = Record::of(e);
        h.update(format!(
            "{}\0{:?}\0{:o}\0{}\0{}\0{}\0{}\0{}\0{}\0{}\0{:?}\n",
            e.path, r.kind, r.mode, r.uid, r.gid, r.size, r.mtime, r.ctime, r.ino, r.dev, r.to
        ));
    }
    hex::encode(h.finalize())
}

/// Whether a file of `entries` was written so close to `built_at` that its stat may not show
/// a later write (see [`is_racy`]).
pub fn racy_since(entries: &[Entry], built_at: i64) -> bool {
    entries.iter().any(|e| match &e.kind {
        Kind::File { stat, .. } => is_racy(stat.mtime_ns, built_at),
        _ => false,
    })
}

/// The image paths whose lower layers' contents the whiteouts among `entries` hide: a
/// whiteout's path, an opaque whiteout's directory.
pub fn hidden_by(entries: &[Entry]) -> impl Iterator<Item = String> + '_ {
    entries
        .iter()
        .filter(|e| e.kind == Kind::Whiteout)
        .map(|e| match e.path.rsplit_once('/') {
            Some((dir, OPAQUE)) => dir.to_string(),
            Some((dir, name)) => format!("{dir}/{}", &name[WHITEOUT.len()..]),
            None => e.path[WHITEOUT.len()..].to_string(),
        })
}

/// Adds `more` to `hidden` (sorted, no path below another of them), keeping it so.
pub fn hide(hidden: &mut Vec<String>, more: impl Iterator<Item = String>) {
    hidden.extend(more);
    hidden.sort();
    hidden.dedup();
    let all: HashSet<String> = hidden.iter().cloned().collect();
    hidden.retain(|p| {
        let mut at = p.as_str();
        while let Some((parent, _)) = at.rsplit_once('/') {
            if all.contains(parent) {
                return false;
            }
            at = parent;
        }
        true
    });
}

/// What the layers below the app's (the base's) hold at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Below {
    /// The path itself, or something under it.
    pub holds: bool,
    /// Something under it.
    pub holds_below: bool,
}

/// A full layer's bottom part with whiteouts that hide again what deltas hid (`hidden`, as
/// [`hide`] keeps it) in the layers below the app's — only where those layers really hold
/// something (`below`): a whiteout in a directory no lower layer has shows in a container as an
/// entry no one can stat. A path the tree lacks gets a whiteout, a directory an opaque whiteout
/// (only what the tree holds shows in it, as after the deltas); a file or link needs none, it
/// replaces what is below by itself. `entries` is the whole tree.
pub fn rehide(
    part: &mut Vec<Entry>,
    hidden: &[String],
    entries: &[Entry],
    below: &dyn Fn(&str) -> Below,
) {
    let before = part.len();
    for p in hidden {
        part.push(match find(entries, p).map(|e| &e.kind) {
            None if below(p).holds => whiteout(p),
            Some(Kind::Dir) if below(p).holds_below => opaque_in(p),
            _ => continue,
        });
    }
    if part.len() > before {
        part.sort_by_cached_key(|e| layer_order(&e.path));
    }
}

const OPAQUE: &str = ".wh..wh..opq";

/// The entry at `path` of `entries` (sorted by path, as the tree gives them).
fn find<'a>(entries: &'a [Entry], path: &str) -> Option<&'a Entry> {
    entries
        .binary_search_by(|e| e.path.as_str().cmp(path))
        .ok()
        .map(|i| &entries[i])
}

/// The whiteout that hides `path` of the layers below.
fn whiteout(path: &str) -> Entry {
    hiding(match path.rsplit_once('/') {
        Some((dir, name)) => format!("{dir}/{WHITEOUT}{name}"),
        None => format!("{WHITEOUT}{path}"),
    })
}

/// The opaque whiteout that hides what the layers below hold in `dir`.
fn opaque_in(dir: &str) -> Entry {
    hiding(format!("{dir}/{OPAQUE}"))
}

fn hiding(path: String) -> Entry {
    Entry {
        path,
        kind: Kind::Whiteout,
        mode: 0o644,
        uid: 0,
        gid: 0,
    }
}

/// Sorts paths in byte order — the order of the tree, in which a hardlink's target comes before
/// the link — except that a whiteout sorts before every other name of its directory, so that an
/// applier reading in order hides the lower layers' paths before writing new ones.
fn layer_order(path: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(path.len() + 1);
    for (i, c) in path.split('/').enumerate() {
        if i > 0 {
            key.push(b'/');
        }
        if c.starts_with(WHITEOUT) {
            key.push(0);
        }
        key.extend_from_slice(c.as_bytes());
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::entry::Stat;
    use std::path::PathBuf;

    /// A tree as the model sees it: path → kind, mode, and a file's bytes or a link's target.
    type Model = BTreeMap<String, (char, u32, String)>;

    /// Entries for a model; a file's `src` is its content, so `hash` needs no disk.
    fn entries(m: &Model, stats: &BTreeMap<String, Stat>) -> Vec<Entry> {
        m.iter()
            .map(|(p, (k, mode, data))| Entry {
                path: p.clone(),
                kind: match k {
                    'd' => Kind::Dir,
                    'f' => Kind::File {
                        src: PathBuf::from(data),
                        size: data.len() as u64,
                        stat: stats.get(p).copied().unwrap_or_default(),
                    },
                    'l' => Kind::Symlink {
                        target: PathBuf::from(data),
                    },
                    _ => Kind::Hardlink {
                        target: data.clone(),
                    },
                },
                mode: *mode,
                uid: 0,
                gid: 0,
            })
            .collect()
    }

    fn fake_hash(p: &Path) -> Result<Sha> {
        use sha2::Digest as _;
        Ok(sha2::Sha256::digest(p.as_os_str().as_encoded_bytes()).into())
    }

    /// Applies a layer the way overlay and umoci do: whiteouts hide lower paths, a non-directory
    /// replaces whatever was at its path, a directory merges into a directory.
    /// A hardlink must come after its target in the same layer: an applier links to what is at
    /// the target's path when it reads the link, a lower layer's stale file otherwise.
    fn apply(lower: &Model, layer: &[Entry]) -> Model {
        let mut out = lower.clone();
        let mut written: HashSet<&str> = HashSet::new();
        let remove_under = |out: &mut Model, p: &str, itself: bool| {
            let prefix = format!("{p}/");
            out.retain(|k, _| !(k.starts_with(&prefix) || (itself && k == p)));
        };
        for e in layer {
            let (parent, name) = e.path.rsplit_once('/').unwrap_or(("", &e.path));
            let join = |n: &str| {
                if parent.is_empty() {
                    n.to_string()
                } else {
                    format!("{parent}/{n}")
                }
            };
            match &e.kind {
                Kind::Whiteout if name == ".wh..wh..opq" => {
                    assert!(lower.contains_key(parent));
                    remove_under(&mut out, parent, false)
                }
                Kind::Whiteout => {
                    let hidden = join(name.strip_prefix(".wh.").unwrap());
                    assert!(lower.contains_key(&hidden), "whiteout of absent {hidden}");
                    remove_under(&mut out, &hidden, true)
                }
                kind => {
                    let (k, data) = match kind {
                        Kind::Dir => ('d', String::new()),
                        Kind::File { src, .. } => ('f', src.to_string_lossy().into_owned()),
                        Kind::Symlink { target } => ('l', target.to_string_lossy().into_owned()),
                        Kind::Hardlink { target } => {
                            assert!(
                                written.contains(target.as_str()),
                                "{} before {target}",
                                e.path
                            );
                            ('h', target.clone())
                        }
                        Kind::Whiteout => unreachable!(),
                    };
                    written.insert(&e.path);
                    if k != 'd' || out.get(&e.path).is_some_and(|o| o.0 != 'd') {
                        remove_under(&mut out, &e.path, true);
                    }
                    out.insert(e.path.clone(), (k, e.mode, data));
                }
            }
        }
        out
    }

    fn model(items: &[(&str, char, u32, &str)]) -> Model {
        items
            .iter()
            .map(|(p, k, m, d)| (p.to_string(), (*k, *m, d.to_string())))
            .collect()
    }

    /// Pushes `old` in full, then `new` as a delta: returns the delta and the stacked tree.
    fn stack(old: &Model, new: &Model) -> (Delta, Model) {
        let first = entries(old, &BTreeMap::new());
        let mut index = index_of(&first, 0);
        for e in &first {
            if let Kind::File { src, .. } = &e.kind {
                index.get_mut(&e.path).unwrap().sha = Some(fake_hash(src).unwrap());
            }
        }
        // Every stat differs from the index's, so every file with an unchanged size is hashed.
        let stats = new
            .keys()
            .map(|p| {
                let s = Stat {
                    mtime_ns: 1,
                    ..Default::default()
                };
                (p.clone(), s)
            })
            .collect();
        let d = diff(&index, &entries(new, &stats), 10, &[], fake_hash).unwrap();
        let stacked = apply(old, &d.entries);
        (d, stacked)
    }

    fn base() -> Model {
        model(&[
            ("app", 'd', 0o755, ""),
            ("app/a.py", 'f', 0o644, "a"),
            ("app/pkg", 'd', 0o755, ""),
            ("app/pkg/m.py", 'f', 0o644, "m"),
            ("app/pkg/n.py", 'f', 0o644, "n"),
            ("app/link", 'l', 0o777, "a.py"),
        ])
    }

    fn paths(d: &Delta) -> Vec<&str> {
        d.entries.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn nothing_changed_is_an_empty_delta() {
        let (d, _) = stack(&base(), &base());
        assert!(d.is_empty());
        assert_eq!(d.entries, vec![]);
    }

    #[test]
    fn a_modified_file_is_written_with_its_parents() {
        let mut new = base();
        new.get_mut("app/pkg/m.py").unwrap().2 = "M".into();
        let (d, stacked) = stack(&base(), &new);
        assert_eq!(paths(&d), ["app", "app/pkg", "app/pkg/m.py"]);
        assert_eq!((d.changed, d.deleted), (1, 0));
        assert_eq!(stacked, new);
    }

    #[test]
    fn a_deleted_directory_is_one_whiteout() {
        let mut new = base();
        new.retain(|p, _| !p.starts_with("app/pkg"));
        let (d, stacked) = stack(&base(), &new);
        assert_eq!(paths(&d), ["app", "app/.wh.pkg"]);
        assert_eq!(d.deleted, 3);
        assert_eq!(stacked, new);
    }

    #[test]
    fn a_directory_emptied_and_refilled_is_opaque() {
        let mut new = base();
        new.retain(|p, _| !p.starts_with("app/pkg/"));
        new.insert("app/pkg/z.py".into(), ('f', 0o644, "z".into()));
        let (d, stacked) = stack(&base(), &new);
        assert_eq!(
            paths(&d),
            ["app", "app/pkg", "app/pkg/.wh..wh..opq", "app/pkg/z.py"]
        );
        assert_eq!(stacked, new);
    }

    #[test]
    fn a_directory_replaced_by_a_file_hides_its_children() {
        let mut new = base();
        new.retain(|p, _| !p.starts_with("app/pkg"));
        new.insert("app/pkg".into(), ('f', 0o600, "now a file".into()));
        let (d, stacked) = stack(&base(), &new);
        assert_eq!(paths(&d), ["app", "app/.wh.pkg", "app/pkg"]);
        assert_eq!(stacked, new);
    }

    #[test]
    fn a_link_replaced_by_a_directory_goes_first() {
        let mut new = base();
        new.insert("app/link".into(), ('d', 0o755, String::new()));
        new.insert("app/link/x.py".into(), ('f', 0o644, "x".into()));
        let (d, stacked) = stack(&base(), &new);
        // `tar -x` over the old link would write through it: the whiteout removes it first.
        assert_eq!(
            paths(&d),
            ["app", "app/.wh.link", "app/link", "app/link/x.py"]
        );
        assert_eq!(stacked, new);
    }

    #[test]
    fn a_hardlink_comes_after_its_target_where_components_sort_otherwise() {
        // Byte order puts `app/a-b` before `app/a/c` ('-' < '/'); component order would not.
        let old = model(&[
            ("app", 'd', 0o755, ""),
            ("app/a", 'd', 0o755, ""),
            ("app/a-b", 'f', 0o644, "1"),
            ("app/a/c", 'h', 0o644, "app/a-b"),
        ]);
        let mut new = old.clone();
        new.insert("app/a-b".into(), ('f', 0o644, "2".into()));
        let (d, stacked) = stack(&old, &new);
        assert_eq!(paths(&d), ["app", "app/a", "app/a-b", "app/a/c"]);
        assert_eq!(stacked, new);
    }

    #[test]
    fn what_deltas_hid_is_hidden_again_in_a_full_layer() {
        let mut new = base();
        new.retain(|p, _| !p.starts_with("app/pkg/") && p != "app/a.py");
        let (d, _) = stack(&base(), &new);
        let mut hidden = vec!["app/pkg/m.py".to_string(), "app/gone".to_string()];
        hide(&mut hidden, hidden_by(&d.entries));
        // The emptied directory hides its old children: m.py is below it.
        assert_eq!(hidden, ["app/a.py", "app/gone", "app/pkg"]);
        let tree = entries(&new, &BTreeMap::new());
        let mut part = tree.clone();
        rehide(&mut part, &hidden, &tree, &|_| everything());
        assert_eq!(
            paths_of(&part),
            [
                "app",
                "app/.wh.a.py",
                "app/.wh.gone",
                "app/link",
                "app/pkg",
                "app/pkg/.wh..wh..opq"
            ]
        );
        // A path the tree now holds as a file needs no whiteout.
        let mut again = new.clone();
        again.insert("app/a.py".into(), ('f', 0o644, "back".into()));
        let tree = entries(&again, &BTreeMap::new());
        let mut part = tree.clone();
        rehide(&mut part, &hidden, &tree, &|_| everything());
        assert!(!paths_of(&part).contains(&"app/.wh.a.py"));
    }

    fn everything() -> Below {
        Below {
            holds: true,
            holds_below: true,
        }
    }

    /// Issue 21: after a squash, `adv/gen/.wh.new` hid a path no lower layer had, and overlay
    /// showed `new` as an entry no one can stat.
    #[test]
    fn nothing_is_hidden_again_where_no_lower_layer_holds_it() {
        let mut new = base();
        new.retain(|p, _| !p.starts_with("app/pkg/") && p != "app/a.py");
        let hidden = vec!["app/a.py".to_string(), "app/pkg".to_string()];
        let tree = entries(&new, &BTreeMap::new());
        let mut part = tree.clone();
        let nothing = |_: &str| Below {
            holds: false,
            holds_below: false,
        };
        rehide(&mut part, &hidden, &tree, &nothing);
        assert_eq!(part, tree);
        // The base holds a.py but nothing in pkg: one whiteout, no opaque one.
        let a_py = |p: &str| Below {
            holds: p == "app/a.py",
            holds_below: false,
        };
        rehide(&mut part, &hidden, &tree, &a_py);
        assert!(paths_of(&part).contains(&"app/.wh.a.py"));
        assert!(!paths_of(&part).contains(&"app/pkg/.wh..wh..opq"));
    }

    /// The base tree, `app/a.py` modified at `mtime_ns`.
    fn a_py_at(mtime_ns: i64) -> Vec<Entry> {
        let stat = Stat {
            mtime_ns,
            ..Default::default()
        };
        entries(&base(), &[("app/a.py".to_string(), stat)].into())
    }

    #[test]
    fn a_stamp_moves_with_any_stat_and_a_fresh_write_is_racy() {
        let tree = a_py_at;
        let one = tree(1_000_000_123);
        assert_eq!(stamp(&one), stamp(&tree(1_000_000_123)));
        assert_ne!(stamp(&one), stamp(&tree(1_000_000_124)));
        let mut renamed = one.clone();
        renamed[1].path = "app/b.py".into();
        assert_ne!(stamp(&one), stamp(&renamed));
        // Written 10 ms before the last build: its stat may not show a later write.
        assert!(racy_since(&one, 1_010_000_123));
        assert!(!racy_since(&one, 2_000_000_123));
    }

    #[test]
    fn may_differ_sees_a_moved_stat_or_path_but_not_a_directory_added_after_the_walk() {
        let tree = a_py_at;
        let walked = tree(1_000_000_123);
        let mut index = index_of(&walked, 9_000_000_000);
        let src = walked
            .iter()
            .find_map(|e| match &e.kind {
                Kind::File { src, .. } if e.path == "app/a.py" => Some(src.clone()),
                _ => None,
            })
            .unwrap();
        index.get_mut("app/a.py").unwrap().sha = Some(fake_hash(&src).unwrap());
        let may_differ = |i: &Index, e: &[Entry]| may_differ(i, e, fake_hash);
        assert!(!may_differ(&index, &walked));
        // The stat moved: the bytes are read, and decide.
        assert!(!may_differ(&index, &tree(1_000_000_124)));
        index.get_mut("app/a.py").unwrap().sha = Some([7; 32]);
        assert!(may_differ(&index, &tree(1_000_000_124)));
        assert!(may_differ(&index, &walked[..walked.len() - 1]));
        let mut renamed = walked.clone();
        renamed[1].path = "app/b.py".into();
        assert!(may_differ(&index, &renamed));
        // A directory above the mappings, in the index but added to the tree after the walk.
        let mut with_chain = index.clone();
        with_chain
            .files
            .insert(0, ("0above".into(), with_chain.files[0].1.clone()));
        assert_eq!(with_chain.files[1].1.kind, RecordKind::Dir);
        with_chain.files[0].1.kind = RecordKind::Dir;
        assert!(!may_differ(&with_chain, &walked));
    }

    fn paths_of(entries: &[Entry]) -> Vec<&str> {
        entries.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn whiteouts_come_before_names_that_sort_lower() {
        let old = model(&[
            ("app", 'd', 0o755, ""),
            ("app/-x", 'f', 0o644, "1"),
            ("app/z", 'f', 0o644, "3"),
        ]);
        let mut new = old.clone();
        new.remove("app/-x");
        new.insert("app/+y".into(), ('f', 0o644, "2".into()));
        let (d, stacked) = stack(&old, &new);
        assert_eq!(paths(&d), ["app", "app/.wh.-x", "app/+y"]);
        assert_eq!(stacked, new);
    }

    #[test]
    fn a_chmod_alone_is_a_change_and_a_touch_alone_is_not() {
        let mut new = base();
        new.get_mut("app/a.py").unwrap().1 = 0o755;
        let (d, _) = stack(&base(), &new);
        assert_eq!(paths(&d), ["app", "app/a.py"]);
        // `stack` gives every file a new stat: the hashes show the contents are the same.
        let (d, _) = stack(&base(), &base());
        assert!(d.is_empty());
    }

    #[test]
    fn unchanged_stat_is_trusted_without_reading_unless_racy() {
        let first = entries(&base(), &BTreeMap::new());
        let mut index = index_of(&first, 10_000_000_000);
        for (_, r) in &mut index.files {
            r.sha = Some([7; 32]);
        }
        let mut reads = 0;
        let d = diff(&index, &first, 20_000_000_000, &[], |p| {
            reads += 1;
            fake_hash(p)
        })
        .unwrap();
        assert_eq!(reads, 0);
        assert!(d.is_empty());
        // Written just before the last scan: its stat proves nothing; it is read, and its
        // hash (not the recorded one) shows it changed.
        index.get_mut("app/a.py").unwrap().mtime = 10_000_000_000 - 1;
        let racy = first
            .iter()
            .cloned()
            .map(|mut e| {
                if let Kind::File { stat, .. } = &mut e.kind {
                    if e.path == "app/a.py" {
                        stat.mtime_ns = 10_000_000_000 - 1;
                    }
                }
                e
            })
            .collect::<Vec<_>>();
        let mut reads = 0;
        let d = diff(&index, &racy, 20_000_000_000, &[], |p| {
            reads += 1;
            fake_hash(p)
        })
        .unwrap();
        assert_eq!(reads, 1);
        assert_eq!(d.changed, 1);
    }

    #[test]
    fn the_index_survives_its_line_format_whatever_the_names() {
        let mut m = base();
        m.insert("app/we\tird\nna\\me".into(), ('f', 0o4755, "x".into()));
        m.insert("app/sp ace".into(), ('l', 0o777, "t\targ et".into()));
        let mut index = index_of(&entries(&m, &BTreeMap::new()), 42);
        index.get_mut("app/a.py").unwrap().sha = Some([0xab; 32]);
        index.get_mut("app/a.py").unwrap().mtime = 1_700_000_000_123_456_789;
        let mut text = Vec::new();
        index.write_lines(&mut text).unwrap();
        let back = Index::parse_lines(std::str::from_utf8(&text).unwrap()).unwrap();
        assert_eq!(back, index);
        assert!(Index::parse_lines("scanned-at 0\nf 644 0 0 x\n").is_none());
        let line = |p: &str| format!("d 755 0 0 0 0 0 0 0 - {p}\n");
        let ordered = format!("scanned-at 0\n{}{}", line("a"), line("b"));
        assert_eq!(Index::parse_lines(&ordered).unwrap().files.len(), 2);
        let unordered = format!("scanned-at 0\n{}{}", line("b"), line("a"));
        assert!(Index::parse_lines(&unordered).is_none());
        let twice = format!("scanned-at 0\n{}{}", line("a"), line("a"));
        assert!(Index::parse_lines(&twice).is_none());
        assert!(Index::parse_lines("").is_none());
    }

    /// An index over 1 MiB is read in two halves: the same records, names of many bytes
    /// across the middle included, and a seam out of order refused.
    #[test]
    fn a_large_index_read_in_halves_is_the_same_index() {
        let line = |p: &str| format!("d 755 0 0 0 0 0 0 0 - {p}\n");
        let names: Vec<String> = (0..30_000).map(|i| format!("app/é{i:06}ü")).collect();
        let text = format!(
            "scanned-at 7\n{}",
            names.iter().map(|n| line(n)).collect::<String>()
        );
        assert!(text.len() > 1 << 20);
        let index = Index::parse_lines(&text).unwrap();
        assert_eq!(index.scanned_at, 7);
        let got: Vec<&str> = index.files.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(got, names);
        // Each half in order, the second before the first: the seam falls after line 15,000
        // of these equal lines (the byte middle, then the next line's end).
        let rotated: Vec<&String> = names[14_999..].iter().chain(&names[..14_999]).collect();
        let text = format!(
            "scanned-at 7\n{}",
            rotated.iter().map(|n| line(n)).collect::<String>()
        );
        assert!(Index::parse_lines(&text).is_none());
    }

    #[test]
    fn whole_second_mtimes_get_the_coarse_racy_window() {
        let scan = 100_000_000_000;
        assert!(is_racy(scan - RACY_NS + 1, scan));
        assert!(!is_racy(scan - RACY_NS - 1, scan));
        assert!(is_racy(scan - 1_000_000_000, scan), "a 1 s filesystem");
        assert!(!is_racy(scan - 3_000_000_000, scan));
    }

    #[test]
    fn a_new_name_for_an_old_file_brings_the_file() {
        let old = model(&[("app", 'd', 0o755, ""), ("app/b", 'f', 0o644, "data")]);
        let mut new = old.clone();
        new.insert("app/c".into(), ('h', 0o644, "app/b".into()));
        let (d, stacked) = stack(&old, &new);
        assert_eq!(paths(&d), ["app", "app/b", "app/c"]);
        assert_eq!(d.changed, 1);
        assert_eq!(stacked, new);
    }

    /// xorshift64*: a seeded, dependency-free generator, so a failing seed can be replayed.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// One random edit: add, modify, delete a file or directory, replace a directory with a
    /// file or a file with a directory, rename, chmod, or change a symlink.
    fn edit(m: &mut Model, rng: &mut Rng, step: usize) {
        let dirs: Vec<String> = m
            .iter()
            .filter(|(_, v)| v.0 == 'd')
            .map(|(k, _)| k.clone())
            .collect();
        let leaves: Vec<String> = m
            .iter()
            .filter(|(p, _)| p.as_str() != "app")
            .map(|(k, _)| k.clone())
            .collect();
        let dir = dirs[rng.below(dirs.len())].clone();
        let name = ["a", "b", "-c", "d.py", "e"][rng.below(5)];
        let path = format!("{dir}/{name}");
        let pick = if leaves.is_empty() {
            None
        } else {
            Some(leaves[rng.below(leaves.len())].clone())
        };
        let remove = |m: &mut Model, p: &str| {
            let prefix = format!("{p}/");
            m.retain(|k, _| k != p && !k.starts_with(&prefix));
        };
        match (rng.below(7), pick) {
            (0, _) | (_, None) => {
                remove(m, &path);
                m.insert(path, ('f', 0o644, format!("new {step}")));
            }
            (1, _) => {
                remove(m, &path);
                m.insert(path, ('d', 0o755, String::new()));
            }
            (2, Some(p)) => {
                if m[&p].0 == 'f' {
                    m.get_mut(&p).unwrap().2 = format!("edit {step}");
                }
            }
            (3, Some(p)) => remove(m, &p),
            (4, Some(p)) => {
                let kind = m[&p].0;
                remove(m, &p);
                if kind == 'd' {
                    m.insert(p, ('f', 0o600, format!("was a dir {step}")));
                } else {
                    m.insert(p, ('d', 0o700, String::new()));
                }
            }
            (5, Some(p)) => {
                let moved: Vec<(String, (char, u32, String))> = m
                    .iter()
                    .filter(|(k, _)| **k == p || k.starts_with(&format!("{p}/")))
                    .map(|(k, v)| (k.replacen(&p, &path, 1), v.clone()))
                    .collect();
                if !path.starts_with(&format!("{p}/")) {
                    remove(m, &p);
                    remove(m, &path);
                    m.extend(moved);
                }
            }
            (_, Some(p)) => {
                let v = m.get_mut(&p).unwrap();
                match v.0 {
                    'l' => v.2 = format!("target-{step}"),
                    _ => v.1 ^= 0o111,
                }
                if rng.below(3) == 0 {
                    remove(m, &path);
                    m.insert(path, ('l', 0o777, format!("../t{step}")));
                }
            }
        }
    }

    #[test]
    fn random_edit_sequences_stack_to_the_edited_tree() {
        for seed in 1..=300u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let mut tree = base();
            let mut stacked = base();
            for step in 0..12 {
                let before = tree.clone();
                for _ in 0..=rng.below(3) {
                    edit(&mut tree, &mut rng, step);
                }
                let (delta, s) = stack(&before, &tree);
                stacked = apply(&stacked, &delta.entries);
                assert_eq!(s, tree, "seed {seed}, step {step}");
                assert_eq!(stacked, tree, "seed {seed}, step {step}");
            }
        }
    }
}
