//! layerup: append a layer of local files to a production image and push only what is new.
//!
//! The pipeline, in order: reference → auth → registry → base → layer → image → push.

pub mod auth;
pub mod base;
pub mod cli;
pub mod digest;
pub mod error;
pub mod image;
pub mod layer;
pub mod layout;
pub mod manifest;
pub mod platform;
pub mod push;
pub mod reference;
pub mod registry;
pub mod store;

use std::sync::Arc;
use std::time::{Duration, Instant};

use oci_spec::image::Digest;

use crate::cli::RawMapping;
use crate::error::{Error, Result};
use crate::image::{NewLayer, Provenance, Tweaks};
use crate::layer::tree::{clean_image_path, Mapping};
use crate::platform::Platform;
use crate::reference::ImageRef;
use crate::registry::Registry;
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
    pub insecure: bool,
    pub jobs: usize,
}

#[derive(Debug)]
pub struct Pushed {
    /// The destination pinned by digest: what layerup prints.
    pub reference: String,
    pub digest: Digest,
    pub layer_digest: Digest,
    pub layer_size: u64,
    pub layer_entries: usize,
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
    let hosts: Vec<&str> = [plan.base.registry(), plan.to.registry()]
        .into_iter()
        .flatten()
        .collect();
    let registry = Arc::new(Registry::new(&hosts, plan.insecure)?);
    let source = Store::for_reading(&plan.base, &registry)?;
    let mut timings = Timings::default();

    // The layer needs the base only to place mappings without an absolute DEST; otherwise
    // compressing it overlaps with the round trips to the base registry.
    let needs_base = plan.tweaks.workdir.is_none()
        && plan
            .mappings
            .iter()
            .any(|m| !m.dest.as_deref().is_some_and(|d| d.starts_with('/')));
    let fetch_base = async {
        let started = Instant::now();
        source.login(false, None).await?;
        let base = base::resolve(&source, &plan.platform).await?;
        Ok::<_, Error>((base, started.elapsed()))
    };
    let (base, layer) = if needs_base {
        let (base, took) = fetch_base.await?;
        timings.base = took;
        let workdir = workdir(plan, base.working_dir());
        let layer = build_layer(plan, &workdir).await?;
        (base, layer)
    } else {
        let workdir = workdir(plan, None);
        let (base, layer) = tokio::try_join!(fetch_base, build_layer(plan, &workdir))?;
        timings.base = base.1;
        (base.0, layer)
    };
    let (layer, history, took) = layer;
    timings.layer = took;

    let new_layer = NewLayer {
        digest: layer.digest.clone(),
        diff_id: layer.diff_id.clone(),
        size: layer.size,
    };
    let provenance = Provenance {
        created: image::rfc3339(plan.mtime),
        created_by: history,
    };
    let image = image::build(&base, &new_layer, &plan.tweaks, &provenance)?;

    let started = Instant::now();
    let dest = Store::for_writing(&plan.to, &registry)?;
    dest.login(true, Some(&source)).await?;
    let report = push::push(
        &dest,
        &source,
        &image,
        &layer.digest,
        &layer.file,
        plan.jobs,
    )
    .await?;
    timings.push = started.elapsed();

    Ok(Pushed {
        reference: plan.to.pinned(&image.digest),
        digest: image.digest,
        layer_digest: layer.digest.clone(),
        layer_size: layer.size,
        layer_entries: layer.entries,
        report,
        timings,
    })
}

/// Where mappings without an absolute DEST land: `--workdir`, else the base's, else `/`.
fn workdir(plan: &PushPlan, base: Option<&str>) -> String {
    plan.tweaks
        .workdir
        .as_deref()
        .or(base)
        .unwrap_or("/")
        .to_string()
}

async fn build_layer(plan: &PushPlan, workdir: &str) -> Result<(layer::Layer, String, Duration)> {
    let mappings: Vec<Mapping> = plan
        .mappings
        .iter()
        .map(|m| Mapping {
            src: m.src.clone(),
            dest: clean_image_path(workdir, m.dest.as_deref().unwrap_or(".")),
            into_dir: m.dest.as_deref().is_none_or(|d| d.ends_with('/')),
        })
        .collect();
    let history = created_by(&mappings);
    let owner = plan.owner;
    let mtime = plan.mtime;
    let started = Instant::now();
    // The path stays here, so that dropping this future (Ctrl-C) deletes the file even while
    // the blocking thread is still writing into it.
    let (file, path) = layer::temp_file(&std::env::temp_dir())?;
    let shown = path.to_path_buf();
    let sums =
        tokio::task::spawn_blocking(move || layer::write_to(&mappings, owner, mtime, file, &shown))
            .await
            .map_err(|e| Error::internal(format!("the layer builder stopped: {e}")))??;
    Ok((layer::Layer::new(path, sums), history, started.elapsed()))
}

/// The history entry names where files went, never where they came from: the same files from
/// another checkout (another directory name, another user's home) give the same image.
fn created_by(mappings: &[Mapping]) -> String {
    let dests: Vec<&str> = mappings.iter().map(|m| m.dest.as_str()).collect();
    format!("layerup push to {}", dests.join(" "))
}
