//! A Kubernetes API server of the tests' own, for what no real one can be had for here: apps/v1
//! Deployments, StatefulSets and DaemonSets, core/v1 Pods and Events, written from the API
//! reference (paths, list and watch shapes, `resourceVersion` and 409 on a stale precondition,
//! the PATCH content types, `Status` error bodies) — plus a controller that moves status and
//! pods forward, or into ImagePullBackOff and CrashLoopBackOff, as the kubelet would.
//!
//! Faults a real server gives only by accident can be set: RBAC denials, another writer
//! changing an object just before a patch, a controller that never acts.

use std::collections::BTreeMap;
use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// (resource, namespace, name): `("deployments", "team-a", "app")`.
type Key = (String, String, String);

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent (an absolute-form target through a proxy is reduced to this).
    pub target: String,
    pub content_type: String,
    pub body: String,
}

#[derive(Default)]
struct State {
    rv: u64,
    clock: u64,
    objects: BTreeMap<Key, Value>,
    /// Every write, for watches: (resourceVersion, type, key, object).
    history: Vec<(u64, &'static str, Key, Value)>,
    requests: Vec<Request>,
    /// (verb, resource) pairs RBAC denies.
    deny: Vec<(String, String)>,
    /// Patches before which another writer changes the object.
    conflicts: usize,
    /// Reads (GET, not watches) still to answer 503, as a restarting API server does.
    busy: usize,
    /// Image substrings whose pull fails, and that crash after starting.
    unpullable: Vec<String>,
    /// Image substrings whose pull finds no manifest for the nodes' platform.
    wrong_platform: Vec<String>,
    crashing: Vec<String>,
    frozen: bool,
    token: Option<String>,
    /// With real containers: the prefix of their podman names (the simulated kubelet is off).
    real: Option<String>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

pub struct FakeKube {
    pub url: String,
    shared: Arc<Shared>,
    /// Stops the real kubelet, which then removes its containers.
    stop: Arc<std::sync::atomic::AtomicBool>,
    kubelet: Option<std::thread::JoinHandle<()>>,
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(k) = self.kubelet.take() {
            let _ = k.join();
        }
    }
}

/// The real kubelet's view of the state.
struct RealCluster(Arc<Shared>);

impl super::kubelet::Cluster for RealCluster {
    fn pending(
        &self,
    ) -> (
        Vec<(String, String, Value)>,
        std::collections::BTreeSet<String>,
    ) {
        let mut st = self.0.state.lock().unwrap();
        let mut out = Vec::new();
        let mut live = std::collections::BTreeSet::new();
        for (k, p) in st.objects.iter_mut().filter(|(k, _)| k.0 == "pods") {
            live.insert(k.2.clone());
            if p["status"]["phase"] == "Pending" && p["status"]["fake/stage"].is_null() {
                p["status"]["fake/stage"] = json!("Starting");
                out.push((k.1.clone(), k.2.clone(), p["spec"].clone()));
            }
        }
        (out, live)
    }

    fn started(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
        image: &str,
        result: Result<String, String>,
    ) {
        let mut st = self.0.state.lock().unwrap();
        let key = ("pods".to_string(), ns.to_string(), pod.to_string());
        let Some(mut p) = st.objects.get(&key).cloned() else {
            return;
        };
        let mut statuses: Vec<Value> = p["status"]["containerStatuses"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        statuses.retain(|s| s["name"] != container);
        match result {
            Ok(id) => statuses.push(json!({"name": container, "image": image, "imageID": image,
                "containerID": format!("podman://{id}"), "ready": true, "restartCount": 0, "started": true,
                "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}})),
            Err(why) => {
                let message = format!("failed to pull and unpack image \"{image}\": {why}");
                statuses.push(json!({"name": container, "image": image, "imageID": "", "ready": false,
                    "restartCount": 0, "started": false,
                    "state": {"waiting": {"reason": "ErrImagePull", "message": message}}}));
                event(&mut st, &key, pod, container, "Warning", "Failed",
                    &format!("Failed to pull image \"{image}\": {why}"));
            }
        }
        let all = p["spec"]["containers"].as_array().map_or(0, Vec::len);
        let ready = statuses.iter().filter(|s| s["ready"] == true).count();
        p["status"]["containerStatuses"] = json!(statuses);
        if ready == all {
            p["status"]["phase"] = json!("Running");
            p["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
        }
        write(&mut st, "MODIFIED", key, p);
        self.0.changed.notify_all();
    }

    fn restarted(&self, ns: &str, pod: &str, container: &str) {
        let mut st = self.0.state.lock().unwrap();
        let key = ("pods".to_string(), ns.to_string(), pod.to_string());
        let Some(mut p) = st.objects.get(&key).cloned() else {
            return;
        };
        for s in p["status"]["containerStatuses"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            if s["name"] == container {
                s["restartCount"] = json!(s["restartCount"].as_i64().unwrap_or(0) + 1);
                s["lastState"] = json!({"terminated": {"exitCode": 137, "reason": "Error"}});
            }
        }
        write(&mut st, "MODIFIED", key, p);
        self.0.changed.notify_all();
    }
}

const NODES: i64 = 2;

/// A deployment `name` of one replica (label `app: NAME`) whose `app` container runs `image`
/// and stays up.
pub fn looping_deployment(name: &str, image: &str) -> Value {
    json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image,
                    "command": ["sh", "-c", "while true; do sleep 1; done"]}]}
            }
        }
    })
}

