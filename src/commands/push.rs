//! `push`: one image, read bottom to top as the pipeline runs — the base's manifest and config,
//! the last push's state and the tree at once; the app layers (a delta, or the full layer in
//! parts); the new image; the blobs the destination lacks, then the manifest; the state saved.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use oci_spec::image::Digest;

use crate::build::entry::{Entry, Mapping, Own, RawMapping};
use crate::build::image::{self, Image, NewLayer, Tweaks};
use crate::build::stack::{self, FullReason, Mode, Squash};
use crate::build::state::{self, Loaded, PlatformLayer, State};
use crate::build::{base, per_platform, tree};
use crate::commands::deploy::{Change, Deploy};
use crate::commands::Told;
use crate::error::{Error, Result};
use crate::oci::manifest::Descriptor;
use crate::oci::platform::Platform;
use crate::oci::reference::ImageRef;
use crate::store::registry::{self, Registry};
use crate::store::Store;
use crate::transfer::{self, Blob, Known, Moved, Role, Slots, Source};

/// The platforms of a multi-platform push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Platforms {
    /// Every platform the base's index has (attestations aside).
    All,
    These(Vec<Platform>),
}

/// How this run's temporary directories are named, in `TMPDIR`.
const TMP_PREFIX: &str = "layerup-";

/// A validated `layerup push`.
#[derive(Debug, Clone)]
pub struct PushPlan {
    pub base: ImageRef,
    pub to: ImageRef,
    pub mappings: Vec<RawMapping>,
    pub platform: Platform,
    /// `--platform` was given: a single-platform base must be of it.
    pub platform_asked: bool,
    /// `--platform all` or a list: every one of these platforms of the base, with the same app
    /// layers, into one index (`platform` is then unused).
    pub platforms: Option<Platforms>,
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
    pub ref_file: Option<PathBuf>,
    /// `--deploy`: then set the image in the cluster.
    pub deploy: Option<Deploy>,
    /// Where the state of the last push to each destination is kept; `None`: every push is a
    /// full one, and nothing is remembered.
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug)]
pub struct Pushed {
    /// The layer of a per-platform mapping (`{os}`/`{arch}` in SRC) differs from the last
    /// push's: the delta alone does not say what the image now holds.
    pub platform_files_changed: bool,
    /// The layer of the per-platform mappings in each platform's image, in the images' order
    /// (none without such mappings).
    pub platform_layers: Vec<NewLayer>,
    /// The destination pinned by digest: what layerup prints.
    pub reference: String,
    pub digest: Digest,
    pub mode: Mode,
    /// The layers this push made (the full app layer's parts, or the delta).
    pub new_layers: Vec<NewLayer>,
    /// Entries in the tree as walked.
    pub entries: usize,
    /// Every blob of the image (of every platform's, each once), layers then configs.
    pub blobs: Vec<Moved>,
    /// A multi-platform push: each platform and its image's digest (`digest` is the index's).
    pub platforms: Vec<(Platform, Digest)>,
    /// With [`Memory::keep_delta`]: the changes since the last push as one uncompressed layer
    /// (the delta pushed, whiteouts included; empty when nothing changed). `None` when there was
    /// no last push to compare with.
    pub delta: Option<Vec<u8>>,
    pub timings: Timings,
}

impl Pushed {
    /// Blob bytes that crossed the wire.
    pub fn bytes_sent(&self) -> u64 {
        transfer::bytes_sent(&self.blobs)
    }

    /// Why the push was full when a delta could have been stacked.
    pub fn full_reason(&self) -> Option<&FullReason> {
        match &self.mode {
            Mode::Full { reason, .. } => reason.as_ref(),
            _ => None,
        }
    }
}

#[derive(Debug, Default)]
pub struct Timings {
    pub base: Duration,
    pub layer: Duration,
    pub push: Duration,
}

