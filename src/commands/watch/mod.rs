//! `watch`: a push whenever the sources change, for one image or every image of a project.
//!
//! File events say which paths changed, and only those are read again (`tree::update`): an
//! edit costs what it changed, not a walk of the tree. Events can be lost — an overflowed
//! queue, a watch error — and then the tree is walked whole; a verifying walk also runs now and
//! then, off the edit path, so a missed event is caught rather than trusted forever. A burst of
//! events (a save, a `git checkout`) is one push, started once the sources have been still for
//! the debounce; pushes of one image never overlap, and a change during a push gives one more
//! after it. Each image has its own loop; they share connections, logins and `--jobs`.

mod memory;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::build::entry::Own;
use crate::commands::push::{self, Changes, PushPlan, Session};
use crate::commands::sync::Deployer;
use crate::commands::Told;
use crate::error::{Error, Result};
use memory::Memory;

/// A validated `layerup watch`.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchPlan {
    pub push: PushPlan,
    /// How long the sources must stay still before a push starts.
    pub debounce: Duration,
    /// How often the whole tree is walked to catch a change whose event was lost.
    pub verify: Duration,
    /// File events waiting at most for one image; past that, they are dropped and the next
    /// push walks the whole tree (the queue overflowed).
    pub queue: usize,
    /// `--sync`: live update of the deployed containers.
    pub sync: Option<crate::commands::sync::SyncPlan>,
}

/// What a watch hears about one image: the events it reports, by the image's name (empty for a
/// watch of one image).
pub type Report = Arc<dyn Fn(&str, Told) + Send + Sync>;

/// Finds the project's images again (as the command line did), for a watch that starts the
/// services added while it runs and stops those removed: each one's plan, or why its file or
/// settings give none.
pub type Discover = Box<dyn Fn() -> Result<Vec<(String, Result<WatchPlan>)>> + Send + Sync>;

/// How often the project's files are looked for again.
const DISCOVER_EVERY: Duration = Duration::from_secs(2);

/// Ends a watch gracefully when it says `true`: each image's push in flight finishes, and with
/// `--sync` the templates take the newest image synced. Dropping the watch's future ends it at
/// once.
pub type Stop = tokio::sync::watch::Receiver<bool>;

/// Watches one image, until stopped or the future is dropped.
pub async fn run(
    watch: &WatchPlan,
    stop: Stop,
    report: impl Fn(Told) + Send + Sync + 'static,
) -> Result<()> {
    let report: Report = Arc::new(move |_, t| report(t));
    run_many(vec![(String::new(), Ok(watch.clone()))], None, stop, report).await
}

/// What the router sends one image's loop.
enum Msg {
    Paths(Vec<PathBuf>),
    /// Events were lost: walk the whole tree.
    Rescan,
}

/// One image being watched.
struct Watched {
    plan: WatchPlan,
    /// Its sources, symlinks resolved, as events name them.
    sources: Vec<PathBuf>,
    own: Vec<Own>,
    tx: mpsc::Sender<Msg>,
    task: tokio::task::AbortHandle,
}

/// Watches every image, each pushed once and then after every change to its sources, until the
/// future is dropped. With `discover`, images are looked for again every few seconds: new ones
/// start, removed ones stop, changed ones start over. An image whose file or settings are bad
/// is reported (once, and again only when the error changes) while the others go on; it starts
/// once its file is mended.
pub async fn run_many(
    images: Vec<(String, Result<WatchPlan>)>,
    discover: Option<Discover>,
    mut stop: Stop,
    report: Report,
) -> Result<()> {
    if images.is_empty() || (discover.is_none() && images.iter().all(|(_, p)| p.is_err())) {
        if let Some((_, Err(e))) = images.into_iter().next() {
            return Err(e);
        }
        return Err(Error::usage("there is no image to watch"));
    }
    for (name, w) in images
        .iter()
        .filter_map(|(n, p)| Some((n, p.as_ref().ok()?)))
    {
        if let Some(deploy) = &w.push.deploy {
            deploy.check().await.map_err(|e| named(e, name))?;
        }
    }
    let (events_tx, mut events) = mpsc::unbounded_channel::<notify::Result<notify::Event>>();
    let watcher = notify::recommended_watcher(move |e| {
        let _ = events_tx.send(e);
    })
    .map_err(|e| Error::internal(format!("cannot watch files: {e}")))?;
    let mut w = Watching {
        session: None,
        report,
        watched: Arc::default(),
        loops: JoinSet::new(),
        watcher,
        watching: BTreeSet::new(),
        broken: BTreeMap::new(),
        stop: stop.clone(),
    };
    if discover.is_none() {
        let (name, plan) = images.into_iter().next().expect("one image");
        w.start(&name, plan?)?;
    } else {
        w.found(images);
    }
    let mut look_again = tokio::time::interval(DISCOVER_EVERY);
    look_again.tick().await;
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { return Ok(()) };
                route(event, &w.watched);
            }
            _ = stopped(&mut stop) => {
                // Each loop ends on its own (a push in flight finishes first).
                while let Some(done) = w.loops.join_next().await {
                    if let Ok(Err(e)) = done {
                        return Err(e);
                    }
                }
                return Ok(());
            }
            _ = look_again.tick(), if discover.is_some() => {
                match (discover.as_ref().expect("checked"))() {
                    Ok(found) => w.found(found),
                    Err(e) => w.broke("", e),
                }
            }
            Some(done) = w.loops.join_next() => {
                if let Ok(Err(e)) = done {
                    return Err(e);
                }
            }
        }
    }
}

