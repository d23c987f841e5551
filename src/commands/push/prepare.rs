//! What a push reads before it builds, at once: the base's manifest and config (through an
//! index to each platform); the last push's state, then the destination's answer to "do you
//! still hold its image?"; and the tree — walked whole, or brought up to date from the paths
//! file events named.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use oci_spec::image::Digest;

use super::{blocking, lower, own_paths, Changes, Platforms, PushPlan};
use crate::build::base::{self, Base, BaseIndex};
use crate::build::entry::{self, Mapping};
use crate::build::lower::{self as lower_build, Lower};
use crate::build::stack;
use crate::build::state::{self, Loaded, State};
use crate::build::tree::{self, Walked};
use crate::commands::Told;
use crate::error::{Error, Result};
use crate::oci::manifest::Descriptor;
use crate::oci::platform::Platform;
use crate::store::Store;

/// What the reads found.
pub(super) struct Read {
    /// The base's image for each platform, with its entry in the base's index.
    pub bases: Vec<(Descriptor, Base)>,
    pub index: Option<BaseIndex>,
    /// What each platform's base layers hold (in `bases`' order).
    pub lowers: Vec<Lower>,
    /// How long the base took to read.
    pub took: Duration,
    /// How long the build ran (zero without one).
    pub built: Duration,
    pub last: Loaded,
    /// What the destination's tag names now.
    pub at_tag: Option<Digest>,
    /// The destination still holds the last push's image.
    pub held: bool,
    /// The tree, its mappings placed through the base's symlinks and the directories above
    /// them added as the base has them.
    pub tree: Walked,
    /// The working directory the mappings landed relative to.
    pub workdir: String,
}

/// What a push of a watch starts from besides its plan.
pub(super) struct From<'a> {
    pub state: Option<Box<State>>,
    pub walked: Option<Walked>,
    pub logged_in: bool,
    /// Permits for the build, shared by the images of a run.
    pub builds: &'a tokio::sync::Semaphore,
}

/// Reads all a push needs before it builds. When every mapping has an absolute DEST (or
/// `--workdir` is given), the walk does not depend on the base and runs beside its reads; it is
/// made again only when the base's symlinks move a DEST.
pub(super) async fn read(
    plan: &PushPlan,
    source: &Store,
    dest: &Store,
    state_file: Option<PathBuf>,
    from: From<'_>,
    changes: &Changes,
    told: &(dyn Fn(Told) + Sync),
) -> Result<Read> {
    let From {
        state: remembered,
        walked: last_walk,
        logged_in,
        builds,
    } = from;
    let fetch_base = fetch_base(plan, source, logged_in, builds, told);
    // A push on top of the last one sends a delta and a config per platform.
    let ahead = match (&plan.platforms, plan.full) {
        (_, true) => 0,
        (Some(Platforms::These(p)), _) => 1 + p.len(),
        _ => 2,
    };
    // With no last push to build on, what the destination holds does not matter.
    let last_push = remembered.is_some() || state_file.as_ref().is_some_and(|f| f.exists());
    // Told once the destination is logged in to (at once when it was already).
    let logged = tokio::sync::Notify::new();
    if logged_in {
        logged.notify_one();
    }
    let load = load_last(remembered, state_file);
    let ask = ask_tag(source, dest, logged_in, last_push, &logged);
    // A build makes the files: the walk waits for it.
    let needs_base = plan.build.is_some()
        || (plan.tweaks.workdir.is_none() && plan.mappings.iter().any(|m| !m.is_absolute()));
    let ((bases, index, lowers, (took, built)), (last, at_tag), walked, base_workdir) =
        if needs_base {
            let (base, last, at_tag) = tokio::try_join!(fetch_base, load, ask)?;
            let workdir = match plan.tweaks.workdir {
                Some(_) => None,
                None => working_dir(&base.0)?,
            };
            if workdir.is_none() && plan.tweaks.workdir.is_none() {
                no_dest(plan, &base.0)?;
            }
            let placed = place(&asked(plan, workdir.as_deref()), &base.2)?;
            let walked = walk(plan, placed, last_walk, changes).await?;
            let (walked, last) = open_ahead(dest, walked, last, ahead, &logged).await?;
            (base, (last, at_tag), walked, workdir)
        } else {
            // The last push's placing, or the DESTs as asked: right unless the base moved one.
            let guess = match &last_walk {
                Some(w) => w.mappings.clone(),
                None => asked(plan, None),
            };
            // The walk and the state, then (once logged in) the new blobs' upload sessions
            // where they differ, while the tags are asked.
            let walk_and_load = async {
                let (walked, last) = tokio::try_join!(walk(plan, guess, last_walk, changes), load)?;
                open_ahead(dest, walked, last, ahead, &logged).await
            };
            let (base, (walked, last), at_tag) = tokio::try_join!(fetch_base, walk_and_load, ask)?;
            let placed = place(&asked(plan, None), &base.2)?;
            let walked = if placed == walked.mappings {
                walked
            } else {
                walk(plan, placed, None, &Changes::All).await?
            };
            (base, (last, at_tag), walked, None)
        };
    let (last, at_tag, held) = held(dest, last, at_tag).await?;
    let tree = with_base(plan, walked, &lowers, changes).await?;
    let workdir = plan
        .tweaks
        .workdir
        .clone()
        .or(base_workdir)
        .unwrap_or_else(|| "/".into());
    Ok(Read {
        bases,
        index,
        lowers,
        took,
        built,
        last,
        at_tag,
        held,
        tree,
        workdir,
    })
}