/// A push, then with `--deploy` the deploy step: `told` hears of the image as soon as it exists
/// (before the rollout), then the deploy's events. The deploy's outcome is returned beside the
/// push's, which stands whatever the rollout does.
pub async fn run_and_deploy(
    plan: &PushPlan,
    told: &mut (dyn FnMut(Told) + Send),
) -> Result<(Pushed, Option<Result<Vec<Change>>>)> {
    if let Some(deploy) = &plan.deploy {
        deploy.check().await?;
    }
    let plan = &for_cluster(plan).await;
    let started = Instant::now();
    let session = Session::new(plan.net, plan.jobs)?;
    let pushed = run_in(plan, &session, None, Changes::All).await?;
    told(Told::Pushed(&pushed, started.elapsed()));
    let Some(deploy) = &plan.deploy else {
        return Ok((pushed, None));
    };
    let deployed = deploy
        .run(&pushed.reference, &plan.base, &mut |e| {
            told(Told::Deploy(e))
        })
        .await;
    Ok((pushed, Some(deployed)))
}

/// What one image's push and deploy step came to.
pub type Outcome = Result<(Pushed, Option<Result<Vec<Change>>>)>;

/// Several images of a project at once, sharing one [`Session`]: its connections, logins and
/// tokens per registry, and `--jobs` over every blob in flight. One image's failure (a bad file,
/// its registry down, a rollout) is its own: the others go on. The transfer settings are the
/// first plan's. Every image's deploy context is checked before anything is pushed.
pub async fn run_many(
    plans: &[(String, PushPlan)],
    told: &(dyn Fn(&str, Told) + Sync),
) -> Vec<Outcome> {
    let Some((_, first)) = plans.first() else {
        return Vec::new();
    };
    let session = match Session::new(first.net, first.jobs) {
        Ok(s) => s,
        Err(e) => {
            let e = Error::new(e.code(), e.to_string());
            return plans
                .iter()
                .map(|_| Err(Error::new(e.code(), e.to_string())))
                .collect();
        }
    };
    for (name, plan) in plans {
        if let Some(d) = &plan.deploy {
            if let Err(e) = d.check().await {
                let e = e.context(format!("image {name}"));
                return plans
                    .iter()
                    .map(|_| Err(Error::new(e.code(), e.to_string())))
                    .collect();
            }
        }
    }
    let one = |name: &str, plan: &PushPlan| {
        let session = &session;
        let name = name.to_string();
        let plan = plan.clone();
        async move {
            let plan = for_cluster(&plan).await;
            let started = Instant::now();
            let pushed = run_in(&plan, session, None, Changes::All).await?;
            told(&name, Told::Pushed(&pushed, started.elapsed()));
            let Some(deploy) = &plan.deploy else {
                return Ok((pushed, None));
            };
            let deployed = deploy
                .run(&pushed.reference, &plan.base, &mut |e| {
                    told(&name, Told::Deploy(e))
                })
                .await;
            Ok((pushed, Some(deployed)))
        }
    };
    futures_util::future::join_all(plans.iter().map(|(n, p)| one(n, p))).await
}

