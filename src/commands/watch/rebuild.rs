//! A watched image's build: run again when its inputs change (never two at once; an edit
//! during a build runs it once more), its outputs' events gathered for the push that follows,
//! and the files a build writes among its own inputs recognised as its own, not as edits.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, Semaphore};

use super::Msg;
use crate::commands::build_step::BuildStep;
use crate::commands::push::{Changes, PushPlan, Pushed};
use crate::commands::Told;
use crate::error::Result;
use crate::oci::platform::Platform;

/// Builds in a row started only by inputs that changed during the last build: past this,
/// the build is taken to change its own inputs, and waits for the next edit.
const MAX_ROUNDS: usize = 3;

/// What the file events since the last push said.
pub(super) struct Gathered {
    pub paths: BTreeSet<PathBuf>,
    /// Events were lost: walk the whole tree (and build again).
    pub all: bool,
    /// The build's inputs that changed.
    pub inputs: BTreeSet<PathBuf>,
}

impl Gathered {
    /// Before the first push: everything.
    pub fn all() -> Gathered {
        Gathered {
            paths: BTreeSet::new(),
            all: true,
            inputs: BTreeSet::new(),
        }
    }

    pub fn none() -> Gathered {
        Gathered {
            all: false,
            ..Gathered::all()
        }
    }

    pub fn take(&mut self, m: Msg) {
        match m {
            Msg::Paths(p) => self.paths.extend(p),
            Msg::Build(p) => self.inputs.extend(p),
            Msg::Rescan => self.all = true,
        }
    }

    pub fn is_empty(&self) -> bool {
        !self.all && self.paths.is_empty() && self.inputs.is_empty()
    }

    /// Leaves out the paths last written before `at` (when a build ended): the push that ran
    /// the build read them after.
    pub fn written_before(&mut self, at: SystemTime) {
        let later = |p: &PathBuf| {
            std::fs::symlink_metadata(p)
                .and_then(|m| m.modified())
                .map_or(true, |m| m > at)
        };
        self.paths.retain(later);
        self.inputs.retain(later);
    }

    pub fn changes(&self) -> Changes {
        if self.all {
            Changes::All
        } else {
            Changes::Paths(self.paths.iter().cloned().collect())
        }
    }
}

/// One image's build under watch.
pub(super) struct Builder {
    step: BuildStep,
    per_platform: bool,
    default: Platform,
    /// The platforms of the last push, which the build runs for; `None` until a push went
    /// through (the build then runs inside the push, which finds them).
    targets: Option<Vec<Platform>>,
    due: bool,
    /// The inputs that changed while the last build ran: a path that changes during two
    /// builds in a row is the build's own.
    wrote: BTreeSet<PathBuf>,
    /// Inputs the build itself writes: not edits.
    ignored: BTreeSet<PathBuf>,
    /// Permits shared by the images' builds (`--jobs`).
    permits: Arc<Semaphore>,
}

impl Builder {
    pub fn new(step: &BuildStep, plan: &PushPlan, permits: Arc<Semaphore>) -> Builder {
        Builder {
            step: step.clone(),
            per_platform: plan.mappings.iter().any(|m| m.per_platform()),
            default: plan.platform.clone(),
            targets: None,
            due: true,
            wrote: BTreeSet::new(),
            ignored: BTreeSet::new(),
            permits,
        }
    }

    /// The next push must build, and does it itself (no push went through yet).
    pub fn inside_push(&self) -> bool {
        self.due && self.targets.is_none()
    }

    /// The build runs before the next push, in the watch.
    pub fn before_push(&self) -> bool {
        self.due && self.targets.is_some()
    }

    /// A push started: what was due is being done (by it, when [`Builder::inside_push`]).
    pub fn started(&mut self) {
        self.due = false;
    }

    /// A push went through: the build runs for its platforms from now on.
    pub fn pushed(&mut self, p: &Pushed) {
        self.targets = Some(if p.platforms.is_empty() {
            vec![self.default.clone()]
        } else {
            p.platforms.iter().map(|(p, _)| p.clone()).collect()
        });
    }

    /// The events gathered for the next push: a changed input, or lost events, make a build due
    /// (said).
    pub fn heard(&mut self, g: &mut Gathered) -> bool {
        g.inputs.retain(|p| !self.ignored.contains(p));
        if !g.inputs.is_empty() || g.all {
            self.due = true;
            self.wrote.clear();
        }
        g.inputs.clear();
        self.due
    }

    /// Runs the build until no input changed during it (an edit made while it ran is built
    /// once more), gathering the events of its outputs into `g` for the push. A failed build is
    /// returned; the events it gathered stay in `g` for the next push.
    pub async fn build(
        &mut self,
        rx: &mut mpsc::Receiver<Msg>,
        g: &mut Gathered,
        debounce: Duration,
        told: &(dyn Fn(Told) + Sync),
    ) -> Result<()> {
        let targets = self
            .targets
            .clone()
            .unwrap_or_else(|| vec![self.default.clone()]);
        let building = |e: crate::commands::build_step::Event| told(Told::Building(e));
        for round in 1.. {
            self.due = false;
            let _permit = self.permits.acquire().await;
            let run = self.step.run(&targets, self.per_platform, &building);
            tokio::pin!(run);
            let done = loop {
                tokio::select! {
                    done = &mut run => break done,
                    Some(m) = rx.recv() => g.take(m),
                }
            };
            done?;
            // Its outputs' last events.
            while let Ok(Some(m)) = tokio::time::timeout(debounce, rx.recv()).await {
                g.take(m);
            }
            let fresh: BTreeSet<PathBuf> = std::mem::take(&mut g.inputs)
                .into_iter()
                .filter(|p| !self.ignored.contains(p))
                .collect();
            if fresh.is_empty() {
                return Ok(());
            }
            if fresh.is_subset(&self.wrote) {
                tracing::warn!(
                    "the build writes {} among its own inputs: not taken as edits from now on \
                     (say what it reads with build-deps)",
                    names(&fresh)
                );
                self.ignored.extend(fresh);
                return Ok(());
            }
            if round >= MAX_ROUNDS {
                tracing::warn!(
                    "the build keeps changing its own inputs ({}): waiting for the next edit \
                     (say what it reads with build-deps)",
                    names(&fresh)
                );
                return Ok(());
            }
            self.wrote = fresh;
        }
        Ok(())
    }
}

/// Up to three paths, for a message.
fn names(paths: &BTreeSet<PathBuf>) -> String {
    let mut out: Vec<String> = paths
        .iter()
        .take(3)
        .map(|p| format!("`{}`", crate::error::escape(&p.display().to_string())))
        .collect();
    if paths.len() > 3 {
        out.push(format!("{} more", paths.len() - 3));
    }
    out.join(", ")
}
