//! `layerup copy`: an image, or a whole index, from one store to another, digest for digest —
//! read the manifests, ask the destination what it lacks and say so, move those blobs (mount or
//! stream), then write the manifests, children before the index that names them.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{stream, FutureExt, StreamExt, TryStreamExt};
use oci_spec::image::Digest;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::manifest::{self, Descriptor, Family, Kind};
use crate::platform::{self, Platform};
use crate::push::{BlobReport, Outcome};
use crate::reference::ImageRef;
use crate::registry::{self, Fetched, Registry};
use crate::store::Store;

/// HEAD requests in flight while planning: cheap, so more than transfers.
const CHECKS: usize = 16;

/// A validated `layerup copy`.
#[derive(Debug, Clone)]
pub struct CopyPlan {
    pub from: ImageRef,
    pub to: ImageRef,
    /// Every manifest of an index, not only the `platform` one.
    pub all: bool,
    pub platform: Platform,
    pub net: registry::Options,
    /// Blob transfers in flight at once.
    pub jobs: usize,
}

/// What will travel, known before anything moves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Moves {
    pub present: usize,
    pub mount: usize,
    pub copy: usize,
    /// Bytes of the blobs to copy (mounts move none).
    pub bytes: u64,
    pub manifests: usize,
}

#[derive(Debug)]
pub struct Copied {
    /// The destination pinned by digest, the source's digest: what layerup prints.
    pub reference: String,
    pub digest: Digest,
    pub moves: Moves,
    /// Every blob the copied manifests name, each once.
    pub blobs: Vec<BlobReport>,
    pub took: Duration,
}

impl Copied {
    /// Blob bytes that crossed the wire (streamed source to destination).
    pub fn bytes_sent(&self) -> u64 {
        self.blobs
            .iter()
            .filter(|b| b.outcome == Outcome::Copied)
            .map(|b| b.size)
            .sum()
    }
}

/// One manifest or index to write, exactly as read.
struct Doc {
    bytes: Bytes,
    digest: Digest,
    media_type: String,
}

