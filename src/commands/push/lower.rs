//! The base's record (`build::lower`), read once per base layer: each layer streamed from the
//! base's store, decompressed, its tar headers kept and its file contents dropped as they pass;
//! then kept beside the state by the layer's digest, so a later push — or another base that
//! shares the layer — reads it from disk. Layers are read `jobs` at a time.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use futures_util::{StreamExt, TryStreamExt};

use crate::build::base::Base;
use crate::build::lower::{self, Lower, Record};
use crate::error::{Error, Result};
use crate::oci::manifest::Descriptor;
use crate::oci::stream;
use crate::store::Store;

/// Where records are kept: `bases/` in the state directory.
pub(super) fn cache_dir(state_dir: Option<&Path>) -> Option<PathBuf> {
    state_dir.map(|d| d.join("bases"))
}

/// The tree `base`'s layers make, from the cache where they were read before, else from
/// `source`.
pub(super) async fn of(
    source: &Store,
    base: &Base,
    cache: Option<&Path>,
    jobs: usize,
) -> Result<Lower> {
    let reads = base
        .layers
        .iter()
        .map(|d| layer(source, d, cache))
        .collect::<Vec<_>>();
    let records: Vec<Record> = futures_util::stream::iter(reads)
        .buffered(jobs.max(1))
        .try_collect()
        .await?;
    Ok(Lower::merge(&records))
}

/// One layer's record.
async fn layer(source: &Store, d: &Descriptor, cache: Option<&Path>) -> Result<Record> {
    // A foreign layer lives elsewhere (Windows' base layers): it holds nothing layerup places
    // files over.
    if d.is_foreign() {
        return Ok(Record::default());
    }
    let hex = d.digest.digest().to_string();
    if let Some(r) = cache.and_then(|c| lower::load(c, &hex)) {
        return Ok(r);
    }
    tracing::info!(
        "reading the headers of base layer {} ({} bytes)",
        d.digest,
        d.size
    );
    // The blob's pieces go to the reading thread through a channel, not a bridge into the
    // runtime: if this push is dropped (another read failed, Ctrl-C), the channel closes and
    // the thread ends at once instead of waiting on a runtime that is going away.
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(8);
    let media_type = d.media_type.clone();
    let what = format!("base layer {}", d.digest);
    let read = tokio::task::spawn_blocking(move || headers(Pieces::new(rx), &media_type, &what));
    let mut body = stream::read(source.cursor(d)?);
    let send = async {
        while let Some(piece) = body.next().await {
            let failed = piece.is_err();
            if tx.send(piece).await.is_err() || failed {
                break;
            }
        }
        drop(tx);
    };
    let ((), record) = tokio::join!(send, read);
    let record = record.map_err(|e| Error::internal(format!("a file task stopped: {e}")))??;
    if let Some(c) = cache {
        lower::save(c, &hex, &record);
    }
    Ok(record)
}

/// What the channel brings, read as one stream of bytes: ends when the sender does.
struct Pieces {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    current: bytes::Bytes,
}

impl Pieces {
    fn new(rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>) -> Self {
        Pieces {
            rx,
            current: bytes::Bytes::new(),
        }
    }
}

impl std::io::Read for Pieces {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(piece)) => self.current = piece,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// A layer's record from its blob (`blob`, compressed as `media_type` says), read to its last
/// byte: only that proves the blob is the one its digest names.
fn headers(blob: impl std::io::Read, media_type: &str, what: &str) -> Result<Record> {
    let mut tar: Box<dyn std::io::Read> = if media_type.contains("zstd") {
        Box::new(
            zstd::stream::read::Decoder::new(blob)
                .map_err(|e| Error::image(format!("{what} is not zstd: {e}")))?,
        )
    } else if media_type.contains("gzip") {
        Box::new(flate2::read::MultiGzDecoder::new(blob))
    } else {
        Box::new(blob)
    };
    // Some writers (umoci's) end a layer right after the last file's bytes, without the tar's
    // padding and end blocks; appliers take such layers, and so does this: the missing zeros
    // are supplied.
    let padded = (&mut tar).chain(std::io::repeat(0).take(1536));
    let read = lower::record(padded)
        .and_then(|r| std::io::copy(&mut tar, &mut std::io::sink()).map(|_| r));
    read.map_err(
        |e| match e.get_ref().and_then(|i| i.downcast_ref::<Error>()) {
            Some(inner) => inner.clone(),
            None => Error::image(format!("{what} cannot be read as a tar: {e}")),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::stream::{BytesOrigin, Cursor, Origin};
    use std::sync::Arc;

    /// Read through its verifying cursor, from a blob in memory: a layer cut right after its
    /// last file's bytes, as umoci writes them, gives its headers.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_layer_read_through_its_cursor_gives_its_headers() {
        let mut b = tar::Builder::new(Vec::new());
        for (path, size) in [("app/", 0usize), ("app/big", 300_000), ("app/small", 5)] {
            let mut h = tar::Header::new_gnu();
            h.set_size(size as u64);
            h.set_mode(0o755);
            h.set_uid(0);
            h.set_gid(0);
            h.set_entry_type(if size == 0 {
                tar::EntryType::Directory
            } else {
                tar::EntryType::Regular
            });
            h.set_cksum();
            b.append_data(&mut h, path, &vec![7u8; size][..]).unwrap();
        }
        let mut tar = b.into_inner().unwrap();
        // As umoci writes them: no padding after the last file's bytes, no end blocks.
        tar.truncate(tar.len() - 1024 - (512 - 5));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let gz = bytes::Bytes::from(gz.finish().unwrap());
        let digest = crate::oci::digest::sha256(&gz);
        let origin: Arc<dyn Origin> = Arc::new(BytesOrigin(gz.clone()));
        let cursor = Cursor::new(origin, &digest, gz.len() as u64, "t".into(), 1).unwrap();
        let mut body = stream::read(cursor);
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let read = tokio::task::spawn_blocking(move || {
            headers(
                Pieces::new(rx),
                crate::oci::manifest::OCI_LAYER_GZIP,
                "the layer",
            )
        });
        while let Some(piece) = body.next().await {
            tx.send(piece).await.unwrap();
        }
        drop(tx);
        let r = read.await.unwrap().unwrap();
        assert_eq!(r.nodes.len(), 3);
    }
}