/// With `--deploy` and no `--platform`, the platforms of the cluster's nodes, read once: an
/// arm64 laptop deploying to amd64 nodes pushes what they can run. One platform: that image;
/// several: an index of them. Nodes that cannot be read (RBAC) leave the default as it was.
pub async fn for_cluster(plan: &PushPlan) -> PushPlan {
    let mut plan = plan.clone();
    let Some(deploy) = plan.deploy.as_ref().filter(|_| !plan.platform_asked) else {
        return plan;
    };
    if plan.platforms.is_some() {
        return plan;
    }
    match deploy.node_platforms().await {
        Ok(nodes) if nodes.len() == 1 => {
            tracing::info!("the cluster's nodes are {}", nodes[0]);
            plan.platform = nodes[0].clone();
            plan.platform_asked = true;
        }
        Ok(nodes) if nodes.len() > 1 => {
            tracing::info!(
                "the cluster's nodes are {}",
                nodes
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            plan.platforms = Some(Platforms::These(nodes));
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(
            "{e}; pushing for {} (give --platform to choose)",
            plan.platform
        ),
    }
    plan
}

/// What pushes in one process share: the registry client (its connections, its logins and
/// tokens) and the blob transfers in flight (`--jobs` across every image).
pub struct Session {
    pub registry: Arc<Registry>,
    pub slots: Slots,
}

impl Session {
    pub fn new(net: registry::Options, jobs: usize) -> Result<Session> {
        Ok(Session {
            registry: Arc::new(Registry::new(net)?),
            slots: Slots::new(jobs),
        })
    }
}

/// One image's memory between the pushes of a watch: the tree as last walked and the state as
/// last pushed, kept in memory so that an edit costs what changed — not a walk of the tree and
/// a read of its file index.
#[derive(Default)]
pub struct Memory {
    walked: Option<Walked>,
    state: Option<Box<State>>,
    logged_in: bool,
    /// The state being written after the last push; it comes back when written.
    saving: Option<tokio::task::JoinHandle<Box<State>>>,
    /// Keep each push's delta, uncompressed, in [`Pushed::delta`] (`watch --sync` applies it).
    pub keep_delta: bool,
}

impl Memory {
    /// Waits for the state being written, so that nothing is left half done on the way out.
    pub async fn settle(&mut self) {
        if let Some(s) = self.saving.take() {
            self.state = s.await.ok();
        }
    }

    /// Forgets the tree as walked: the next push walks it whole.
    pub fn forget_tree(&mut self) {
        self.walked = None;
    }

    /// A check that the tree on disk is still the one remembered — a whole walk, compared — to
    /// run off the async threads and off the edit path; `None` before the first walk.
    pub fn verifier(
        &self,
        plan: &PushPlan,
    ) -> Option<impl FnOnce() -> Result<bool> + Send + 'static> {
        let w = self.walked.as_ref()?;
        let (mappings, entries) = (w.mappings.clone(), w.entries.clone());
        let (owner, ignore, own) = (plan.owner, plan.ignore.clone(), own_paths(plan));
        Some(move || Ok(tree::collect(&mappings, owner, &ignore, &own)? == *entries))
    }
}

/// What changed in the sources since the last push of a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// Anything: walk the whole tree.
    All,
    /// Only these paths (absolute), as file events named them.
    Paths(Vec<PathBuf>),
}

/// One push, as the module's header says.
pub async fn run(plan: &PushPlan) -> Result<Pushed> {
    let session = Session::new(plan.net, plan.jobs)?;
    run_in(plan, &session, None, Changes::All).await
}