/// A SRC without DEST lands in the working directory; with none from `--workdir` or the base,
/// that would be the image's root, where nobody expects their files (`/server.sh`, `/botocore`):
/// asked for rather than guessed.
fn no_dest(plan: &PushPlan, bases: &[(Descriptor, Base)]) -> Result<()> {
    let Some(m) = plan.mappings.iter().find(|m| m.dest.is_none()) else {
        return Ok(());
    };
    let name = bases.first().map_or("", |(_, b)| b.name.as_str());
    Err(Error::usage(format!(
        "`{}` has no DEST, and the base `{name}` sets no WorkingDir for it to land in: say \
         where it goes (`{}:/app`), or give --workdir DIR",
        m.src.display(),
        m.src.display()
    )))
}

/// The base as read: each platform's image with its index entry, the index, what each one's
/// layers hold; how long reading it took, and the build after it.
type Fetched = (
    Vec<(Descriptor, Base)>,
    Option<BaseIndex>,
    Vec<Lower>,
    (Duration, Duration),
);

/// Reads the base (every platform asked) and what its layers hold, then runs the build, whose
/// platforms are the base's.
async fn fetch_base(
    plan: &PushPlan,
    source: &Store,
    logged_in: bool,
    builds: &tokio::sync::Semaphore,
    told: &(dyn Fn(Told) + Sync),
) -> Result<Fetched> {
    let started = Instant::now();
    if !logged_in {
        source.login(false, None).await?;
    }
    let (bases, index) = match &plan.platforms {
        None => {
            let base = base::resolve(source, &plan.platform, plan.platform_asked).await?;
            let entry = Descriptor::new("", base.digest.clone(), 0);
            (vec![(entry, base)], None)
        }
        Some(Platforms::All) => base::resolve_many(source, None).await?,
        Some(Platforms::These(p)) => base::resolve_many(source, Some(p)).await?,
    };
    linux_only(&bases)?;
    // Said before any layer is written.
    for (_, b) in &bases {
        let family = plan.tweaks.family(b.family);
        plan.compression.codec().media_type(family, &b.name)?;
    }
    let cache = lower::cache_dir(plan.state_dir.as_deref());
    let reads = bases
        .iter()
        .map(|(_, b)| lower::of(source, b, cache.as_deref(), plan.jobs));
    let lowers = futures_util::future::try_join_all(reads).await?;
    let took = started.elapsed();
    let built = match &plan.build {
        Some(step) => build(plan, step, &bases, builds, told).await?,
        None => Duration::ZERO,
    };
    Ok((bases, index, lowers, (took, built)))
}

