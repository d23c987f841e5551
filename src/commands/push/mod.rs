//! `push`: one image, in three steps read in order — *prepare* (`prepare.rs`: the base's
//! manifest and config, the last push's state and the tree, at once), the *new image*
//! (`build::new_image`: the app layers, a delta or the full layer in parts, the images and the
//! index; no network), and *write* (`write.rs`: the blobs the destination lacks, then the
//! manifests, through `transfer::write`; the state saved). Several images share a [`Session`].

mod journaled;
mod lower;
mod prepare;
mod tags;
mod write;

/// The `--ref-file` tags kept per destination.
pub use tags::KEEP as KEEP_REF_TAGS;

pub(crate) use write::save_state;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use oci_spec::image::Digest;

use crate::build::entry::{Own, RawMapping};
use crate::build::image::{NewLayer, Tweaks};
use crate::build::new_image::{self, Input, NewImage};
use crate::build::stack::{FullReason, Mode, Squash};
use crate::build::state::{self, State};
use crate::build::tree::Walked;
use crate::commands::deploy::{Change, Deploy};
use crate::commands::Told;
use crate::error::{Error, Result};
use crate::oci::platform::Platform;
use crate::oci::reference::ImageRef;
use crate::store::registry::{self, Registry};
use crate::store::Store;
use crate::transfer::{self, Moved, Slots};

/// The platforms of a multi-platform push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Platforms {
    /// Every platform the base's index has (attestations aside).
    All,
    These(Vec<Platform>),
}

/// A validated `layerup push`.
#[derive(Debug, Clone, PartialEq)]
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
    /// `--compression`: how the layers this push writes are compressed.
    pub compression: crate::build::compression::Compression,
    pub net: registry::Options,
    pub jobs: usize,
    /// Push the full app layer even when a delta could be stacked.
    pub full: bool,
    /// `--journal`: a one-shot push asks the sources' change journal what changed.
    pub journal: bool,
    pub squash: Squash,
    /// `--ignore` patterns, applied after each directory's `.layerupignore`.
    pub ignore: Vec<String>,
    /// `--ref-file`: where to write the pushed image's tagged reference (Tilt reads it).
    pub ref_file: Option<PathBuf>,
    /// `--tag`: more tags for the image in the destination's repository.
    pub tags: Vec<String>,
    /// `--deploy`: then set the image in the cluster.
    pub deploy: Option<Deploy>,
    /// Where the state of the last push to each destination is kept; `None`: every push is a
    /// full one, and nothing is remembered.
    pub state_dir: Option<PathBuf>,
    /// The mappings come from a committed layerup.toml: their sources (symlinks resolved, each
    /// platform's too) must stay inside this directory, at every push.
    pub confined: Option<PathBuf>,
    /// `build`: the command that makes the mapped files, run before each push.
    pub build: Option<crate::commands::build_step::BuildStep>,
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
    /// Older `--ref-file` tags deleted by this push (the newest few are kept).
    pub tags_deleted: Vec<String>,
    /// HTTP requests sent to registries during this push (with other images of the run pushing
    /// at the same time, theirs too).
    pub requests: u64,
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
    /// The build command's run.
    pub build: Duration,
    pub layer: Duration,
    pub push: Duration,
}

/// A push, then with `--deploy` the deploy step: `told` hears of the image as soon as it exists
/// (before the rollout), then the deploy's events. The deploy's outcome is returned beside the
/// push's, which stands whatever the rollout does.
pub async fn run_and_deploy(plan: &PushPlan, told: &(dyn Fn(Told) + Sync)) -> Outcome {
    if let Some(deploy) = &plan.deploy {
        deploy.check().await?;
    }
    let session = Session::new(plan.net, plan.jobs)?;
    push_and_deploy(plan, &session, told).await
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
        Err(e) => return plans.iter().map(|_| Err(e.clone())).collect(),
    };
    for (name, plan) in plans {
        if let Some(d) = &plan.deploy {
            if let Err(e) = d.check().await {
                let e = e.context(format!("image {name}"));
                return plans.iter().map(|_| Err(e.clone())).collect();
            }
        }
    }
    let one = |name: &str, plan: &PushPlan| {
        let session = &session;
        let name = name.to_string();
        let plan = plan.clone();
        async move { push_and_deploy(&plan, session, &|t| told(&name, t)).await }
    };
    futures_util::future::join_all(plans.iter().map(|(n, p)| one(n, p))).await
}

/// One image's push in `session`, then its deploy step (its cluster already checked).
async fn push_and_deploy(
    plan: &PushPlan,
    session: &Session,
    told: &(dyn Fn(Told) + Sync),
) -> Outcome {
    let plan = &for_cluster(plan).await;
    let started = Instant::now();
    // The workload is found while the base is read: a deploy that cannot happen (no such
    // workload, the cluster down) pushes nothing.
    let preflight = async {
        match &plan.deploy {
            Some(d) => d.preflight(&plan.to, &plan.base).await,
            None => Ok(()),
        }
    };
    let (pushed, _) = journaled::one_shot(plan, session, preflight, told).await?;
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
    /// Images' builds running at once: `--jobs` of them.
    pub builds: Arc<tokio::sync::Semaphore>,
}

