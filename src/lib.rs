//! layerup: append a layer of local files to a production image and push only what is new.
//!
//! The pipeline, in order: reference → auth → registry → base → layer (a delta on the last push,
//! or the full app layer in parts) → image → push → (with `--deploy`) cluster: `deploy.rs`.

pub mod auth;
pub mod base;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod copy;
pub mod deploy;
pub mod digest;
pub mod error;
pub mod image;
pub mod index;
pub mod inspect;
pub mod json;
pub mod layer;
pub mod layout;
pub mod manifest;
pub mod platform;
pub mod progress;
pub mod push;
pub mod reference;
pub mod registry;
pub mod stack;
pub mod state;
pub mod store;
pub mod watch;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use oci_spec::image::Digest;

use crate::cli::RawMapping;
use crate::error::{Error, Result};
use crate::image::{NewLayer, Tweaks};
use crate::layer::tree::{clean_image_path, Mapping};
use crate::platform::Platform;
use crate::reference::ImageRef;
use crate::registry::Registry;
use crate::stack::{Mode, Squash};
use crate::state::Loaded;
use crate::store::Store;

/// A validated `layerup push`.
#[derive(Debug, Clone)]
pub struct PushPlan {
    pub base: ImageRef,
    pub to: ImageRef,
    pub mappings: Vec<RawMapping>,
    pub platform: Platform,
    pub tweaks: Tweaks,
    pub owner: Option<(u32, u32)>,
    /// Every entry's mtime and the image's `created` (Unix seconds).
    pub mtime: u64,
    pub net: registry::Options,
    pub jobs: usize,
    /// Push the full app layer even when a delta could be stacked.
    pub full: bool,
    pub squash: Squash,
    /// `--ignore` patterns, applied after each directory's `.layerupignore`.
    pub ignore: Vec<String>,
    /// `--ref-file`: where to write the pushed image's tagged reference (Tilt reads it).
    pub ref_file: Option<std::path::PathBuf>,
    /// `--deploy`: then set the image in the cluster.
    pub deploy: Option<deploy::Deploy>,
}

#[derive(Debug)]
pub struct Pushed {
    /// The destination pinned by digest: what layerup prints.
    pub reference: String,
    pub digest: Digest,
    pub mode: Mode,
    /// The layers this push made (the full app layer's parts, or the delta).
    pub new_layers: Vec<NewLayer>,
    /// Entries in the tree as walked.
    pub entries: usize,
    pub report: push::Report,
    pub timings: Timings,
}

#[derive(Debug, Default)]
pub struct Timings {
    pub base: Duration,
    pub layer: Duration,
    pub push: Duration,
}

pub async fn push(plan: &PushPlan) -> Result<Pushed> {
    let registry = Arc::new(Registry::new(plan.net)?);
    let source = Store::for_reading(&plan.base, &registry)?;
    let dest = Store::for_writing(&plan.to, &registry)?;
    let dest_name = plan.to.to_string();
    let state_file = state::dir().map(|d| state::path(&d, &dest_name));
    let mut timings = Timings::default();

    // Three things at once: the base's manifest and config; the last push's state, then the
    // destination's answer to "do you still hold its image?"; and (when the base is not needed
    // to place the files) the walk of the tree.
    let fetch_base = async {
        let started = Instant::now();
        source.login(false, None).await?;
        let base = base::resolve(&source, &plan.platform).await?;
        Ok::<_, Error>((base, started.elapsed()))
    };
    let check_dest = async {
        let file = state_file.clone().filter(|_| !plan.full);
        let load = blocking(move || Ok(file.map_or(Loaded::Missing, |f| state::load(&f))));
        let (loaded, ()) = tokio::try_join!(load, dest.login(true, Some(&source)))?;
        let Loaded::Found(last) = &loaded else {
            return Ok((loaded, None, false));
        };
        let at_tag = dest.manifest_digest(None).await?;
        let held = at_tag.as_ref() == Some(&last.image)
            || dest.manifest_digest(Some(&last.image)).await?.is_some();
        Ok::<_, Error>((loaded, at_tag, held))
    };
    let needs_base = plan.tweaks.workdir.is_none()
        && plan
            .mappings
            .iter()
            .any(|m| !m.dest.as_deref().is_some_and(|d| d.starts_with('/')));
    let started = Instant::now();
    let ((base, took), (loaded, at_tag, held), walked) = if needs_base {
        let ((base, took), dest) = tokio::try_join!(fetch_base, check_dest)?;
        let walked = walk(plan, base.working_dir()).await?;
        ((base, took), dest, walked)
    } else {
        tokio::try_join!(fetch_base, check_dest, walk(plan, None))?
    };
    timings.base = took;
    let Walked {
        mappings,
        entries,
        scanned_at,
    } = walked;

    // The last push's blobs are in the destination: its manifest, which names them all, is.
    let last_image = match &loaded {
        Loaded::Found(s) => Some(s.image.clone()),
        _ => None,
    };
    let mut present: HashSet<Digest> = HashSet::new();
    if let (true, Loaded::Found(s)) = (held, &loaded) {
        present.extend(s.layers().into_iter().map(|l| l.digest));
        if s.base == base.digest {
            present.extend(base.layers.iter().map(|l| l.digest.clone()));
        }
    }
    let settings = stack::settings(&mappings, plan.owner, plan.mtime);
    let prev = if plan.full {
        Err(Some("--full".to_string()))
    } else {
        stack::usable(
            loaded,
            &settings,
            &base.digest,
            &base.name,
            held,
            &dest_name,
        )
    };
    let tmp = tempfile::Builder::new()
        .prefix("layerup-")
        .tempdir()
        .map_err(|e| Error::io("create a temporary directory in", &std::env::temp_dir(), &e))?;
    let job = stack::Job {
        roots: mappings
            .iter()
            .map(|m| m.dest.trim_start_matches('/').to_string())
            .collect(),
        entries,
        scanned_at,
        settings,
        base: base.digest.clone(),
        created_by: created_by(&mappings),
        mtime: plan.mtime,
        squash: plan.squash,
        dir: tmp.path().to_path_buf(),
    };
    let stack::Built {
        mode,
        app,
        uploads,
        next: next_state,
        entries,
        restat,
    } = blocking(move || stack::layers(job, prev)).await?;
    timings.layer = started.elapsed().saturating_sub(timings.base);

    let image = image::build(&base, &app, &plan.tweaks, &image::rfc3339(plan.mtime))?;
    let same_image = last_image.as_ref() == Some(&image.digest);
    let started = Instant::now();
    // The state is written while the push runs, and put in place only once it succeeded.
    let save = state_file.filter(|_| !(mode == Mode::Unchanged && !restat && same_image));
    let mut next = next_state;
    next.image = image.digest.clone();
    let stage = blocking(move || Ok(save.map(|f| (state::stage(&f, &next), f))));
    let transfer = async {
        if mode == Mode::Unchanged && at_tag.as_ref() == Some(&image.digest) {
            return Ok(push::Report::unchanged(&image));
        }
        let files: Vec<push::Upload> = uploads
            .iter()
            .map(|(l, p)| push::Upload {
                digest: &l.digest,
                path: p,
            })
            .collect();
        let delta = matches!(mode, Mode::Delta { .. } | Mode::Unchanged);
        push::push(&dest, &source, &image, &files, &present, !delta, plan.jobs).await
    };
    let (report, staged) = tokio::try_join!(transfer, stage)?;
    if let Some(file) = &plan.ref_file {
        write_ref_file(&dest, &plan.to, &image, file).await?;
    }
    if let Some((staged, file)) = staged {
        if let Err(e) = staged.and_then(state::Staged::commit) {
            // The push succeeded; only the next one's speed is at stake.
            tracing::warn!("{e}; the next push will be a full one");
            state::remove(&file);
        }
    }
    timings.push = started.elapsed();

    Ok(Pushed {
        reference: plan.to.pinned(&image.digest),
        digest: image.digest,
        mode,
        new_layers: uploads.into_iter().map(|u| u.0).collect(),
        entries,
        report,
        timings,
    })
}

