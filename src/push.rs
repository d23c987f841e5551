//! The transfer: for every blob the new manifest names, present? skip : mountable? mount :
//! copy or upload — layers (in parallel, bounded) and the config, then the manifest, so a
//! failure at any point leaves no manifest naming a missing blob (go-containerregistry's order).

use std::collections::HashSet;
use std::path::Path;

use bytes::Bytes;
use futures_util::stream;
use futures_util::{FutureExt, StreamExt, TryStreamExt};
use oci_spec::image::Digest;

use crate::error::{Error, Result};
use crate::image::Image;
use crate::manifest::Descriptor;
use crate::store::{file_stream, ByteStream, Store};

/// What happened to one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The destination already had it; nothing moved.
    Present,
    /// Linked from the base repository of the same registry; no bytes moved.
    Mounted,
    /// Streamed from the base's registry or layout to the destination.
    Copied,
    /// Sent from this machine (the new layer, the config).
    Uploaded,
    /// A foreign / non-distributable layer with URLs: referenced, never copied.
    Referenced,
}

#[derive(Debug, Clone)]
pub struct BlobReport {
    pub digest: Digest,
    pub size: u64,
    pub outcome: Outcome,
}

#[derive(Debug, Clone)]
pub struct Report {
    /// Layers in manifest order, each digest once.
    pub layers: Vec<BlobReport>,
    pub config: BlobReport,
}

impl Report {
    /// An image the destination already holds under its tag: nothing to do.
    pub fn unchanged(image: &Image) -> Report {
        let present = |d: &Descriptor| BlobReport {
            digest: d.digest.clone(),
            size: d.size,
            outcome: Outcome::Present,
        };
        Report {
            layers: image.layers.iter().map(present).collect(),
            config: present(&image.config_descriptor),
        }
    }

    /// Blob bytes that crossed a wire to the destination.
    pub fn bytes_moved(&self) -> u64 {
        self.layers
            .iter()
            .chain([&self.config])
            .filter(|b| matches!(b.outcome, Outcome::Copied | Outcome::Uploaded))
            .map(|b| b.size)
            .sum()
    }
}

/// A blob of this push, written to a local file.
pub struct Upload<'a> {
    pub digest: &'a Digest,
    pub path: &'a Path,
}

/// Pushes `image` to `dest`. Base layers come from `source`; `uploads` from this machine.
/// `present` are blobs known to be in `dest` already (the last push's), never asked about;
/// with `ask_first` false, uploads and the config are sent without asking whether `dest` has
/// them (a delta is new by nature: asking costs a round trip and saves nothing). `jobs` bounds
/// transfers in flight.
pub async fn push(
    dest: &Store,
    source: &Store,
    image: &Image,
    uploads: &[Upload<'_>],
    present: &HashSet<Digest>,
    ask_first: bool,
    jobs: usize,
) -> Result<Report> {
    let mut seen = HashSet::new();
    let layers: Vec<&Descriptor> = image
        .layers
        .iter()
        .filter(|l| seen.insert(l.digest.clone()))
        .collect();
    crate::progress::planned(layers.len() + 1);
    let layers = stream::iter(layers)
        .map(|d| async move {
            let upload = uploads.iter().find(|u| u.digest == &d.digest);
            let outcome = if d.is_foreign() {
                Outcome::Referenced
            } else if present.contains(&d.digest)
                || ((upload.is_none() || ask_first) && dest.has_blob(&d.digest).await?)
            {
                Outcome::Present
            } else if let Some(u) = upload {
                dest.put_blob(d, &|| layer_stream(u.path).boxed()).await?;
                Outcome::Uploaded
            } else if dest.mount(&d.digest, source).await? {
                Outcome::Mounted
            } else {
                dest.put_blob(d, &|| source.blob_stream(d).boxed()).await?;
                Outcome::Copied
            };
            tracing::info!(digest = %d.digest, size = d.size, ?outcome, "layer");
            crate::progress::blob_done();
            Ok::<_, Error>(BlobReport {
                digest: d.digest.clone(),
                size: d.size,
                outcome,
            })
        })
        .buffered(jobs.max(1))
        .try_collect::<Vec<_>>();

    // The config goes alongside the layers: no manifest names it yet, so it can be written
    // in any order before the manifest (go-containerregistry's remote.Write does the same).
    let config = async {
        let config = &image.config_descriptor;
        let outcome = if ask_first && dest.has_blob(&config.digest).await? {
            Outcome::Present
        } else {
            let bytes = Bytes::from(image.config.clone());
            let open = || {
                let body: ByteStream = stream::iter([Ok(bytes.clone())]).boxed();
                futures_util::future::ready(Ok(body)).boxed()
            };
            dest.put_blob(config, &open).await?;
            Outcome::Uploaded
        };
        tracing::info!(digest = %config.digest, size = config.size, ?outcome, "config");
        crate::progress::blob_done();
        Ok::<_, Error>(BlobReport {
            digest: config.digest.clone(),
            size: config.size,
            outcome,
        })
    };
    let (layers, config) = tokio::try_join!(layers, config)?;

    // Every blob is confirmed in the destination (each arm above returns only once the
    // registry or layout acknowledged it); only now may the manifest follow.
    dest.put_manifest(Bytes::from(image.manifest.clone()), image.media_type)
        .await?;
    tracing::info!(digest = %image.digest, "manifest");
    Ok(Report { layers, config })
}

async fn layer_stream(path: &Path) -> Result<ByteStream> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::io("read the layer from", path, &e))?;
    Ok(file_stream(file))
}
