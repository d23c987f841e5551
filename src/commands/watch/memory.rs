//! One image's memory between the pushes of a watch: the tree as last walked and the state as
//! last pushed, kept in memory so that an edit costs what changed — not a walk of the tree and
//! a read of its file index — and the state written to its file after each push is reported.

use crate::build::state::State;
use crate::build::tree::{self, Walked};
use crate::commands::push::{self, Kept, Last, PushPlan};
use crate::error::Result;

#[derive(Default)]
pub(super) struct Memory {
    walked: Option<Walked>,
    state: Option<Box<State>>,
    logged_in: bool,
    /// The state being written after the last push; it comes back when written.
    saving: Option<tokio::task::JoinHandle<Box<State>>>,
    /// Keep each push's delta (`watch --sync` applies it).
    pub keep_delta: bool,
}

impl Memory {
    /// What the next push starts from; taken out of memory (a push that fails leaves nothing
    /// to trust: the next one reads the state file and walks the tree).
    pub async fn take(&mut self) -> Last {
        if let Some(s) = self.saving.take() {
            self.state = s.await.ok();
        }
        Last {
            walked: self.walked.take(),
            state: self.state.take(),
            logged_in: self.logged_in,
            keep_delta: self.keep_delta,
            stage: false,
        }
    }

    /// What a push left: kept for the next, its state written to its file meanwhile.
    pub fn keep(&mut self, kept: Kept) {
        self.walked = Some(kept.walked);
        self.logged_in = true;
        let state = kept.state;
        match kept.save {
            Some(file) => {
                self.saving = Some(tokio::task::spawn_blocking(move || {
                    push::save_state(&file, &state);
                    state
                }))
            }
            None => self.state = Some(state),
        }
    }

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
        let (mappings, entries, chain) = (w.mappings.clone(), w.entries.clone(), w.chain.clone());
        let (owner, ignore, own) = (plan.owner, plan.ignore.clone(), push::own_paths(plan));
        Some(move || {
            let mut now = tree::collect(&mappings, owner, &ignore, &own)?;
            tree::with_chain(&mut now, &chain);
            Ok(now == *entries)
        })
    }
}
