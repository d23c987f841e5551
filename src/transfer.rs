//! One blob transfer, for push, copy and layouts: for every blob, present? skip : mountable?
//! mount : stream it — largest first, `jobs` at a time. A [`Blob`] knows where its bytes come
//! from (a file this run wrote, bytes in memory, another repository, registry or layout), so the
//! same loop serves every command (go-containerregistry's `uploadOne` does the same). Callers
//! write manifests only after [`send`] returned: every blob is then acknowledged, so a failure at
//! any point leaves no manifest naming a missing blob.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{stream, StreamExt, TryStreamExt};
use oci_spec::image::Digest;

use crate::error::{Error, Result};
use crate::oci::manifest::Descriptor;
use crate::oci::stream::{BytesOrigin, Cursor, FileOrigin, Origin};
use crate::store::Store;

/// HEAD requests in flight while surveying: cheap, so more than transfers.
const CHECKS: usize = 16;

/// Where a blob's bytes come from.
#[derive(Clone)]
pub enum Source {
    /// A file this run wrote (a new layer).
    File(PathBuf),
    /// Bytes in memory (a new config).
    Bytes(Bytes),
    /// Another store: mounted when it is a repository of the destination's registry, else
    /// streamed from it.
    Store(Store),
}

/// What a blob is to the image, for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Layer,
    Config,
    /// Copied without looking at what it is.
    Blob,
}

/// What is known about a blob in the destination before asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// Ask (HEAD).
    Unknown,
    /// There: the destination's manifest of the last push names it.
    Present,
    /// Not there: new by nature (a delta, a new config); asking would cost a round trip.
    Missing,
}

pub struct Blob {
    pub descriptor: Descriptor,
    pub source: Source,
    pub role: Role,
    pub known: Known,
}

/// What happened to one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The destination already had it; nothing moved.
    Present,
    /// Linked from another repository of the same registry; no bytes moved.
    Mounted,
    /// Streamed from another store to the destination.
    Copied,
    /// Sent from this machine (a new layer, a config).
    Uploaded,
    /// A foreign / non-distributable layer with URLs: referenced, never copied.
    Referenced,
}

impl Outcome {
    /// The word reports and `--json` use.
    pub fn word(self) -> &'static str {
        match self {
            Outcome::Present => "present",
            Outcome::Mounted => "mounted",
            Outcome::Copied => "copied",
            Outcome::Uploaded => "uploaded",
            Outcome::Referenced => "referenced",
        }
    }

    /// Its bytes crossed a wire to the destination.
    pub fn moved_bytes(self) -> bool {
        matches!(self, Outcome::Copied | Outcome::Uploaded)
    }
}

/// One blob, as it ended: the one report shape for `-v`, `--json` and summaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub digest: Digest,
    pub size: u64,
    pub role: Role,
    pub outcome: Outcome,
}

impl Moved {
    pub fn bytes_sent(&self) -> u64 {
        if self.outcome.moved_bytes() {
            self.size
        } else {
            0
        }
    }
}

impl fmt::Display for Moved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let role = match self.role {
            Role::Layer => "layer",
            Role::Config => "config",
            Role::Blob => "blob",
        };
        write!(
            f,
            "{role} {} ({} bytes): {}",
            self.digest,
            self.size,
            self.outcome.word()
        )
    }
}

/// Blob bytes that crossed the wire, over a report.
pub fn bytes_sent(moved: &[Moved]) -> u64 {
    moved.iter().map(Moved::bytes_sent).sum()
}

/// How many blobs of a report ended as `outcome`.
pub fn count(moved: &[Moved], outcome: Outcome) -> usize {
    moved.iter().filter(|m| m.outcome == outcome).count()
}

/// What will travel, known before anything moves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Moves {
    pub present: usize,
    pub mount: usize,
    /// Streamed from another store.
    pub copy: usize,
    /// Sent from this machine.
    pub upload: usize,
    /// Bytes of the blobs to copy and upload (mounts move none).
    pub bytes: u64,
}

