//! A one-shot push with `--journal`: the tree as the last push left it — rebuilt from the
//! state's file index, which holds an entry's every field, so nothing more is read — brought up
//! to date from the paths the sources' change journals name (`commands::journal`), as a push of
//! `watch` is; else walked whole, as always. Beside the state, a small file keeps the journal
//! tokens the index answers to, and what else the walk depended on.

use std::path::{Path, PathBuf};

use crate::build::entry::{Entry, Kind, Mapping, Stat};
use crate::build::index::{Index, RecordKind};
use crate::build::state::{self, State};
use crate::build::tree::Walked;
use crate::commands::journal::{self, Token};
use crate::error::Result;

use super::{own_paths, run_gated, Changes, Kept, Last, PushPlan, Pushed, Session, Told};

/// More changed paths than this: a walk is as cheap.
const MAX_PATHS: usize = 5_000;

/// What a journal's answers apply to, besides the state's index.
#[derive(serde::Serialize, serde::Deserialize)]
struct Cached {
    /// What the walk depends on besides the files: another means walk again.
    settings: String,
    /// The image the state names that goes with these tokens (two pushes to one destination at
    /// once could leave one's state beside the other's tokens).
    image: String,
    tokens: Vec<Token>,
    mappings: Vec<Mapping>,
    chain: Vec<Entry>,
    scanned_at: i64,
}

/// One push as `push_and_deploy` makes it, through the journal where the plan asks for one.
pub(super) async fn one_shot(
    plan: &PushPlan,
    session: &Session,
    gate: impl std::future::Future<Output = Result<()>>,
    told: &(dyn Fn(Told) + Sync),
) -> Result<(Pushed, Option<Kept>)> {
    let roots = roots(plan);
    let (Some(dir), Some(roots)) = (plan.state_dir.clone(), roots) else {
        let (pushed, kept, _) = run_gated(plan, session, None, Changes::All, gate, told).await?;
        return Ok((pushed, kept));
    };
    let state_file = state::path(&dir, &plan.to.to_string());
    let file = state_file.with_extension("journal");
    let settings = settings(plan);
    let (cached, answers) = {
        let (file, settings) = (file.clone(), settings.clone());
        super::blocking(move || {
            let cached = load(&file, &settings, &state_file);
            let answers: Vec<_> = roots
                .iter()
                .enumerate()
                .map(|(i, root)| {
                    let since = cached.as_ref().and_then(|c| c.0.tokens.get(i).copied());
                    journal::ask(&dir, root, since)
                })
                .collect();
            // Used once: a push that fails leaves no tokens to trust.
            let _ = std::fs::remove_file(&file);
            Ok((cached, answers))
        })
        .await?
    };
    let tokens: Option<Vec<Token>> = answers
        .iter()
        .map(|a| a.as_ref().map(|a| a.token))
        .collect();
    let changed: Option<Vec<PathBuf>> = answers
        .into_iter()
        .map(|a| a.and_then(|a| a.changed))
        .collect::<Option<Vec<_>>>()
        .map(|all| all.concat());
    let (walked, remembered, changes) = match (cached, changed) {
        (Some((c, state, entries)), Some(paths)) if paths.len() <= MAX_PATHS => {
            tracing::info!("the change journal names {} paths", paths.len());
            let walked = Walked {
                mappings: c.mappings,
                entries: std::sync::Arc::new(entries),
                scanned_at: c.scanned_at,
                suspects: Vec::new(),
                hashed: Default::default(),
                chain: c.chain,
            };
            (Some(walked), Some(state), Changes::Paths(paths))
        }
        _ => {
            tracing::info!("no usable change journal: walking the tree");
            (None, None, Changes::All)
        }
    };
    let last = Last {
        walked,
        state: remembered,
        stage: true,
        ..Last::default()
    };
    // The state is written as the push runs; the tokens go beside it once it is in place.
    let (pushed, _, walked) = run_gated(plan, session, Some(last), changes, gate, told).await?;
    if let Some(tokens) = tokens {
        let image = pushed.digest.to_string();
        save(&file, Cached::new(settings, image, tokens, &walked));
    }
    Ok((pushed, None))
}

