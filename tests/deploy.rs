//! `--deploy`, `layerup deploy` and `layerup rollback` against the tests' own Kubernetes API
//! server (tests/common/kube.rs), with images pushed to a real registry where a push is part of
//! the job, and `kubectl` reading back what layerup wrote.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::kube::FakeKube;
use common::*;
use serde_json::{json, Value};

const NS: &str = "team-a";
/// The production image the workloads of most tests run.
const BASE: &str = "registry.example.com/prod/app:1.0";
const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

fn deployment(name: &str, containers: Value, init: Value) -> Value {
    json!({
        "metadata": {"name": name, "labels": {"app": name}, "annotations": {"team": "a"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"initContainers": init, "containers": containers,
                         "terminationGracePeriodSeconds": 5}
            }
        }
    })
}

/// `app` (the base image, with env and ports) beside a `proxy` sidecar.
fn web(base: &str) -> Value {
    deployment(
        "web",
        json!([
            {"name": "proxy", "image": "envoyproxy/envoy:v1.30", "ports": [{"containerPort": 8080}]},
            {"name": "app", "image": base, "env": [{"name": "MODE", "value": "prod"}],
             "ports": [{"containerPort": 5000}], "resources": {"limits": {"memory": "128Mi"}}}
        ]),
        json!([]),
    )
}

struct Cluster {
    kube: FakeKube,
    dir: tempfile::TempDir,
    config: PathBuf,
}

/// The same repository by digest: what a push would have produced.
fn dev(digest: &str) -> String {
    format!("registry.example.com/prod/app@{digest}")
}

/// A kind-dev cluster running `deployment` (in namespace team-a).
fn cluster_running(deployment: Value) -> Cluster {
    let c = cluster("kind-dev");
    c.kube.add("deployments", NS, deployment);
    c
}

/// A kind-dev cluster where `deployment/web` runs [`BASE`].
fn web_cluster() -> Cluster {
    cluster_running(web(BASE))
}

fn cluster(context: &str) -> Cluster {
    let kube = FakeKube::start();
    let dir = tempfile::tempdir().unwrap();
    let config = kube.kubeconfig(dir.path(), context, NS, None, "dev-token");
    Cluster { kube, dir, config }
}

impl Cluster {
    fn layerup(&self, args: &[&str]) -> Run {
        Layerup::new()
            .env("KUBECONFIG", &self.config)
            .args(args)
            .run()
    }

    /// `layerup deploy <D1 image> deployment/web EXTRA...`.
    fn deploy_web(&self, extra: &[&str]) -> Run {
        let image = dev(D1);
        let mut args = vec!["deploy", &image, "deployment/web"];
        args.extend(extra);
        self.layerup(&args)
    }

    fn image(&self, name: &str, container: &str) -> String {
        image_of(&self.kube.get("deployments", NS, name), container)
    }
}

fn image_of(obj: &Value, container: &str) -> String {
    for field in ["containers", "initContainers"] {
        for c in obj["spec"]["template"]["spec"][field]
            .as_array()
            .into_iter()
            .flatten()
        {
            if c["name"] == container {
                return c["image"].as_str().unwrap().to_string();
            }
        }
    }
    panic!("no container {container} in {obj}")
}

/// The object without what a patch of one image is expected to change.
fn untouched(mut obj: Value, container: &str) -> Value {
    let meta = obj["metadata"].as_object_mut().unwrap();
    for k in ["resourceVersion", "generation"] {
        meta.remove(k);
    }
    meta["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("layerup.dev/images");
    obj.as_object_mut().unwrap().remove("status");
    for field in ["containers", "initContainers"] {
        for c in obj["spec"]["template"]["spec"][field]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            if c["name"] == container {
                c["image"] = json!("<set>");
            }
        }
    }
    obj
}

fn record(obj: &Value) -> Value {
    serde_json::from_str(
        obj["metadata"]["annotations"]["layerup.dev/images"]
            .as_str()
            .expect("layerup's annotation"),
    )
    .unwrap()
}

fn patches(kube: &FakeKube) -> Vec<common::kube::Request> {
    kube.writes()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect()
}