/// One push in `session`; with `memory` (watch), the last push's tree and state are taken from
/// it rather than read again, only the `changes` are looked at, and the state is written after
/// the push returns.
pub async fn run_in(
    plan: &PushPlan,
    session: &Session,
    mut memory: Option<&mut Memory>,
    changes: Changes,
) -> Result<Pushed> {
    let registry = &session.registry;
    let source = Store::for_reading(&plan.base, registry)?;
    let dest = Store::for_writing(&plan.to, registry)?;
    let dest_name = plan.to.to_string();
    let state_file = plan.state_dir.as_ref().map(|d| state::path(d, &dest_name));
    let mut timings = Timings::default();
    let logged_in = memory.as_ref().is_some_and(|m| m.logged_in);
    let remembered = match memory.as_mut() {
        Some(m) => match m.saving.take() {
            Some(saving) => saving.await.ok(),
            None => m.state.take(),
        },
        None => None,
    };
    let last_walk = memory.as_mut().and_then(|m| m.walked.take());

    // Three things at once: the base's manifest and config; the last push's state, then the
    // destination's answer to "do you still hold its image?"; and (when the base is not needed
    // to place the files) the walk of the tree.
    let fetch_base = async {
        let started = Instant::now();
        if !logged_in {
            source.login(false, None).await?;
        }
        let bases = match &plan.platforms {
            None => {
                let base = base::resolve(&source, &plan.platform, plan.platform_asked).await?;
                let entry = Descriptor::new("", base.digest.clone(), 0);
                (vec![(entry, base)], None)
            }
            Some(Platforms::All) => base::resolve_many(&source, None).await?,
            Some(Platforms::These(p)) => base::resolve_many(&source, Some(p)).await?,
        };
        Ok::<_, Error>((bases, started.elapsed()))
    };
    let check_dest = async {
        // Read with --full too: what the last push's deltas hid stays hidden.
        let file = state_file.clone();
        let load = async {
            match remembered {
                Some(s) => Ok(Loaded::Found(s)),
                _ => blocking(move || Ok(file.map_or(Loaded::Missing, |f| state::load(&f)))).await,
            }
        };
        let login = async {
            if logged_in {
                return Ok(());
            }
            dest.login(true, Some(&source)).await
        };
        let (loaded, ()) = tokio::try_join!(load, login)?;
        let Loaded::Found(last) = &loaded else {
            return Ok((loaded, None, false));
        };
        let at_tag = dest.manifest_digest(None).await?;
        let held = at_tag.as_ref() == Some(&last.image)
            || dest.manifest_digest(Some(&last.image)).await?.is_some();
        Ok::<_, Error>((loaded, at_tag, held))
    };
    let needs_base =
        plan.tweaks.workdir.is_none() && plan.mappings.iter().any(|m| !m.is_absolute());
    let started = Instant::now();
    let mut workdir = None;
    let (((bases, index), took), (loaded, at_tag, held), walked) = if needs_base {
        let ((bases, took), dest) = tokio::try_join!(fetch_base, check_dest)?;
        workdir = working_dir(&bases.0)?;
        let walked = walk(plan, workdir.as_deref(), last_walk, &changes).await?;
        ((bases, took), dest, walked)
    } else {
        tokio::try_join!(
            fetch_base,
            check_dest,
            walk(plan, None, last_walk, &changes)
        )?
    };
    timings.base = took;
    let Walked {
        mappings,
        entries,
        scanned_at,
        suspects,
    } = walked.clone();

    // The last push's blobs are in the destination: its manifest, which names them all, is.
    let last_image = match &loaded {
        Loaded::Found(s) => Some(s.image.clone()),
        _ => None,
    };
    // The base as the state knows it: its index when it is one, else its image.
    let (base_digest, base_name) = match &index {
        Some(i) => (i.digest.clone(), i.name.clone()),
        None => (bases[0].1.digest.clone(), bases[0].1.name.clone()),
    };
    let mut present: HashSet<Digest> = HashSet::new();
    if let (true, Loaded::Found(s)) = (held, &loaded) {
        present.extend(s.layers().into_iter().map(|l| l.digest));
        if s.base == base_digest {
            for (_, b) in &bases {
                present.extend(b.layers.iter().map(|l| l.digest.clone()));
            }
        }
    }
    let settings = stack::settings(&mappings, plan.owner, plan.mtime);
    // Used again only while the destination holds the image that names them.
    let last_platform_layers = match &loaded {
        Loaded::Found(s) if held => s.platform_layers.clone(),
        _ => Vec::new(),
    };
    let hidden = match &loaded {
        Loaded::Found(s) if s.settings.mappings == settings.mappings => s.hidden.clone(),
        _ => Vec::new(),
    };
    let prev = if plan.full {
        Err(Some(FullReason::Forced))
    } else {
        stack::usable(
            loaded,
            &settings,
            &base_digest,
            &base_name,
            held,
            &dest_name,
        )
    };
    let (tmp, _lock) = temp_dir()?;
    let job = stack::Job {
        roots: mappings
            .iter()
            .map(|m| m.dest.trim_start_matches('/').to_string())
            .collect(),
        entries,
        scanned_at,
        suspects,
        settings,
        hidden,
        base: base_digest.clone(),
        created_by: stack::created_by(&mappings),
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
    let workdir = plan
        .tweaks
        .workdir
        .clone()
        .or(workdir)
        .unwrap_or_else(|| "/".into());
    let last_digests: Vec<Digest> = last_platform_layers
        .iter()
        .map(|l| l.layer.digest.clone())
        .collect();
    let per_platform =
        platform_layers(plan, &bases, &workdir, tmp.path(), last_platform_layers).await?;
    let platform_files_changed = !per_platform.is_empty()
        && per_platform
            .iter()
            .map(|b| &b.made.layer.digest)
            .ne(last_digests.iter());
    timings.layer = started.elapsed().saturating_sub(timings.base);
    // The delta as written (also when a squash pushed the full layer instead: it says what
    // changed since the last push), read back before the temporary files go.
    let keep = memory.as_ref().is_some_and(|m| m.keep_delta);
    let delta = match (&mode, keep) {
        (_, false) => None,
        (Mode::Unchanged, true) => Some(Vec::new()),
        // A first push or a full one for a reason other than squashing wrote no delta file.
        (_, true) => {
            let file = tmp.path().join(stack::DELTA_FILE);
            blocking(move || {
                if !file.is_file() {
                    return Ok(None);
                }
                let mut tar = Vec::new();
                let f = std::fs::File::open(&file).map_err(|e| Error::io("read", &file, &e))?;
                std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(f), &mut tar)
                    .map_err(|e| Error::io("read", &file, &e))?;
                Ok(Some(tar))
            })
            .await?
        }
    };

    let created = image::rfc3339(plan.mtime);
    let images = bases
        .iter()
        .enumerate()
        .map(|(i, (_, b))| {
            let mut layers = app.clone();
            layers.extend(per_platform.get(i).map(|b| b.made.layer.clone()));
            image::build(b, &layers, &plan.tweaks, &created)
        })
        .collect::<Result<Vec<_>>>()?;
    // One platform: its image. Several: an index of theirs, written last.
    let top = match &index {
        Some(i) => {
            let pairs: Vec<(&Descriptor, &Image)> =
                bases.iter().map(|(e, _)| e).zip(&images).collect();
            let idx = image::index(i, &pairs)?;
            Top {
                bytes: idx.bytes,
                digest: idx.digest,
                media_type: idx.media_type,
            }
        }
        None => Top {
            bytes: images[0].manifest.clone(),
            digest: images[0].digest.clone(),
            media_type: images[0].media_type,
        },
    };
    let same_image = last_image.as_ref() == Some(&top.digest);
    let started = Instant::now();
    let save = state_file.filter(|_| !(mode == Mode::Unchanged && !restat && same_image));
    let mut next = Box::new(next_state);
    next.image = top.digest.clone();
    next.platform_layers = per_platform.iter().map(|b| b.made.clone()).collect();
    let transfer = async {
        let unchanged = mode == Mode::Unchanged && at_tag.as_ref() == Some(&top.digest);
        // A delta and its config are new by nature: asking about them saves nothing. With only
        // per-platform files changed, the other platforms' configs are not.
        let new = if matches!(mode, Mode::Full { .. })
            || (mode == Mode::Unchanged && platform_files_changed)
        {
            Known::Unknown
        } else {
            Known::Missing
        };
        let mut blobs = blobs(&images, &uploads, &per_platform, &source, &present, new);
        if unchanged {
            blobs.iter_mut().for_each(|b| b.known = Known::Present);
        }
        transfer::survey(&dest, &mut blobs).await?;
        let moved = transfer::send(&dest, &blobs, &session.slots).await?;
        if !unchanged {
            // Every blob is acknowledged: only now may the manifests name them — each
            // platform's image, then the index that names those.
            if index.is_some() {
                for image in &images {
                    let bytes = Bytes::from(image.manifest.clone());
                    dest.put_child(bytes, &image.digest, image.media_type)
                        .await?;
                }
            }
            dest.put_manifest(Bytes::from(top.bytes.clone()), top.media_type)
                .await?;
            tracing::info!("manifest {}", top.digest);
        }
        Ok::<_, Error>(moved)
    };
    let moved = match memory {
        // Watch: the push is reported as soon as it is done; the state is written after it,
        // and handed back to the next push of this watch (which takes it from memory).
        Some(m) => {
            let moved = transfer.await?;
            m.walked = Some(walked);
            m.logged_in = true;
            match save {
                Some(file) => {
                    m.saving = Some(tokio::task::spawn_blocking(move || {
                        save_state(&file, &next);
                        next
                    }))
                }
                None => m.state = Some(next),
            }
            moved
        }
        // One push: the state is written while the push runs, and put in place only once it
        // succeeded.
        None => {
            let stage = blocking(move || Ok(save.map(|f| (state::stage(&f, &next), f))));
            let (moved, staged) = tokio::try_join!(transfer, stage)?;
            if let Some((staged, file)) = staged {
                if let Err(e) = staged.and_then(state::Staged::commit) {
                    // The push succeeded; only the next one's speed is at stake.
                    tracing::warn!("{e}; the next push will be a full one");
                    state::remove(&file);
                }
            }
            moved
        }
    };
    if let Some(file) = &plan.ref_file {
        write_ref_file(&dest, &plan.to, &top, file).await?;
    }
    timings.push = started.elapsed();

    let platforms = match index {
        Some(_) => bases
            .iter()
            .zip(&images)
            .filter_map(|((_, b), i)| Some((Platform::of_config(&b.config)?, i.digest.clone())))
            .collect(),
        None => Vec::new(),
    };
    Ok(Pushed {
        platform_files_changed,
        platform_layers: per_platform.into_iter().map(|b| b.made.layer).collect(),
        reference: plan.to.pinned(&top.digest),
        digest: top.digest,
        mode,
        new_layers: uploads.into_iter().map(|u| u.0).collect(),
        entries,
        blobs: moved,
        platforms,
        delta,
        timings,
    })
}

