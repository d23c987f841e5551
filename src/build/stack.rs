//! The app layers of one push: a delta stacked on the last push's image when the state allows
//! it, else the full app layer in parts — with why, and the state to remember afterwards.

use std::io::Read;
use std::path::{Path, PathBuf};

use oci_spec::image::Digest;
use sha2::{Digest as _, Sha256};

use crate::build::compression::Compression;
use crate::build::entry::{Entry, Mapping};
use crate::build::image::NewLayer;
use crate::build::index::{self, Delta, Index};
use crate::build::state::{Loaded, Setting, Settings, State};
use crate::build::tree::Hashed;
use crate::build::{partition, tar};
use crate::error::{Error, Result};
use crate::oci::digest::Sha;

/// When deltas are folded back into a full app layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Squash {
    /// Deltas stacked at most; the push after that is full. Each is a layer every node pulls
    /// and every container's overlay mounts: 10 keeps a typical image (≈10 base layers, ≤ 12
    /// parts) near 30 layers, far from overlay's ~120.
    pub max_deltas: usize,
    /// Deltas may weigh at most this share (percent) of the full app layer: past half, a node
    /// pulling the image fresh downloads 1.5× what a squashed image costs, and a squash now
    /// re-uploads only the parts whose files changed.
    pub share: u64,
}

impl Default for Squash {
    fn default() -> Self {
        Squash {
            max_deltas: 10,
            share: 50,
        }
    }
}

/// Why a push is full when a delta could have been stacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FullReason {
    /// `--full`.
    Forced,
    /// The state file could not be used: why.
    StateUnusable {
        dest: String,
        why: String,
    },
    SettingChanged(Setting),
    /// The base reference now names another platform manifest.
    BaseMoved {
        name: String,
        now: Digest,
        was: Digest,
    },
    /// The destination no longer holds the last image.
    ImageGone {
        dest: String,
        image: Digest,
    },
    /// `--max-deltas` would be passed.
    MaxDeltas {
        stacked: usize,
        max: usize,
    },
    /// The deltas would weigh more than `--squash-at` of the full app layer.
    TooHeavy {
        total: u64,
        share: u64,
        full: u64,
    },
}

impl FullReason {
    /// A stable code for `--json` (docs/json.md).
    pub fn code(&self) -> &'static str {
        match self {
            FullReason::Forced => "forced",
            FullReason::StateUnusable { .. } => "state_unusable",
            FullReason::SettingChanged(Setting::Mappings) => "mappings_changed",
            FullReason::SettingChanged(Setting::Owner) => "chown_changed",
            FullReason::SettingChanged(Setting::Mtime) => "mtime_changed",
            FullReason::SettingChanged(Setting::Format) => "format_changed",
            FullReason::BaseMoved { .. } => "base_moved",
            FullReason::ImageGone { .. } => "image_gone",
            FullReason::MaxDeltas { .. } => "max_deltas",
            FullReason::TooHeavy { .. } => "squash_at",
        }
    }
}

impl std::fmt::Display for FullReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FullReason::Forced => f.write_str("--full"),
            FullReason::StateUnusable { dest, why } => {
                write!(
                    f,
                    "the state of the last push to `{dest}` is unusable: {why}"
                )
            }
            FullReason::SettingChanged(s) => f.write_str(match s {
                Setting::Mappings => "the mappings changed since the last push",
                Setting::Owner => "--chown changed since the last push",
                Setting::Mtime => "SOURCE_DATE_EPOCH changed since the last push",
                Setting::Format => "this layerup writes layers differently from the last push's",
            }),
            FullReason::BaseMoved { name, now, was } => write!(
                f,
                "the base `{name}` now points to {now} (the last push was built on {was})"
            ),
            FullReason::ImageGone { dest, image } => write!(
                f,
                "`{dest}` no longer holds the image of the last push ({image})"
            ),
            FullReason::MaxDeltas { stacked, max } => write!(
                f,
                "squashing: {stacked} deltas are stacked (--max-deltas {max})"
            ),
            FullReason::TooHeavy { total, share, full } => write!(
                f,
                "squashing: deltas would weigh {total} bytes, over {share}% of the full app \
                 layer's {full} (--squash-at)"
            ),
        }
    }
}