#[test]
fn push_deploy_finds_the_workload_sets_only_its_container_and_waits() {
    let prod = prod();
    let dest = Registry::start();
    let c = cluster_running(web(&prod.oci));
    c.kube.add(
        "deployments",
        NS,
        deployment(
            "other",
            json!([{"name": "db", "image": "postgres:16"}]),
            json!([]),
        ),
    );
    let before = c.kube.get("deployments", NS, "web");
    let tree = app_tree();
    let to = format!("{}/dev/app:dev", dest.host);
    let mut args: Vec<String> = push_args(tree.path(), &prod.oci, &to).into();
    args.push("--deploy".into());
    let run = c.layerup(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let pushed = run.ok().to_string();
    assert!(pushed.starts_with(&format!("{}/dev/app@sha256:", dest.host)));

    let after = c.kube.get("deployments", NS, "web");
    assert_eq!(image_of(&after, "app"), pushed);
    assert_eq!(
        untouched(after.clone(), "app"),
        untouched(before.clone(), "app")
    );
    assert_eq!(
        record(&after)["app"],
        json!({"image": pushed, "previous": prod.oci, "original": prod.oci})
    );
    assert_eq!(
        c.image("other", "db"),
        "postgres:16",
        "a workload not running the base is left alone"
    );
    // One strategic-merge patch, conditional on the version read.
    let sent = patches(&c.kube);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        sent[0].content_type,
        "application/strategic-merge-patch+json"
    );
    let body: Value = serde_json::from_str(&sent[0].body).unwrap();
    assert_eq!(
        body["metadata"]["resourceVersion"],
        before["metadata"]["resourceVersion"]
    );
    // The rollout was awaited until the controller reported every new replica available.
    assert!(
        run.stderr.contains("deployment/web: rolled out in"),
        "{}",
        run.stderr
    );
    let status = &after["status"];
    assert!(status.is_object());
    let pods = c.kube.pods(NS);
    let web_pods: Vec<&Value> = pods
        .iter()
        .filter(|p| p["metadata"]["labels"]["app"] == "web")
        .collect();
    assert_eq!(web_pods.len(), 2);
    for p in web_pods {
        let app = p["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "app");
        assert_eq!(app.unwrap()["image"], pushed.as_str(), "{p}");
    }
    drop(c.dir);
}

#[test]
fn an_init_container_running_the_base_is_the_one_set() {
    let c = cluster_running(deployment(
        "migrate",
        json!([{"name": "main", "image": "busybox:1.36"}]),
        json!([{"name": "schema", "image": BASE}]),
    ));
    let image = dev(D1);
    let out = c.layerup(&["deploy", &image]);
    assert_eq!(out.ok(), format!("deployment/migrate schema {image}"));
    let obj = c.kube.get("deployments", NS, "migrate");
    assert_eq!(image_of(&obj, "schema"), image);
    assert_eq!(image_of(&obj, "main"), "busybox:1.36");
}

#[test]
fn every_matching_workload_of_each_kind_is_set_and_awaited() {
    let c = cluster("kind-dev");
    let mut sts = deployment("store", json!([{"name": "app", "image": BASE}]), json!([]));
    sts["spec"]["updateStrategy"] = json!({"type": "RollingUpdate"});
    sts["spec"]["serviceName"] = json!("store");
    let mut ds = deployment("agent", json!([{"name": "app", "image": BASE}]), json!([]));
    ds["spec"].as_object_mut().unwrap().remove("replicas");
    c.kube.add("deployments", NS, web(BASE));
    c.kube.add("statefulsets", NS, sts);
    c.kube.add("daemonsets", NS, ds);
    let image = dev(D1);
    let out = c.layerup(&["deploy", &image]);
    let mut lines: Vec<&str> = out.ok().lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            format!("daemonset/agent app {image}"),
            format!("deployment/web app {image}"),
            format!("statefulset/store app {image}"),
        ]
    );
    for (res, name) in [
        ("deployments", "web"),
        ("statefulsets", "store"),
        ("daemonsets", "agent"),
    ] {
        assert_eq!(image_of(&c.kube.get(res, NS, name), "app"), image);
        assert!(
            out.stderr.contains(&format!("/{name}: rolled out in")),
            "{}",
            out.stderr
        );
    }
}

#[test]
fn no_matching_workload_lists_what_is_there() {
    let c = cluster_running(web("nginx:1.25"));
    let out = c.layerup(&["deploy", &dev(D1)]);
    out.fails(6, &["no workload in namespace team-a of context kind-dev runs registry.example.com/prod/app", "deployment/web (proxy (envoyproxy/envoy:v1.30), app (nginx:1.25))", "name one as the WORKLOAD argument (layerup deploy IMAGE KIND/NAME)"]);
    // `deploy` takes the workload as an argument: it does not speak of a flag it lacks.
    assert!(!out.stderr.contains("--deploy"), "{}", out.stderr);
    assert!(c.kube.writes().is_empty());
}