/// The document the destination's tag names: an image manifest, or an index of several.
struct Top {
    bytes: Vec<u8>,
    digest: Digest,
    media_type: &'static str,
}

/// The per-platform layers of this push (see [`per_platform`]), built off the async threads.
async fn platform_layers(
    plan: &PushPlan,
    bases: &[(Descriptor, crate::build::base::Base)],
    workdir: &str,
    dir: &Path,
    last: Vec<PlatformLayer>,
) -> Result<Vec<per_platform::Built>> {
    let raw: Vec<RawMapping> = plan
        .mappings
        .iter()
        .filter(|m| m.per_platform())
        .cloned()
        .collect();
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    let jobs = bases
        .iter()
        .enumerate()
        .map(|(i, (_, b))| {
            per_platform::job(&raw, b, workdir, &dir.join(format!("platform-{i}.tar.gz")))
        })
        .collect::<Result<Vec<_>>>()?;
    let settings = per_platform::Settings {
        owner: plan.owner,
        ignore: plan.ignore.clone(),
        own: own_paths(plan),
        mtime: plan.mtime,
    };
    blocking(move || per_platform::build(jobs, &settings, &last)).await
}

/// The working directory the mappings land relative to: the base's — the same on every
/// platform, or it cannot be chosen for them.
fn working_dir(bases: &[(Descriptor, crate::build::base::Base)]) -> Result<Option<String>> {
    let dirs: Vec<Option<&str>> = bases.iter().map(|(_, b)| b.working_dir()).collect();
    if dirs.windows(2).any(|w| w[0] != w[1]) {
        return Err(Error::usage(
            "the base's platforms have different working directories: give --workdir, or an \
             absolute DEST to every mapping",
        ));
    }
    Ok(dirs.first().copied().flatten().map(str::to_string))
}