/// The delta layer's file, in the push's temporary directory.
pub const DELTA_FILE: &str = "delta.tar.gz";

/// What kind of push this is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// The full app layer, in `parts`; `reason` says why not a delta (none on a first push).
    Full {
        reason: Option<FullReason>,
        parts: usize,
    },
    /// One new layer with what changed since the last push, `depth` deltas above the parts.
    Delta {
        changed: usize,
        deleted: usize,
        depth: usize,
    },
    /// Nothing changed since the last push.
    Unchanged,
}

/// What the app layers are made from.
pub struct Job {
    /// The mappings' destinations (image paths without the leading `/`).
    pub roots: Vec<String>,
    pub entries: std::sync::Arc<Vec<Entry>>,
    pub scanned_at: i64,
    /// Image paths to hash even when their stat looks unchanged (file events named them).
    pub suspects: Vec<String>,
    /// Files already read since the walk ([`crate::build::tree::Walked::hashed`]).
    pub hashed: Hashed,
    pub settings: Settings,
    /// What the last push's deltas hid below the app's layers ([`State::hidden`]); empty when
    /// there is no state or the mappings changed.
    pub hidden: Vec<String>,
    /// What each platform's base holds: a full layer hides again only what is really below.
    pub lowers: std::sync::Arc<Vec<crate::build::lower::Lower>>,
    pub base: Digest,
    pub created_by: String,
    pub mtime: u64,
    pub compression: Compression,
    pub squash: Squash,
    /// Where the layer blobs are written.
    pub dir: PathBuf,
}

/// The app layers of this push.
pub struct Built {
    pub mode: Mode,
    /// Every app layer of the image, bottom first.
    pub app: Vec<NewLayer>,
    /// The layers written by this push and their blob files.
    pub uploads: Vec<(NewLayer, PathBuf)>,
    /// The state to save once the push is done (its image digest still to be set).
    pub next: State,
    /// Entries in the tree.
    pub entries: usize,
    /// The index changed even if the image did not (see [`Delta::restat`]): save it.
    pub restat: bool,
}

/// A delta on `prev` when it is usable and the deltas stay within bounds; else the full app
/// layer in parts. Reads and compresses files: run it off the async threads.
pub fn layers(
    job: Job,
    prev: std::result::Result<Box<State>, Option<FullReason>>,
) -> Result<Built> {
    let mut hidden = job.hidden;
    let reason = 'delta: {
        let prev = match prev {
            Err(why) => break 'delta why,
            Ok(prev) => prev,
        };
        let mut delta = diff(
            &prev.index,
            &job.entries,
            job.scanned_at,
            &job.suspects,
            &job.hashed,
        )?;
        // Also when this delta is squashed: the full layer must hide what it would have.
        index::hide(&mut hidden, index::hidden_by(&delta.entries));
        let written = if delta.is_empty() {
            None
        } else {
            let path = job.dir.join(DELTA_FILE);
            let by = format!("{} (changes)", job.created_by);
            let layer = write_layer(
                &delta.entries,
                &by,
                (job.mtime, job.compression),
                &path,
                &mut delta.index,
            )?;
            if let Some(why) = squash_reason(&prev, layer.size, job.squash) {
                break 'delta Some(why);
            }
            Some((layer, path))
        };
        let mut next = *prev;
        next.index = delta.index;
        next.hidden = hidden;
        let mode = match &written {
            None => Mode::Unchanged,
            Some((layer, _)) => {
                next.deltas.push(layer.clone());
                Mode::Delta {
                    changed: delta.changed,
                    deleted: delta.deleted,
                    depth: next.deltas.len(),
                }
            }
        };
        return Ok(Built {
            mode,
            app: next.layers(),
            restat: written.is_some() || delta.restat > 0,
            uploads: written.into_iter().collect(),
            next,
            entries: job.entries.len(),
        });
    };
    let mut parts = partition::split(&job.entries, &job.roots);
    // In the bottom part: an opaque whiteout there hides only the base, not another part.
    let lowers = &job.lowers;
    // Hidden again only where every platform's base holds it: a whiteout over nothing shows in
    // a container as an entry no one can stat.
    let below = |p: &str| index::Below {
        holds: !lowers.is_empty() && lowers.iter().all(|l| l.holds(p)),
        holds_below: lowers.iter().any(|l| l.holds_below(p)),
    };
    index::rehide(&mut parts[0], &hidden, &job.entries, &below);
    // Nothing to add (every mapping per platform, or an empty source): no empty layer.
    parts.retain(|p| !p.is_empty());
    let mut index = index::index_of(&job.entries, job.scanned_at);
    let uploads = write_full(
        &parts,
        &job.created_by,
        (job.mtime, job.compression),
        &mut index,
        &job.dir,
    )?;
    let app: Vec<NewLayer> = uploads.iter().map(|u| u.0.clone()).collect();
    let mut next = State::new(job.settings, job.base.clone(), job.base, app.clone(), index);
    next.hidden = hidden;
    Ok(Built {
        mode: Mode::Full {
            reason,
            parts: app.len(),
        },
        next,
        app,
        uploads,
        entries: job.entries.len(),
        restat: true,
    })
}