/// What a watch of several images keeps: the images watched, their loops, the file watcher.
struct Watching {
    /// Connections, logins and `--jobs`, shared by every image; made with the first one.
    session: Option<Arc<Session>>,
    report: Report,
    watched: Arc<std::sync::Mutex<BTreeMap<String, Watched>>>,
    loops: JoinSet<Result<()>>,
    watcher: notify::RecommendedWatcher,
    /// The directories the file watcher watches.
    watching: BTreeSet<PathBuf>,
    /// Images whose file or settings are bad, and the error last reported for each.
    broken: BTreeMap<String, String>,
    stop: Stop,
}

impl Watching {
    /// The project's images as found (again): new ones start, gone ones stop, changed ones
    /// start over; bad ones are reported.
    fn found(&mut self, found: Vec<(String, Result<WatchPlan>)>) {
        let mut plans: BTreeMap<String, WatchPlan> = BTreeMap::new();
        for (name, plan) in found {
            match plan {
                Ok(p) => {
                    self.broken.remove(&name);
                    plans.insert(name, p);
                }
                Err(e) => self.broke(&name, e),
            }
        }
        let gone: Vec<String> = {
            let w = self.watched.lock().expect("watched lock");
            w.iter()
                .filter(|(n, i)| plans.get(*n) != Some(&i.plan))
                .map(|(n, _)| n.clone())
                .collect()
        };
        for name in gone {
            if let Some(i) = self.watched.lock().expect("watched lock").remove(&name) {
                i.task.abort();
                if !plans.contains_key(&name) && !self.broken.contains_key(&name) {
                    (self.report)(&name, Told::Stopped);
                }
            }
        }
        let new: Vec<String> = {
            let w = self.watched.lock().expect("watched lock");
            plans
                .keys()
                .filter(|n| !w.contains_key(*n))
                .cloned()
                .collect()
        };
        for name in new {
            let plan = plans.remove(&name).expect("found");
            if let Err(e) = self.start(&name, plan) {
                (self.report)(&name, Told::PushFailed(&e));
            }
        }
    }

    /// `name`'s file or settings are bad: said once, and again only when the error changes.
    fn broke(&mut self, name: &str, e: Error) {
        let text = e.to_string();
        if self.broken.get(name) != Some(&text) {
            (self.report)(name, Told::PushFailed(&e));
            self.broken.insert(name.to_string(), text);
        }
    }

    /// Starts watching one image: its sources join the watcher, and its loop starts.
    fn start(&mut self, name: &str, plan: WatchPlan) -> Result<()> {
        let session = match &self.session {
            Some(s) => s.clone(),
            None => {
                let s = Arc::new(Session::new(plan.push.net, plan.push.jobs)?);
                self.session = Some(s.clone());
                s
            }
        };
        let mut sources = Vec::new();
        for m in &plan.push.mappings {
            // A per-platform SRC: the directory its platforms' sources share.
            let src = m.fixed_part();
            // Absolute, so that events name absolute paths, comparable with layerup's own.
            let src = std::fs::canonicalize(&src).unwrap_or(src);
            if !self.watching.iter().any(|w| src.starts_with(w)) {
                self.watcher
                    .watch(&src, RecursiveMode::Recursive)
                    .map_err(|e| Error::input(format!("cannot watch `{}`: {e}", src.display())))?;
                self.watching.insert(src.clone());
            }
            sources.push(src);
        }
        let (tx, rx) = mpsc::channel(plan.queue.max(1));
        let task = self.loops.spawn(image_loop(
            name.to_string(),
            plan.clone(),
            session,
            self.report.clone(),
            rx,
            self.stop.clone(),
        ));
        let own = push::own_paths(&plan.push);
        self.watched.lock().expect("watched lock").insert(
            name.to_string(),
            Watched {
                plan,
                sources,
                own,
                tx,
                task,
            },
        );
        Ok(())
    }
}