#[test]
fn two_containers_running_the_image_are_ambiguous_until_one_is_named() {
    let c = cluster_running(deployment(
        "pair",
        json!([{"name": "api", "image": BASE}, {"name": "worker", "image": BASE}]),
        json!([]),
    ));
    let image = dev(D1);
    let out = c.layerup(&["deploy", &image, "deployment/pair"]);
    out.fails(
        2,
        &[
            "several containers that run the image: api, worker",
            "--container",
        ],
    );
    assert!(c.kube.writes().is_empty());
    c.layerup(&["deploy", &image, "deployment/pair", "--container", "worker"])
        .ok();
    let obj = c.kube.get("deployments", NS, "pair");
    assert_eq!(image_of(&obj, "worker"), image);
    assert_eq!(image_of(&obj, "api"), BASE);
}

#[test]
fn a_conflict_is_read_again_and_retried() {
    let c = web_cluster();
    c.kube.conflicts(2);
    let image = dev(D1);
    c.deploy_web(&[]).ok();
    let sent = patches(&c.kube);
    assert_eq!(sent.len(), 3, "two 409s, then the patch that took");
    let obj = c.kube.get("deployments", NS, "web");
    assert_eq!(image_of(&obj, "app"), image);
    assert_eq!(
        obj["metadata"]["labels"]["touched-by"], "someone-else",
        "the other writer's change is kept"
    );
}

