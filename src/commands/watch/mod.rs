//! `watch`: a push whenever the sources change, for one image or every image of a project.
//!
//! File events say which paths changed, and only those are read again (`tree::update`): an
//! edit costs what it changed, not a walk of the tree. Events can be lost — an overflowed
//! queue, a watch error — and then the tree is walked whole; a verifying walk also runs now and
//! then, off the edit path, so a missed event is caught rather than trusted forever. A burst of
//! events (a save, a `git checkout`) is one push, started once the sources have been still for
//! the debounce; pushes of one image never overlap, and a change during a push gives one more
//! after it. Each image has its own loop; they share connections, logins and `--jobs`.

mod deps;
mod memory;
mod rebuild;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::build::entry::Own;
use crate::commands::push::{self, PushPlan, Session};
use crate::commands::sync::Deployer;
use crate::commands::Told;
use crate::error::{Error, Result};
use memory::Memory;
use rebuild::{Builder, Gathered};

/// Checks `build-deps` patterns.
pub fn build_deps(patterns: &[String]) -> Result<()> {
    deps::globs(patterns).map(|_| ())
}

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
    /// These edits are the build's inputs: it runs again.
    Build(Vec<PathBuf>),
    /// Events were lost: walk the whole tree.
    Rescan,
}

/// One image being watched.
struct Watched {
    plan: WatchPlan,
    /// Its sources, symlinks resolved, as events name them.
    sources: Vec<PathBuf>,
    /// With a build: what re-runs it.
    deps: Option<deps::Deps>,
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
        let sources: Vec<PathBuf> = plan
            .push
            .mappings
            .iter()
            // A per-platform SRC: the directory its platforms' sources share. Absolute, so
            // that events name absolute paths, comparable with layerup's own.
            .map(|m| absolute(&m.fixed_part()))
            .collect();
        let deps = match &plan.push.build {
            Some(step) => Some(deps::Deps::new(step, &sources)?),
            None => None,
        };
        // The build's directories first: sources inside them need no watch of their own.
        let roots = match (&deps, &plan.push.build) {
            (Some(d), Some(step)) => d.roots(step),
            _ => Vec::new(),
        };
        for dir in roots.iter().chain(&sources) {
            if !self.watching.iter().any(|w| dir.starts_with(w)) {
                self.watcher
                    .watch(dir, RecursiveMode::Recursive)
                    .map_err(|e| Error::input(format!("cannot watch `{}`: {e}", dir.display())))?;
                self.watching.insert(dir.clone());
            }
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
                deps,
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
        // Nor is a write of layerup's own (its state, temporary files, the --ref-file).
        let theirs = || {
            event
                .paths
                .iter()
                .filter(|p| !i.own.iter().any(|o| o.covers(p)))
        };
        let inputs: Vec<PathBuf> = match &i.deps {
            Some(d) => theirs().filter(|p| d.matches(p)).cloned().collect(),
            None => Vec::new(),
        };
        let paths: Vec<PathBuf> = theirs()
            .filter(|p| i.sources.iter().any(|s| p.starts_with(s)))
            .cloned()
            .collect();
        let msgs = [(!inputs.is_empty()).then_some(Msg::Build(inputs))]
            .into_iter()
            .chain([(!paths.is_empty()).then_some(Msg::Paths(paths))])
            .flatten();
        for msg in msgs {
            send(i, msg);
        }
    }
}