/// Every blob the images name, each once, where its bytes come from: this run's files, the
/// configs in memory, the base's store for the rest. `present` are known to be in the
/// destination; `new` is what is known of this run's blobs.
fn blobs(
    images: &[Image],
    uploads: &[(NewLayer, PathBuf)],
    platform_layers: &[per_platform::Built],
    source: &Store,
    present: &HashSet<Digest>,
    new: Known,
) -> Vec<Blob> {
    let mut seen = HashSet::new();
    let mut out: Vec<Blob> = Vec::new();
    for l in images.iter().flat_map(|i| &i.layers) {
        if !seen.insert(l.digest.clone()) {
            continue;
        }
        let upload = uploads.iter().find(|u| u.0.digest == l.digest);
        let platform = platform_layers
            .iter()
            .find(|b| b.made.layer.digest == l.digest);
        let (source, known) = match (upload, platform) {
            (Some((_, path)), _) => (Source::File(path.clone()), new),
            // Rebuilt: the same bytes as the last push's more often than not.
            (
                None,
                Some(per_platform::Built {
                    file: Some(path), ..
                }),
            ) => (Source::File(path.clone()), Known::Unknown),
            // The last push's, in the image the destination holds.
            (None, Some(per_platform::Built { file: None, .. })) => {
                (Source::Store(source.clone()), Known::Present)
            }
            (None, None) => (Source::Store(source.clone()), Known::Unknown),
        };
        out.push(Blob {
            descriptor: l.clone(),
            source,
            role: Role::Layer,
            known: if present.contains(&l.digest) {
                Known::Present
            } else {
                known
            },
        });
    }
    for image in images {
        if !seen.insert(image.config_descriptor.digest.clone()) {
            continue;
        }
        out.push(Blob {
            descriptor: image.config_descriptor.clone(),
            source: Source::Bytes(Bytes::from(image.config.clone())),
            role: Role::Config,
            known: new,
        });
    }
    out
}