#[test]
fn a_busy_api_server_is_read_again() {
    let c = web_cluster();
    // A restarting API server answers 503 for a moment.
    c.kube.busy(3);
    let image = dev(D1);
    c.deploy_web(&[]).ok();
    let obj = c.kube.get("deployments", NS, "web");
    assert_eq!(image_of(&obj, "app"), image);

    // One that stays down ends in one line that says so.
    c.kube.busy(1000);
    let reads = |kube: &FakeKube| {
        kube.requests()
            .iter()
            .filter(|r| r.method == "GET" && !r.target.contains("watch="))
            .count()
    };
    let before = reads(&c.kube);
    let out = c.deploy_web(&[]);
    out.fails(
        9,
        &["the API server answered 503 ServiceUnavailable: the server is restarting"],
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    // A few tries, not kube's own fifteen (whose waits held a deploy for 5½ minutes).
    assert_eq!(reads(&c.kube) - before, 4);
}

#[test]
fn an_rbac_denial_is_an_auth_error_with_the_servers_words() {
    let c = web_cluster();
    c.kube.deny("patch", "deployments");
    let out = c.deploy_web(&[]);
    out.fails(5, &["cannot patch deployment/web in namespace team-a of context kind-dev: the API server answered 403 Forbidden", "cannot patch resource \"deployments\" in API group \"apps\""]);
    assert!(!out.stderr.contains("dev-token"), "no credential in output");
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
}

#[test]
fn a_context_that_is_not_local_is_refused_before_any_request() {
    let kube = FakeKube::start();
    kube.add("deployments", NS, web(BASE));
    let dir = tempfile::tempdir().unwrap();
    // The context names a remote API server; this server is its HTTP proxy, so a request sent
    // would arrive here.
    let config = kube.kubeconfig(
        dir.path(),
        "gke_acme_prod",
        NS,
        Some("http://prod.example.com:6443"),
        "t",
    );
    let image = dev(D1);
    let out = Layerup::new()
        .env("KUBECONFIG", &config)
        .args(["deploy", &image, "deployment/web"])
        .run();
    out.fails(2, &["context `gke_acme_prod` (API server prod.example.com:6443) is not named like a local development cluster", "--allow-context gke_acme_prod"]);
    assert!(kube.requests().is_empty(), "{:?}", kube.requests());

    // Allowed, by flag or by environment, the same command goes through the proxy to it.
    let allowed = Layerup::new()
        .env("KUBECONFIG", &config)
        .args([
            "deploy",
            &image,
            "deployment/web",
            "--allow-context",
            "gke_acme_prod",
        ])
        .run();
    allowed.ok();
    assert_eq!(image_of(&kube.get("deployments", NS, "web"), "app"), image);
    let by_env = Layerup::new()
        .env("KUBECONFIG", &config)
        .env("LAYERUP_ALLOW_CONTEXTS", "other,gke_acme_prod")
        .args(["rollback", "deployment/web"])
        .run();
    by_env.ok();
}

#[test]
fn a_rollout_that_never_finishes_times_out_with_where_it_stood() {
    let c = web_cluster();
    c.kube.freeze();
    let out = c.deploy_web(&["--timeout", "1s"]);
    out.fails(10, &["deployment/web did not roll out within 1s: waiting for the controller to see the change", "--timeout"]);
}

/// Pods selected by `matchExpressions` are found too: their trouble is told, not only the
/// rollout's status — and another workload's pods, which `matchLabels` alone would take, are not.
#[test]
fn pods_selected_by_expressions_are_watched_for_trouble() {
    let mut d = web(BASE);
    d["spec"]["selector"] = json!({"matchExpressions": [
        {"key": "app", "operator": "In", "values": ["web"]},
        {"key": "track", "operator": "In", "values": ["stable", "edge"]}]});
    d["spec"]["template"]["metadata"]["labels"]["track"] = json!("stable");
    let mut other = deployment(
        "web-canary",
        json!([{"name": "app", "image": "x"}]),
        json!([]),
    );
    other["spec"]["selector"]["matchLabels"] = json!({"app": "web", "track": "canary"});
    other["spec"]["template"]["metadata"]["labels"] = json!({"app": "web", "track": "canary"});
    let c = cluster_running(d);
    c.kube.add("deployments", NS, other);
    c.kube.unpullable(D1);
    let out = c.deploy_web(&["--timeout", "20s"]);
    assert_eq!(out.code, 10, "{}", out.stderr);
    let last = out.stderr.lines().last().unwrap();
    assert!(
        last.starts_with("error: deployment/web did not roll out: pod web-")
            && last.contains("Failed to pull image"),
        "{}",
        out.stderr
    );
    let lists: Vec<String> = c
        .kube
        .requests()
        .into_iter()
        .filter(|r| r.target.contains("/pods?"))
        .map(|r| r.target)
        .collect();
    assert!(
        lists
            .iter()
            .all(|t| t.ends_with("labelSelector=app+in+%28web%29%2Ctrack+in+%28stable%2Cedge%29")),
        "{lists:?}"
    );
}

#[test]
fn an_image_that_cannot_be_pulled_fails_the_rollout_with_the_kubelets_reason() {
    let c = web_cluster();
    c.kube.unpullable(D1);
    let image = dev(D1);
    let out = c.deploy_web(&["--timeout", "60s"]);
    assert_eq!(out.code, 10, "{}", out.stderr);
    let last = out.stderr.lines().last().unwrap();
    assert!(
        last.starts_with("error: deployment/web did not roll out: pod web-")
            && last.contains("container app: ")
            && (last.contains("ErrImagePull") || last.contains("ImagePullBackOff"))
            && last.contains(&format!(
                "Failed to pull image \"{image}\": rpc error: code = NotFound"
            )),
        "{}",
        out.stderr
    );
}

#[test]
fn a_crashing_container_fails_the_rollout() {
    let c = web_cluster();
    c.kube.crashing(D1);
    let out = c.deploy_web(&[]);
    assert_eq!(out.code, 10, "{}", out.stderr);
    assert!(
        out.stderr.contains("CrashLoopBackOff")
            && out
                .stderr
                .contains("Back-off restarting failed container app"),
        "{}",
        out.stderr
    );
}

#[test]
fn no_wait_returns_once_patched() {
    let c = web_cluster();
    c.kube.freeze();
    let image = dev(D1);
    let out = c.deploy_web(&["--no-wait"]);
    out.ok();
    assert!(!out.stderr.contains("waiting"), "{}", out.stderr);
    assert_eq!(c.image("web", "app"), image);
}

#[test]
fn rollback_restores_the_image_before_the_last_change_and_original_the_first() {
    let c = web_cluster();
    let one = dev(D1);
    let two = dev(D2);
    c.layerup(&["deploy", &one, "deployment/web"]).ok();
    c.layerup(&["deploy", &two, "deployment/web"]).ok();
    let out = c.layerup(&["rollback", "deployment/web"]);
    assert_eq!(out.ok(), format!("deployment/web app {one}"));
    assert_eq!(c.image("web", "app"), one);
    assert!(out.stderr.contains("rolled out"), "{}", out.stderr);
    c.layerup(&["rollback", "deployment/web", "--original"])
        .ok();
    assert_eq!(c.image("web", "app"), BASE);

    // Someone else changes the image: layerup does not undo their change.
    c.layerup(&["deploy", &two, "deployment/web"]).ok();
    let config = c.kube.get("deployments", NS, "web");
    let rv = config["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let body = json!({"metadata": {"resourceVersion": rv}, "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "hand/made:1"}]}}}});
    http_patch(
        &c.kube.url,
        "/apis/apps/v1/namespaces/team-a/deployments/web",
        &body,
    );
    let out = c.layerup(&["rollback", "deployment/web"]);
    out.fails(2, &["runs hand/made:1, not", "someone changed it since"]);
    assert_eq!(c.image("web", "app"), "hand/made:1");
}

