//! Live update (`watch --sync`): each edit's delta — the very layer that is pushed — applied to
//! the running containers of the deployed workloads through `pods/exec`: the paths its
//! whiteouts delete removed, its tar extracted at `/`, then `--then`. The container's files and
//! the pushed image are then the same by construction: the image the pod runs, plus the deltas
//! synced since, is the image pushed. Anything that makes that untrue — a pod not running the
//! last deployed image, a container without `sh` or `tar`, a read-only or forbidden path, an exec
//! refused — is a fallback to a push, a patch and a rollout, and says why.

mod reason;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::cluster::workload::{Workload, WorkloadRef};
use crate::cluster::{Cluster, Ran};
use crate::commands::deploy::{Change, Deploy};
use crate::commands::push::Pushed;
use crate::commands::Told;
use crate::error::{Error, Result};
use crate::oci::reference::ImageRef;
pub use reason::{CatchUp, Fallback};

/// How long one exec (the sync, or `--then`) may take in a container.
const EXEC_LIMIT: Duration = Duration::from_secs(120);
/// The longest script of removals sent as an exec's command (it travels in the request's URL,
/// which API servers cap near 1 MiB once encoded).
const MAX_SCRIPT: usize = 128 << 10;

/// A validated `--sync`.
#[derive(Clone)]
pub struct SyncPlan {
    /// Run in each container after its files are synced (`--then`).
    pub then: Option<String>,
    /// Edits still for this long: the workloads' templates take the newest image.
    pub settle: Duration,
    /// Paths whose change needs a new container, not a sync (`--restart-on`).
    restart_on: globset::GlobSet,
    /// The patterns as given, in `restart_on`'s order, for messages.
    restart_on_text: Vec<String>,
}

impl SyncPlan {
    /// `restart_on`: globs of image paths; one without `/` matches a name at any depth, one with
    /// it the path from the image's root (a leading `/` or not).
    pub fn new(then: Option<String>, settle: Duration, restart_on: &[String]) -> Result<Self> {
        let mut globs = globset::GlobSetBuilder::new();
        for g in restart_on {
            let glob = globset::GlobBuilder::new(g.trim_start_matches('/'))
                .literal_separator(true)
                .build()
                .map_err(|e| Error::usage(format!("--restart-on `{g}`: {e}")))?;
            globs.add(glob);
        }
        Ok(SyncPlan {
            then,
            settle,
            restart_on: globs
                .build()
                .map_err(|e| Error::usage(format!("--restart-on: {e}")))?,
            restart_on_text: restart_on.to_vec(),
        })
    }
}

/// Two plans are the same when given the same: `restart_on` is compiled from `restart_on_text`.
impl PartialEq for SyncPlan {
    fn eq(&self, other: &Self) -> bool {
        self.then == other.then
            && self.settle == other.settle
            && self.restart_on_text == other.restart_on_text
    }
}

/// The plan as given: `restart_on` is compiled from `restart_on_text`.
impl std::fmt::Debug for SyncPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncPlan")
            .field("then", &self.then)
            .field("settle", &self.settle)
            .field("restart_on", &self.restart_on_text)
            .finish()
    }
}

/// What the live update knows between edits: the containers deployed, the image their
/// template names, and whether newer images were synced without it.
pub struct Live {
    /// The containers the deploy step set, and the image it set them to (in-cluster name).
    pub targets: Vec<Change>,
    /// The newest image synced into the containers but not yet in the templates.
    pub behind: Option<String>,
    /// When the last edit was synced.
    pub last_edit: Instant,
    /// (pod, container) → restart count when synced: a restart loses what was synced.
    restarts: BTreeMap<(String, String), i64>,
    cluster: Option<Cluster>,
}

impl Live {
    /// After a deploy step: these containers run this image, and nothing was synced yet.
    pub fn new(targets: Vec<Change>) -> Self {
        Live {
            targets,
            behind: None,
            last_edit: Instant::now(),
            restarts: BTreeMap::new(),
            cluster: None,
        }
    }

    async fn cluster(&mut self, deploy: &Deploy) -> Result<&Cluster> {
        if self.cluster.is_none() {
            self.cluster = Some(Cluster::connect(&deploy.plan.target).await?);
        }
        Ok(self.cluster.as_ref().expect("just connected"))
    }
}