/// The last push's state, when a delta may be stacked on it; otherwise why not.
pub fn usable(
    loaded: Loaded,
    settings: &Settings,
    base: &Digest,
    base_name: &str,
    dest_has_image: bool,
    dest_name: &str,
) -> std::result::Result<Box<State>, Option<FullReason>> {
    let s = match loaded {
        Loaded::Missing => return Err(None),
        Loaded::Unreadable(why) => {
            return Err(Some(FullReason::StateUnusable {
                dest: dest_name.to_string(),
                why,
            }))
        }
        Loaded::Found(s) => s,
    };
    if let Some(setting) = settings.changed_from(&s.settings) {
        return Err(Some(FullReason::SettingChanged(setting)));
    }
    if &s.base != base {
        return Err(Some(FullReason::BaseMoved {
            name: base_name.to_string(),
            now: base.clone(),
            was: s.base.clone(),
        }));
    }
    if !dest_has_image {
        return Err(Some(FullReason::ImageGone {
            dest: dest_name.to_string(),
            image: s.image.clone(),
        }));
    }
    Ok(s)
}

/// The settings of this push. Sources are made absolute, so the same checkout pushed from
/// another working directory still stacks.
pub fn settings(mappings: &[Mapping], owner: Option<(u32, u32)>, mtime: u64) -> Settings {
    Settings {
        mappings: mappings
            .iter()
            .map(|m| {
                let src = std::fs::canonicalize(&m.src).unwrap_or_else(|_| m.src.clone());
                format!("{}:{}:{}", src.display(), m.dest, m.into_dir)
            })
            .collect(),
        owner,
        mtime,
        format: format(),
    }
}

/// How this layerup writes layers: the gzip level and the partition's constants.
pub fn format() -> String {
    format!(
        "gzip={} partition={}/{}/{}/{}",
        tar::GZIP_LEVEL,
        partition::SPLIT,
        partition::BIG,
        partition::MAX_ALONE,
        partition::BUCKETS
    )
}

/// The squash that a delta of `size` bytes would trigger, if any.
pub fn squash_reason(prev: &State, size: u64, squash: Squash) -> Option<FullReason> {
    if prev.deltas.len() >= squash.max_deltas {
        return Some(FullReason::MaxDeltas {
            stacked: prev.deltas.len(),
            max: squash.max_deltas,
        });
    }
    let total = prev.delta_size() + size;
    if total * 100 > prev.full_size() * squash.share {
        return Some(FullReason::TooHeavy {
            total,
            share: squash.share,
            full: prev.full_size(),
        });
    }
    None
}

