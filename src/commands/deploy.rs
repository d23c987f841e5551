//! `deploy`, `rollback` and `push --deploy`: which workloads and containers take the image, the
//! patch (read again and retried on conflict), and the wait for the rollout.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use kube::api::WatchEvent;
use oci_spec::image::Digest;
use serde_json::Value;
use tokio::time::{sleep_until, Instant};

use crate::cluster::rollout::{self, Progress};
use crate::cluster::workload::{self, Kind, Workload, WorkloadRef};
use crate::cluster::{Cluster, Failure, Target};
use crate::error::{Error, ExitCode, Result};
use crate::oci::reference::{repository_of, ImageRef};
use crate::store::registry::{Options, Registry};
use crate::store::Store;
use crate::units::show_duration;

/// A validated deploy step.
#[derive(Debug, Clone, PartialEq)]
pub struct DeployPlan {
    /// The workload named on the command line; `None`: find those running the image.
    pub workload: Option<WorkloadRef>,
    pub container: Option<String>,
    pub target: Target,
    /// How long to wait for the rollout; `None` with `--no-wait`.
    pub wait: Option<Duration>,
    /// Read the cluster, print the patch, change nothing.
    pub dry_run: bool,
    /// How this command names a workload, for messages: `with --deploy KIND/NAME`.
    pub naming: &'static str,
}

/// A validated `layerup deploy`.
#[derive(Debug, Clone)]
pub struct DeployImagePlan {
    /// Pinned by digest, or a tag to resolve to one.
    pub image: ImageRef,
    /// `--cluster-registry`.
    pub cluster_registry: Option<String>,
    pub net: Options,
    pub deploy: DeployPlan,
}

/// A validated `layerup rollback`.
#[derive(Debug, Clone)]
pub struct RollbackPlan {
    pub deploy: DeployPlan,
    /// To the image before layerup's first change in a row, not its last.
    pub original: bool,
}

/// One container's image, set or about to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub workload: WorkloadRef,
    pub container: String,
    pub from: String,
    pub to: String,
}