/// Sends an event's paths to the images whose sources hold them. A lost event (an error, a
/// rescan hint, a full queue) means a whole walk for the images it may concern.
fn route(
    event: notify::Result<notify::Event>,
    watched: &std::sync::Mutex<BTreeMap<String, Watched>>,
) {
    let w = watched.lock().expect("watched lock");
    let event = match event {
        Ok(e) if !e.need_rescan() => e,
        // An overflowed kernel queue or a broken watch: anything may have changed.
        _ => {
            for i in w.values() {
                let _ = i.tx.try_send(Msg::Rescan);
            }
            return;
        }
    };
    // Reading a file (layerup's own push does) is not a change.
    if matches!(event.kind, EventKind::Access(_)) {
        return;
    }
    for i in w.values() {
        let paths: Vec<PathBuf> = event
            .paths
            .iter()
            .filter(|p| i.sources.iter().any(|s| p.starts_with(s)))
            // Nor is a write of layerup's own (its state, temporary files, the --ref-file).
            .filter(|p| !i.own.iter().any(|o| o.covers(p)))
            .cloned()
            .collect();
        if paths.is_empty() {
            continue;
        }
        if let Err(mpsc::error::TrySendError::Full(_)) = i.tx.try_send(Msg::Paths(paths)) {
            // The queue overflowed: these events are lost, and the loop will walk in full
            // (the Rescan goes in as soon as there is room; a full queue ends in one anyway).
            let tx = i.tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(Msg::Rescan).await;
            });
        }
    }
}

/// One image: push, then wait for changes, gather them for the debounce, push again. With
/// `--sync`, edits go into the running containers, and the template follows when they settle,
/// when a synced container restarts, and when the watch is stopped.
async fn image_loop(
    name: String,
    plan: WatchPlan,
    session: Arc<Session>,
    report: Report,
    mut rx: mpsc::Receiver<Msg>,
    mut stop: Stop,
) -> Result<()> {
    let push_plan = &push::for_cluster(&plan.push).await;
    let mut memory = Memory::default();
    memory.keep_delta = plan.sync.is_some();
    let told = {
        let (name, report) = (name.clone(), report.clone());
        move |t: Told| report(&name, t)
    };
    let mut cluster = push_plan
        .deploy
        .as_ref()
        .map(|d| Deployer::new(d, &push_plan.base, plan.sync.as_ref(), &told));
    let mut changes = Changes::All;
    let mut next_verify = Instant::now() + plan.verify;
    loop {
        let started = Instant::now();
        let last = memory.take().await;
        match push::run_in(push_plan, &session, Some(last), changes).await {
            Ok((pushed, kept)) => {
                if let Some(kept) = kept {
                    memory.keep(kept);
                }
                report(&name, Told::Pushed(&pushed, started.elapsed()));
                if let Some(c) = cluster.as_mut() {
                    c.pushed(&pushed).await;
                }
            }
            Err(e) => {
                // Whatever the failure left of the tree as walked is not to be trusted.
                memory.forget_tree();
                report(&name, Told::PushFailed(&e));
            }
        }
        // Events that came during the push are waiting: they start the next one at once.
        let first = loop {
            let wait = tokio::time::sleep_until(next_verify.into());
            let settle_at = cluster.as_ref().and_then(|c| c.settle_at());
            let settle = tokio::time::sleep_until(settle_at.unwrap_or(next_verify).into());
            tokio::select! {
                msg = rx.recv() => break msg,
                _ = stopped(&mut stop) => break None,
                _ = settle, if settle_at.is_some() => {
                    cluster.as_mut().expect("settling").settled().await;
                }
                _ = tokio::time::sleep(RESTART_CHECK), if settle_at.is_some() => {
                    cluster.as_mut().expect("synced").check_containers().await;
                }
                _ = wait => {
                    next_verify = Instant::now() + plan.verify;
                    if let Some(check) = memory.verifier(push_plan) {
                        match push::blocking(check).await {
                            Ok(true) => {}
                            Ok(false) => {
                                tracing::info!("{name}: the tree changed without an event; walking it whole");
                                break Some(Msg::Rescan);
                            }
                            Err(e) => tracing::info!("{name}: the verifying walk failed: {e}"),
                        }
                    }
                }
            }
        };
        let Some(first) = first else {
            if let Some(c) = cluster.as_mut() {
                c.catch_up(crate::commands::sync::CatchUp::Ending).await;
            }
            memory.settle().await;
            return Ok(());
        };
        let mut paths: BTreeSet<PathBuf> = BTreeSet::new();
        let mut all = false;
        let mut take = |m: Msg| match m {
            Msg::Paths(p) => paths.extend(p),
            Msg::Rescan => all = true,
        };
        take(first);
        // The debounce: until the sources have been still this long.
        while let Ok(Some(m)) = tokio::time::timeout(plan.debounce, rx.recv()).await {
            take(m);
        }
        changes = if all {
            tracing::info!("{name}: file events were lost; walking the whole tree");
            Changes::All
        } else {
            Changes::Paths(paths.into_iter().collect())
        };
        tracing::info!("{name}: changes seen; pushing");
    }
}

/// Returns once the watch is told to stop; never if it cannot be.
async fn stopped(stop: &mut Stop) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// How often synced containers are looked at for a restart, while the template is behind.
const RESTART_CHECK: Duration = Duration::from_secs(1);

fn named(e: Error, name: &str) -> Error {
    if name.is_empty() {
        e
    } else {
        e.context(format!("image {name}"))
    }
}