/// Sends `msg` to an image's loop; when its queue is full, the events are lost and a whole
/// walk is asked for instead.
fn send(i: &Watched, msg: Msg) {
    if let Err(mpsc::error::TrySendError::Full(_)) = i.tx.try_send(msg) {
        // The queue overflowed: these events are lost, and the loop will walk in full (and
        // build again); the Rescan goes in as soon as there is room.
        let tx = i.tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(Msg::Rescan).await;
        });
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
    // After the first push, the watch runs the build itself, when its inputs change.
    let unbuilt = &PushPlan {
        build: None,
        ..push_plan.clone()
    };
    let mut builder = push_plan
        .build
        .as_ref()
        .map(|step| Builder::new(step, push_plan, session.builds.clone()));
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
    let mut gathered = Gathered::all();
    let mut next_verify = Instant::now() + plan.verify;
    // When the build inside the last push ended: its outputs' events are not edits.
    let built_at = std::sync::Mutex::new(None);
    loop {
        let started = Instant::now();
        let built = match builder.as_mut().filter(|b| b.before_push()) {
            Some(b) => b.build(&mut rx, &mut gathered, plan.debounce, &told).await,
            None => Ok(()),
        };
        let this_plan = match builder.as_ref().is_some_and(Builder::inside_push) {
            true => push_plan,
            false => unbuilt,
        };
        if let Err(e) = built {
            // The last image stays; what changed waits for the next push.
            report(&name, Told::PushFailed(&e));
        } else {
            if let Some(b) = builder.as_mut() {
                b.started();
            }
            let last = memory.take().await;
            let changes = std::mem::replace(&mut gathered, Gathered::none()).changes();
            let told_built = |t: Told| {
                if let Told::Building(crate::commands::build_step::Event::Done(_)) = &t {
                    *built_at.lock().expect("built_at lock") = Some(SystemTime::now());
                }
                told(t)
            };
            match push::run_in(this_plan, &session, Some(last), changes, &told_built).await {
                Ok((pushed, kept)) => {
                    if let Some(kept) = kept {
                        memory.keep(kept);
                    }
                    if let Some(b) = builder.as_mut() {
                        b.pushed(&pushed);
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
        }
        // Events that came during the push are waiting: they start the next one at once.
        let built_at = built_at.lock().expect("built_at lock").take();
        loop {
            let waiting = Waiting {
                name: &name,
                plan: &plan,
                unbuilt,
                memory: &memory,
            };
            let first = waiting
                .next(&mut rx, &mut stop, &mut cluster, &mut next_verify)
                .await;
            let Some(first) = first else {
                if let Some(c) = cluster.as_mut() {
                    c.catch_up(crate::commands::sync::CatchUp::Ending).await;
                }
                memory.settle().await;
                return Ok(());
            };
            gathered.take(first);
            // The debounce: until the sources have been still this long.
            while let Ok(Some(m)) = tokio::time::timeout(plan.debounce, rx.recv()).await {
                gathered.take(m);
            }
            if let Some(at) = built_at {
                gathered.written_before(at);
            }
            let build = builder.as_mut().is_some_and(|b| b.heard(&mut gathered));
            if build || !gathered.is_empty() {
                break;
            }
        }
        if gathered.all {
            tracing::info!("{name}: file events were lost; walking the whole tree");
        }
        tracing::info!("{name}: changes seen; pushing");
    }
}

/// What an image's loop keeps doing while it waits for an edit: the cluster's catching up,
/// and now and then a verifying walk.
struct Waiting<'a> {
    name: &'a str,
    plan: &'a WatchPlan,
    unbuilt: &'a PushPlan,
    memory: &'a Memory,
}

impl Waiting<'_> {
    /// The next message about the sources (a missed change the verifying walk found is a
    /// rescan); `None` when the watch is told to stop.
    async fn next(
        &self,
        rx: &mut mpsc::Receiver<Msg>,
        stop: &mut Stop,
        cluster: &mut Option<Deployer<'_>>,
        next_verify: &mut Instant,
    ) -> Option<Msg> {
        let name = self.name;
        loop {
            let wait = tokio::time::sleep_until((*next_verify).into());
            let settle_at = cluster.as_ref().and_then(|c| c.settle_at());
            let settle = tokio::time::sleep_until(settle_at.unwrap_or(*next_verify).into());
            tokio::select! {
                msg = rx.recv() => return msg,
                _ = stopped(stop) => return None,
                _ = settle, if settle_at.is_some() => {
                    cluster.as_mut().expect("settling").settled().await;
                }
                _ = tokio::time::sleep(RESTART_CHECK), if settle_at.is_some() => {
                    cluster.as_mut().expect("synced").check_containers().await;
                }
                _ = wait => {
                    *next_verify = Instant::now() + self.plan.verify;
                    if let Some(check) = self.memory.verifier(self.unbuilt) {
                        match push::blocking(check).await {
                            Ok(true) => {}
                            Ok(false) => {
                                tracing::info!("{name}: the tree changed without an event; walking it whole");
                                return Some(Msg::Rescan);
                            }
                            Err(e) => tracing::info!("{name}: the verifying walk failed: {e}"),
                        }
                    }
                }
            }
        }
    }
}

/// `path` absolute, its symlinks resolved as far as it exists (a build's output may not yet).
fn absolute(path: &std::path::Path) -> PathBuf {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match crate::build::entry::real_prefix(&path) {
        Some((real, rest)) if rest.as_os_str().is_empty() => real,
        Some((real, rest)) => real.join(rest),
        None => path,
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
