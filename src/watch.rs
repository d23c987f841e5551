//! `layerup watch`: a push whenever the sources change — bursts of events coalesced into one
//! push, never two pushes at once, a change during a push answered by one more push after it.

use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::deploy::Event;
use crate::error::{Error, Result};
use crate::{push, PushPlan, Pushed};

/// One push of the loop, as it ended.
pub struct Cycle {
    pub result: Result<Pushed>,
    pub took: Duration,
}

/// What the loop tells as it goes.
pub enum Told<'a> {
    Pushed(Box<Cycle>),
    /// With `--deploy`: the deploy step after a push.
    Deploy(Event<'a>),
    DeployFailed(Error),
}

/// Pushes once, then again after every change to the sources, until the future is dropped
/// (Ctrl-C). `quiet` is how long the sources must stay still before a push starts: editors and
/// `git checkout` write in bursts. Every finished push, good or failed, goes to `report`; a
/// failed push does not end the loop. With `--deploy`, each push that worked is deployed before
/// the next one starts.
pub async fn watch(plan: &PushPlan, quiet: Duration, mut report: impl FnMut(Told)) -> Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Reading a file (layerup's own push does) is not a change.
        let relevant = match event {
            Ok(e) => !matches!(e.kind, EventKind::Access(_)),
            // An overflowed queue lost events: treat it as a change, the delta finds which.
            Err(_) => true,
        };
        if relevant {
            let _ = tx.send(());
        }
    })
    .map_err(|e| Error::internal(format!("cannot watch files: {e}")))?;
    for m in &plan.mappings {
        watcher
            .watch(&m.src, RecursiveMode::Recursive)
            .map_err(|e| Error::input(format!("cannot watch `{}`: {e}", m.src.display())))?;
    }
    loop {
        let started = Instant::now();
        let result = push(plan).await;
        let reference = result.as_ref().ok().map(|p| p.reference.clone());
        report(Told::Pushed(Box::new(Cycle {
            result,
            took: started.elapsed(),
        })));
        if let (Some(d), Some(r)) = (&plan.deploy, reference) {
            if let Err(e) = d
                .run(&r, &plan.base, &mut |e| report(Told::Deploy(e)))
                .await
            {
                report(Told::DeployFailed(e));
            }
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