/// One edit synced: to these pods, in this long.
pub struct Synced {
    pub pods: Vec<String>,
    pub took: Duration,
    /// `--then`'s failures, per pod: reported, not a fallback.
    pub then_failed: Vec<(String, String)>,
}

/// The paths of an uncompressed layer (whiteouts included), as it names them.
fn paths(tar: &[u8]) -> std::result::Result<Vec<String>, Fallback> {
    let mut archive = tar::Archive::new(tar);
    let entries = archive
        .entries()
        .map_err(|e| Fallback::DeltaUnreadable(e.to_string()))?;
    entries
        .map(|e| {
            let e = e.map_err(|e| Fallback::DeltaUnreadable(e.to_string()))?;
            let path = e
                .path()
                .map_err(|e| Fallback::DeltaUnreadable(e.to_string()))?;
            Ok(path.to_string_lossy().trim_end_matches('/').to_string())
        })
        .collect()
}

/// Whether an edit may be synced at all: not when it touches a `--restart-on` path.
pub fn restart_needed(plan: &SyncPlan, paths: &[String]) -> Option<Fallback> {
    for p in paths {
        let name = p.rsplit('/').next().unwrap_or(p);
        let real = name.strip_prefix(".wh.").unwrap_or(name);
        let full = match p.rsplit_once('/') {
            Some((dir, _)) => format!("{dir}/{real}"),
            None => real.to_string(),
        };
        let hit = plan
            .restart_on
            .matches(real)
            .into_iter()
            .chain(plan.restart_on.matches(&full))
            .next();
        if let Some(i) = hit {
            let glob = plan.restart_on_text.get(i).map_or("", String::as_str);
            return Some(Fallback::RestartOn {
                path: format!("/{full}"),
                glob: glob.to_string(),
            });
        }
    }
    None
}

/// The script a container runs to apply a layer read from its stdin: what the whiteouts hide
/// goes first, then the tar is extracted at `/`, then the whiteout files it made go too.
fn script(paths: &[String]) -> String {
    let quote = |p: &str| format!("'{}'", p.replace('\'', r"'\''"));
    let mut before = Vec::new();
    let mut after = Vec::new();
    for p in paths {
        let (dir, name) = p.rsplit_once('/').unwrap_or(("", p));
        let Some(hidden) = name.strip_prefix(".wh.") else {
            continue;
        };
        let dir = format!("/{dir}");
        if hidden == ".wh..opq" {
            before.push(format!(
                "[ -d {d} ] && find {d} -mindepth 1 -maxdepth 1 -exec rm -rf -- {{}} +",
                d = quote(&dir)
            ));
        } else {
            before.push(format!(
                "rm -rf -- {}",
                quote(&format!("{}/{hidden}", dir.trim_end_matches('/')))
            ));
        }
        after.push(format!("rm -f -- {}", quote(&format!("/{p}"))));
    }
    let mut lines = vec!["set -e".to_string()];
    lines.extend(before);
    lines.push("tar -xf - -C /".into());
    lines.extend(after);
    lines.join("\n")
}

/// Applies the uncompressed delta `tar` (whose entries are `paths`) to every ready container
/// of the deployed workloads that runs the deployed image, then `--then`. `Err` is why it rolls
/// out instead.
pub async fn sync(
    deploy: &Deploy,
    live: &mut Live,
    plan: &SyncPlan,
    tar: &[u8],
    paths: &[String],
) -> std::result::Result<Synced, Fallback> {
    let started = Instant::now();
    let targets = live.targets.clone();
    let cluster = live
        .cluster(deploy)
        .await
        .map_err(|e| Fallback::Unreachable(format!("the cluster cannot be reached: {e}")))?;
    let pods = pods(cluster, &targets).await?;
    let script = script(paths);
    if script.len() > MAX_SCRIPT {
        return Err(Fallback::TooManyRemovals {
            bytes: script.len(),
        });
    }
    for ((pod, _, _), r) in pods
        .iter()
        .zip(exec_all(cluster, &pods, &script, tar).await)
    {
        let r = r.map_err(|e| match e {
            None => Fallback::Timeout {
                pod: pod.clone(),
                secs: EXEC_LIMIT.as_secs(),
            },
            Some(e) => exec_refused(&e),
        })?;
        if r.code != 0 {
            return Err(failed(pod, &r));
        }
    }
    let mut then_failed = Vec::new();
    if let Some(then) = &plan.then {
        for ((pod, _, _), r) in pods.iter().zip(exec_all(cluster, &pods, then, &[]).await) {
            let why = match r {
                Ok(r) if r.code == 0 => continue,
                Ok(r) => format!("exit {}: {}", r.code, first_line(&r)),
                Err(Some(e)) => e.to_string(),
                Err(None) => format!("did not end in {}s", EXEC_LIMIT.as_secs()),
            };
            then_failed.push((pod.clone(), why));
        }
    }
    live.restarts.extend(
        pods.iter()
            .map(|(pod, container, restarts)| ((pod.clone(), container.clone()), *restarts)),
    );
    live.last_edit = Instant::now();
    Ok(Synced {
        pods: pods.into_iter().map(|(pod, _, _)| pod).collect(),
        took: started.elapsed(),
        then_failed,
    })
}