impl FakeKube {
    pub fn start() -> FakeKube {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &s);
                });
            }
        });
        let s = shared.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(30));
            let mut st = s.state.lock().unwrap();
            if control(&mut st) {
                s.changed.notify_all();
            }
        });
        FakeKube {
            url,
            shared,
            stop: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            kubelet: None,
        }
    }

    /// An API server whose kubelet runs every pod's containers for real (podman + runc),
    /// pulling their images from the test registries, and serves `pods/exec` into them.
    pub fn start_with_containers() -> FakeKube {
        super::require("podman", "podman");
        let mut kube = Self::start();
        let prefix = format!("lk{}", kube.url.rsplit(':').next().unwrap_or("0"));
        kube.with(|st| st.real = Some(prefix.clone()));
        let cluster = Arc::new(RealCluster(kube.shared.clone()));
        let stop = kube.stop.clone();
        kube.kubelet = Some(std::thread::spawn(move || {
            super::kubelet::run(prefix, cluster, stop)
        }));
        kube
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut st = self.shared.state.lock().unwrap();
        let out = f(&mut st);
        self.shared.changed.notify_all();
        out
    }

    /// Creates a workload (`resource` is `deployments`, `statefulsets` or `daemonsets`), already
    /// A node, with the platform its kubelet reports (`status.nodeInfo`).
    pub fn add_node(&self, name: &str, os: &str, architecture: &str) {
        let node = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/arch": architecture, "kubernetes.io/os": os}},
            "status": {"nodeInfo": {"operatingSystem": os, "architecture": architecture,
                       "kubeletVersion": "v1.33.0", "containerRuntimeVersion": "containerd://1.7.0"}}
        });
        let mut st = self.shared.state.lock().unwrap();
        write(
            &mut st,
            "ADDED",
            ("nodes".into(), String::new(), name.into()),
            node,
        );
    }

    /// rolled out: its pods run and its status is complete.
    pub fn add(&self, resource: &str, namespace: &str, mut obj: Value) {
        self.with(|st| {
            let name = obj["metadata"]["name"].as_str().unwrap().to_string();
            obj["metadata"]["namespace"] = json!(namespace);
            obj["metadata"]["generation"] = json!(1);
            obj["metadata"]["uid"] = json!(format!("uid-{name}"));
            obj["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
            let key = (resource.to_string(), namespace.to_string(), name);
            write(st, "ADDED", key, obj);
            while control(st) {}
        });
    }

    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Value {
        self.with(|st| st.objects[&(resource.into(), namespace.into(), name.into())].clone())
    }

    pub fn requests(&self) -> Vec<Request> {
        self.with(|st| st.requests.clone())
    }

    /// Requests other than reads.
    pub fn writes(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.method != "GET")
            .collect()
    }

    pub fn deny(&self, verb: &str, resource: &str) {
        self.with(|st| st.deny.push((verb.into(), resource.into())));
    }

    /// The next `n` patches find the object just changed by someone else.
    pub fn conflicts(&self, n: usize) {
        self.with(|st| st.conflicts = n);
    }

    /// The next `n` reads answer 503 Service Unavailable.
    pub fn busy(&self, n: usize) {
        self.with(|st| st.busy = n);
    }

    pub fn unpullable(&self, image_part: &str) {
        self.with(|st| st.unpullable.push(image_part.into()));
    }

    /// Pulls of these images fail as containerd's do when an image has no build for the node.
    pub fn wrong_platform(&self, image_part: &str) {
        self.with(|st| {
            st.unpullable.push(image_part.into());
            st.wrong_platform.push(image_part.into());
        });
    }

    pub fn crashing(&self, image_part: &str) {
        self.with(|st| st.crashing.push(image_part.into()));
    }

    /// The controllers stop: no rollout makes progress.
    pub fn freeze(&self) {
        self.with(|st| st.frozen = true);
    }

    pub fn require_token(&self, token: &str) {
        self.with(|st| st.token = Some(token.into()));
    }

    /// The podman container that runs `container` of `pod` (with [`FakeKube::start_with_containers`]).
    pub fn podman_name(&self, pod: &str, container: &str) -> String {
        let prefix = self
            .with(|st| st.real.clone())
            .expect("a kubelet that runs containers");
        super::kubelet::container_name(&prefix, pod, container)
    }

    /// The running pods of deployment `name` (by its `app` label): the pod, the image its first
    /// container runs, and that container's restart count.
    pub fn running(&self, namespace: &str, name: &str) -> Vec<(String, String, i64)> {
        self.pods(namespace)
            .iter()
            .filter(|p| p["metadata"]["labels"]["app"] == name && p["status"]["phase"] == "Running")
            .filter_map(|p| {
                let s = &p["status"]["containerStatuses"][0];
                Some((
                    p["metadata"]["name"].as_str()?.to_string(),
                    s["image"].as_str()?.to_string(),
                    s["restartCount"].as_i64().unwrap_or(0),
                ))
            })
            .collect()
    }

    /// The pod of deployment `name` running `image`, once there is one (90 s at most).
    pub fn pod_running(&self, namespace: &str, name: &str, image: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(p) = self
                .running(namespace, name)
                .into_iter()
                .find(|p| p.1 == image)
            {
                return p.0;
            }
            assert!(Instant::now() < deadline, "no pod of {name} runs {image}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Pods of a workload as the fake runs them.
    pub fn pods(&self, namespace: &str) -> Vec<Value> {
        self.with(|st| {
            st.objects
                .iter()
                .filter(|(k, _)| k.0 == "pods" && k.1 == namespace)
                .map(|(_, v)| v.clone())
                .collect()
        })
    }

    /// A kubeconfig whose one context reaches this server: directly, or, with `via_proxy`, as
    /// `server` through this server acting as the HTTP proxy (`proxy-url`), so a context can
    /// name a non-loopback API server and still arrive here.
    pub fn kubeconfig(
        &self,
        dir: &Path,
        context: &str,
        namespace: &str,
        remote: Option<&str>,
        token: &str,
    ) -> PathBuf {
        let server = remote.unwrap_or(&self.url);
        let proxy = remote.map_or(String::new(), |_| format!("\n    proxy-url: {}", self.url));
        let text = format!(
            "apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: {server}{proxy}
contexts:
- name: {context}
  context:
    cluster: c
    user: u
    namespace: {namespace}
current-context: {context}
users:
- name: u
  user:
    token: {token}
"
        );
        let path = dir.join(format!("kubeconfig-{context}"));
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// Stores an object at a new resourceVersion and records the write for watches.
fn write(st: &mut State, kind: &'static str, key: Key, mut obj: Value) {
    st.rv += 1;
    obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
    let (api, k) = type_of(&key.0);
    obj["apiVersion"] = json!(api);
    obj["kind"] = json!(k);
    st.history.push((st.rv, kind, key.clone(), obj.clone()));
    if kind == "DELETED" {
        st.objects.remove(&key);
    } else {
        st.objects.insert(key, obj);
    }
}

fn type_of(resource: &str) -> (&'static str, &'static str) {
    match resource {
        "deployments" => ("apps/v1", "Deployment"),
        "statefulsets" => ("apps/v1", "StatefulSet"),
        "daemonsets" => ("apps/v1", "DaemonSet"),
        "pods" => ("v1", "Pod"),
        "nodes" => ("v1", "Node"),
        "events" => ("v1", "Event"),
        _ => ("v1", "Unknown"),
    }
}

fn now(st: &mut State) -> String {
    st.clock += 1;
    let t = st.clock;
    format!(
        "2026-01-01T{:02}:{:02}:{:02}Z",
        t / 3600 % 24,
        t / 60 % 60,
        t % 60
    )
}

// ---------------------------------------------------------------------------------------------
// The controllers and the kubelet, one step per tick.

/// One step of every controller; whether anything changed.
fn control(st: &mut State) -> bool {
    if st.frozen {
        return false;
    }
    let keys: Vec<Key> = st
        .objects
        .keys()
        .filter(|k| matches!(k.0.as_str(), "deployments" | "statefulsets" | "daemonsets"))
        .cloned()
        .collect();
    let mut any = false;
    for key in keys {
        any |= step(st, &key);
    }
    if st.real.is_none() {
        any |= kubelet(st);
    }
    any
}

fn template_hash(obj: &Value) -> String {
    let text = obj["spec"]["template"].to_string();
    let mut h: u64 = 1469598103934665603;
    for b in text.bytes() {
        h = (h ^ b as u64).wrapping_mul(1099511628211);
    }
    format!("{:x}", h)[..10].to_string()
}

fn owned_pods(st: &State, key: &Key) -> Vec<(Key, Value)> {
    st.objects
        .iter()
        .filter(|(k, v)| {
            k.0 == "pods" && k.1 == key.1 && v["metadata"]["labels"]["fake/owner"] == key.2.as_str()
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn pod_ready(p: &Value) -> bool {
    p["status"]["phase"] == "Running"
        && p["status"]["containerStatuses"]
            .as_array()
            .is_some_and(|s| s.iter().all(|c| c["ready"] == true))
}

fn step(st: &mut State, key: &Key) -> bool {
    let obj = st.objects[key].clone();
    // As the real controllers do, the new generation is observed in the same status write that
    // counts the pods of the new template.
    let generation = obj["metadata"]["generation"].as_i64().unwrap_or(1);
    let want = if key.0 == "daemonsets" {
        NODES
    } else {
        obj["spec"]["replicas"].as_i64().unwrap_or(1)
    };
    let hash = template_hash(&obj);
    let pods = owned_pods(st, key);
    let (new, old): (Vec<_>, Vec<_>) = pods
        .into_iter()
        .partition(|(_, p)| p["metadata"]["labels"]["fake/hash"] == hash.as_str());
    let mut changed = false;
    if (new.len() as i64) < want {
        for i in new.len() as i64..want {
            let pod = make_pod(st, key, &obj, &hash, i);
            let pk = (
                "pods".to_string(),
                key.1.clone(),
                pod["metadata"]["name"].as_str().unwrap().to_string(),
            );
            write(st, "ADDED", pk, pod);
        }
        changed = true;
    } else if !old.is_empty() && new.iter().all(|(_, p)| pod_ready(p)) {
        for (k, p) in old {
            write(st, "DELETED", k, p);
        }
        changed = true;
    }
    let pods = owned_pods(st, key);
    let updated = pods
        .iter()
        .filter(|(_, p)| p["metadata"]["labels"]["fake/hash"] == hash.as_str())
        .count() as i64;
    let ready = pods.iter().filter(|(_, p)| pod_ready(p)).count() as i64;
    let total = pods.len() as i64;
    let mut o = st.objects[key].clone();
    let status = match key.0.as_str() {
        "deployments" => json!({
            "observedGeneration": generation, "replicas": total, "updatedReplicas": updated,
            "readyReplicas": ready, "availableReplicas": ready,
            "unavailableReplicas": (total - ready).max(0),
            "conditions": [{"type": "Progressing", "status": "True",
                "reason": if updated == want && ready == total { "NewReplicaSetAvailable" } else { "ReplicaSetUpdated" }}]
        }),
        "statefulsets" => {
            let current = if updated == total && ready == total {
                format!("{}-{hash}", key.2)
            } else {
                o["status"]["currentRevision"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or(format!("{}-{hash}", key.2))
            };
            json!({
                "observedGeneration": generation, "replicas": total, "readyReplicas": ready,
                "currentReplicas": total - updated, "updatedReplicas": updated, "availableReplicas": ready,
                "currentRevision": current, "updateRevision": format!("{}-{hash}", key.2)
            })
        }
        _ => json!({
            "observedGeneration": generation, "desiredNumberScheduled": NODES,
            "currentNumberScheduled": NODES, "numberMisscheduled": 0, "numberReady": ready.min(NODES),
            "numberAvailable": ready.min(NODES), "updatedNumberScheduled": updated
        }),
    };
    if o["status"] != status {
        o["status"] = status;
        write(st, "MODIFIED", key.clone(), o);
        changed = true;
    }
    changed
}

fn make_pod(st: &mut State, key: &Key, obj: &Value, hash: &str, i: i64) -> Value {
    let template = &obj["spec"]["template"];
    let mut labels = template["metadata"]["labels"].clone();
    labels["fake/owner"] = json!(key.2);
    labels["fake/hash"] = json!(hash);
    let name = format!("{}-{}-{i}", key.2, &hash[..5]);
    let (api, kind) = type_of(&key.0);
    json!({
        "metadata": {"name": name, "namespace": key.1, "labels": labels, "uid": format!("uid-{name}"),
            "ownerReferences": [{"apiVersion": api, "kind": kind, "name": key.2, "uid": obj["metadata"]["uid"], "controller": true}]},
        "spec": template["spec"],
        "status": {"phase": "Pending", "startTime": now(st)}
    })
}

/// Pods that have not started: start them, or fail to pull or to run, as their images say.
fn kubelet(st: &mut State) -> bool {
    let pending: Vec<(Key, Value)> = st
        .objects
        .iter()
        .filter(|(k, p)| k.0 == "pods" && p["status"]["phase"] == "Pending")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut changed = false;
    for (key, mut pod) in pending {
        let images = |field: &str| -> Vec<(String, String)> {
            pod["spec"][field]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    (
                        c["name"].as_str().unwrap_or("").to_string(),
                        c["image"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        };
        let (inits, mains) = (images("initContainers"), images("containers"));
        let bad_pull = |i: &str| st.unpullable.iter().any(|u| i.contains(u.as_str()));
        let crash = |i: &str| st.crashing.iter().any(|u| i.contains(u.as_str()));
        let already = pod["status"]["fake/stage"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let unpullable = inits
            .iter()
            .chain(&mains)
            .find(|(_, i)| bad_pull(i))
            .cloned();
        let crashing = mains.iter().find(|(_, i)| crash(i)).cloned();
        let waiting = |name: &str, image: &str, reason: &str, message: &str| {
            json!({"name": name, "image": image, "imageID": "", "ready": false, "restartCount": 0,
                   "started": false, "state": {"waiting": {"reason": reason, "message": message}}})
        };
        let running = |name: &str, image: &str| {
            json!({"name": name, "image": image, "imageID": format!("{image}-id"), "ready": true,
                   "restartCount": 0, "started": true, "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}})
        };
        let pod_name = key.2.clone();
        if let Some((cname, image)) = unpullable {
            if already == "ImagePullBackOff" {
                continue;
            }
            let platform = st.wrong_platform.iter().any(|w| image.contains(w.as_str()));
            let (reason, message) = if already.is_empty() && platform {
                (
                    "ErrImagePull",
                    format!("failed to pull and unpack image \"{image}\": no match for platform in manifest: not found"),
                )
            } else if already.is_empty() {
                (
                    "ErrImagePull",
                    format!("failed to pull and unpack image \"{image}\": not found"),
                )
            } else {
                (
                    "ImagePullBackOff",
                    format!("Back-off pulling image \"{image}\""),
                )
            };
            let init = inits.iter().any(|(n, _)| *n == cname);
            let statuses: Vec<Value> = if init { &inits } else { &mains }
                .iter()
                .map(|(n, i)| {
                    if *n == cname {
                        waiting(n, i, reason, &message)
                    } else {
                        waiting(n, i, "PodInitializing", "")
                    }
                })
                .collect();
            pod["status"][if init {
                "initContainerStatuses"
            } else {
                "containerStatuses"
            }] = json!(statuses);
            pod["status"]["fake/stage"] = json!(reason);
            let cause = if platform {
                "no match for platform in manifest: not found"
            } else {
                "not found"
            };
            let pull = format!(
                "Failed to pull image \"{image}\": rpc error: code = NotFound desc = failed to pull and unpack image \"{image}\": {cause}"
            );
            // The kubelet's pair: the cause, then the state's echo.
            let said = if reason == "ErrImagePull" {
                [
                    ("Warning", "Failed", pull.as_str()),
                    ("Warning", "Failed", "Error: ErrImagePull"),
                ]
            } else {
                [
                    ("Normal", "BackOff", message.as_str()),
                    ("Warning", "Failed", "Error: ImagePullBackOff"),
                ]
            };
            for (kind, why, text) in said {
                event(st, &key, &pod_name, &cname, kind, why, text);
            }
            write(st, "MODIFIED", key, pod);
            changed = true;
            continue;
        }
        let done_inits: Vec<Value> = inits
            .iter()
            .map(|(n, i)| {
                json!({"name": n, "image": i, "ready": true, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}})
            })
            .collect();
        if let Some((cname, image)) = crashing {
            if already == "CrashLoopBackOff" {
                continue;
            }
            let message =
                format!("back-off 10s restarting failed container={cname} pod={pod_name}");
            let statuses: Vec<Value> = mains
                .iter()
                .map(|(n, i)| {
                    if *n == cname {
                        let mut s = waiting(n, i, "CrashLoopBackOff", &message);
                        s["restartCount"] = json!(2);
                        s["lastState"] = json!({"terminated": {"exitCode": 1, "reason": "Error"}});
                        s
                    } else {
                        running(n, i)
                    }
                })
                .collect();
            pod["status"] = json!({"phase": "Running", "fake/stage": "CrashLoopBackOff",
                "initContainerStatuses": done_inits, "containerStatuses": statuses});
            event(
                st,
                &key,
                &pod_name,
                &cname,
                "Warning",
                "BackOff",
                &format!(
                    "Back-off restarting failed container {cname} in pod {pod_name}_{}({})",
                    key.1, image
                ),
            );
            write(st, "MODIFIED", key, pod);
            changed = true;
            continue;
        }
        let statuses: Vec<Value> = mains.iter().map(|(n, i)| running(n, i)).collect();
        pod["status"] = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
            "initContainerStatuses": done_inits, "containerStatuses": statuses});
        write(st, "MODIFIED", key, pod);
        changed = true;
    }
    changed
}

fn event(
    st: &mut State,
    pod: &Key,
    pod_name: &str,
    container: &str,
    kind: &str,
    reason: &str,
    message: &str,
) {
    let at = now(st);
    let name = format!("{pod_name}.{}", st.rv + 1);
    let e = json!({
        "metadata": {"name": name, "namespace": pod.1},
        "involvedObject": {"kind": "Pod", "name": pod_name, "namespace": pod.1, "apiVersion": "v1",
                           "uid": format!("uid-{pod_name}"), "fieldPath": format!("spec.containers{{{container}}}")},
        "reason": reason, "message": message, "type": kind, "count": 1,
        "firstTimestamp": at, "lastTimestamp": at, "source": {"component": "kubelet", "host": "node-1"}
    });
    write(st, "ADDED", ("events".into(), pod.1.clone(), name), e);
}

// ---------------------------------------------------------------------------------------------
// The HTTP side.

fn status(code: u16, reason: &str, message: &str, details: Value) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "details": details, "code": code}),
    )
}

fn reply(c: &mut TcpStream, (code, body): (u16, Value)) -> std::io::Result<()> {
    let body = body.to_string();
    write!(
        c,
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn serve(conn: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut r = BufReader::new(conn.try_clone()?);
    let mut c = conn;
    let (first, headers) = loop {
        let (first, headers) = super::read_head(&mut r)?;
        // As an HTTP proxy: a CONNECT opens a tunnel to the API server, which is this server.
        if first.starts_with("CONNECT ") {
            write!(c, "HTTP/1.1 200 Connection established\r\n\r\n")?;
            continue;
        }
        break (first, headers);
    };
    let mut parts = first.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let mut target = parts.next().unwrap_or("").to_string();
    // Through a proxy, the request target is absolute: http://host:port/path.
    if let Some(rest) = target.strip_prefix("http://") {
        target = rest.find('/').map_or("/".into(), |i| rest[i..].to_string());
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = Vec::with_capacity(length);
    (&mut r).take(length as u64).read_to_end(&mut body)?;
    let body = String::from_utf8_lossy(&body).to_string();
    let content_type = headers.get("content-type").cloned().unwrap_or_default();
    let mut st = shared.state.lock().unwrap();
    st.requests.push(Request {
        method: method.clone(),
        target: target.clone(),
        content_type: content_type.clone(),
        body: body.clone(),
    });
    if let Some(t) = &st.token {
        if headers.get("authorization") != Some(&format!("Bearer {t}")) {
            return reply(
                &mut c,
                status(401, "Unauthorized", "Unauthorized", json!({})),
            );
        }
    }
    if st.busy > 0 && method == "GET" && !target.contains("watch=") {
        st.busy -= 1;
        return reply(
            &mut c,
            status(
                503,
                "ServiceUnavailable",
                "the server is restarting",
                json!({}),
            ),
        );
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let q = |name: &str| -> Option<String> {
        query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then(|| decode(v))
        })
    };
    let seg: Vec<&str> = path.trim_matches('/').split('/').collect();
    let answer = match (method.as_str(), seg.as_slice()) {
        ("GET", ["version"]) => (
            200,
            json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-fake"}),
        ),
        ("GET", ["api"]) => (
            200,
            json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
        ),
        ("GET", ["apis"]) => (
            200,
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
             "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}}]}),
        ),
        ("GET", ["api", "v1"]) => (
            200,
            resource_list(
                "v1",
                &[
                    ("pods", "Pod", "po"),
                    ("events", "Event", "ev"),
                    ("nodes", "Node", "no"),
                ],
            ),
        ),
        // Nodes are cluster-scoped: kept under the empty namespace.
        ("GET", ["api", "v1", "nodes"]) => {
            if st.deny.iter().any(|(v, r)| v == "list" && r == "nodes") {
                status(403, "Forbidden", "nodes is forbidden: User \"system:serviceaccount:dev:ci\" cannot list resource \"nodes\" in API group \"\" at the cluster scope", json!({"kind": "nodes"}))
            } else {
                list(&st, "nodes", "", &q)
            }
        }
        ("GET", ["apis", "apps", "v1"]) => (
            200,
            resource_list(
                "apps/v1",
                &[
                    ("deployments", "Deployment", "deploy"),
                    ("statefulsets", "StatefulSet", "sts"),
                    ("daemonsets", "DaemonSet", "ds"),
                ],
            ),
        ),
        ("GET" | "POST", ["api", "v1", "namespaces", ns, "pods", pod, "exec"]) => {
            if st
                .deny
                .iter()
                .any(|(v, r)| v == "create" && r == "pods/exec")
            {
                status(403, "Forbidden", &format!(
                    "pods \"{pod}\" is forbidden: User \"system:serviceaccount:dev:ci\" cannot create resource \"pods/exec\" in API group \"\" in the namespace \"{ns}\""),
                    json!({"name": pod, "kind": "pods"}))
            } else {
                let key = ("pods".to_string(), ns.to_string(), pod.to_string());
                match (st.objects.get(&key), st.real.clone()) {
                    (Some(p), Some(prefix)) => {
                        let first = p["spec"]["containers"][0]["name"]
                            .as_str()
                            .unwrap_or("")
                            .to_string();
                        let container = q("container").unwrap_or(first);
                        let command: Vec<String> = query
                            .split('&')
                            .filter_map(|kv| kv.strip_prefix("command="))
                            .map(decode)
                            .collect();
                        let stdin = q("stdin").is_some_and(|v| v == "true" || v == "1");
                        drop(st);
                        let name = super::kubelet::container_name(&prefix, pod, &container);
                        return super::kubelet::exec(c, &headers, &name, &command, stdin);
                    }
                    (None, _) => not_found("pods", "", pod),
                    (Some(_), None) => status(
                        400,
                        "BadRequest",
                        "this API server runs no containers",
                        json!({}),
                    ),
                }
            }
        }
        (m, ["api", "v1", "namespaces", ns, res @ ("pods" | "events"), rest @ ..])
        | (
            m,
            ["apis", "apps", "v1", "namespaces", ns, res @ ("deployments" | "statefulsets" | "daemonsets"), rest @ ..],
        ) => {
            let name = rest.first().copied();
            let verb = match (m, name) {
                ("GET", None) if q("watch").is_some_and(|w| w == "true" || w == "1") => "watch",
                ("GET", None) => "list",
                ("GET", Some(_)) => "get",
                ("PATCH", Some(_)) => "patch",
                _ => "unsupported",
            };
            let group = if seg[0] == "apis" { "apps" } else { "" };
            if st.deny.iter().any(|(v, r)| v == verb && r == res) {
                let what = match name {
                    Some(n) => format!(
                        "{res}{} \"{n}\"",
                        if group.is_empty() {
                            String::new()
                        } else {
                            format!(".{group}")
                        }
                    ),
                    None => format!(
                        "{res}{}",
                        if group.is_empty() {
                            String::new()
                        } else {
                            format!(".{group}")
                        }
                    ),
                };
                status(403, "Forbidden", &format!(
                    "{what} is forbidden: User \"system:serviceaccount:dev:ci\" cannot {verb} resource \"{res}\" in API group \"{group}\" in the namespace \"{ns}\""),
                    json!({"name": name.unwrap_or(""), "group": group, "kind": res}))
            } else {
                match verb {
                    "watch" => {
                        drop(st);
                        return watch(c, shared, res, ns, &q);
                    }
                    "list" => list(&st, res, ns, &q),
                    "get" => match st.objects.get(&(
                        res.to_string(),
                        ns.to_string(),
                        name.unwrap().to_string(),
                    )) {
                        Some(o) => (200, o.clone()),
                        None => not_found(res, group, name.unwrap()),
                    },
                    "patch" => patch(&mut st, res, ns, name.unwrap(), &content_type, &body, &q),
                    _ => status(
                        405,
                        "MethodNotAllowed",
                        &format!("{m} is not supported on {res} by this server"),
                        json!({}),
                    ),
                }
            }
        }
        _ => status(
            404,
            "NotFound",
            "the server could not find the requested resource",
            json!({}),
        ),
    };
    shared.changed.notify_all();
    drop(st);
    reply(&mut c, answer)
}

fn not_found(res: &str, group: &str, name: &str) -> (u16, Value) {
    let qualified = if group.is_empty() {
        res.to_string()
    } else {
        format!("{res}.{group}")
    };
    status(
        404,
        "NotFound",
        &format!("{qualified} \"{name}\" not found"),
        json!({"name": name, "group": group, "kind": res}),
    )
}

fn resource_list(gv: &str, resources: &[(&str, &str, &str)]) -> Value {
    let items: Vec<Value> = resources
        .iter()
        .map(|(name, kind, short)| {
            json!({"name": name, "singularName": kind.to_lowercase(), "namespaced": true,
            "kind": kind, "verbs": ["get", "list", "watch", "patch"], "shortNames": [short]})
        })
        .collect();
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": items})
}

fn decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(x) = u8::from_str_radix(&v[i + 1..i + 3], 16) {
                out.push(x);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

/// `labelSelector` (`k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`) and
/// `fieldSelector` (the fields the real server supports for these resources); an unsupported
/// field is the real server's 400.
fn selects(obj: &Value, labels: Option<&str>, fields: Option<&str>) -> Result<bool, String> {
    // Terms are separated by commas outside parentheses.
    let terms = |s: Option<&str>| -> Vec<String> {
        let mut out = vec![String::new()];
        let mut depth = 0;
        for ch in s.unwrap_or_default().chars() {
            match ch {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    out.push(String::new());
                    continue;
                }
                _ => {}
            }
            out.last_mut().unwrap().push(ch);
        }
        out.into_iter()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect()
    };
    let set = |t: &str, op: &str| -> Option<(String, Vec<String>)> {
        let (k, rest) = t.split_once(op)?;
        let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
        Some((
            k.trim().to_string(),
            inner.split(',').map(|v| v.trim().to_string()).collect(),
        ))
    };
    for t in terms(labels) {
        let l = &obj["metadata"]["labels"];
        let ok = if let Some((k, vs)) = set(&t, " notin ") {
            !vs.iter().any(|v| l[&k] == v.as_str())
        } else if let Some((k, vs)) = set(&t, " in ") {
            vs.iter().any(|v| l[&k] == v.as_str())
        } else if let Some((k, v)) = t.split_once("!=") {
            l[k] != v
        } else if let Some((k, v)) = t.split_once("==").or(t.split_once('=')) {
            l[k] == v
        } else if let Some(k) = t.strip_prefix('!') {
            l[k].is_null()
        } else {
            !l[t.as_str()].is_null()
        };
        if !ok {
            return Ok(false);
        }
    }
    for t in terms(fields) {
        let (k, v) = t
            .split_once("==")
            .or(t.split_once('='))
            .ok_or(format!("invalid field selector {t}"))?;
        let got = match k {
            "metadata.name" => &obj["metadata"]["name"],
            "metadata.namespace" => &obj["metadata"]["namespace"],
            "involvedObject.kind"
            | "involvedObject.name"
            | "involvedObject.namespace"
            | "involvedObject.uid" => &obj["involvedObject"][&k["involvedObject.".len()..]],
            other => return Err(format!("field label not supported: {other}")),
        };
        if got != v {
            return Ok(false);
        }
    }
    Ok(true)
}

fn list(st: &State, res: &str, ns: &str, q: &dyn Fn(&str) -> Option<String>) -> (u16, Value) {
    let (labels, fields) = (q("labelSelector"), q("fieldSelector"));
    let mut items = Vec::new();
    for ((r, n, _), o) in &st.objects {
        if r != res || n != ns {
            continue;
        }
        match selects(o, labels.as_deref(), fields.as_deref()) {
            Ok(true) => {
                // Items of a list carry no apiVersion or kind: the list's kind implies them.
                let mut o = o.clone();
                o.as_object_mut().unwrap().remove("apiVersion");
                o.as_object_mut().unwrap().remove("kind");
                items.push(o);
            }
            Ok(false) => {}
            Err(e) => return status(400, "BadRequest", &e, json!({})),
        }
    }
    let (api, kind) = type_of(res);
    (
        200,
        json!({"kind": format!("{kind}List"), "apiVersion": api,
                 "metadata": {"resourceVersion": st.rv.to_string()}, "items": items}),
    )
}

/// A watch: newline-delimited `{"type","object"}` events in a body that ends when the server
/// ends the watch (timeoutSeconds) or the client goes away.
fn watch(
    mut c: TcpStream,
    shared: &Shared,
    res: &str,
    ns: &str,
    q: &dyn Fn(&str) -> Option<String>,
) -> std::io::Result<()> {
    let (labels, fields) = (q("labelSelector"), q("fieldSelector"));
    let timeout = q("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .unwrap_or(60u64);
    let from = q("resourceVersion").unwrap_or_default();
    write!(
        c,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )?;
    let send = |c: &mut TcpStream, kind: &str, o: &Value| -> std::io::Result<()> {
        let line = format!("{}\n", json!({"type": kind, "object": o}));
        write!(c, "{:x}\r\n{line}\r\n", line.len())?;
        c.flush()
    };
    let mut st = shared.state.lock().unwrap();
    let matches = |o: &Value| selects(o, labels.as_deref(), fields.as_deref()).unwrap_or(false);
    let mut seen = match from.parse::<u64>() {
        Ok(v) if v > 0 => v,
        // "" or "0": the current state first, as ADDED events.
        _ => {
            let now: Vec<Value> = st
                .objects
                .iter()
                .filter(|(k, o)| k.0 == res && k.1 == ns && matches(o))
                .map(|(_, o)| o.clone())
                .collect();
            let rv = st.rv;
            drop(st);
            for o in &now {
                send(&mut c, "ADDED", o)?;
            }
            st = shared.state.lock().unwrap();
            rv
        }
    };
    let end = Instant::now() + Duration::from_secs(timeout);
    loop {
        let events: Vec<(u64, &'static str, Value)> = st
            .history
            .iter()
            .filter(|(rv, _, k, o)| *rv > seen && k.0 == res && k.1 == ns && matches(o))
            .map(|(rv, t, _, o)| (*rv, *t, o.clone()))
            .collect();
        seen = st.rv;
        drop(st);
        for (_, t, o) in &events {
            send(&mut c, t, o)?;
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            write!(c, "0\r\n\r\n")?;
            return Ok(());
        }
        st = shared.state.lock().unwrap();
        if st.rv == seen {
            st = shared
                .changed
                .wait_timeout(st, left.min(Duration::from_millis(500)))
                .unwrap()
                .0;
        }
    }
}

/// Fields that are lists merged by a key in a strategic-merge patch (the `patchMergeKey`s of
/// the core types these objects use); every other list is replaced whole.
fn merge_key(field: &str) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => Some("name"),
        "ports" => Some("containerPort"),
        "volumeMounts" => Some("mountPath"),
        _ => None,
    }
}

fn strategic(target: &mut Value, patch: &Value, apply: bool) {
    let (Some(t), Some(p)) = (target.as_object_mut(), patch.as_object()) else {
        *target = patch.clone();
        return;
    };
    for (k, v) in p {
        if k.starts_with("$setElementOrder/") || k == "$retainKeys" || k == "$patch" {
            continue;
        }
        if v.is_null() && !apply {
            t.remove(k);
            continue;
        }
        match (merge_key(k), v, t.get_mut(k)) {
            (Some(key), Value::Array(items), Some(Value::Array(have))) => {
                for item in items {
                    let id = &item[key];
                    let pos = have.iter().position(|h| &h[key] == id);
                    if item["$patch"] == "delete" {
                        if let Some(i) = pos {
                            have.remove(i);
                        }
                    } else if let Some(i) = pos {
                        strategic(&mut have[i], item, apply);
                    } else {
                        let mut item = item.clone();
                        if let Some(o) = item.as_object_mut() {
                            o.remove("$patch");
                        }
                        have.push(item);
                    }
                }
            }
            (_, Value::Object(_), Some(have @ Value::Object(_))) => strategic(have, v, apply),
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
}

/// RFC 7386.
fn merge(target: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().unwrap();
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// RFC 6902: add, remove, replace, test.
fn json_patch(target: &mut Value, ops: &Value) -> Result<(), String> {
    for op in ops.as_array().ok_or("a JSON patch is an array")? {
        let path = op["path"].as_str().ok_or("an operation without a path")?;
        let (parent, last) = path.rsplit_once('/').ok_or("a bad path")?;
        let last = last.replace("~1", "/").replace("~0", "~");
        match op["op"].as_str() {
            Some("test") => {
                if target.pointer(path) != Some(&op["value"]) {
                    return Err(format!("test of {path} failed"));
                }
            }
            Some(kind @ ("add" | "replace" | "remove")) => {
                let p = target.pointer_mut(parent).ok_or(format!("no {parent}"))?;
                match p {
                    Value::Object(m) => {
                        if kind == "remove" {
                            m.remove(&last);
                        } else {
                            m.insert(last, op["value"].clone());
                        }
                    }
                    Value::Array(a) => {
                        let i = if last == "-" {
                            a.len()
                        } else {
                            last.parse().map_err(|_| "a bad index")?
                        };
                        match kind {
                            "add" if i <= a.len() => a.insert(i, op["value"].clone()),
                            "replace" if i < a.len() => a[i] = op["value"].clone(),
                            "remove" if i < a.len() => drop(a.remove(i)),
                            _ => return Err(format!("index {i} out of range")),
                        }
                    }
                    _ => return Err(format!("{parent} is not a container")),
                }
            }
            other => return Err(format!("unsupported op {other:?}")),
        }
    }
    Ok(())
}

fn patch(
    st: &mut State,
    res: &str,
    ns: &str,
    name: &str,
    content_type: &str,
    body: &str,
    q: &dyn Fn(&str) -> Option<String>,
) -> (u16, Value) {
    let group = if res == "pods" || res == "events" {
        ""
    } else {
        "apps"
    };
    let key = (res.to_string(), ns.to_string(), name.to_string());
    if !st.objects.contains_key(&key) {
        return not_found(res, group, name);
    }
    if st.conflicts > 0 {
        st.conflicts -= 1;
        // Another writer (an autoscaler, a colleague) changes the object first.
        let mut o = st.objects[&key].clone();
        o["metadata"]["labels"]["touched-by"] = json!("someone-else");
        write(st, "MODIFIED", key.clone(), o);
    }
    let current = st.objects[&key].clone();
    let Ok(p) = serde_json::from_str::<Value>(body) else {
        return status(
            400,
            "BadRequest",
            "the body of the request was in an unknown format",
            json!({}),
        );
    };
    let mut next = current.clone();
    let media = content_type.split(';').next().unwrap_or("").trim();
    let applied = match media {
        "application/strategic-merge-patch+json" => {
            strategic(&mut next, &p, false);
            Ok(())
        }
        "application/merge-patch+json" => {
            merge(&mut next, &p);
            Ok(())
        }
        "application/json-patch+json" => json_patch(&mut next, &p),
        "application/apply-patch+yaml" => {
            if q("fieldManager").is_none_or(|m| m.is_empty()) {
                return status(422, "Invalid", "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch", json!({}));
            }
            strategic(&mut next, &p, true);
            Ok(())
        }
        other => {
            return status(415, "UnsupportedMediaType", &format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other})"), json!({}));
        }
    };
    if let Err(e) = applied {
        return status(422, "Invalid", &e, json!({}));
    }
    let (_, kind) = type_of(res);
    let qualified = format!("{res}.{group}");
    if next["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
        return status(409, "Conflict", &format!(
            "Operation cannot be fulfilled on {qualified} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"),
            json!({"name": name, "group": group, "kind": res}));
    }
    for field in ["containers", "initContainers"] {
        for (i, c) in next["spec"]["template"]["spec"][field]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            if c["image"].as_str().is_none_or(str::is_empty) || c["name"].as_str().is_none() {
                return status(422, "Invalid", &format!(
                    "{kind}.{group} \"{name}\" is invalid: spec.template.spec.{field}[{i}].image: Required value"), json!({"name": name, "kind": kind}));
            }
        }
    }
    if next["metadata"]["name"] != current["metadata"]["name"] {
        return status(
            422,
            "Invalid",
            "metadata.name: field is immutable",
            json!({}),
        );
    }
    if next["spec"] != current["spec"] {
        let g = current["metadata"]["generation"].as_i64().unwrap_or(1);
        next["metadata"]["generation"] = json!(g + 1);
    }
    write(st, "MODIFIED", key.clone(), next);
    (200, st.objects[&key].clone())
}