/// Tilt's `outputs_image_ref_to` wants a tag it has not seen before for new content, and will
/// not take a digest (tilt#5987): tag the image by its digest, as Tilt's own builds are tagged,
/// and write that reference.
async fn write_ref_file(
    dest: &Store,
    to: &ImageRef,
    image: &image::Image,
    file: &std::path::Path,
) -> Result<()> {
    // The plan refused --ref-file with a layout destination.
    let ImageRef::Registry(r) = to else {
        return Err(Error::internal("--ref-file with a layout destination"));
    };
    let hex = image.digest.digest();
    let tag = format!("layerup-{}", &hex[..16.min(hex.len())]);
    dest.put_tag(
        &tag,
        bytes::Bytes::from(image.manifest.clone()),
        image.media_type,
    )
    .await?;
    let line = format!("{}/{}:{tag}\n", r.registry(), r.repository());
    std::fs::write(file, line).map_err(|e| Error::io("write the --ref-file", file, &e))
}

struct Walked {
    mappings: Vec<Mapping>,
    entries: Vec<layer::Entry>,
    /// When the walk started (ns since the epoch), for the index's racy-file guard.
    scanned_at: i64,
}

/// Resolves the mappings (DEST relative to `--workdir`, else the base's, else `/`) and walks them.
async fn walk(plan: &PushPlan, base_workdir: Option<&str>) -> Result<Walked> {
    let workdir = plan
        .tweaks
        .workdir
        .as_deref()
        .or(base_workdir)
        .unwrap_or("/")
        .to_string();
    let mappings: Vec<Mapping> = plan
        .mappings
        .iter()
        .map(|m| Mapping {
            src: m.src.clone(),
            dest: clean_image_path(&workdir, m.dest.as_deref().unwrap_or(".")),
            into_dir: m.dest.as_deref().is_none_or(|d| d.ends_with('/')),
        })
        .collect();
    let owner = plan.owner;
    let ignore = plan.ignore.clone();
    let maps = mappings.clone();
    blocking(move || {
        let scanned_at = stack::now_ns();
        let entries = layer::tree::collect(&maps, owner, &ignore)?;
        Ok(Walked {
            mappings: maps,
            entries,
            scanned_at,
        })
    })
    .await
}

/// Runs file work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("a file task stopped: {e}")))?
}

/// The history entry names where files went, never where they came from: the same files from
/// another checkout (another directory name, another user's home) give the same image.
fn created_by(mappings: &[Mapping]) -> String {
    let dests: Vec<&str> = mappings.iter().map(|m| m.dest.as_str()).collect();
    format!("layerup push to {}", dests.join(" "))
}
