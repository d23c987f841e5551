//! Blob bytes on the move: streams, where a blob's bytes can be read from at any offset
//! ([`Origin`]), and the [`Cursor`] every transfer reads through — verified against the blob's
//! digest, able to go back to an offset the receiver names, and resuming a broken read where it
//! stopped instead of from the first byte.

use std::io::SeekFrom;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt};
use oci_spec::image::Digest;
use tokio::io::AsyncSeekExt;
use tokio::sync::Mutex;

use crate::error::{Error, Result};
use crate::oci::digest::{self, Hasher, Mismatch};

/// Blob bytes as they move between stores: streamed, never whole in memory.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// A file's bytes as a [`ByteStream`], read 256 KiB at a time.
pub fn file_stream(file: tokio::fs::File) -> ByteStream {
    tokio_util::io::ReaderStream::with_capacity(file, 256 << 10).boxed()
}

/// Where a blob's bytes can be read from, starting at any offset: a file this run wrote, a
/// layout's blob, a registry (with a `Range` request). Unverified: the [`Cursor`] checks them.
pub trait Origin: Send + Sync {
    fn open(&self, from: u64) -> BoxFuture<'_, Result<ByteStream>>;
}

/// A file on disk (a layer this run wrote, a layout's blob).
pub struct FileOrigin(pub PathBuf);

impl Origin for FileOrigin {
    fn open(&self, from: u64) -> BoxFuture<'_, Result<ByteStream>> {
        async move {
            let mut file = tokio::fs::File::open(&self.0)
                .await
                .map_err(|e| Error::io("read", &self.0, &e))?;
            if from > 0 {
                file.seek(SeekFrom::Start(from))
                    .await
                    .map_err(|e| Error::io("read", &self.0, &e))?;
            }
            Ok(file_stream(file))
        }
        .boxed()
    }
}

/// Bytes in memory (an image config).
pub struct BytesOrigin(pub Bytes);

impl Origin for BytesOrigin {
    fn open(&self, from: u64) -> BoxFuture<'_, Result<ByteStream>> {
        let rest = self.0.slice((from as usize).min(self.0.len())..);
        futures_util::future::ready(Ok(futures_util::stream::iter([Ok(rest)]).boxed())).boxed()
    }
}

/// Drops the first `n` bytes of a stream: what an origin does when it asked for an offset and
/// got the whole blob (a registry that ignores `Range`).
pub fn skip(stream: ByteStream, n: u64) -> ByteStream {
    let mut left = n;
    stream
        .filter_map(move |piece| {
            let out = match piece {
                Ok(mut p) if left > 0 => {
                    let cut = left.min(p.len() as u64);
                    left -= cut;
                    let rest = p.split_off(cut as usize);
                    (!rest.is_empty()).then_some(Ok(rest))
                }
                other => Some(other),
            };
            futures_util::future::ready(out)
        })
        .boxed()
}

/// A hash state is kept every this many bytes, so that going back to an offset re-reads at most
/// this much (a clone of the hash state is about 200 bytes: 1 GiB keeps 200 KiB of them).
const CHECKPOINT: u64 = 1 << 20;

/// A blob read in order, verified as it goes, from an [`Origin`] that can start anywhere.
///
/// - The piece that completes the blob is handed out only once the origin has ended and the
///   bytes matched the digest: a receiver that commits on the last byte never commits wrong
///   bytes. A [`Mismatch`] is final.
/// - [`Cursor::seek`] goes back to any offset (a registry says how much of an upload it holds):
///   the origin is opened again at the nearest checkpoint before it, and hashing goes on from
///   the hash state kept there. Nothing is kept in memory but those states.
/// - A read that breaks (a reset, a stall) opens the origin again where it stopped, up to
///   `tries` times in a row: the receiver never sees it.
pub struct Cursor {
    origin: Arc<dyn Origin>,
    digest: Digest,
    size: u64,
    what: String,
    tries: u32,
    source: Option<ByteStream>,
    /// Bytes read from the origin and hashed.
    read: u64,
    hasher: Hasher,
    /// Read but not handed out yet (beyond the end of the request that read them).
    pending: Option<Bytes>,
    /// Hash states at offsets, ascending; the first is at 0.
    checkpoints: Vec<(u64, Hasher)>,
    /// Why the cursor failed for good.
    failed: Option<std::io::Error>,
}