/// Copies `plan.from` to `plan.to`; `told` hears what will move before anything does.
pub async fn copy(plan: &CopyPlan, told: impl FnOnce(&Moves)) -> Result<Copied> {
    let started = Instant::now();
    let registry = Arc::new(Registry::new(plan.net)?);
    let source = Store::for_reading(&plan.from, &registry)?;
    let dest = Store::for_writing(&plan.to, &registry)?;
    tokio::try_join!(source.login(false, None), dest.login(true, Some(&source)))?;

    let (children, top, blobs) = read(&source, plan).await?;
    let mut moves = Moves {
        manifests: children.len() + 1,
        ..Moves::default()
    };
    // The tag already names this digest: the registry vouches for everything under it.
    if dest.manifest_digest(None).await?.as_ref() == Some(&top.digest) {
        let blobs: Vec<BlobReport> = blobs.iter().map(|d| report(d, Outcome::Present)).collect();
        moves.present = blobs.len();
        moves.manifests = 0;
        told(&moves);
        return Ok(Copied {
            reference: plan.to.pinned(&top.digest),
            digest: top.digest,
            moves,
            blobs,
            took: started.elapsed(),
        });
    }

    let held: Vec<bool> = stream::iter(&blobs)
        .map(|d| dest.has_blob(&d.digest))
        .buffered(CHECKS)
        .try_collect()
        .await?;
    let mount = dest.same_registry(&source);
    let mut missing: Vec<&Descriptor> = Vec::new();
    for (d, here) in blobs.iter().zip(&held) {
        if *here {
            moves.present += 1;
        } else if mount {
            moves.mount += 1;
            missing.push(d);
        } else {
            moves.copy += 1;
            moves.bytes += d.size;
            missing.push(d);
        }
    }
    told(&moves);
    crate::progress::planned(missing.len());

    // Largest first: with a bounded number in flight, the long ones should not start last.
    missing.sort_by_key(|d| std::cmp::Reverse(d.size));
    let moved: Vec<BlobReport> = stream::iter(missing)
        .map(|d| {
            let (source, dest) = (&source, &dest);
            async move {
                let outcome = if mount && dest.mount(&d.digest, source).await? {
                    Outcome::Mounted
                } else {
                    dest.put_blob(d, &|| source.blob_stream(d).boxed()).await?;
                    Outcome::Copied
                };
                tracing::info!(digest = %d.digest, size = d.size, ?outcome, "blob");
                crate::progress::blob_done();
                Ok::<_, Error>(report(d, outcome))
            }
        })
        .buffer_unordered(plan.jobs.max(1))
        .try_collect()
        .await?;

    // Every blob is in the destination now; an index's children go before the index.
    stream::iter(&children)
        .map(|c| dest.put_child(c.bytes.clone(), &c.digest, &c.media_type))
        .buffer_unordered(plan.jobs.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    dest.put_manifest(top.bytes.clone(), &top.media_type)
        .await?;

    let blobs = blobs
        .iter()
        .map(|d| {
            moved
                .iter()
                .find(|m| m.digest == d.digest)
                .cloned()
                .unwrap_or_else(|| report(d, Outcome::Present))
        })
        .collect();
    Ok(Copied {
        reference: plan.to.pinned(&top.digest),
        digest: top.digest,
        moves,
        blobs,
        took: started.elapsed(),
    })
}

/// The manifests to write (an index's children, then the top one) and every blob they name,
/// each once. Foreign layers are left out: they are referenced, never copied.
async fn read(source: &Store, plan: &CopyPlan) -> Result<(Vec<Doc>, Doc, Vec<Descriptor>)> {
    let name = source.image_ref().to_string();
    let root = source.root().await?;
    let (kind, doc) = classify(&root, &format!("`{name}`"))?;
    let (top, kind, doc) = match kind {
        Kind::Index(_) if !plan.all => {
            let what = format!("index `{name}`");
            let entry = platform::select(&doc, &plan.platform, &what)?;
            let child = source.manifest(&entry).await?;
            let (kind, doc) = classify(
                &child,
                &format!("the {} manifest of `{name}`", plan.platform),
            )?;
            (child, kind, doc)
        }
        _ => (root, kind, doc),
    };
    let mut blobs = Vec::new();
    let mut children = Vec::new();
    match kind {
        Kind::Manifest(_) => blobs.extend(blobs_of(&doc, &name)?),
        Kind::Index(_) => {
            let entries = doc
                .get("manifests")
                .and_then(Value::as_array)
                .ok_or_else(|| Error::image(format!("index `{name}` has no manifests list")))?
                .iter()
                .map(|e| Descriptor::parse(e, &format!("an entry of index `{name}`")))
                .collect::<Result<Vec<_>>>()?;
            let fetched: Vec<Fetched> = stream::iter(&entries)
                .map(|e| source.manifest(e))
                .buffered(CHECKS)
                .try_collect()
                .await?;
            for (e, f) in entries.iter().zip(fetched) {
                let what = format!("manifest {} of index `{name}`", e.digest);
                let (kind, child) = classify(&f, &what)?;
                if let Kind::Index(_) = kind {
                    return Err(Error::image(format!(
                        "{what} is another index; layerup does not copy nested indexes"
                    )));
                }
                blobs.extend(blobs_of(&child, &what)?);
                children.push(doc_of(f, &child, &e.media_type, kind));
            }
        }
    }
    let mut seen = HashSet::new();
    blobs.retain(|d| !d.is_foreign() && seen.insert(d.digest.clone()));
    let top = doc_of(top, &doc, "", kind);
    Ok((children, top, blobs))
}

fn classify(f: &Fetched, what: &str) -> Result<(Kind, Value)> {
    manifest::classify(&f.bytes, f.content_type.as_deref(), what)
}

/// The config and layers of an image manifest — of any artifact too: copying does not care
/// what the blobs hold.
fn blobs_of(doc: &Value, what: &str) -> Result<Vec<Descriptor>> {
    let mut out = vec![Descriptor::parse(
        doc.get("config").unwrap_or(&Value::Null),
        &format!("{what}'s config descriptor"),
    )?];
    if let Some(layers) = doc.get("layers").and_then(Value::as_array) {
        for (i, l) in layers.iter().enumerate() {
            out.push(Descriptor::parse(l, &format!("{what}'s layer {i}"))?);
        }
    }
    Ok(out)
}

/// The media type a manifest is written with: its own `mediaType`, else what its parent's
/// descriptor or the registry said, else its family's by shape.
fn doc_of(f: Fetched, doc: &Value, described: &str, kind: Kind) -> Doc {
    let declared = doc
        .get("mediaType")
        .and_then(Value::as_str)
        .map(str::to_string);
    let sent = f
        .content_type
        .as_deref()
        .map(|c| c.split(';').next().unwrap_or("").trim().to_string())
        .filter(|c| manifest::ACCEPT.contains(&c.as_str()));
    let by_shape = match kind {
        Kind::Manifest(Family::Oci) => manifest::OCI_MANIFEST,
        Kind::Manifest(Family::Docker) => manifest::DOCKER_MANIFEST,
        Kind::Index(Family::Oci) => manifest::OCI_INDEX,
        Kind::Index(Family::Docker) => manifest::DOCKER_LIST,
    };
    let media_type = declared
        .or(Some(described.to_string()).filter(|d| !d.is_empty()))
        .or(sent)
        .unwrap_or_else(|| by_shape.to_string());
    Doc {
        bytes: f.bytes,
        digest: f.digest,
        media_type,
    }
}

fn report(d: &Descriptor, outcome: Outcome) -> BlobReport {
    BlobReport {
        digest: d.digest.clone(),
        size: d.size,
        outcome,
    }
}
