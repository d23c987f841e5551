//! Live update: edits applied to the running containers through `pods/exec` with the very
//! delta that is pushed. The tests' API server runs each pod's containers for real (podman +
//! runc, images pulled from the test registry) and serves exec as kubectl and kube-rs speak it.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::kube::FakeKube;
use common::*;
use serde_json::{json, Value};

const NS: &str = "team-a";

/// A deployment of one replica whose `app` container runs `image` and stays up.
fn app(image: &str) -> Value {
    json!({
        "metadata": {"name": "app", "labels": {"app": "app"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "app"}},
            "strategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": {"app": "app"}},
                "spec": {"containers": [{"name": "app", "image": image,
                    "command": ["sh", "-c", "while true; do sleep 1; done"]}]}
            }
        }
    })
}

/// The running pods of `app`: (name, the image its container runs, restart count).
fn running(kube: &FakeKube) -> Vec<(String, String, i64)> {
    kube.pods(NS)
        .iter()
        .filter(|p| p["status"]["phase"] == "Running")
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

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "never saw {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A cluster (context kind-dev) running `image` in `deployment/app`, its pod up.
fn cluster_running(image: &str) -> (FakeKube, tempfile::TempDir, std::path::PathBuf, String) {
    let kube = FakeKube::start_with_containers();
    kube.add("deployments", NS, app(image));
    let dir = tempfile::tempdir().unwrap();
    let config = kube.kubeconfig(dir.path(), "kind-dev", NS, None, "t");
    let pod = wait_for("the pod running", || {
        running(&kube)
            .into_iter()
            .find(|p| p.1 == image)
            .map(|p| p.0)
    });
    (kube, dir, config, pod)
}

fn kubectl(config: &Path, args: &[&str]) -> std::process::Output {
    require_kubectl();
    Command::new("kubectl")
        .env("KUBECONFIG", config)
        .args(["-n", NS])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn kubectl_exec_runs_in_the_pods_real_container() {
    let dev = Registry::start();
    let tree = app_tree();
    let image = push_tree(tree.path(), &prod().oci, &dev.reference("dev/app:1"), &[])
        .ok()
        .to_string();
    let (_kube, _dir, config, pod) = cluster_running(&image);
    let out = kubectl(
        &config,
        &["exec", &pod, "-c", "app", "--", "cat", "/app/VERSION"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        std::fs::read_to_string(tree.path().join("VERSION")).unwrap()
    );
    let mut child = Command::new("kubectl")
        .env("KUBECONFIG", &config)
        .args([
            "-n",
            NS,
            "exec",
            "-i",
            &pod,
            "--",
            "sh",
            "-c",
            "cat; echo err >&2",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"through stdin\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through stdin\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    let out = kubectl(&config, &["exec", &pod, "--", "sh", "-c", "exit 3"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
