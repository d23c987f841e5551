//! What a push reads before it builds, at once: the base's manifest and config (through an
//! index to each platform); the last push's state, then the destination's answer to "do you
//! still hold its image?"; and the tree — walked whole, or brought up to date from the paths
//! file events named.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use oci_spec::image::Digest;

use super::{blocking, own_paths, Changes, Platforms, PushPlan};
use crate::build::base::{self, Base, BaseIndex};
use crate::build::entry::{self, Mapping};
use crate::build::stack;
use crate::build::state::{self, Loaded, State};
use crate::build::tree::{self, Walked};
use crate::error::{Error, Result};
use crate::oci::manifest::Descriptor;
use crate::oci::platform::Platform;
use crate::store::Store;

/// What the reads found.
pub(super) struct Read {
    /// The base's image for each platform, with its entry in the base's index.
    pub bases: Vec<(Descriptor, Base)>,
    pub index: Option<BaseIndex>,
    /// How long the base took to read.
    pub took: Duration,
    pub last: Loaded,
    /// What the destination's tag names now.
    pub at_tag: Option<Digest>,
    /// The destination still holds the last push's image.
    pub held: bool,
    pub tree: Walked,
    /// The working directory the mappings landed relative to.
    pub workdir: String,
}

/// What a push of a watch starts from besides its plan.
pub(super) struct From {
    pub state: Option<Box<State>>,
    pub walked: Option<Walked>,
    pub logged_in: bool,
}

/// Reads all a push needs before it builds. When every mapping has an absolute DEST (or
/// `--workdir` is given), the walk does not depend on the base and runs beside its reads.
pub(super) async fn read(
    plan: &PushPlan,
    source: &Store,
    dest: &Store,
    state_file: Option<PathBuf>,
    from: From,
    changes: &Changes,
) -> Result<Read> {
    let From {
        state: remembered,
        walked: last_walk,
        logged_in,
    } = from;
    let fetch_base = async {
        let started = Instant::now();
        if !logged_in {
            source.login(false, None).await?;
        }
        let bases = match &plan.platforms {
            None => {
                let base = base::resolve(source, &plan.platform, plan.platform_asked).await?;
                let entry = Descriptor::new("", base.digest.clone(), 0);
                (vec![(entry, base)], None)
            }
            Some(Platforms::All) => base::resolve_many(source, None).await?,
            Some(Platforms::These(p)) => base::resolve_many(source, Some(p)).await?,
        };
        Ok::<_, Error>((bases, started.elapsed()))
    };
    let check_dest = async {
        // Read with --full too: what the last push's deltas hid stays hidden.
        let load = async {
            match remembered {
                Some(s) => Ok(Loaded::Found(s)),
                _ => {
                    blocking(move || Ok(state_file.map_or(Loaded::Missing, |f| state::load(&f))))
                        .await
                }
            }
        };
        let login = async {
            if logged_in {
                return Ok(());
            }
            dest.login(true, Some(source)).await
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
    let (((bases, index), took), (last, at_tag, held), tree, base_workdir) = if needs_base {
        let ((bases, took), dest) = tokio::try_join!(fetch_base, check_dest)?;
        let workdir = working_dir(&bases.0)?;
        let walked = walk(plan, workdir.as_deref(), last_walk, changes).await?;
        ((bases, took), dest, walked, workdir)
    } else {
        let (bases, dest, walked) =
            tokio::try_join!(fetch_base, check_dest, walk(plan, None, last_walk, changes))?;
        (bases, dest, walked, None)
    };
    if let Some((_, b)) = bases
        .iter()
        .find(|(_, b)| Platform::of_config(&b.config).is_some_and(|p| p.os != "linux"))
    {
        return Err(Error::image(format!(
            "base image `{}` is a {} image: layerup adds Linux layers, which it cannot take",
            b.name,
            Platform::of_config(&b.config).map_or_else(String::new, |p| p.os)
        )));
    }
    let workdir = plan
        .tweaks
        .workdir
        .clone()
        .or(base_workdir)
        .unwrap_or_else(|| "/".into());
    Ok(Read {
        bases,
        index,
        took,
        last,
        at_tag,
        held,
        tree,
        workdir,
    })
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