#[test]
fn rollback_without_a_record_says_so() {
    let c = web_cluster();
    let out = c.layerup(&["rollback", "deployment/web"]);
    out.fails(6, &["has no layerup record"]);
    let missing = c.layerup(&["rollback", "deployment/nope"]);
    assert_eq!(missing.code, 6, "{}", missing.stderr);
    assert!(
        missing
            .stderr
            .contains("there is no deployment/nope in namespace team-a of context kind-dev"),
        "{}",
        missing.stderr
    );
}

#[test]
fn dry_run_prints_the_patch_and_where_and_sends_nothing() {
    let c = web_cluster();
    let image = dev(D1);
    let out = c.deploy_web(&["--dry-run"]);
    let text = out.ok();
    assert!(
        text.starts_with(&format!(
            "would patch deployment/web in namespace team-a of context kind-dev (API server {}):",
            c.kube.url.trim_start_matches("http://")
        )),
        "{text}"
    );
    assert!(text.contains(&format!(
        "container app: registry.example.com/prod/app:1.0 -> {image}"
    )));
    let json_part = &text[text.find('{').unwrap()..];
    let patch: Value = serde_json::from_str(json_part).unwrap();
    assert_eq!(
        patch["spec"]["template"]["spec"]["containers"],
        json!([{"name": "app", "image": image}])
    );
    assert!(c.kube.writes().is_empty(), "{:?}", c.kube.writes());
    assert_eq!(c.image("web", "app"), BASE);
}

