//! One write path for images, for push, copy and layouts: for every blob, present? skip :
//! mountable? mount : stream it — largest first, `jobs` at a time; then the child manifests;
//! then the top manifest under its tags ([`write`]). A [`Blob`] knows where its bytes come from
//! (a file this run wrote, bytes in memory, another repository, registry or layout), so the same
//! loop serves every command (go-containerregistry's `uploadOne` does the same). The order is
//! this module's promise: a manifest is written only once every blob it names is acknowledged,
//! and a tag only once every child its index names is there — so a failure at any point leaves
//! no tag naming something missing.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{stream, FutureExt, StreamExt, TryStreamExt};
use oci_spec::image::Digest;

use crate::error::{Error, Result};
use crate::oci::manifest::{Descriptor, Document};
use crate::oci::stream::{BytesOrigin, Cursor, FileOrigin, Origin};
use crate::store::Store;

/// Where a transfer writes: a [`Store`] (a registry repository or a layout). A trait so that
/// the order of [`write`] can be checked against a destination that records what it is asked.
pub trait Dest: Send + Sync {
    fn has_blob<'a>(&'a self, d: &'a Digest) -> BoxFuture<'a, Result<bool>>;
    /// Links a blob from `from` without moving its bytes; `false` when it cannot.
    fn mount<'a>(&'a self, d: &'a Digest, from: &'a Store) -> BoxFuture<'a, Result<bool>>;
    /// Whether a blob of `from` could be mounted rather than moved (for [`survey`]'s count).
    fn mountable(&self, from: &Store) -> bool;
    /// Writes a blob; `true` when the destination mounted it from elsewhere instead.
    fn put_blob<'a>(&'a self, d: &'a Descriptor, c: Cursor) -> BoxFuture<'a, Result<bool>>;
    /// Writes a manifest under `tag`, or by its digest only (`None`: an index's child).
    fn put_manifest<'a>(
        &'a self,
        doc: &'a Document,
        tag: Option<&'a str>,
    ) -> BoxFuture<'a, Result<()>>;
}

impl Dest for Store {
    fn has_blob<'a>(&'a self, d: &'a Digest) -> BoxFuture<'a, Result<bool>> {
        Store::has_blob(self, d).boxed()
    }
    fn mount<'a>(&'a self, d: &'a Digest, from: &'a Store) -> BoxFuture<'a, Result<bool>> {
        Store::mount(self, d, from).boxed()
    }
    fn mountable(&self, from: &Store) -> bool {
        self.same_registry(from)
    }
    fn put_blob<'a>(&'a self, d: &'a Descriptor, c: Cursor) -> BoxFuture<'a, Result<bool>> {
        Store::put_blob(self, d, c).boxed()
    }
    fn put_manifest<'a>(
        &'a self,
        doc: &'a Document,
        tag: Option<&'a str>,
    ) -> BoxFuture<'a, Result<()>> {
        match tag {
            Some(tag) => Store::put_tag(self, tag, doc).boxed(),
            None => Store::put_child(self, doc).boxed(),
        }
    }
}

/// The manifests of an image write, after its blobs: an index's children (by digest), then the
/// top document under each tag. No tags: the destination already holds the image as tagged,
/// and nothing is written.
pub struct Manifests<'a> {
    pub children: &'a [Document],
    pub top: &'a Document,
    pub tags: Vec<String>,
}