/// The directories the journal watches: every mapping's source, when each is a directory and
/// nothing makes the files during the push (a build's outputs come after the journal's answer).
fn roots(plan: &PushPlan) -> Option<Vec<PathBuf>> {
    if !plan.journal || plan.build.is_some() {
        return None;
    }
    plan.mappings
        .iter()
        .map(|m| {
            let src = std::fs::canonicalize(&m.src).ok()?;
            (src.is_dir() && !m.per_platform()).then_some(src)
        })
        .collect()
}

fn settings(plan: &PushPlan) -> String {
    format!(
        "{:?} {:?} {:?} {:?}",
        plan.mappings,
        plan.owner,
        plan.ignore,
        own_paths(plan)
    )
}

/// The tokens and settings kept, the state, and the entries its index says the tree held.
fn load(
    file: &Path,
    settings: &str,
    state_file: &Path,
) -> Option<(Cached, Box<State>, Vec<Entry>)> {
    let bytes = std::fs::read(file).ok()?;
    let cached: Cached = serde_json::from_slice(&bytes).ok()?;
    if cached.settings != settings {
        return None;
    }
    let state::Loaded::Found(state) = state::load(state_file) else {
        return None;
    };
    if state.image.to_string() != cached.image {
        return None;
    }
    let entries = entries(&state.index, &cached.mappings)?;
    Some((cached, state, entries))
}

/// The entries the index's records were made from (`Record::of`): a file's source is its
/// mapping's, joined with its path below the mapping's DEST. `None` for what a record cannot
/// say exactly: a hardlink, a link target that was not UTF-8, a file outside every mapping.
fn entries(index: &Index, mappings: &[Mapping]) -> Option<Vec<Entry>> {
    let dests: Vec<(&str, &Mapping)> = mappings
        .iter()
        .map(|m| (m.dest.trim_start_matches('/'), m))
        .collect();
    index
        .files
        .iter()
        .map(|(path, r)| {
            let kind = match r.kind {
                RecordKind::Dir => Kind::Dir,
                RecordKind::Hardlink => return None,
                RecordKind::Symlink => {
                    let to = r.to.as_ref()?;
                    if to.contains('\u{FFFD}') {
                        return None;
                    }
                    Kind::Symlink { target: to.into() }
                }
                RecordKind::File => {
                    // The deepest mapping holding it (nested ones make `tree::update` walk).
                    let (rel, m) = dests
                        .iter()
                        .filter_map(|(d, m)| match *d {
                            "" => Some((path.as_str(), *m)),
                            d => Some((path.strip_prefix(d)?.strip_prefix('/')?, *m)),
                        })
                        .min_by_key(|(rel, _)| rel.len())?;
                    Kind::File {
                        src: m.src.join(rel),
                        size: r.size,
                        stat: Stat {
                            mtime_ns: r.mtime,
                            ctime_ns: r.ctime,
                            ino: r.ino,
                            dev: r.dev,
                        },
                    }
                }
            };
            Some(Entry {
                path: path.clone(),
                kind,
                mode: r.mode,
                uid: r.uid,
                gid: r.gid,
            })
        })
        .collect()
}

impl Cached {
    fn new(settings: String, image: String, tokens: Vec<Token>, walked: &Walked) -> Cached {
        Cached {
            settings,
            image,
            tokens,
            mappings: walked.mappings.clone(),
            chain: walked.chain.clone(),
            scanned_at: walked.scanned_at,
        }
    }
}

fn save(file: &Path, cached: Cached) {
    // A failure only costs the next push a walk.
    if let Ok(bytes) = serde_json::to_vec(&cached) {
        let tmp = file.with_extension(format!("journal.{}.tmp", std::process::id()));
        if std::fs::write(&tmp, bytes).is_ok() {
            let _ = std::fs::rename(&tmp, file);
        }
    }
}
