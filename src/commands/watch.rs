//! `watch`: a push whenever the sources change — bursts of events coalesced into one push,
//! never two pushes at once, a change during a push answered by one more push after it.

use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::commands::push::{self, PushPlan};
use crate::commands::Told;
use crate::error::{Error, Result};

/// A validated `layerup watch`.
#[derive(Debug, Clone)]
pub struct WatchPlan {
    pub push: PushPlan,
    /// How long the sources must stay still before a push starts.
    pub debounce: Duration,
}

/// Pushes once, then again after every change to the sources, until the future is dropped
/// (Ctrl-C). The debounce is how long the sources must stay still before a push starts: editors and
/// `git checkout` write in bursts. Every finished push, good or failed, goes to `report`; a
/// failed push does not end the loop. With `--deploy`, each push that worked is deployed before
/// the next one starts.
pub async fn run(watch: &WatchPlan, mut report: impl FnMut(Told)) -> Result<()> {
    let (plan, quiet) = (&watch.push, watch.debounce);
    if let Some(deploy) = &plan.deploy {
        deploy.check().await?;
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let own = push::own_paths(plan);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Reading a file (layerup's own push does) is not a change, nor is a write of layerup's
        // own (its state, its temporary files, the --ref-file).
        let relevant = match event {
            Ok(e) => {
                !matches!(e.kind, EventKind::Access(_))
                    && (e.paths.is_empty()
                        || !e.paths.iter().all(|p| own.iter().any(|o| o.covers(p))))
            }
            // An overflowed queue lost events: treat it as a change, the delta finds which.
            Err(_) => true,
        };
        if relevant {
            let _ = tx.send(());
        }
    })
    .map_err(|e| Error::internal(format!("cannot watch files: {e}")))?;
    for m in &plan.mappings {
        // Absolute, so that events name absolute paths, comparable with layerup's own.
        let src = std::fs::canonicalize(&m.src).unwrap_or_else(|_| m.src.clone());
        watcher
            .watch(&src, RecursiveMode::Recursive)
            .map_err(|e| Error::input(format!("cannot watch `{}`: {e}", m.src.display())))?;
    }
    loop {
        let started = Instant::now();
        match push::run(plan).await {
            Ok(pushed) => {
                report(Told::Pushed(&pushed, started.elapsed()));
                if let Some(d) = &plan.deploy {
                    let deployed = d
                        .run(&pushed.reference, &plan.base, &mut |e| {
                            report(Told::Deploy(e))
                        })
                        .await;
                    if let Err(e) = deployed {
                        report(Told::DeployFailed(&e));
                    }
                }
            }
            Err(e) => report(Told::PushFailed(&e)),
        }
        // Events that came during the push are waiting: they start the next one at once.
        if rx.recv().await.is_none() {
            return Ok(());
        }
        settle(&mut rx, quiet).await;
        tracing::info!("changes seen; pushing");
    }
}

/// Waits until no event has come for `quiet`, swallowing those that do.
async fn settle(rx: &mut mpsc::UnboundedReceiver<()>, quiet: Duration) {
    while let Ok(Some(())) = tokio::time::timeout(quiet, rx.recv()).await {}
}