#[test]
fn cluster_registry_rewrites_the_reference_the_workload_gets() {
    let prod = prod();
    let dest = Registry::start();
    let c = cluster_running(web(&prod.oci));
    let tree = app_tree();
    let to = format!("{}/dev/app:dev", dest.host);
    let mut args: Vec<String> = push_args(tree.path(), &prod.oci, &to).into();
    args.extend(
        [
            "--deploy",
            "deployment/web",
            "--cluster-registry",
            "registry.local:5000",
        ]
        .map(String::from),
    );
    let pushed = c
        .layerup(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .ok()
        .to_string();
    let digest = digest_of(&pushed);
    assert_eq!(
        c.image("web", "app"),
        format!("registry.local:5000/dev/app@{digest}")
    );
    // `layerup deploy` with a tag asks the registry for its digest, and finds the workload by
    // the cluster's name for the repository.
    let out = c.layerup(&["deploy", &to, "--cluster-registry", "registry.local:5000"]);
    assert_eq!(
        out.ok(),
        format!("deployment/web app registry.local:5000/dev/app@{digest}")
    );
    assert!(out.stderr.contains("already runs"), "{}", out.stderr);
}

#[test]
fn kubectl_reads_back_what_layerup_wrote() {
    require_kubectl();
    let c = web_cluster();
    let image = dev(D1);
    c.deploy_web(&[]).ok();
    let cache = c.dir.path().join("kubectl-cache");
    let got = run(Command::new("kubectl")
        .env("KUBECONFIG", &c.config)
        .env("HOME", c.dir.path())
        .args(["--cache-dir"])
        .arg(&cache)
        .args(["get", "deployment", "web", "-n", NS, "-o", "json"]));
    let obj: Value = serde_json::from_str(&got).unwrap();
    assert_eq!(image_of(&obj, "app"), image);
    assert_eq!(image_of(&obj, "proxy"), "envoyproxy/envoy:v1.30");
    let images = run(Command::new("kubectl")
        .env("KUBECONFIG", &c.config)
        .env("HOME", c.dir.path())
        .args(["--cache-dir"])
        .arg(&cache)
        .args([
            "get",
            "deploy/web",
            "-n",
            NS,
            "-o",
            "jsonpath={.metadata.annotations.layerup\\.dev/images}",
        ]));
    let rec: Value = serde_json::from_str(&images).unwrap();
    assert_eq!(rec["app"]["previous"], BASE);
}

#[test]
fn cluster_flags_without_deploy_are_a_usage_error() {
    let src = format!("{}/testdata/app:/app", env!("CARGO_MANIFEST_DIR"));
    let out = push(&[
        &src,
        "--base",
        "a/b:1",
        "--to",
        "localhost:5000/c:1",
        "-n",
        "x",
    ]);
    out.fails(2, &["--namespace is for the cluster: add --deploy"]);
}

/// A strategic-merge PATCH as another client would send it.
fn http_patch(base: &str, path: &str, body: &Value) {
    let host = base.trim_start_matches("http://");
    let text = body.to_string();
    let (status, _, _) = http(
        host,
        "PATCH",
        path,
        &[
            ("Content-Type", "application/strategic-merge-patch+json"),
            ("Authorization", "Bearer dev-token"),
        ],
        text.as_bytes(),
    );
    assert_eq!(status, 200);
}

#[test]
fn an_unreachable_api_server_and_a_refused_token_are_said_plainly() {
    let c = web_cluster();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let config = c
        .kube
        .kubeconfig(c.dir.path(), "kind-gone", NS, Some(&gone), "t");
    // Without the proxy: the context's server is a closed port.
    let text = std::fs::read_to_string(&config).unwrap();
    let direct: String = text
        .lines()
        .filter(|l| !l.contains("proxy-url"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&config, direct).unwrap();
    let out = Layerup::new()
        .env("KUBECONFIG", &config)
        .args(["deploy", &dev(D1), "deployment/web"])
        .run();
    out.fails(4, &[&format!(
            "cannot read deployment/web: the API server {} of context kind-gone could not be reached: Connection refused",
            gone.trim_start_matches("http://")
        )]);

    c.kube.require_token("the-right-one");
    let out = c.deploy_web(&[]);
    assert_eq!(out.code, 5, "{}", out.stderr);
    assert!(
        out.stderr.contains("answered 401 Unauthorized") && !out.stderr.contains("dev-token"),
        "{}",
        out.stderr
    );
}

/// The tests' API server merges as the API reference says — what makes "nothing else changed"
/// above mean something: a strategic-merge patch keeps the containers it does not name, a JSON
/// merge patch replaces the list, apply needs a field manager, a stale resourceVersion is a 409.
#[test]
fn the_test_api_server_patches_as_the_api_reference_says() {
    let c = web_cluster();
    let path = "/apis/apps/v1/namespaces/team-a/deployments/web";
    let send = |media: &str, query: &str, body: Value| -> (u16, Value) {
        let host = c.kube.url.trim_start_matches("http://").to_string();
        let (code, _, out) = http(
            &host,
            "PATCH",
            &format!("{path}{query}"),
            &[
                ("Content-Type", media),
                ("Authorization", "Bearer dev-token"),
            ],
            body.to_string().as_bytes(),
        );
        (code, serde_json::from_slice(&out).unwrap())
    };
    let one =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "x:1"}]}}}});
    let (code, obj) = send("application/strategic-merge-patch+json", "", one.clone());
    assert_eq!(code, 200);
    let names: Vec<&str> = obj["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["proxy", "app"]);
    assert_eq!(image_of(&obj, "app"), "x:1");
    assert_eq!(obj["metadata"]["generation"], 2);

    let (code, status) = send("application/apply-patch+yaml", "", one.clone());
    assert_eq!((code, status["kind"].as_str()), (422, Some("Status")));
    let (code, _) = send(
        "application/apply-patch+yaml",
        "?fieldManager=t",
        one.clone(),
    );
    assert_eq!(code, 200);
    let (code, status) = send("text/plain", "", one.clone());
    assert_eq!(
        (code, status["reason"].as_str()),
        (415, Some("UnsupportedMediaType"))
    );

    let stale = json!({"metadata": {"resourceVersion": "1"}, "spec": {}});
    let (code, status) = send("application/strategic-merge-patch+json", "", stale);
    assert_eq!((code, status["reason"].as_str()), (409, Some("Conflict")));
    assert!(status["message"]
        .as_str()
        .unwrap()
        .contains("the object has been modified"));

    let (code, obj) = send("application/merge-patch+json", "", one);
    assert_eq!(code, 200);
    assert_eq!(
        obj["spec"]["template"]["spec"]["containers"],
        json!([{"name": "app", "image": "x:1"}]),
        "a JSON merge patch replaces the list"
    );
}