/// The build, for the base's platforms, within the run's permits; then its outputs are there.
async fn build(
    plan: &PushPlan,
    step: &crate::commands::build_step::BuildStep,
    bases: &[(Descriptor, Base)],
    builds: &tokio::sync::Semaphore,
    told: &(dyn Fn(Told) + Sync),
) -> Result<Duration> {
    let targets: Vec<Platform> = bases
        .iter()
        .map(|(_, b)| Platform::of_config(&b.config).unwrap_or(plan.platform.clone()))
        .collect();
    let per_platform = plan.mappings.iter().any(|m| m.per_platform());
    let _permit = builds.acquire().await;
    let built = step
        .run(&targets, per_platform, &|e| told(Told::Building(e)))
        .await?;
    made_by_build(plan, &step.command)?;
    Ok(built)
}

/// The last push's state: from memory, else its file.
async fn load_last(remembered: Option<Box<State>>, state_file: Option<PathBuf>) -> Result<Loaded> {
    match remembered {
        Some(s) => Ok(Loaded::Found(s)),
        _ => blocking(move || Ok(state_file.map_or(Loaded::Missing, |f| state::load(&f)))).await,
    }
}

/// Logs in to the destination (`logged` hears when), then with a last push to build on asks
/// what its tag names: `None` without one.
async fn ask_tag(
    source: &Store,
    dest: &Store,
    logged_in: bool,
    last_push: bool,
    logged: &tokio::sync::Notify,
) -> Result<Option<Option<Digest>>> {
    if !logged_in {
        dest.login(true, Some(source)).await?;
        logged.notify_one();
    }
    if !last_push {
        return Ok(None);
    }
    dest.manifest_digest(None).await.map(Some)
}

/// Opens the upload sessions of `n` new blobs before the new image is made, once logged in
/// (`logged`), where the tree may differ from the last push's (`stack::may_differ`, off the
/// async threads: it may read a file whose stat moved). The walk and the state are handed back.
async fn open_ahead(
    dest: &Store,
    walked: Walked,
    last: Loaded,
    n: usize,
    logged: &tokio::sync::Notify,
) -> Result<(Walked, Loaded)> {
    if n == 0 {
        return Ok((walked, last));
    }
    let (walked, last, differs) = blocking(move || {
        let mut walked = walked;
        let differs = match &last {
            Loaded::Found(s) => stack::may_differ(&s.index, &walked.entries, &mut walked.hashed),
            _ => false,
        };
        Ok((walked, last, differs))
    })
    .await?;
    if differs {
        logged.notified().await;
        dest.open_ahead(n);
    }
    Ok((walked, last))
}

/// Whether the destination still holds the last push's image, by what its tag names (or the
/// image's digest, asked): the state, what the tag names, whether the image is held. Read
/// with --full too: what the last push's deltas hid stays hidden.
async fn held(
    dest: &Store,
    loaded: Loaded,
    at_tag: Option<Option<Digest>>,
) -> Result<(Loaded, Option<Digest>, bool)> {
    let (Loaded::Found(last), Some(at_tag)) = (&loaded, at_tag) else {
        return Ok((loaded, None, false));
    };
    let held = at_tag.as_ref() == Some(&last.image)
        || dest.manifest_digest(Some(&last.image)).await?.is_some();
    Ok((loaded, at_tag, held))
}