/// Writes an image: every blob the destination lacks ([`send`]), then the children, then the top
/// document under its tags — each step only once the one before is acknowledged whole.
pub async fn write(
    dest: &dyn Dest,
    blobs: &[Blob],
    manifests: Manifests<'_>,
    slots: &Slots,
) -> Result<Vec<Moved>> {
    let moved = send(dest, blobs, slots).await?;
    if manifests.tags.is_empty() {
        return Ok(moved);
    }
    // Collected first: a closure held across an await makes the future not `Send` for every
    // lifetime (rustc#110338), and watch spawns pushes on tasks.
    let children: Vec<_> = manifests
        .children
        .iter()
        .map(|c| dest.put_manifest(c, None))
        .collect();
    stream::iter(children)
        .buffer_unordered(slots.jobs)
        .try_collect::<Vec<()>>()
        .await?;
    for tag in &manifests.tags {
        dest.put_manifest(manifests.top, Some(tag)).await?;
    }
    tracing::info!("manifest {}", manifests.top.digest);
    Ok(moved)
}

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
pub async fn survey(dest: &dyn Dest, blobs: &mut [Blob]) -> Result<Moves> {
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
            Source::Store(s) if dest.mountable(s) => moves.mount += 1,
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
pub async fn send(dest: &dyn Dest, blobs: &[Blob], slots: &Slots) -> Result<Vec<Moved>> {
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
async fn one(dest: &dyn Dest, b: &Blob) -> Result<Moved> {
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
            Source::Store(from) => match dest.put_blob(d, from.cursor(d)?).await? {
                true => Outcome::Mounted,
                false => Outcome::Copied,
            },
            Source::File(path) => {
                let origin: Arc<dyn Origin> = Arc::new(FileOrigin(path.clone()));
                uploaded(dest.put_blob(d, local(origin, d)?).await?)
            }
            Source::Bytes(bytes) => {
                let origin: Arc<dyn Origin> = Arc::new(BytesOrigin(bytes.clone()));
                uploaded(dest.put_blob(d, local(origin, d)?).await?)
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

/// A blob of this machine's, put: mounted (another repository of the registry had it) or sent.
fn uploaded(mounted: bool) -> Outcome {
    if mounted {
        Outcome::Mounted
    } else {
        Outcome::Uploaded
    }
}

/// A cursor over bytes on this machine: read once, a failure is not worth a retry.
fn local(origin: Arc<dyn Origin>, d: &Descriptor) -> Result<Cursor> {
    Cursor::new(origin, &d.digest, d.size, format!("blob {}", d.digest), 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::digest;
    use std::sync::Mutex;

    /// A destination that records what it is asked, in order; `refuse` fails one blob's upload.
    #[derive(Default)]
    struct Recorder {
        log: Mutex<Vec<String>>,
        refuse: Option<Digest>,
    }

    impl Recorder {
        fn said(&self, what: String) {
            self.log.lock().unwrap().push(what);
        }
        fn log(&self) -> Vec<String> {
            self.log.lock().unwrap().clone()
        }
    }

    impl Dest for Recorder {
        fn has_blob<'a>(&'a self, _: &'a Digest) -> BoxFuture<'a, Result<bool>> {
            async { Ok(false) }.boxed()
        }
        fn mount<'a>(&'a self, _: &'a Digest, _: &'a Store) -> BoxFuture<'a, Result<bool>> {
            async { Ok(false) }.boxed()
        }
        fn mountable(&self, _: &Store) -> bool {
            false
        }
        fn put_blob<'a>(&'a self, d: &'a Descriptor, c: Cursor) -> BoxFuture<'a, Result<bool>> {
            async move {
                // Slow enough that a manifest written early would be seen first.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                let bytes = crate::oci::stream::read_all(c, 1 << 20).await?;
                if self.refuse.as_ref() == Some(&d.digest) {
                    return Err(Error::internal("refused"));
                }
                self.said(format!("blob {}", bytes.len()));
                Ok(false)
            }
            .boxed()
        }
        fn put_manifest<'a>(
            &'a self,
            doc: &'a Document,
            tag: Option<&'a str>,
        ) -> BoxFuture<'a, Result<()>> {
            let name = String::from_utf8_lossy(&doc.bytes).into_owned();
            async move {
                self.said(match tag {
                    Some(t) => format!("tag {t} {name}"),
                    None => format!("child {name}"),
                });
                Ok(())
            }
            .boxed()
        }
    }

    fn blob(bytes: &'static [u8]) -> Blob {
        Blob {
            descriptor: Descriptor::new("x", digest::sha256(bytes), bytes.len() as u64),
            source: Source::Bytes(Bytes::from_static(bytes)),
            role: Role::Layer,
            known: Known::Unknown,
        }
    }

    fn docs() -> (Vec<Document>, Document) {
        let children = vec![
            Document::new(b"a".to_vec(), "m"),
            Document::new(b"b".to_vec(), "m"),
        ];
        (children, Document::new(b"index".to_vec(), "i"))
    }

    #[tokio::test]
    async fn blobs_then_children_then_the_tags_in_order() {
        let dest = Recorder::default();
        let blobs = vec![blob(b"one"), blob(b"three"), blob(b"seven..")];
        let (children, top) = docs();
        let manifests = Manifests {
            children: &children,
            top: &top,
            tags: vec!["dev".into(), "layerup-1234".into()],
        };
        let moved = write(&dest, &blobs, manifests, &Slots::new(4))
            .await
            .unwrap();
        assert!(moved.iter().all(|m| m.outcome == Outcome::Uploaded));
        let log = dest.log();
        assert_eq!(log.len(), 7, "{log:?}");
        let mut first_three: Vec<&str> = log[..3].iter().map(String::as_str).collect();
        first_three.sort();
        assert_eq!(first_three, ["blob 3", "blob 5", "blob 7"], "{log:?}");
        let mut children: Vec<&str> = log[3..5].iter().map(String::as_str).collect();
        children.sort();
        assert_eq!(children, ["child a", "child b"], "{log:?}");
        assert_eq!(log[5..], ["tag dev index", "tag layerup-1234 index"]);
    }

    #[tokio::test]
    async fn a_blob_that_fails_leaves_no_manifest_written() {
        let blobs = vec![blob(b"one"), blob(b"three")];
        let dest = Recorder {
            refuse: Some(blobs[1].descriptor.digest.clone()),
            ..Recorder::default()
        };
        let (children, top) = docs();
        let manifests = Manifests {
            children: &children,
            top: &top,
            tags: vec!["dev".into()],
        };
        assert!(write(&dest, &blobs, manifests, &Slots::new(4))
            .await
            .is_err());
        assert!(
            dest.log().iter().all(|l| l.starts_with("blob")),
            "{:?}",
            dest.log()
        );
    }

    #[tokio::test]
    async fn no_tags_write_no_manifest() {
        let dest = Recorder::default();
        let (children, top) = docs();
        let manifests = Manifests {
            children: &children,
            top: &top,
            tags: Vec::new(),
        };
        write(&dest, &[blob(b"one")], manifests, &Slots::new(1))
            .await
            .unwrap();
        assert_eq!(dest.log(), ["blob 3"]);
    }
}