#[test]
fn a_loopback_server_is_no_evidence_of_a_development_cluster() {
    // What an `ssh -L` tunnel or `kubectl proxy` to production looks like.
    let c = cluster("production");
    c.kube.add("deployments", NS, web(BASE));
    for extra in [&[][..], &["--dry-run"][..]] {
        let out = c.deploy_web(extra);
        out.fails(2, &["context `production`", "--allow-context production"]);
    }
    assert!(c.kube.requests().is_empty(), "{:?}", c.kube.requests());

    // push --deploy asks before pushing anything.
    let dev = Registry::start();
    let tree = app_tree();
    let out = Layerup::new()
        .env("KUBECONFIG", &c.config)
        .args(push_args(
            tree.path(),
            &prod().oci,
            &dev.reference("dev/app:1"),
        ))
        .args(["--deploy", "deployment/web"])
        .run();
    out.fails(2, &["context `production`"]);
    assert!(dev.writes().is_empty(), "{:?}", dev.writes());
    assert!(c.kube.requests().is_empty());
}

#[test]
fn a_failing_credential_plugin_is_named_and_its_output_never_shown() {
    let kube = FakeKube::start();
    kube.add("deployments", NS, web(BASE));
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("get-token");
    std::fs::write(
        &plugin,
        "#!/bin/sh\necho '{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{\"token\":\"SECRET-TOKEN-0042\"}}'\necho 'SECRET-TOKEN-0042 on stderr too' >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&plugin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = dir.path().join("kubeconfig");
    std::fs::write(
        &config,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\ncontexts:\n- name: kind-dev\n  context:\n    cluster: c\n    user: u\n    namespace: {NS}\ncurrent-context: kind-dev\nusers:\n- name: u\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: {}\n      interactiveMode: Never\n",
            kube.url,
            plugin.display()
        ),
    )
    .unwrap();
    let image = dev(D1);
    for json in [false, true] {
        let mut l =
            Layerup::new()
                .env("KUBECONFIG", &config)
                .args(["deploy", &image, "deployment/web"]);
        if json {
            l = l.args(["--json"]);
        }
        let out = l.run();
        out.fails(5, &["get-token", "exit status: 3"]);
        assert!(
            !out.stderr.contains("SECRET-TOKEN") && !out.stdout.contains("SECRET-TOKEN"),
            "the plugin's output was shown: {}{}",
            out.stderr,
            out.stdout
        );
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    }
}

#[test]
fn deploy_and_rollback_take_an_image_of_the_project_by_name() {
    require_kubectl();
    let dev_reg = Registry::start();
    let to = dev_reg.reference("shop/web:dev");
    let c = cluster_running(web(&prod().oci));
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("web")).unwrap();
    std::fs::write(dir.path().join("web/NAME"), "web").unwrap();
    std::fs::write(
        dir.path().join("layerup.toml"),
        format!(
            "base = \"{}\"\nnamespace = \"{NS}\"\n[images.web]\nto = \"{to}\"\n\
             mappings = [\"./web:/app\"]\ndeploy = \"deployment/web\"\ncontainer = \"app\"\n",
            prod().oci
        ),
    )
    .unwrap();
    let in_dir = |args: &[&str]| {
        let mut l = Layerup::new().env("KUBECONFIG", &c.config).args(args);
        l.command().current_dir(dir.path());
        l.run()
    };
    let pushed = in_dir(&["push", "web", "--no-wait"]);
    assert_eq!(pushed.code, 0, "{}", pushed.stderr);
    let reference = pushed
        .stdout
        .lines()
        .next()
        .unwrap()
        .strip_prefix("web ")
        .unwrap()
        .to_string();
    assert_eq!(c.image("web", "app"), reference);

    // `deploy web`: web's `to`, resolved to its digest, set in web's workload.
    run(Command::new("kubectl").env("KUBECONFIG", &c.config).args([
        "-n",
        NS,
        "set",
        "image",
        "deployment/web",
        &format!("app={}", prod().oci),
    ]));
    let deployed = in_dir(&["deploy", "web", "--no-wait"]);
    assert_eq!(deployed.code, 0, "{}", deployed.stderr);
    assert_eq!(
        deployed.stdout.trim(),
        format!("web deployment/web app {reference}")
    );
    assert_eq!(c.image("web", "app"), reference);

    let rolled = in_dir(&["rollback", "web", "--no-wait"]);
    assert_eq!(rolled.code, 0, "{}", rolled.stderr);
    assert_eq!(c.image("web", "app"), prod().oci);
}