/// Runs `sh -c script` in each of `pods`' containers at once, `input` on its stdin; each ends
/// in how it ran, or in its error (`None`: it did not end within [`EXEC_LIMIT`]).
async fn exec_all(
    cluster: &Cluster,
    pods: &[(String, String, i64)],
    script: &str,
    input: &[u8],
) -> Vec<std::result::Result<Ran, Option<crate::error::Error>>> {
    let command = vec!["sh".to_string(), "-c".to_string(), script.to_string()];
    let runs = pods.iter().map(|(pod, container, _)| async {
        match tokio::time::timeout(
            EXEC_LIMIT,
            cluster.exec(pod, container, command.clone(), input),
        )
        .await
        {
            Ok(ran) => ran.map_err(Some),
            Err(_) => Err(None),
        }
    });
    futures_util::future::join_all(runs).await
}

/// Why the containers synced no longer hold the synced edits, if they do not: one restarted
/// (its files are its image's again), went, or a new pod joined from the template.
pub async fn lost(deploy: &Deploy, live: &mut Live) -> Result<Option<CatchUp>> {
    let targets = live.targets.clone();
    let known = live.restarts.clone();
    let cluster = live.cluster(deploy).await?;
    let seen = match observe(cluster, &targets).await {
        Ok(seen) => seen,
        Err(why) => return Ok(Some(CatchUp::Unobservable(why))),
    };
    for ((pod, container), was) in &known {
        match seen
            .iter()
            .find(|s| &s.pod == pod && &s.container == container)
        {
            None => return Ok(Some(CatchUp::PodGone { pod: pod.clone() })),
            Some(s) if s.restarts > *was => {
                return Ok(Some(CatchUp::Restarted {
                    pod: pod.clone(),
                    container: container.clone(),
                }))
            }
            Some(_) => {}
        }
    }
    if let Some(s) = seen
        .iter()
        .find(|s| !known.contains_key(&(s.pod.clone(), s.container.clone())))
    {
        return Ok(Some(CatchUp::NewPod { pod: s.pod.clone() }));
    }
    Ok(None)
}

/// One container of a target workload's pods, as the API server shows it.
struct Seen {
    pod: String,
    container: String,
    /// The image its pod's spec names.
    image: String,
    ready: bool,
    restarts: i64,
}