impl Cursor {
    /// `what` names the blob in messages; `tries` bounds the re-opens after a broken read.
    pub fn new(
        origin: Arc<dyn Origin>,
        digest: &Digest,
        size: u64,
        what: String,
        tries: u32,
    ) -> Result<Self> {
        let hasher = Hasher::for_digest(digest)?;
        Ok(Cursor {
            origin,
            digest: digest.clone(),
            size,
            what,
            tries: tries.max(1),
            source: None,
            read: 0,
            checkpoints: vec![(0, hasher.clone())],
            hasher,
            pending: None,
            failed: None,
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes handed out so far.
    pub fn position(&self) -> u64 {
        self.read - self.pending.as_ref().map_or(0, |p| p.len() as u64)
    }

    /// Why the cursor failed for good, once: a [`Mismatch`], or an origin that kept failing.
    pub fn take_failure(&mut self) -> Option<std::io::Error> {
        self.failed.take()
    }

    /// Goes to offset `to`: back to the nearest checkpoint and forward from there, or forward.
    pub async fn seek(&mut self, to: u64) -> std::io::Result<()> {
        if to < self.position() {
            let at = self
                .checkpoints
                .iter()
                .rposition(|(offset, _)| *offset <= to)
                .unwrap_or(0);
            self.checkpoints.truncate(at + 1);
            let (offset, hasher) = self.checkpoints[at].clone();
            self.read = offset;
            self.hasher = hasher;
            self.pending = None;
            self.source = None;
        }
        while self.position() < to {
            match self.next(to).await {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Err(std::io::Error::other(self.what.clone() + " ended early")),
            }
        }
        Ok(())
    }

    /// The next piece, ending at `end` at most; `None` at `end` or after a failure.
    pub async fn next(&mut self, end: u64) -> Option<std::io::Result<Bytes>> {
        let at = self.position();
        if at >= end || self.failed.is_some() {
            return None;
        }
        let mut piece = match self.pending.take() {
            Some(p) => p,
            None => match self.fill().await {
                Ok(p) => p,
                Err(e) => return Some(Err(e)),
            },
        };
        let want = (end - at) as usize;
        if piece.len() > want {
            self.pending = Some(piece.split_off(want));
        }
        Some(Ok(piece))
    }

    /// Reads the next piece from the origin, opening it again after a break.
    async fn fill(&mut self) -> std::io::Result<Bytes> {
        let mut broken = 0;
        loop {
            if self.source.is_none() {
                match self.origin.open(self.read).await {
                    Ok(s) => self.source = Some(s),
                    Err(e) => return Err(self.fail(std::io::Error::other(e))),
                }
            }
            let next = self.source.as_mut().expect("opened above").next().await;
            match next {
                Some(Ok(p)) if p.is_empty() => continue,
                Some(Ok(p)) => return self.take(p).await,
                Some(Err(e)) if digest::is_mismatch(&e) => return Err(self.fail(e)),
                Some(Err(e)) => {
                    broken += 1;
                    self.source = None;
                    if broken >= self.tries {
                        return Err(self.fail(gave_up(e, broken)));
                    }
                    let wait = crate::retry::backoff(broken);
                    tracing::warn!(
                        "reading {} broke at byte {}: {}; reading on from there in {:.1}s",
                        self.what,
                        self.read,
                        crate::error::escape(&e.to_string()),
                        wait.as_secs_f64()
                    );
                    tokio::time::sleep(wait).await;
                }
                None => {
                    let e = Mismatch(format!(
                        "{} ended after {} of {} bytes",
                        self.what, self.read, self.size
                    ));
                    return Err(self.fail(std::io::Error::other(e)));
                }
            }
        }
    }

    /// Hashes a piece read from the origin; the one that completes the blob only once the
    /// origin has ended and the digest matched.
    async fn take(&mut self, piece: Bytes) -> std::io::Result<Bytes> {
        let end = self.read + piece.len() as u64;
        if end > self.size {
            let e = Mismatch(format!(
                "{} is longer than the {} bytes its descriptor states",
                self.what, self.size
            ));
            return Err(self.fail(std::io::Error::other(e)));
        }
        self.hasher.update(&piece);
        self.read = end;
        let last = self.checkpoints.last().map_or(0, |c| c.0);
        if end - last >= CHECKPOINT {
            self.checkpoints.push((end, self.hasher.clone()));
        }
        if end < self.size {
            return Ok(piece);
        }
        // The last piece: the origin must end here, and the bytes must be the ones named.
        let source = self.source.as_mut().expect("a piece came from it");
        if let Some(Ok(more)) = source.next().await {
            if !more.is_empty() {
                let e = Mismatch(format!(
                    "{} is longer than the {} bytes its descriptor states",
                    self.what, self.size
                ));
                return Err(self.fail(std::io::Error::other(e)));
            }
        }
        if !self.hasher.clone().matches(&self.digest) {
            let e = Mismatch(format!(
                "{} does not match its digest {}",
                self.what, self.digest
            ));
            return Err(self.fail(std::io::Error::other(e)));
        }
        Ok(piece)
    }

    fn fail(&mut self, e: std::io::Error) -> std::io::Error {
        let shown = std::io::Error::new(e.kind(), e.to_string());
        self.failed = Some(e);
        shown
    }
}

/// The last failure of a read that kept breaking, saying so; an [`Error`] inside keeps its code.
fn gave_up(e: std::io::Error, tries: u32) -> std::io::Error {
    let more = format!("(gave up after {tries} tries)");
    match e.get_ref().and_then(|i| i.downcast_ref::<Error>()) {
        Some(inner) => std::io::Error::other(inner.clone().suffixed(&more)),
        None => std::io::Error::new(e.kind(), format!("{e} {more}")),
    }
}

/// A request body: the cursor's bytes from where it stands up to `end`, counted as sent.
pub fn body(cursor: Arc<Mutex<Cursor>>, end: u64) -> ByteStream {
    futures_util::stream::unfold(cursor, move |c| async move {
        let item = c.lock().await.next(end).await?;
        if let Ok(b) = &item {
            crate::meter::sent(b.len());
        }
        Some((item, c))
    })
    .boxed()
}

/// A blob read whole through its cursor, as a stream: verified, resumed where a read breaks,
/// and not counted as sent (it is read, not uploaded). The last piece comes only once the
/// digest matched; a wrong blob ends in an error.
pub fn read(cursor: Cursor) -> ByteStream {
    futures_util::stream::unfold(cursor, |mut c| async move {
        let end = c.size;
        let item = match c.next(end).await? {
            Ok(piece) => Ok(piece),
            Err(e) => {
                let real = c.take_failure().unwrap_or(e);
                Err(std::io::Error::other(failure(&c.what, &real)))
            }
        };
        Some((item, c))
    })
    .boxed()
}

/// A small blob whole (an image config, at most `limit` bytes), verified and read through a
/// cursor, so a broken read resumes rather than fails.
pub async fn read_all(mut cursor: Cursor, limit: u64) -> Result<Vec<u8>> {
    if cursor.size > limit {
        return Err(Error::image(format!(
            "{} claims {} bytes; an image config is never that large",
            cursor.what, cursor.size
        )));
    }
    let mut out = Vec::with_capacity(cursor.size as usize);
    let size = cursor.size;
    while let Some(piece) = cursor.next(size).await {
        match piece {
            Ok(p) => out.extend_from_slice(&p),
            Err(e) => {
                let real = cursor.take_failure().unwrap_or(e);
                return Err(failure(&cursor.what, &real));
            }
        }
    }
    Ok(out)
}

/// A cursor's final failure as an error: wrong bytes are an unusable image (exit 7); an origin
/// that could not be read says why.
pub fn failure(what: &str, e: &std::io::Error) -> Error {
    if digest::is_mismatch(e) {
        return Error::image(e.to_string());
    }
    match e.get_ref().and_then(|i| i.downcast_ref::<Error>()) {
        Some(inner) => inner.clone(),
        None => Error::new(
            crate::error::ExitCode::Unreachable,
            format!("cannot read {what}: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes in memory, whose reads break once at `cut` (the first time only), counting opens.
    struct Flaky {
        bytes: Bytes,
        cut: Option<u64>,
        opens: std::sync::Mutex<Vec<u64>>,
    }

    impl Origin for Flaky {
        fn open(&self, from: u64) -> BoxFuture<'_, Result<ByteStream>> {
            let first = {
                let mut o = self.opens.lock().unwrap();
                o.push(from);
                o.len() == 1
            };
            let rest = self.bytes.slice(from as usize..);
            let pieces: Vec<std::io::Result<Bytes>> = rest
                .chunks(1000)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            let mut s: ByteStream = futures_util::stream::iter(pieces).boxed();
            if let (true, Some(cut)) = (first, self.cut) {
                let mut n = 0u64;
                s = s
                    .map(move |p| {
                        n += 1000;
                        if n > cut {
                            Err(std::io::Error::other("connection reset"))
                        } else {
                            p
                        }
                    })
                    .boxed();
            }
            futures_util::future::ready(Ok(s)).boxed()
        }
    }

    fn flaky(len: usize, cut: Option<u64>) -> (Arc<Flaky>, Digest) {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let d = digest::sha256(&bytes);
        (
            Arc::new(Flaky {
                bytes: bytes.into(),
                cut,
                opens: Default::default(),
            }),
            d,
        )
    }

    async fn drain(c: &mut Cursor, end: u64) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(p) = c.next(end).await {
            out.extend_from_slice(&p?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn a_broken_read_goes_on_from_where_it_stopped() {
        let (origin, d) = flaky(50_000, Some(20_000));
        let mut c = Cursor::new(origin.clone(), &d, 50_000, "b".into(), 3).unwrap();
        let all = drain(&mut c, 50_000).await.unwrap();
        assert_eq!(all, origin.bytes.to_vec());
        assert_eq!(*origin.opens.lock().unwrap(), [0, 20_000]);
    }

    #[tokio::test]
    async fn seeking_back_reopens_at_a_checkpoint_and_verifies_the_whole() {
        let len = 3 * CHECKPOINT as usize + 5000;
        let (origin, d) = flaky(len, None);
        let mut c = Cursor::new(origin.clone(), &d, len as u64, "b".into(), 1).unwrap();
        let first = drain(&mut c, 3 * CHECKPOINT).await.unwrap();
        let to = 2 * CHECKPOINT + 300;
        c.seek(to).await.unwrap();
        let rest = drain(&mut c, len as u64).await.unwrap();
        let mut whole = first[..to as usize].to_vec();
        whole.extend(rest);
        assert_eq!(whole, origin.bytes.to_vec());
        let opens = origin.opens.lock().unwrap().clone();
        assert_eq!(opens.len(), 2);
        // Re-read from the checkpoint before `to`: less than a checkpoint and a piece.
        assert!(opens[1] > 0 && opens[1] <= to && to - opens[1] < CHECKPOINT + 1000);
    }

    #[tokio::test]
    async fn wrong_bytes_never_yield_the_last_piece() {
        let (origin, _) = flaky(5000, None);
        let wrong = digest::sha256(b"something else");
        let mut c = Cursor::new(origin, &wrong, 5000, "b".into(), 3).unwrap();
        let err = drain(&mut c, 5000).await.unwrap_err();
        assert!(
            err.to_string().contains("does not match its digest"),
            "{err}"
        );
        assert!(digest::is_mismatch(&c.take_failure().unwrap()));
    }

    #[tokio::test]
    async fn a_short_or_long_origin_is_a_mismatch() {
        let (origin, d) = flaky(5000, None);
        let mut short = Cursor::new(origin.clone(), &d, 6000, "b".into(), 3).unwrap();
        assert!(drain(&mut short, 6000).await.is_err());
        assert!(digest::is_mismatch(&short.take_failure().unwrap()));
        let mut long = Cursor::new(origin, &d, 4000, "b".into(), 3).unwrap();
        assert!(drain(&mut long, 4000).await.is_err());
        assert!(digest::is_mismatch(&long.take_failure().unwrap()));
    }

    #[tokio::test]
    async fn skip_drops_exactly_the_first_bytes() {
        let s: ByteStream = futures_util::stream::iter([
            Ok(Bytes::from_static(b"abc")),
            Ok(Bytes::from_static(b"defg")),
        ])
        .boxed();
        let out: Vec<_> = skip(s, 5).collect().await;
        let out: Vec<u8> = out.into_iter().flat_map(|p| p.unwrap().to_vec()).collect();
        assert_eq!(out, b"fg");
    }
}