/// Tilt's `outputs_image_ref_to` wants a tag it has not seen before for new content, and will
/// not take a digest (tilt#5987): tag the image by its digest, as Tilt's own builds are tagged,
/// and write that reference.
async fn write_ref_file(dest: &Store, to: &ImageRef, image: &Top, file: &Path) -> Result<()> {
    // The plan refused --ref-file with a layout destination.
    let ImageRef::Registry(r) = to else {
        return Err(Error::internal("--ref-file with a layout destination"));
    };
    let hex = image.digest.digest();
    let tag = format!("layerup-{}", &hex[..16.min(hex.len())]);
    dest.put_tag(&tag, Bytes::from(image.bytes.clone()), image.media_type)
        .await?;
    let line = format!("{}/{}:{tag}\n", r.registry(), r.repository());
    std::fs::write(file, line).map_err(|e| Error::io("write the --ref-file", file, &e))
}

/// The tree of one push.
#[derive(Clone)]
struct Walked {
    mappings: Vec<Mapping>,
    entries: Arc<Vec<Entry>>,
    /// When the walk started (ns since the epoch), for the index's racy-file guard.
    scanned_at: i64,
    /// Image paths file events named: hashed even when their stat looks unchanged.
    suspects: Vec<String>,
}

/// Resolves the mappings (DEST relative to `--workdir`, else the base's, else `/`) and walks
/// them — or, given the last walk of the same mappings and the paths that changed since, looks
/// at those paths only.
async fn walk(
    plan: &PushPlan,
    base_workdir: Option<&str>,
    last: Option<Walked>,
    changes: &Changes,
) -> Result<Walked> {
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
        .filter(|m| !m.per_platform())
        .map(|m| m.resolve(&workdir))
        .collect();
    let owner = plan.owner;
    let ignore = plan.ignore.clone();
    let own = own_paths(plan);
    let paths = match changes {
        Changes::Paths(p) => Some(p.clone()),
        Changes::All => None,
    };
    blocking(move || {
        let scanned_at = stack::now_ns();
        if let (Some(last), Some(paths)) = (last, paths) {
            if last.mappings == mappings {
                let mut entries = Arc::unwrap_or_clone(last.entries);
                let update = tree::update(&mut entries, &mappings, owner, &ignore, &own, &paths)?;
                match update {
                    tree::Update::Done { suspects } => {
                        return Ok(Walked {
                            mappings,
                            entries: Arc::new(entries),
                            scanned_at,
                            suspects,
                        })
                    }
                    tree::Update::WalkAll(why) => tracing::info!("walking the whole tree: {why}"),
                }
            }
        }
        let entries = tree::collect(&mappings, owner, &ignore, &own)?;
        Ok(Walked {
            mappings,
            entries: Arc::new(entries),
            scanned_at,
            suspects: Vec::new(),
        })
    })
    .await
}