/// The containers of the target workloads' pods (those being deleted aside).
async fn observe(
    cluster: &Cluster,
    targets: &[Change],
) -> std::result::Result<Vec<Seen>, Fallback> {
    let mut out = Vec::new();
    let mut workloads: BTreeMap<String, (WorkloadRef, Vec<&Change>)> = BTreeMap::new();
    for c in targets {
        workloads
            .entry(c.workload.to_string())
            .or_insert_with(|| (c.workload.clone(), Vec::new()))
            .1
            .push(c);
    }
    for (id, changes) in workloads.values() {
        let obj = cluster
            .get(id)
            .await
            .map_err(|e| Fallback::Unreachable(format!("{id} cannot be read: {e}")))?;
        let w = Workload::from_object(id.kind, &obj)
            .map_err(|e| Fallback::Unreachable(format!("{id}: {e}")))?;
        let Some(selector) = &w.selector else {
            return Err(Fallback::Unreachable(format!(
                "{id} selects its pods with expressions layerup does not read"
            )));
        };
        let pods = cluster
            .pods(selector)
            .await
            .map_err(|e| Fallback::Unreachable(format!("the pods of {id} cannot be read: {e}")))?;
        for pod in &pods {
            if !pod["metadata"]["deletionTimestamp"].is_null() {
                continue;
            }
            let name = pod["metadata"]["name"].as_str().unwrap_or("?").to_string();
            for c in changes {
                let status = pod["status"]["containerStatuses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|s| s["name"] == c.container.as_str());
                let image = pod["spec"]["containers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|s| s["name"] == c.container.as_str())
                    .and_then(|s| s["image"].as_str())
                    .unwrap_or("")
                    .to_string();
                out.push(Seen {
                    pod: name.clone(),
                    container: c.container.clone(),
                    image,
                    ready: status.is_some_and(|s| s["ready"] == true),
                    restarts: status.and_then(|s| s["restartCount"].as_i64()).unwrap_or(0),
                });
            }
        }
    }
    Ok(out)
}

/// The containers to sync, with their restart counts: every ready container of the target
/// workloads, each running the image last deployed; or why they cannot all be synced.
async fn pods(
    cluster: &Cluster,
    targets: &[Change],
) -> std::result::Result<Vec<(String, String, i64)>, Fallback> {
    let seen = observe(cluster, targets).await?;
    if seen.is_empty() {
        return Err(Fallback::NoPods);
    }
    let mut out = Vec::new();
    for s in seen {
        let Some(c) = targets.iter().find(|c| c.container == s.container) else {
            continue;
        };
        if s.image != c.to {
            return Err(Fallback::Drifted {
                pod: s.pod,
                runs: s.image,
                deployed: c.to.clone(),
            });
        }
        if !s.ready {
            return Err(Fallback::NotReady {
                pod: s.pod,
                container: s.container,
            });
        }
        out.push((s.pod, s.container, s.restarts));
    }
    Ok(out)
}

/// The cluster side of one image's watch: the deploy step after each push or, with `--sync`
/// and containers known to run the last image, the live update — and the template brought up
/// to the newest image once edits settle, a synced container restarts, or the watch ends.
pub struct Deployer<'a> {
    deploy: &'a Deploy,
    base: &'a ImageRef,
    sync: Option<&'a SyncPlan>,
    /// The containers synced into; `None` until a deploy step sets them, and after one fails.
    live: Option<Live>,
    told: &'a (dyn Fn(Told) + Send + Sync),
}

impl<'a> Deployer<'a> {
    pub fn new(
        deploy: &'a Deploy,
        base: &'a ImageRef,
        sync: Option<&'a SyncPlan>,
        told: &'a (dyn Fn(Told) + Send + Sync),
    ) -> Self {
        Deployer {
            deploy,
            base,
            sync,
            live: None,
            told,
        }
    }

    /// After a push: its delta synced into the containers, or its image set (a rollout).
    pub async fn pushed(&mut self, pushed: &Pushed) {
        if let (Some(plan), Some(live)) = (self.sync, self.live.as_mut()) {
            let why = match &pushed.delta {
                // Its files were not in the delta: the image holds more than the delta says.
                Some(_) if pushed.platform_files_changed => Fallback::PlatformFiles,
                None => match pushed.full_reason() {
                    Some(reason) => Fallback::FullPush(reason.clone()),
                    None => Fallback::NotADelta,
                },
                Some(tar) if tar.is_empty() => return,
                Some(tar) => match paths(tar) {
                    Err(why) => why,
                    Ok(paths) => match restart_needed(plan, &paths) {
                        Some(why) => why,
                        None => match sync(self.deploy, live, plan, tar, &paths).await {
                            Ok(done) => {
                                (self.told)(Told::Synced(&done, &pushed.reference));
                                live.behind = Some(pushed.reference.clone());
                                return;
                            }
                            Err(why) => why,
                        },
                    },
                },
            };
            (self.told)(Told::SyncFallback(&why));
        }
        self.set(&pushed.reference).await;
    }

    /// Sets `reference` in the workloads and waits for the rollout.
    async fn set(&mut self, reference: &str) {
        let told = self.told;
        let set = self
            .deploy
            .run(reference, self.base, &mut |e| told(Told::Deploy(e)))
            .await;
        self.live = match set {
            Ok(changes) => self.sync.map(|_| Live::new(changes)),
            Err(e) => {
                told(Told::DeployFailed(&e));
                None
            }
        };
    }

    /// When the template must take the newest image synced: once edits have been still for
    /// `--settle`. `None`: it has it.
    pub fn settle_at(&self) -> Option<Instant> {
        let live = self.live.as_ref()?;
        live.behind.as_ref()?;
        Some(live.last_edit + self.sync?.settle)
    }

    /// Edits have been still for `--settle`: the template takes the newest image synced.
    pub async fn settled(&mut self) {
        let still = self.sync.map_or(Duration::ZERO, |s| s.settle);
        self.catch_up(CatchUp::Settled(still)).await;
    }

    /// The template takes the newest image synced, if it is behind; `why` says why now.
    pub async fn catch_up(&mut self, why: CatchUp) {
        let Some(reference) = self.live.as_mut().and_then(|l| l.behind.take()) else {
            return;
        };
        (self.told)(Told::Settling(&why));
        self.set(&reference).await;
    }

    /// Catches up at once if a synced container lost the edits (restarted, replaced).
    pub async fn check_containers(&mut self) {
        let Some(live) = self.live.as_mut() else {
            return;
        };
        if live.behind.is_none() {
            return;
        }
        match lost(self.deploy, live).await {
            Ok(Some(why)) => self.catch_up(why).await,
            Ok(None) => {}
            Err(e) => tracing::info!("the synced containers cannot be looked at: {e}"),
        }
    }
}

/// An exec the API server refused (RBAC), or could not serve.
fn exec_refused(e: &crate::error::Error) -> Fallback {
    if e.code() == crate::error::ExitCode::Auth {
        Fallback::ExecRefused(e.to_string())
    } else {
        Fallback::ExecFailed(e.to_string())
    }
}

/// A sync that ran and failed, worded by its cause.
fn failed(pod: &str, r: &Ran) -> Fallback {
    let (pod, said) = (pod.to_string(), first_line(r));
    if r.code == 126 || r.code == 127 {
        return Fallback::NoShell { pod, said };
    }
    // What a container's `tar` and `rm` said: the only word a shell gives about why.
    let lower = said.to_lowercase();
    if lower.contains("read-only file system") {
        return Fallback::ReadOnly { pod, said };
    }
    if lower.contains("permission denied") {
        return Fallback::PermissionDenied { pod, said };
    }
    Fallback::Failed {
        pod,
        code: r.code,
        said,
    }
}

/// What a command said: its stderr's first line, else its stdout's.
fn first_line(r: &Ran) -> String {
    let text = if r.stderr.trim().is_empty() {
        &r.stdout
    } else {
        &r.stderr
    };
    crate::error::first_line(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(paths: &[&str]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for p in paths {
            let mut h = tar::Header::new_ustar();
            h.set_size(0);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, p, std::io::empty()).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn plan(globs: &[&str]) -> SyncPlan {
        let globs: Vec<String> = globs.iter().map(|g| g.to_string()).collect();
        SyncPlan::new(None, Duration::from_secs(30), &globs).unwrap()
    }

    #[test]
    fn restart_on_matches_names_anywhere_paths_from_the_root_and_deletions_too() {
        let p = plan(&["package.json", "app/config/*.yaml"]);
        let needs = |paths: &[&str]| {
            let tar = layer(paths);
            restart_needed(&p, &super::paths(&tar).unwrap()).map(|f| f.to_string())
        };
        assert_eq!(needs(&["app", "app/main.py"]), None);
        assert_eq!(
            needs(&["app", "app/web/package.json"]),
            Some("/app/web/package.json matches --restart-on `package.json`".into())
        );
        assert_eq!(
            needs(&["app", "app/.wh.package.json"]),
            Some("/app/package.json matches --restart-on `package.json`".into())
        );
        assert_eq!(
            needs(&["app/config", "app/config/db.yaml"]),
            Some("/app/config/db.yaml matches --restart-on `app/config/*.yaml`".into())
        );
        // Not below config/: the glob is anchored at the image's root.
        assert_eq!(needs(&["app/x/config/db.yaml"]), None);
    }

    #[test]
    fn whiteouts_are_removed_before_the_tar_and_their_files_after() {
        let s = script(&[
            "app".into(),
            "app/.wh.old.txt".into(),
            "app/lib/.wh..wh..opq".into(),
            "app/it's.py".into(),
        ]);
        assert_eq!(
            s,
            "set -e\nrm -rf -- '/app/old.txt'\n[ -d '/app/lib' ] && find '/app/lib' -mindepth 1 -maxdepth 1 -exec rm -rf -- {} +\ntar -xf - -C /\nrm -f -- '/app/.wh.old.txt'\nrm -f -- '/app/lib/.wh..wh..opq'"
        );
    }
}
