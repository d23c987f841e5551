//! `copy`: an image, or a whole index, from one store to another, digest for digest — read
//! the manifests, ask the destination what it lacks and say so, move those blobs (the one
//! transfer: mount or stream), then write the manifests, children before the index.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{stream, StreamExt, TryStreamExt};
use oci_spec::image::Digest;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::oci::manifest::{self, Descriptor, Document, Kind};
use crate::oci::platform::{self, Platform};
use crate::oci::reference::ImageRef;
use crate::store::registry::{self, Registry};
use crate::store::Store;
use crate::transfer::{self, Blob, Known, Manifests, Moved, Moves, Role, Source};

/// Manifests fetched in flight at once.
const READS: usize = 16;

/// A validated `layerup copy`.
#[derive(Debug, Clone)]
pub struct CopyPlan {
    pub from: ImageRef,
    pub to: ImageRef,
    /// Every manifest of an index, not only the `platform` one.
    pub all: bool,
    pub platform: Platform,
    /// `--platform` was given: a single-platform source must be of it.
    pub platform_asked: bool,
    pub net: registry::Options,
    /// Blob transfers in flight at once.
    pub jobs: usize,
    /// Copy the image's referrers too (signatures, SBOMs, attestations): `--referrers`.
    pub referrers: bool,
}

/// What a copy will do, known before anything moves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Planned {
    pub moves: Moves,
    /// Manifests to write (0 when the destination tag already names the source).
    pub manifests: usize,
}

#[derive(Debug)]
pub struct Copied {
    /// The destination pinned by digest, the source's digest: what layerup prints.
    pub reference: String,
    pub digest: Digest,
    pub planned: Planned,
    /// Every blob the copied manifests name, each once (the referrers' too).
    pub blobs: Vec<Moved>,
    /// Referrers of the image copied with it.
    pub referrers: usize,
    pub took: Duration,
}

impl Copied {
    /// Blob bytes that crossed the wire (streamed source to destination).
    pub fn bytes_sent(&self) -> u64 {
        transfer::bytes_sent(&self.blobs)
    }
}

/// Copies `plan.from` to `plan.to`; `told` hears what will move before anything does.
pub async fn run(plan: &CopyPlan, told: impl FnOnce(&Planned)) -> Result<Copied> {
    let started = Instant::now();
    let registry = Arc::new(Registry::new(plan.net)?);
    let source = Store::for_reading(&plan.from, &registry)?;
    let dest = Store::for_writing(&plan.to, &registry)?;
    crate::meter::phase(crate::meter::Phase::Base);
    tokio::try_join!(source.login(false, None), dest.login(true, Some(&source)))?;

    let (children, top, descriptors) = read(&source, plan).await?;
    let mut blobs: Vec<Blob> = descriptors
        .into_iter()
        .map(|d| Blob {
            descriptor: d,
            source: Source::Store(source.clone()),
            role: Role::Blob,
            known: Known::Unknown,
        })
        .collect();
    // The tag already names this digest: the registry vouches for everything under it.
    let done = dest.manifest_digest(None).await?.as_ref() == Some(&top.digest);
    if done {
        blobs.iter_mut().for_each(|b| b.known = Known::Present);
    }
    let planned = Planned {
        moves: transfer::survey(&dest, &mut blobs).await?,
        manifests: if done { 0 } else { children.len() + 1 },
    };
    told(&planned);
    crate::meter::phase(crate::meter::Phase::Sending);
    // Children before the index, the tag last; nothing when the tag already names it.
    let manifests = Manifests {
        children: &children,
        top: &top,
        tags: if done {
            Vec::new()
        } else {
            vec![dest.tag().to_string()]
        },
    };
    let slots = transfer::Slots::new(plan.jobs);
    let mut moved = transfer::write(&dest, &blobs, manifests, &slots).await?;
    // Then what refers to it (a tag that named it already may have new signatures).
    let mut referrers = 0;
    if plan.referrers {
        let (more, n) = crate::commands::referrers::copy(&source, &dest, &top.digest, &slots)
            .await
            .map_err(|e| {
                e.context(format!("{} was copied, its referrers not", top.digest))
                    .suffixed("(--referrers=false copies the image alone)")
            })?;
        moved.extend(more);
        referrers = n;
    }
    Ok(Copied {
        reference: plan.to.pinned(&top.digest),
        digest: top.digest,
        planned,
        blobs: moved,
        referrers,
        took: started.elapsed(),
    })
}

/// The manifests to write (an index's children, then the top one) and every blob they name,
/// each once. Foreign layers are left out: they are referenced, never copied.
async fn read(
    source: &Store,
    plan: &CopyPlan,
) -> Result<(Vec<Document>, Document, Vec<Descriptor>)> {
    let name = source.image_ref().to_string();
    let root = source.root().await?;
    let (kind, doc) = root.classify(&format!("`{name}`"))?;
    let (top, kind, doc) = match kind {
        Kind::Index(_) if !plan.all => {
            let what = format!("index `{name}`");
            let entry = platform::select(&doc, &plan.platform, &what)?;
            let child = source.manifest(&entry).await?;
            let (kind, doc) =
                child.classify(&format!("the {} manifest of `{name}`", plan.platform))?;
            (child, kind, doc)
        }
        Kind::Manifest(_) if plan.platform_asked => {
            // A single-platform image asked for another platform is not copied instead.
            let config = Descriptor::parse(
                doc.get("config").unwrap_or(&Value::Null),
                &format!("`{name}`'s config descriptor"),
            )?;
            let bytes = source.blob_bytes(&config).await?;
            let has = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|c| Platform::of_config(&c));
            if let Some(p) = has.filter(|p| !p.serves(&plan.platform)) {
                return Err(Error::new(
                    crate::error::ExitCode::NotFound,
                    format!(
                        "`{name}` is a single-platform image: it has {p}, not {} (leave out \
                         --platform)",
                        plan.platform
                    ),
                ));
            }
            (root, kind, doc)
        }
        _ => (root, kind, doc),
    };
    let mut blobs = Vec::new();
    let mut children = Vec::new();
    match kind {
        Kind::Manifest(_) => blobs.extend(manifest::blobs_of(&doc, &name)?),
        Kind::Index(_) => {
            let entries = doc
                .get("manifests")
                .and_then(Value::as_array)
                .ok_or_else(|| Error::image(format!("index `{name}` has no manifests list")))?
                .iter()
                .map(|e| Descriptor::parse(e, &format!("an entry of index `{name}`")))
                .collect::<Result<Vec<_>>>()?;
            let fetched: Vec<Document> = stream::iter(&entries)
                .map(|e| source.manifest(e))
                .buffered(READS)
                .try_collect()
                .await?;
            for (e, f) in entries.iter().zip(fetched) {
                let what = format!("manifest {} of index `{name}`", e.digest);
                let (kind, child) = f.classify(&what)?;
                if let Kind::Index(_) = kind {
                    return Err(Error::image(format!(
                        "{what} is another index; layerup does not copy nested indexes"
                    )));
                }
                blobs.extend(manifest::blobs_of(&child, &what)?);
                children.push(f.to_write(&child, &e.media_type, kind));
            }
        }
    }
    let mut seen = HashSet::new();
    blobs.retain(|d| !d.is_foreign() && seen.insert(d.digest.clone()));
    let top = top.to_write(&doc, "", kind);
    Ok((children, top, blobs))
}
