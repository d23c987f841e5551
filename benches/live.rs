//! Benchmark (not a test): edit → new code in the running container, three ways, in the same
//! run, on the tests' own cluster (tests/common/kube.rs: its kubelet runs pods with podman +
//! runc, images pulled from a registry on loopback):
//!
//!   (a) `layerup watch --sync`: from the write to the sync's status line (the exec returned,
//!       so `tar -x` is done and the file is in the container), the edit also pushed;
//!   (b) `layerup watch --deploy` without --sync: from the write to the rollout's end (a new pod
//!       running the pushed image, ready);
//!   (c) `kubectl cp` of the edited file into the container, by hand after the write (what
//!       Tilt's live_update also does: tar over the exec API), nothing pushed.
//!
//! Each edit is read back from the container afterwards (not timed). Medians of RUNS edits.
//!
//!   cargo bench --bench live [-- RUNS]

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::kube::{looping_deployment, FakeKube};
use common::watching::Watching;
use common::*;

const NS: &str = "team-a";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn read_back(kube: &FakeKube, pod: &str) -> String {
    run(podman()
        .arg("exec")
        .arg(kube.podman_name(pod, "app"))
        .args(["cat", "/app/VERSION"]))
}

/// Seconds from now until `count` of the watch's log passes `before`.
fn until(w: &Watching, count: impl Fn(&str) -> usize, before: usize) -> f64 {
    let t = Instant::now();
    w.wait_for("the edit applied", |w| count(&w.log()) > before);
    t.elapsed().as_secs_f64()
}

fn watch(tree: &Path, dev: &Registry, config: &Path, deploy: &str, sync: bool) -> Watching {
    let state = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = push_args(tree, &prod().oci, &dev.reference("dev/app:dev"))
        .into_iter()
        .skip(1)
        .collect();
    args.extend(["--deploy".into(), deploy.into()]);
    if sync {
        args.extend(["--sync".into(), "--settle".into(), "1h".into()]);
    }
    let layerup = Layerup::new()
        .env("LAYERUP_STATE_DIR", state.path())
        .env("KUBECONFIG", config)
        .args(["watch"])
        .args(args);
    Watching::of(layerup, state)
}

fn main() {
    let runs: usize = std::env::args()
        .filter_map(|a| a.parse().ok())
        .next()
        .unwrap_or(10);
    require_kubectl();
    let dev = Registry::start();
    let kube = FakeKube::start_with_containers();
    let dir = tempfile::tempdir().unwrap();
    let config = kube.kubeconfig(dir.path(), "kind-bench", NS, None, "t");
    let kubectl = |args: &[&str]| {
        run(Command::new("kubectl")
            .env("KUBECONFIG", &config)
            .env("HOME", dir.path())
            .args(["-n", NS])
            .args(args))
    };

    // (a) live update.
    kube.add("deployments", NS, looping_deployment("live", &prod().oci));
    kube.pod_running(NS, "live", &prod().oci);
    let tree = app_tree();
    let w = watch(tree.path(), &dev, &config, "deployment/live", true);
    let synced = |log: &str| log.lines().filter(|l| l.starts_with("synced to ")).count();
    let rolled = |log: &str| log.matches("rolled out in").count();
    w.wait_for("the first rollout", |w| rolled(&w.log()) == 1);
    let first = w.pushes()[0].clone();
    let pod = kube.pod_running(NS, "live", &first);
    let mut live = Vec::new();
    for i in 0..runs {
        let before = synced(&w.log());
        std::fs::write(tree.path().join("VERSION"), format!("live {i}\n")).unwrap();
        live.push(until(&w, synced, before));
        assert_eq!(read_back(&kube, &pod), format!("live {i}\n"));
    }
    assert_eq!(rolled(&w.log()), 1, "no rollout under --sync");
    let newest = w.pushes().last().unwrap().clone();
    // Ending the watch sets the newest image: (c) copies into that pod.
    w.stop();
    let pod = kube.pod_running(NS, "live", &newest);

    // (b) the rollout path.
    kube.add("deployments", NS, looping_deployment("rolled", &prod().oci));
    kube.pod_running(NS, "rolled", &prod().oci);
    let tree = app_tree();
    let w = watch(tree.path(), &dev, &config, "deployment/rolled", false);
    w.wait_for("the first rollout", |w| rolled(&w.log()) == 1);
    let mut rollout = Vec::new();
    for i in 0..runs {
        let before = rolled(&w.log());
        std::fs::write(tree.path().join("VERSION"), format!("rolled {i}\n")).unwrap();
        rollout.push(until(&w, rolled, before));
        let image = w.pushes().last().unwrap().clone();
        let pod = kube.pod_running(NS, "rolled", &image);
        assert_eq!(read_back(&kube, &pod), format!("rolled {i}\n"));
    }
    w.stop();

    // (c) kubectl cp into the container of (a).
    kubectl(&["get", "pods"]);
    let mut cp = Vec::new();
    for i in 0..runs {
        std::fs::write(tree.path().join("VERSION"), format!("cp {i}\n")).unwrap();
        let t = Instant::now();
        kubectl(&[
            "cp",
            "-c",
            "app",
            &tree.path().join("VERSION").display().to_string(),
            &format!("{pod}:/app/VERSION"),
        ]);
        cp.push(t.elapsed().as_secs_f64());
        assert_eq!(read_back(&kube, &pod), format!("cp {i}\n"));
    }

    let show = |v: &[f64]| {
        v.iter()
            .map(|s| format!("{s:.3}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!("edit → new code in the running container, median of {runs}:");
    println!(
        "  (a) layerup watch --sync (pushed too)   {:.3} s   [{}]",
        median(live.clone()),
        show(&live)
    );
    println!(
        "  (b) layerup watch --deploy (rollout)    {:.3} s   [{}]",
        median(rollout.clone()),
        show(&rollout)
    );
    println!(
        "  (c) kubectl cp (nothing pushed)         {:.3} s   [{}]",
        median(cp.clone()),
        show(&cp)
    );
}