impl Session {
    pub fn new(net: registry::Options, jobs: usize) -> Result<Session> {
        Ok(Session {
            registry: Arc::new(Registry::new(net)?),
            slots: Slots::new(jobs),
            builds: Arc::new(tokio::sync::Semaphore::new(jobs.max(1))),
        })
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
    Ok(run_in(plan, &session, None, Changes::All, &|_| {}).await?.0)
}

/// What a push of a watch starts from besides its plan: what the last push kept in memory —
/// the tree as walked and the state as pushed — so that an edit costs what changed, not a walk
/// of the tree and a read of its file index.
#[derive(Default)]
pub struct Last {
    pub walked: Option<Walked>,
    pub state: Option<Box<State>>,
    /// The stores' logins are done for this run.
    pub logged_in: bool,
    /// Keep the delta, uncompressed, in [`Pushed::delta`] (`watch --sync` applies it).
    pub keep_delta: bool,
    /// Write the state while the push runs, as a one-shot push does, rather than hand it back
    /// (a one-shot push through the change journal).
    pub stage: bool,
}

/// What a push of a watch leaves for the next: the tree as walked and the state pushed, which
/// is to be written to `save` (when it changed) after the push is reported.
pub struct Kept {
    pub walked: Walked,
    pub state: Box<State>,
    pub save: Option<PathBuf>,
}

/// One push in `session`: read (the base, the last push's state, the tree) → the new image
/// (no network) → write (the blobs the destination lacks, the manifests, the state). With
/// `last` (a watch), the tree and state are taken from it rather than read again, only the
/// `changes` are looked at, and what the next push needs is handed back. The plan's build, if
/// any, runs first; `told` hears its output.
pub async fn run_in(
    plan: &PushPlan,
    session: &Session,
    last: Option<Last>,
    changes: Changes,
    told: &(dyn Fn(Told) + Sync),
) -> Result<(Pushed, Option<Kept>)> {
    let (pushed, kept, _) = run_gated(plan, session, last, changes, async { Ok(()) }, told).await?;
    Ok((pushed, kept))
}

/// [`run_in`], with `gate` run beside the reads and the build: nothing is written unless it
/// passes (a deploy step's preflight). Also returns the tree as walked.
async fn run_gated(
    plan: &PushPlan,
    session: &Session,
    last: Option<Last>,
    changes: Changes,
    gate: impl std::future::Future<Output = Result<()>>,
    told: &(dyn Fn(Told) + Sync),
) -> Result<(Pushed, Option<Kept>, Walked)> {
    let started = Instant::now();
    let requests = crate::meter::requests();
    if let Some(dir) = &plan.state_dir {
        session.registry.remember_in(dir.clone());
    }
    let source = Store::for_reading(&plan.base, &session.registry)?;
    let dest = Store::for_writing(&plan.to, &session.registry)?;
    // Upload sessions opened ahead and left by a push that failed before its write are
    // cancelled here (the write cancels its own).
    let out = async {
        let dest_name = plan.to.to_string();
        let state_file = plan.state_dir.as_ref().map(|d| state::path(d, &dest_name));
        let watched = last.as_ref().is_some_and(|l| !l.stage);
        let last = last.unwrap_or_default();
        let from = prepare::From {
            state: last.state,
            walked: last.walked,
            logged_in: last.logged_in,
            builds: &session.builds,
        };
        crate::meter::phase(crate::meter::Phase::Base);
        let (read, ()) = tokio::try_join!(
            prepare::read(
                plan,
                &source,
                &dest,
                state_file.clone(),
                from,
                &changes,
                told
            ),
            gate
        )?;
        crate::meter::phase(crate::meter::Phase::Building);
        let mut timings = Timings {
            base: read.took,
            build: read.built,
            ..Timings::default()
        };
        let (tmp, _lock) = crate::stale::temp_dir()?;
        let tree = read.tree.clone();
        let at_tag = read.at_tag.clone();
        let input = input(plan, read, dest_name, last.keep_delta, tmp.path());
        let (mut made, next) = blocking(move || new_image::make(input)).await?;
        timings.layer = started
            .elapsed()
            .saturating_sub(timings.base + timings.build);

        let started = Instant::now();
        crate::meter::phase(crate::meter::Phase::Sending);
        let save = if watched {
            write::Save::Later
        } else {
            write::Save::Staged(state_file.clone())
        };
        let sent = send(
            plan,
            session,
            (&source, &dest),
            &mut made,
            next,
            at_tag,
            save,
        )
        .await?;
        timings.push = started.elapsed();
        let kept = sent.state.map(|state| Kept {
            walked: tree.clone(),
            state,
            save: state_file.filter(|_| made.save),
        });
        let mut pushed = pushed(plan, made, sent.moved, timings);
        pushed.tags_deleted = sent.tags_deleted;
        pushed.requests = crate::meter::requests() - requests;
        tracing::info!("{} registry requests", pushed.requests);
        Ok((pushed, kept, tree))
    }
    .await;
    if out.is_err() {
        dest.cancel_spares().await;
    }
    out
}

/// What [`send`] came to: each blob's report, the state when it is handed back
/// ([`write::Save::Later`]), and the older ref tags deleted.
struct Sent {
    moved: Vec<Moved>,
    state: Option<Box<State>>,
    tags_deleted: Vec<String>,
}

/// The write step: the new image's blobs and manifests under its tags (`--tag`, and Tilt's ref
/// tag, remembered in `next`), the upload sessions opened ahead and not used cancelled; then
/// the `--ref-file` and the older ref tags deleted.
async fn send(
    plan: &PushPlan,
    session: &Session,
    (source, dest): (&Store, &Store),
    made: &mut NewImage,
    mut next: Box<State>,
    at_tag: Option<Digest>,
    save: write::Save,
) -> Result<Sent> {
    let ref_tag = plan
        .ref_file
        .as_ref()
        .map(|_| write::ref_tag(&made.top().digest));
    let doomed = match &ref_tag {
        Some(tag) => {
            let known = next.ref_tags.last().is_some_and(|(t, _)| t == tag);
            // A new tag is remembered even when the image is the last one.
            made.save |= !known;
            tags::record(&mut next, tag, &made.top().digest)
        }
        None => Vec::new(),
    };
    let written = write::write(
        made,
        next,
        source,
        dest,
        at_tag.as_ref(),
        plan.tags.iter().cloned().chain(ref_tag.clone()).collect(),
        &session.slots,
        save,
    );
    // Upload sessions opened ahead and not needed: with nothing new, cancelled beside the
    // write; else whatever is left once it is done (or failed).
    let (written, ()) = if made.mode == Mode::Unchanged && !made.platform_files_changed {
        tokio::join!(written, dest.cancel_spares())
    } else {
        (written.await, dest.cancel_spares().await)
    };
    let (moved, state) = written?;
    if let (Some(file), Some(tag)) = (&plan.ref_file, &ref_tag) {
        write::write_ref_file(&plan.to, tag, file)?;
    }
    // Once the image is there: older ref tags go (a failure only leaves them).
    let tags_deleted = match tags::delete(dest, &doomed).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!("{e}; the older layerup tags stay");
            Vec::new()
        }
    };
    Ok(Sent {
        moved,
        state,
        tags_deleted,
    })
}