/// Writes the full app layer's parts into `dir`, bottom first; fills the index's hashes.
pub fn write_full(
    parts: &[Vec<Entry>],
    created_by: &str,
    bytes: (u64, Compression),
    index: &mut Index,
    dir: &Path,
) -> Result<Vec<(NewLayer, PathBuf)>> {
    parts
        .iter()
        .enumerate()
        .map(|(i, part)| {
            let path = dir.join(format!("part-{i}.tar.gz"));
            Ok((write_layer(part, created_by, bytes, &path, index)?, path))
        })
        .collect()
}

/// The history entry of the app layers of `mappings`: where files went, never where they came
/// from — the same files from another checkout (another directory name, another user's home)
/// give the same image.
pub fn created_by(mappings: &[Mapping]) -> String {
    let dests: Vec<&str> = mappings.iter().map(|m| m.dest.as_str()).collect();
    format!("layerup push to {}", dests.join(" "))
}

/// Writes one layer blob of `entries` at `path`, outside the index and its deltas.
pub fn write_plain(
    entries: &[Entry],
    created_by: &str,
    bytes: (u64, Compression),
    path: &Path,
) -> Result<NewLayer> {
    write_layer(entries, created_by, bytes, path, &mut Index::default())
}

/// Writes one layer blob at `path`; the hashes of the files it stored go into `index`.
fn write_layer(
    entries: &[Entry],
    created_by: &str,
    (mtime, compression): (u64, Compression),
    path: &Path,
    index: &mut Index,
) -> Result<NewLayer> {
    let sums = tar::write_entries(entries, mtime, compression, path)?;
    for (file, sha) in sums.files {
        if let Some(r) = index.get_mut(&file) {
            r.sha = Some(sha);
        }
    }
    Ok(NewLayer {
        digest: sums.digest,
        diff_id: sums.diff_id,
        size: sums.size,
        created_by: created_by.to_string(),
        codec: compression.codec(),
    })
}

/// The delta between the last push's index and the tree as walked now; `suspects` (sorted
/// image paths) are hashed even when their stat looks unchanged; files in `hashed` are not
/// read again.
pub fn diff(
    prev: &Index,
    entries: &[Entry],
    scanned_at: i64,
    suspects: &[String],
    hashed: &Hashed,
) -> Result<Delta> {
    index::diff(prev, entries, scanned_at, suspects, |p| {
        match hashed.get(p) {
            Some(sha) => Ok(*sha),
            None => hash_file(p),
        }
    })
}

/// The tree as walked may differ from the last push's (see [`index::may_differ`]); the files
/// it read go in `hashed`, for [`diff`].
pub fn may_differ(prev: &Index, entries: &[Entry], hashed: &mut Hashed) -> bool {
    index::may_differ(prev, entries, |p| {
        let sha = hash_file(p)?;
        hashed.insert(p.to_path_buf(), sha);
        Ok(sha)
    })
}

/// sha256 of a file's bytes.
fn hash_file(path: &Path) -> Result<Sha> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io("read", path, &e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io("read", path, &e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// Nanoseconds since the epoch, now: when a walk starts.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::tree;

    /// A file the hint read (its stat moved, its size did not) is not read again by the diff:
    /// gone before the diff, it is still taken at the hash the hint read.
    #[test]
    fn the_diff_does_not_read_again_what_may_differ_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.txt");
        std::fs::write(&file, "one").unwrap();
        let mappings = vec![Mapping {
            src: dir.path().to_path_buf(),
            dest: "/app".into(),
            into_dir: false,
        }];
        let first = tree::collect(&mappings, None, &[], &[]).unwrap();
        let mut index = index::index_of(&first, now_ns());
        let (_, rec) = index
            .files
            .iter_mut()
            .find(|(p, _)| p.ends_with("a.txt"))
            .unwrap();
        rec.sha = Some(hash_file(&file).unwrap());
        std::fs::write(&file, "two").unwrap();
        let second = tree::collect(&mappings, None, &[], &[]).unwrap();
        let mut hashed = Hashed::new();
        assert!(may_differ(&index, &second, &mut hashed));
        assert_eq!(hashed.len(), 1);
        std::fs::remove_file(&file).unwrap();
        let delta = diff(&index, &second, now_ns(), &[], &hashed).unwrap();
        assert_eq!(delta.changed, 1);
    }
}