/// The build made the sources its mappings name (each platform's are checked as they are
/// read).
fn made_by_build(plan: &PushPlan, command: &str) -> Result<()> {
    match plan
        .mappings
        .iter()
        .find(|m| !m.per_platform() && std::fs::symlink_metadata(&m.src).is_err())
    {
        Some(m) => Err(Error::input(format!(
            "source `{}` does not exist after the build `{}` ran",
            m.src.display(),
            crate::commands::build_step::short(command)
        ))),
        None => Ok(()),
    }
}

/// The base is one layerup can add to: a Linux image.
fn linux_only(bases: &[(Descriptor, Base)]) -> Result<()> {
    match bases
        .iter()
        .find_map(|(_, b)| Some((b, Platform::of_config(&b.config)?)))
        .filter(|(_, p)| p.os != "linux")
    {
        Some((b, p)) => Err(Error::image(format!(
            "base image `{}` is a {} image: layerup adds Linux layers, which it cannot take",
            b.name, p.os
        ))),
        None => Ok(()),
    }
}

/// The mappings as asked: DEST relative to `--workdir`, else the base's, else `/` (per-platform
/// ones aside: each platform places its own).
fn asked(plan: &PushPlan, base_workdir: Option<&str>) -> Vec<Mapping> {
    let workdir = plan
        .tweaks
        .workdir
        .as_deref()
        .or(base_workdir)
        .unwrap_or("/")
        .to_string();
    plan.mappings
        .iter()
        .filter(|m| !m.per_platform())
        .map(|m| m.resolve(&workdir))
        .collect()
}

/// The mappings placed through the base's symlinks (`build::lower::place_all`).
fn place(mappings: &[Mapping], lowers: &[Lower]) -> Result<Vec<Mapping>> {
    let file = |m: &Mapping| std::fs::metadata(&m.src).is_ok_and(|md| md.is_file());
    lower_build::place_all(lowers, mappings, &file)
}

/// The tree with the directories above its mappings as the base has them, checked for a
/// directory that would replace a base symlink. A tree kept from the last push whose
/// directories came from another base is walked again.
async fn with_base(
    plan: &PushPlan,
    mut walked: Walked,
    lowers: &[Lower],
    changes: &Changes,
) -> Result<Walked> {
    let file = |m: &Mapping| std::fs::metadata(&m.src).is_ok_and(|md| md.is_file());
    let chain = lower_build::chain(lowers, &walked.mappings, &file)?;
    if !walked.chain.is_empty() && walked.chain != chain {
        let mappings = walked.mappings.clone();
        walked = walk(plan, mappings, None, changes).await?;
    }
    if walked.chain != chain {
        let entries = std::sync::Arc::make_mut(&mut walked.entries);
        tree::with_chain(entries, &chain);
        walked.chain = chain;
    }
    lower_build::check_links(lowers, &walked.entries)?;
    Ok(walked)
}

/// The working directory the mappings land relative to: the base's — the same on every
/// platform, or it cannot be chosen for them.
fn working_dir(bases: &[(Descriptor, Base)]) -> Result<Option<String>> {
    let dirs: Vec<Option<&str>> = bases.iter().map(|(_, b)| b.working_dir()).collect();
    if dirs.windows(2).any(|w| w[0] != w[1]) {
        return Err(Error::usage(
            "the base's platforms have different working directories: give --workdir, or an \
             absolute DEST to every mapping",
        ));
    }
    Ok(dirs.first().copied().flatten().map(str::to_string))
}

/// Walks the (placed) `mappings` — or, given the last walk of the same mappings and the paths
/// that changed since, looks at those paths only.
async fn walk(
    plan: &PushPlan,
    mappings: Vec<Mapping>,
    last: Option<Walked>,
    changes: &Changes,
) -> Result<Walked> {
    for m in &mappings {
        entry::confined(&m.src, plan.confined.as_deref())?;
    }
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
                            hashed: Default::default(),
                            chain: last.chain,
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
            hashed: Default::default(),
            chain: Vec::new(),
        })
    })
    .await
}