/// What the new image is made of: what the reads found, and the plan's settings.
fn input(
    plan: &PushPlan,
    read: prepare::Read,
    dest_name: String,
    keep_delta: bool,
    dir: &std::path::Path,
) -> Input {
    Input {
        bases: read.bases,
        index: read.index,
        lowers: read.lowers,
        last: read.last,
        held: read.held,
        tree: read.tree,
        per_platform: plan
            .mappings
            .iter()
            .filter(|m| m.per_platform())
            .cloned()
            .collect(),
        confined: plan.confined.clone(),
        workdir: read.workdir,
        owner: plan.owner,
        ignore: plan.ignore.clone(),
        own: own_paths(plan),
        mtime: plan.mtime,
        compression: plan.compression,
        tweaks: plan.tweaks.clone(),
        full: plan.full,
        squash: plan.squash,
        dest_name,
        keep_delta,
        dir: dir.to_path_buf(),
    }
}

/// The push's result, from the image it made and what moved.
fn pushed(plan: &PushPlan, made: NewImage, moved: Vec<Moved>, timings: Timings) -> Pushed {
    let top = made.top().digest.clone();
    Pushed {
        platform_files_changed: made.platform_files_changed,
        platform_layers: made
            .per_platform
            .into_iter()
            .map(|b| b.made.layer)
            .collect(),
        reference: plan.to.pinned(&top),
        digest: top,
        mode: made.mode,
        new_layers: made.uploads.into_iter().map(|u| u.0).collect(),
        entries: made.entries,
        blobs: moved,
        platforms: made.platforms,
        delta: made.delta,
        timings,
        tags_deleted: Vec::new(),
        requests: 0,
    }
}

/// The paths this push writes: never part of the layer, nor (for `watch`) a change — even when a
/// source holds them (a `--ref-file` in the project, `TMPDIR` or the state directory inside it).
pub fn own_paths(plan: &PushPlan) -> Vec<Own> {
    let mut own = vec![Own::new(
        &std::env::temp_dir().join(crate::stale::TMP_PREFIX),
        true,
    )];
    own.push(plan.ref_file.as_deref().and_then(|f| Own::new(f, false)));
    own.push(plan.state_dir.as_deref().and_then(|d| Own::new(d, false)));
    if let ImageRef::Layout(l) = &plan.to {
        own.push(Own::new(&l.dir, false));
    }
    own.into_iter().flatten().collect()
}

/// Runs file work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("a file task stopped: {e}")))?
}