/// Asks the destination about every blob whose presence is unknown (HEAD, [`CHECKS`] at a
/// time), marks those it holds, and says what will travel.
pub async fn survey(dest: &Store, blobs: &mut [Blob]) -> Result<Moves> {
    let checks = blobs
        .iter()
        .enumerate()
        .filter(|(_, b)| b.known == Known::Unknown && !b.descriptor.is_foreign())
        .map(
            |(i, b)| async move { Ok::<_, Error>((i, dest.has_blob(&b.descriptor.digest).await?)) },
        )
        // Collected: an iterator with a filter closure held across an await makes the future
        // not `Send` for every lifetime (rustc#110338), and watch spawns pushes on tasks.
        .collect::<Vec<_>>();
    let asked: Vec<(usize, bool)> = stream::iter(checks)
        .buffer_unordered(CHECKS)
        .try_collect()
        .await?;
    for (i, held) in asked {
        blobs[i].known = if held { Known::Present } else { Known::Missing };
    }
    let mut moves = Moves::default();
    for b in blobs.iter().filter(|b| !b.descriptor.is_foreign()) {
        if b.known == Known::Present {
            moves.present += 1;
            continue;
        }
        match &b.source {
            Source::Store(s) if dest.same_registry(s) => moves.mount += 1,
            Source::Store(_) => {
                moves.copy += 1;
                moves.bytes += b.descriptor.size;
            }
            Source::File(_) | Source::Bytes(_) => {
                moves.upload += 1;
                moves.bytes += b.descriptor.size;
            }
        }
    }
    Ok(moves)
}

/// Blob transfers in flight at once across a run (`--jobs`): one image's, or every image's
/// of a project pushed together.
#[derive(Clone)]
pub struct Slots {
    permits: Arc<tokio::sync::Semaphore>,
    jobs: usize,
}

impl Slots {
    pub fn new(jobs: usize) -> Self {
        Slots {
            permits: Arc::new(tokio::sync::Semaphore::new(jobs.max(1))),
            jobs: jobs.max(1),
        }
    }
}

/// Puts every blob the destination lacks there, largest first, as many at a time as `slots`
/// allow, and returns a report per blob in the order given. Blobs still [`Known::Unknown`] are
/// asked about first.
pub async fn send(dest: &Store, blobs: &[Blob], slots: &Slots) -> Result<Vec<Moved>> {
    crate::meter::planned(blobs.len());
    let mut order: Vec<usize> = (0..blobs.len()).collect();
    // Largest first: with a bounded number in flight, the long ones should not start last.
    order.sort_by_key(|&i| std::cmp::Reverse(blobs[i].descriptor.size));
    let moves = order
        .into_iter()
        .map(|i| async move {
            let _slot = slots
                .permits
                .acquire()
                .await
                .map_err(|_| Error::internal("the transfer slots closed"))?;
            Ok::<_, Error>((i, one(dest, &blobs[i]).await?))
        })
        .collect::<Vec<_>>();
    let mut moved: Vec<(usize, Moved)> = stream::iter(moves)
        .buffer_unordered(slots.jobs)
        .try_collect()
        .await?;
    moved.sort_by_key(|(i, _)| *i);
    Ok(moved.into_iter().map(|(_, m)| m).collect())
}

/// One blob: present? mount? stream.
async fn one(dest: &Store, b: &Blob) -> Result<Moved> {
    let d = &b.descriptor;
    let outcome = if d.is_foreign() {
        Outcome::Referenced
    } else if b.known == Known::Present
        || (b.known == Known::Unknown && dest.has_blob(&d.digest).await?)
    {
        Outcome::Present
    } else {
        match &b.source {
            Source::Store(from) if dest.mount(&d.digest, from).await? => Outcome::Mounted,
            Source::Store(from) => {
                dest.put_blob(d, from.cursor(d)?).await?;
                Outcome::Copied
            }
            Source::File(path) => {
                let origin: Arc<dyn Origin> = Arc::new(FileOrigin(path.clone()));
                dest.put_blob(d, local(origin, d)?).await?;
                Outcome::Uploaded
            }
            Source::Bytes(bytes) => {
                let origin: Arc<dyn Origin> = Arc::new(BytesOrigin(bytes.clone()));
                dest.put_blob(d, local(origin, d)?).await?;
                Outcome::Uploaded
            }
        }
    };
    let m = Moved {
        digest: d.digest.clone(),
        size: d.size,
        role: b.role,
        outcome,
    };
    tracing::info!("{m}");
    crate::meter::blob_done();
    Ok(m)
}

/// A cursor over bytes on this machine: read once, a failure is not worth a retry.
fn local(origin: Arc<dyn Origin>, d: &Descriptor) -> Result<Cursor> {
    Cursor::new(origin, &d.digest, d.size, format!("blob {}", d.digest), 1)
}