/// Writes the state of a watched push, after it: a failure only costs the next run's speed.
fn save_state(file: &Path, state: &State) {
    if let Err(e) = state::stage(file, state).and_then(state::Staged::commit) {
        tracing::warn!("{e}; the next run will push in full");
        state::remove(file);
    }
}

/// The paths this push writes: never part of the layer, nor (for `watch`) a change — even when a
/// source holds them (a `--ref-file` in the project, `TMPDIR` or the state directory inside it).
pub fn own_paths(plan: &PushPlan) -> Vec<Own> {
    let mut own = vec![Own::new(&std::env::temp_dir().join(TMP_PREFIX), true)];
    own.push(plan.ref_file.as_deref().and_then(|f| Own::new(f, false)));
    own.push(plan.state_dir.as_deref().and_then(|d| Own::new(d, false)));
    if let ImageRef::Layout(l) = &plan.to {
        own.push(Own::new(&l.dir, false));
    }
    own.into_iter().flatten().collect()
}

/// This run's temporary directory for layer files, in `TMPDIR`, locked for as long as it lives.
/// Ctrl-C and SIGTERM delete it on the way out; a run killed outright (SIGKILL, OOM) cannot, so
/// each run first deletes those whose lock nobody holds: their process is gone (the kernel
/// releases a dead process's locks).
fn temp_dir() -> Result<(tempfile::TempDir, std::fs::File)> {
    let root = std::env::temp_dir();
    sweep(&root);
    let failed = |e: std::io::Error| Error::io("create a temporary directory in", &root, &e);
    let tmp = tempfile::Builder::new()
        .prefix(TMP_PREFIX)
        .tempdir()
        .map_err(failed)?;
    // Locked under another name, then renamed: `.lock` never exists unlocked while its run
    // lives, so a sweep cannot take a directory being set up for a dead one.
    let staging = tmp.path().join(".lock.new");
    let lock = std::fs::File::create(&staging).map_err(failed)?;
    lock.lock().map_err(failed)?;
    std::fs::rename(&staging, tmp.path().join(LOCK)).map_err(failed)?;
    Ok((tmp, lock))
}

const LOCK: &str = ".lock";

/// Deletes the `layerup-*` directories of `root` whose lock no live run holds.
fn sweep(root: &Path) {
    let Ok(items) = std::fs::read_dir(root) else {
        return;
    };
    for item in items.flatten() {
        if !item.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
            continue;
        }
        let Ok(lock) = std::fs::File::open(item.path().join(LOCK)) else {
            continue;
        };
        if lock.try_lock().is_ok() {
            tracing::info!(
                "deleting {}, left by a run that was killed",
                item.path().display()
            );
            let _ = std::fs::remove_dir_all(item.path());
        }
    }
}

/// Runs file work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("a file task stopped: {e}")))?
}