/// What the deploy step tells as it goes, for `main` to print.
pub enum Event<'a> {
    /// `--dry-run`: the patch that would be sent, and where.
    WouldPatch {
        changes: &'a [Change],
        place: String,
        patch: &'a Value,
    },
    Patched(&'a Change),
    /// The container already ran the image: nothing sent.
    Unchanged(&'a Change),
    Waiting(&'a WorkloadRef, &'a str),
    Ready(&'a WorkloadRef, Duration),
    /// Nothing to wait for (an `OnDelete` update strategy), and why.
    NotWaited(&'a WorkloadRef, &'a str),
}

/// `--deploy` and how the cluster names the destination registry.
#[derive(Debug, Clone, PartialEq)]
pub struct Deploy {
    pub plan: DeployPlan,
    /// `--cluster-registry`: the destination registry's name inside the cluster.
    pub cluster_registry: Option<String>,
}

impl Deploy {
    /// Whether the cluster may be used at all, asked before anything is pushed: a refused
    /// context sees no request, and the registry no write.
    pub async fn check(&self) -> Result<()> {
        crate::cluster::check(&self.plan.target).await
    }

    /// The platforms of the cluster's nodes, read once.
    pub async fn node_platforms(&self) -> Result<Vec<crate::oci::platform::Platform>> {
        Cluster::connect(&self.plan.target)
            .await?
            .node_platforms()
            .await
    }

    /// Sets the pushed image in the cluster: the workload named, or every one running the base's
    /// or the destination's repository (by either name of the registry).
    pub async fn run(
        &self,
        pushed: &str,
        base: &ImageRef,
        told: &mut (dyn FnMut(Event) + Send),
    ) -> Result<Vec<Change>> {
        let image = in_cluster(pushed, self.cluster_registry.as_deref());
        let repos = self.repos(pushed, base);
        deploy(&self.plan, &image, &repos, told).await
    }

    /// What [`Deploy::run`] will set, found before anything is pushed — the cluster reached,
    /// the workload there, a container in it to set — so that a push whose deploy step cannot
    /// happen pushes nothing. `to`: where the image goes (its digest is not known yet).
    pub async fn preflight(&self, to: &ImageRef, base: &ImageRef) -> Result<()> {
        let repos = self.repos(&to.to_string(), base);
        let cluster = Cluster::connect(&self.plan.target).await?;
        let runs = |i: &str| repository_of(i).is_some_and(|r| repos.contains(&r));
        let named = self.plan.workload.is_some();
        for (id, obj) in targets(&cluster, &self.plan, &runs, &repos).await? {
            let w = Workload::from_object(id.kind, &obj)
                .map_err(|e| Error::new(ExitCode::Cluster, e))?;
            w.choose(self.plan.container.as_deref(), runs, named)
                .map_err(Error::usage)?;
        }
        Ok(())
    }

    /// The repositories a workload may run to be the one set: the destination's (by either
    /// name of the registry) and the base's.
    fn repos(&self, pushed: &str, base: &ImageRef) -> Vec<String> {
        let image = in_cluster(pushed, self.cluster_registry.as_deref());
        let mut repos: Vec<String> = Vec::new();
        // A layout base (`oci:…`) names no repository a workload could run.
        let base = base.to_string();
        let found = [pushed, image.as_str(), base.as_str()].map(repository_of);
        for repo in found.into_iter().flatten() {
            if !repos.contains(&repo) {
                repos.push(repo);
            }
        }
        repos
    }
}

/// `layerup deploy`: pins IMAGE by digest (asking its registry when it names a tag), then sets
/// it as [`Deploy::run`] does, matching workloads by IMAGE's repository.
pub async fn deploy_image(
    plan: &DeployImagePlan,
    told: &mut (dyn FnMut(Event) + Send),
) -> Result<Vec<Change>> {
    let (image, net) = (&plan.image, plan.net);
    let ImageRef::Registry(r) = image else {
        return Err(Error::usage(
            "a cluster pulls from a registry, not a layout",
        ));
    };
    let digest = match r.digest() {
        Some(d) => d
            .parse::<Digest>()
            .map_err(|e| Error::usage(format!("invalid digest in `{image}`: {e}")))?,
        None => {
            let registry = Arc::new(Registry::new(net)?);
            let store = Store::for_reading(image, &registry)?;
            store.login(false, None).await?;
            store.manifest_digest(None).await?.ok_or_else(|| {
                Error::new(
                    ExitCode::NotFound,
                    format!("image `{image}` is not in its registry"),
                )
            })?
        }
    };
    let pinned = image.pinned(&digest);
    let set = Deploy {
        plan: plan.deploy.clone(),
        cluster_registry: plan.cluster_registry.clone(),
    };
    set.run(&pinned, image, told).await
}

/// `registry/repo@digest` with the registry as the cluster reaches it.
pub fn in_cluster(reference: &str, cluster_registry: Option<&str>) -> String {
    match (cluster_registry, reference.split_once('/')) {
        (Some(host), Some((_, rest))) => format!("{host}/{rest}"),
        _ => reference.to_string(),
    }
}

/// Conflicting writes tolerated before giving up: each is another writer (a controller, a
/// colleague) changing the object between layerup's read and its patch.
const CONFLICT_TRIES: usize = 5;
/// How often a waiting rollout's pods are looked at for an image that cannot be pulled or a
/// container that keeps crashing (states the workload's own status never shows).
const POD_CHECK: Duration = Duration::from_secs(1);

/// Sets `image` in the named workload or, without one, in every workload with a container
/// running one of `repos` (normalised repositories: the base's, the destination's); then waits
/// for the rollouts.
pub async fn deploy(
    plan: &DeployPlan,
    image: &str,
    repos: &[String],
    told: &mut (dyn FnMut(Event) + Send),
) -> Result<Vec<Change>> {
    let cluster = Cluster::connect(&plan.target).await?;
    let runs = |i: &str| repository_of(i).is_some_and(|r| repos.contains(&r));
    let found = targets(&cluster, plan, &runs, repos).await?;
    let named = plan.workload.is_some();
    let container = plan.container.as_deref();
    let mut written = Vec::new();
    for (id, obj) in found {
        let choose = |w: &Workload| -> Result<Vec<(String, String)>> {
            let c = w.choose(container, runs, named).map_err(Error::usage)?;
            let c = c.ok_or_else(|| {
                Error::new(
                    ExitCode::Cluster,
                    format!(
                        "{} changed while being patched and no longer runs the image",
                        w.id
                    ),
                )
            })?;
            Ok(vec![(c.name.clone(), image.to_string())])
        };
        written.push(write(&cluster, &id, obj, plan.dry_run, &choose, told).await?);
    }
    finish(&cluster, plan, written, told).await
}

/// Puts back, in the named workload, the image each container ran before layerup's last write
/// (`original`: before its first write in a row).
pub async fn rollback(
    rollback: &RollbackPlan,
    told: &mut (dyn FnMut(Event) + Send),
) -> Result<Vec<Change>> {
    let (plan, original) = (&rollback.deploy, rollback.original);
    let Some(id) = &plan.workload else {
        return Err(Error::usage(
            "rollback needs the workload: layerup rollback deployment/NAME",
        ));
    };
    let cluster = Cluster::connect(&plan.target).await?;
    let obj = cluster.get(id).await?;
    let choose = |w: &Workload| -> Result<Vec<(String, String)>> {
        if w.record.is_empty() {
            return Err(Error::new(
                ExitCode::NotFound,
                format!(
                    "{} has no layerup record (annotation {}): layerup has not set its image",
                    w.id,
                    workload::ANNOTATION
                ),
            ));
        }
        let names: Vec<&String> = match &plan.container {
            Some(c) => vec![c],
            None => w.record.keys().collect(),
        };
        let mut set = Vec::new();
        for name in names {
            let entry = w.record.get(name).ok_or_else(|| {
                Error::new(
                    ExitCode::NotFound,
                    format!(
                        "layerup has not set the image of container {name} in {}",
                        w.id
                    ),
                )
            })?;
            let current = w.container(name).map(|c| c.image.as_str());
            if current != Some(entry.image.as_str()) {
                return Err(Error::usage(format!(
                    "container {name} of {} runs {}, not {} as layerup left it: someone changed \
                     it since, so it is not rolled back (set an image with layerup deploy)",
                    w.id,
                    current.unwrap_or("nothing"),
                    entry.image
                )));
            }
            let back = if original {
                &entry.original
            } else {
                &entry.previous
            };
            set.push((name.clone(), back.clone()));
        }
        Ok(set)
    };
    let written = write(&cluster, id, obj, plan.dry_run, &choose, told).await?;
    finish(&cluster, plan, vec![written], told).await
}

/// The workload named, or every one with a container running one of `repos`.
async fn targets(
    cluster: &Cluster,
    plan: &DeployPlan,
    runs: &(dyn Fn(&str) -> bool + Sync),
    repos: &[String],
) -> Result<Vec<(WorkloadRef, Value)>> {
    Ok(match &plan.workload {
        Some(w) => vec![(w.clone(), cluster.get(w).await?)],
        None => search(cluster, plan, runs, repos).await?,
    })
}

/// Every workload of the namespace with a container running one of `repos`; none is an error
/// that lists what is there, and how to name one in this command.
async fn search(
    cluster: &Cluster,
    plan: &DeployPlan,
    runs: &(dyn Fn(&str) -> bool + Sync),
    repos: &[String],
) -> Result<Vec<(WorkloadRef, Value)>> {
    let container = plan.container.as_deref();
    let mut found = Vec::new();
    let mut seen = Vec::new();
    for kind in Kind::ALL {
        for obj in cluster.list(kind).await? {
            let w =
                Workload::from_object(kind, &obj).map_err(|e| Error::new(ExitCode::Cluster, e))?;
            if w.choose(container, runs, false)
                .map_err(Error::usage)?
                .is_some()
            {
                found.push((w.id.clone(), obj));
            }
            seen.push(format!("{} ({})", w.id, w.describe_containers()));
        }
    }
    if found.is_empty() {
        let place = format!(
            "namespace {} of context {}",
            cluster.namespace, cluster.context
        );
        let wanted = container.map_or(String::new(), |c| format!(" in a container named {c}"));
        let there = if seen.is_empty() {
            "it has no deployments, statefulsets or daemonsets".to_string()
        } else {
            format!("it has {}", seen.join("; "))
        };
        return Err(Error::new(
            ExitCode::NotFound,
            format!(
                "no workload in {place} runs {}{wanted}; {there}; name one {}",
                repos.join(" or "),
                plan.naming
            ),
        ));
    }
    Ok(found)
}

/// From a workload as read: which containers get which image.
type Choose<'a> = dyn Fn(&Workload) -> Result<Vec<(String, String)>> + Sync + 'a;

/// A workload as patched (or not), for the wait.
struct Written {
    id: WorkloadRef,
    changes: Vec<Change>,
    obj: Value,
    /// Its pods' label selector, for the wait's pod checks.
    selector: Option<String>,
}

/// Reads the containers to set from the object, patches them and layerup's record on the
/// object's `resourceVersion`, and on a conflict reads it again and starts over.
async fn write(
    cluster: &Cluster,
    id: &WorkloadRef,
    mut obj: Value,
    dry_run: bool,
    choose: &Choose<'_>,
    told: &mut (dyn FnMut(Event) + Send),
) -> Result<Written> {
    for _ in 0..CONFLICT_TRIES {
        let w =
            Workload::from_object(id.kind, &obj).map_err(|e| Error::new(ExitCode::Cluster, e))?;
        let set = choose(&w)?;
        let mut record = w.record.clone();
        let mut changes = Vec::new();
        let mut to_patch = Vec::new();
        for (name, image) in &set {
            let c = w.container(name).ok_or_else(|| {
                Error::usage(format!(
                    "{id} has no container `{name}`; it has {}",
                    w.describe_containers()
                ))
            })?;
            changes.push(Change {
                workload: id.clone(),
                container: name.clone(),
                from: c.image.clone(),
                to: image.clone(),
            });
            if c.image != *image {
                record.insert(
                    name.clone(),
                    workload::next_entry(&record, name, &c.image, image),
                );
                to_patch.push((c, image.as_str()));
            }
        }
        if to_patch.is_empty() {
            tell_changes(&changes, told);
            return Ok(Written {
                id: id.clone(),
                changes,
                obj,
                selector: w.selector,
            });
        }
        let body = workload::patch(&w, &to_patch, &record);
        if dry_run {
            told(Event::WouldPatch {
                changes: &changes,
                place: format!(
                    "{id} in namespace {} of context {} (API server {})",
                    cluster.namespace, cluster.context, cluster.server
                ),
                patch: &body,
            });
            return Ok(Written {
                id: id.clone(),
                changes,
                obj,
                selector: w.selector,
            });
        }
        match cluster.patch(id, &body).await {
            Ok(patched) => {
                tell_changes(&changes, told);
                return Ok(Written {
                    id: id.clone(),
                    changes,
                    obj: patched,
                    selector: w.selector,
                });
            }
            Err(Failure::Conflict) => {
                tracing::info!("{id} changed since it was read; reading it again");
                obj = cluster.get(id).await?;
            }
            Err(Failure::Other(e)) => return Err(e),
        }
    }
    Err(Error::new(
        ExitCode::Cluster,
        format!(
            "cannot patch {id} in namespace {} of context {}: it changed between each of {CONFLICT_TRIES} reads and patches (409 Conflict)",
            cluster.namespace, cluster.context
        ),
    ))
}

/// Each container: set, or already running its image (nothing sent for it).
fn tell_changes(changes: &[Change], told: &mut (dyn FnMut(Event) + Send)) {
    for c in changes {
        told(if c.from == c.to {
            Event::Unchanged(c)
        } else {
            Event::Patched(c)
        });
    }
}

/// Waits for every written workload, unless told not to.
async fn finish(
    cluster: &Cluster,
    plan: &DeployPlan,
    written: Vec<Written>,
    told: &mut (dyn FnMut(Event) + Send),
) -> Result<Vec<Change>> {
    if let (Some(limit), false) = (plan.wait, plan.dry_run) {
        let deadline = Instant::now() + limit;
        for w in &written {
            wait(cluster, w, deadline, limit, told).await?;
        }
    }
    Ok(written.into_iter().flat_map(|w| w.changes).collect())
}

/// Follows the workload (a watch from the patch's resourceVersion) until its rollout is done,
/// looking at its pods every second for ones that cannot start.
async fn wait(
    cluster: &Cluster,
    w: &Written,
    deadline: Instant,
    limit: Duration,
    told: &mut (dyn FnMut(Event) + Send),
) -> Result<()> {
    let started = Instant::now();
    let id = &w.id;
    let mut obj = w.obj.clone();
    let mut told_last = String::new();
    let mut next_check = Instant::now();
    let mut version = resource_version(&obj);
    loop {
        let stream = cluster.watch(id, &version).await?;
        let mut stream = pin!(stream);
        loop {
            match rollout::progress(id.kind, &obj) {
                Progress::Done => {
                    told(Event::Ready(id, started.elapsed()));
                    return Ok(());
                }
                Progress::Manual(why) => {
                    told(Event::NotWaited(id, &why));
                    return Ok(());
                }
                Progress::Failed(why) => {
                    return Err(Error::new(
                        ExitCode::Rollout,
                        format!("{id} did not roll out: {why}"),
                    ))
                }
                Progress::Waiting(what) => {
                    if what != told_last {
                        told(Event::Waiting(id, &what));
                        told_last = what;
                    }
                }
            }
            tokio::select! {
                event = stream.next() => match event {
                    Some(Ok(WatchEvent::Added(o) | WatchEvent::Modified(o))) => {
                        version = resource_version(&o);
                        obj = o;
                    }
                    Some(Ok(WatchEvent::Deleted(_))) => {
                        return Err(Error::new(ExitCode::Rollout, format!(
                            "{id} was deleted while its rollout was awaited")));
                    }
                    Some(Ok(WatchEvent::Bookmark(b))) => version = b.metadata.resource_version,
                    // 410 Gone (the version is too old to watch from) and the like: read the
                    // object afresh and watch from there.
                    Some(Ok(WatchEvent::Error(_))) => {
                        obj = cluster.get(id).await?;
                        version = resource_version(&obj);
                        break;
                    }
                    // The connection broke: watch again, after a pause (not in a tight loop
                    // against a server that keeps failing; the deadline still holds).
                    Some(Err(e)) => {
                        tracing::info!("the watch of {id} broke: {e}; watching again");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        break;
                    }
                    // The server ended the watch (its timeoutSeconds).
                    None => break,
                },
                _ = sleep_until(next_check) => {
                    check_pods(cluster, w).await?;
                    next_check = Instant::now() + POD_CHECK;
                }
                _ = sleep_until(deadline) => {
                    return Err(Error::new(ExitCode::Rollout, format!(
                        "{id} did not roll out within {}: {told_last} (wait longer with --timeout, or not at all with --no-wait)",
                        show_duration(limit))));
                }
            }
        }
    }
}

fn resource_version(obj: &Value) -> String {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Fails when a pod running the new image is stuck in a state waiting does not fix, saying why
/// as the kubelet does (the pod's waiting reason and message, and its newest Warning event).
async fn check_pods(cluster: &Cluster, w: &Written) -> Result<()> {
    let Some(selector) = &w.selector else {
        return Ok(());
    };
    for pod in cluster.pods(selector).await? {
        for c in &w.changes {
            let Some(t) = rollout::trouble(&pod, &c.container, &c.to) else {
                continue;
            };
            let events = cluster.events(&t.pod).await?;
            let mut why = format!("{}: {}", t.reason, t.message);
            if let Some(warning) = rollout::latest_warning(&events) {
                why = format!("{why} ({warning})");
            }
            if rollout::wrong_platform(&why) {
                why = format!(
                    "{why} — the image has no build for the node's platform (push without \
                     --platform to take the cluster nodes' platforms, or name theirs)"
                );
            }
            return Err(Error::new(
                ExitCode::Rollout,
                format!(
                    "{} did not roll out: pod {} container {}: {}",
                    w.id,
                    t.pod,
                    t.container,
                    crate::error::one_line(&why)
                ),
            ));
        }
    }
    Ok(())
}