/// A push with --deploy and no --platform, from the multi-platform base, into a cluster whose
/// nodes are `nodes` (os, arch).
fn push_for_nodes(nodes: &[(&str, &str)], dev: &Registry) -> (Run, Cluster) {
    let c = cluster_running(web(&prod().multi));
    for (i, (os, arch)) in nodes.iter().enumerate() {
        c.kube.add_node(&format!("node-{i}"), os, arch);
    }
    let tree = app_tree();
    let run = c.layerup(&[
        "push",
        &format!("{}:/app", tree.path().display()),
        "--base",
        &prod().multi,
        "--to",
        &dev.reference("dev/app:nodes"),
        "--deploy",
        "deployment/web",
        "--container",
        "app",
        "-n",
        NS,
        "--no-wait",
    ]);
    (run, c)
}

#[test]
fn without_platform_a_deploy_pushes_the_platforms_of_the_clusters_nodes() {
    let dev = Registry::start();
    let (run, c) = push_for_nodes(&[("linux", "arm64")], &dev);
    let pinned = run.ok().lines().next().unwrap().to_string();
    assert_eq!(inspect_config(&pinned)["architecture"], "arm64");
    assert_eq!(c.image("web", "app"), pinned);

    let (run, c) = push_for_nodes(
        &[("linux", "amd64"), ("linux", "arm64"), ("linux", "amd64")],
        &dev,
    );
    let pinned = run.ok().lines().next().unwrap().to_string();
    let index = inspect_raw(&pinned);
    let platforms: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(platforms, ["amd64", "arm64"], "an index of both");
    assert_eq!(c.image("web", "app"), pinned);

    let (run, c) = push_for_nodes(&[("linux", "s390x")], &dev);
    run.fails(
        6,
        &["no linux/s390x image; it has linux/amd64, linux/arm64"],
    );
    assert_eq!(c.image("web", "app"), prod().multi, "nothing deployed");
}

#[test]
fn a_rollout_refused_for_the_platform_says_so() {
    let c = web_cluster();
    c.kube.wrong_platform("@sha256:11111");
    let out = c.deploy_web(&["--timeout", "20s"]);
    out.fails(
        10,
        &[
            "no match for platform in manifest",
            "no build for the node's platform",
        ],
    );
}

/// Issue 26: `push --deploy deployment/nope` pushed, printed the reference, then failed; with
/// the cluster down it warned, pushed, then failed. The workload is found while the base is
/// read, and a deploy that cannot happen pushes nothing: no blob, no tag.
#[test]
fn a_push_whose_deploy_cannot_happen_pushes_nothing() {
    let c = cluster_running(web(&prod().oci));
    let tree = app_tree();
    let dest = Registry::start();
    let to = dest.reference("dev/app:dev");
    let push = |config: &std::path::Path, deploy: &str| {
        let mut args: Vec<String> = push_args(tree.path(), &prod().oci, &to).into();
        args.extend(["--deploy".into(), deploy.into()]);
        Layerup::new().env("KUBECONFIG", config).args(&args).run()
    };
    let out = push(&c.config, "deployment/nope");
    out.fails(
        6,
        &["there is no deployment/nope in namespace team-a of context kind-dev"],
    );
    assert_eq!(out.stdout, "", "no reference printed");
    // No workload runs the image (web runs another base): said before anything moves.
    let other = web_cluster();
    let out = push(&other.config, "");
    out.fails(
        6,
        &[
            "no workload in namespace team-a of context kind-dev runs",
            "with --deploy KIND/NAME",
        ],
    );
    // The cluster down.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let config = c
        .kube
        .kubeconfig(c.dir.path(), "kind-gone", NS, Some(&gone), "t");
    let text = std::fs::read_to_string(&config).unwrap();
    let direct: String = text
        .lines()
        .filter(|l| !l.contains("proxy-url"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&config, direct).unwrap();
    let out = push(&config, "deployment/web");
    out.fails(4, &["could not be reached"]);
    assert!(
        !out.stderr.contains("in namespace") || !out.stderr.contains("nodes"),
        "nodes are no namespace's: {}",
        out.stderr
    );
    assert!(dest.writes().is_empty(), "{:?}", dest.writes());
}
