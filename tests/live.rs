//! Live update: edits applied to the running containers through `pods/exec` with the very
//! delta that is pushed. The tests' API server runs each pod's containers for real (podman +
//! runc, images pulled from the test registry) and serves exec as kubectl and kube-rs speak it.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::kube::{looping_deployment, FakeKube};
use common::*;
use serde_json::{json, Value};

const NS: &str = "team-a";

/// The running pods of `deployment/app`: (name, the image its container runs, restart count).
fn running(kube: &FakeKube) -> Vec<(String, String, i64)> {
    kube.running(NS, "app")
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
    kube.add("deployments", NS, looping_deployment("app", image));
    let dir = tempfile::tempdir().unwrap();
    let config = kube.kubeconfig(dir.path(), "kind-dev", NS, None, "t");
    let pod = pod_running(&kube, image);
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
    let out = output_with_input(
        Command::new("kubectl").env("KUBECONFIG", &config).args([
            "-n",
            NS,
            "exec",
            "-i",
            &pod,
            "--",
            "sh",
            "-c",
            "cat; echo err >&2",
        ]),
        b"through stdin\n",
    );
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

/// Every path under `/app` as a container sees it: kind, mode, owner, link count, and the
/// bytes' md5 or the link's target. The same script reads a running container and the pushed
/// image run afresh.
const LISTING: &str = r#"cd /app && find . | sort | while IFS= read -r f; do
  if [ -L "$f" ]; then echo "$f link $(stat -c '%u:%g' "$f") $(readlink "$f")";
  elif [ -d "$f" ]; then echo "$f dir $(stat -c '%a %u:%g' "$f")";
  else echo "$f file $(stat -c '%a %u:%g %h' "$f") $(md5sum < "$f")"; fi; done"#;

/// `podman exec` into the container running `app` of `pod`.
fn in_container(kube: &FakeKube, pod: &str, script: &str) -> String {
    run(podman()
        .arg("exec")
        .arg(kube.podman_name(pod, "app"))
        .args(["sh", "-c", script]))
}

/// The image `deployment/app`'s template names.
fn template(kube: &FakeKube) -> String {
    kube.get("deployments", NS, "app")["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `layerup watch --sync` of `tree` into `deployment/app`, its first push rolled out.
fn watch_sync(
    tree: &Path,
    dev: &Registry,
    config: &Path,
    extra: &[&str],
) -> common::watching::Watching {
    let mut args = vec!["--deploy", "deployment/app", "--sync"];
    args.extend(extra);
    let w = common::watching::Watching::start_with(
        tree,
        &dev.reference("dev/app:dev"),
        &args,
        Some(config),
    );
    w.wait_for("the first rollout", |w| rolled(w) == 1);
    w
}

fn rolled(w: &common::watching::Watching) -> usize {
    w.log().matches("deployment/app: rolled out in").count()
}

fn synced(w: &common::watching::Watching) -> usize {
    w.log()
        .lines()
        .filter(|l| l.starts_with("synced to "))
        .count()
}

/// The pod of `deployment/app` running `image`, once there is one.
fn pod_running(kube: &FakeKube, image: &str) -> String {
    kube.pod_running(NS, "app", image)
}

/// Writes, waits for that edit's sync, and says which push it was.
fn edit_synced(w: &common::watching::Watching, edit: impl FnOnce()) -> String {
    let before = synced(w);
    edit();
    w.wait_for("the edit synced", |w| synced(w) == before + 1);
    w.pushes().last().unwrap().clone()
}

#[test]
fn edits_reach_the_running_container_without_a_rollout_and_it_equals_the_pushed_image() {
    let dev = Registry::start();
    let tree = app_tree();
    let (kube, _dir, config, _) = cluster_running(&prod().oci);
    let w = watch_sync(tree.path(), &dev, &config, &["--settle", "1h"]);
    let first = w.pushes()[0].clone();
    let pod = pod_running(&kube, &first);
    let t = tree.path();
    let last = edit_synced(&w, || std::fs::write(t.join("VERSION"), "2\n").unwrap());
    assert_ne!(last, first);
    // In the container at once: the same pod, never restarted, its template unchanged.
    assert_eq!(in_container(&kube, &pod, "cat /app/VERSION"), "2\n");
    assert_eq!(running(&kube), vec![(pod.clone(), first.clone(), 0)]);
    assert_eq!(template(&kube), first);
    assert_eq!(rolled(&w), 1, "{}", w.log());
    // Deletions, a directory moved, a file and a link that became directories, a mode change,
    // a new tree: each its own edit, each synced.
    edit_synced(&w, || std::fs::remove_file(t.join("pkg/mod.py")).unwrap());
    edit_synced(&w, || {
        std::fs::rename(t.join("pkg/sub"), t.join("pkg/moved")).unwrap()
    });
    edit_synced(&w, || {
        std::fs::remove_file(t.join("run.sh")).unwrap();
        std::fs::create_dir(t.join("run.sh")).unwrap();
        std::fs::write(t.join("run.sh/inside"), "was a file\n").unwrap();
    });
    edit_synced(&w, || {
        std::os::unix::fs::symlink("main.py", t.join("entry")).unwrap();
    });
    edit_synced(&w, || {
        std::fs::remove_file(t.join("entry")).unwrap();
        std::fs::create_dir_all(t.join("entry/deeper")).unwrap();
        std::fs::write(t.join("entry/deeper/x.py"), "x = 1\n").unwrap();
    });
    let last = edit_synced(&w, || {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(t.join("secret.key"), std::fs::Permissions::from_mode(0o640))
            .unwrap();
        std::fs::create_dir_all(t.join("lib/a/b")).unwrap();
        std::fs::write(t.join("lib/a/b/c.txt"), "c\n").unwrap();
        std::fs::write(t.join("pkg/moved/data.txt"), "rewritten\n").unwrap();
    });
    assert_eq!(running(&kube), vec![(pod.clone(), first.clone(), 0)]);
    let container = in_container(&kube, &pod, LISTING);
    let image = run_in(&last, LISTING);
    assert_eq!(container, image);
    for seen in [
        "./pkg/moved/data.txt file",
        "./run.sh/inside",
        "./entry/deeper/x.py",
    ] {
        assert!(container.contains(seen), "{seen} missing:\n{container}");
    }
    assert!(!container.contains("./pkg/mod.py"), "{container}");
    // Stopping the watch sets the newest image in the template, and waits for its rollout.
    let log = w.stop();
    assert!(
        log.contains("updating the workloads' template: the watch is ending"),
        "{log}"
    );
    assert_eq!(template(&kube), last);
    pod_running(&kube, &last);
    // Every sync went through the exec API, each as one exec (no --then).
    let execs = kube
        .requests()
        .iter()
        .filter(|r| r.target.contains("/exec"))
        .count();
    assert_eq!(execs, 7, "one exec per edit");
}

/// The references pushed so far, from `--json` documents.
fn pushed_json(w: &common::watching::Watching) -> Vec<String> {
    w.pushes()
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter_map(|d| d["reference"].as_str().map(String::from))
        .collect()
}

#[test]
fn settled_edits_and_a_restarted_container_bring_the_template_to_the_newest_image() {
    let dev = Registry::start();
    let tree = app_tree();
    let (kube, _dir, config, _) = cluster_running(&prod().oci);
    let w = watch_sync(
        tree.path(),
        &dev,
        &config,
        &[
            "--settle",
            "5s",
            "--json",
            "--then",
            "cat /app/VERSION > /srv/then-saw",
        ],
    );
    let first = pushed_json(&w)[0].clone();
    let pod = pod_running(&kube, &first);
    edit_synced(&w, || {
        std::fs::write(tree.path().join("VERSION"), "2\n").unwrap()
    });
    let second = pushed_json(&w)[1].clone();
    let doc: Value = w
        .pushes()
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|d| d.get("synced").is_some())
        .expect("a synced document");
    assert_eq!(doc["synced"]["reference"], second.as_str());
    assert_eq!(doc["synced"]["pods"], json!([pod]));
    // --then ran in the container, after the files were there.
    assert_eq!(in_container(&kube, &pod, "cat /srv/then-saw"), "2\n");
    assert_eq!(template(&kube), first);
    // Five seconds without an edit: the template takes it, and a new pod runs it.
    w.wait_for("the template updated", |w| rolled(w) == 2);
    assert!(
        w.log()
            .contains("updating the workloads' template: no edit for 5s"),
        "{}",
        w.log()
    );
    assert_eq!(template(&kube), second);
    let pod = pod_running(&kube, &second);
    // Synced again, into the new pod; then its container restarts and loses the edit: the
    // template takes the newest image at once, well before the settle time.
    edit_synced(&w, || {
        std::fs::write(tree.path().join("VERSION"), "3\n").unwrap()
    });
    let third = pushed_json(&w)[2].clone();
    assert_eq!(in_container(&kube, &pod, "cat /app/VERSION"), "3\n");
    run(podman().args(["kill", &kube.podman_name(&pod, "app")]));
    w.wait_for("the restart noticed", |w| {
        w.log()
            .contains(&format!("container app of pod {pod} restarted"))
    });
    w.wait_for("the third rollout", |w| rolled(w) == 3);
    assert_eq!(template(&kube), third);
    let pod = pod_running(&kube, &third);
    assert_eq!(in_container(&kube, &pod, "cat /app/VERSION"), "3\n");
    // Under --json each catch-up is a document too, with its stable code.
    let codes: Vec<String> = w
        .pushes()
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter_map(|d| d["settling"]["code"].as_str().map(String::from))
        .collect();
    assert_eq!(codes, ["settled", "container_restarted"]);
    let log = w.stop();
    // Nothing was behind at the end: no further update.
    assert!(!log.contains("the watch is ending"), "{log}");
    assert_eq!(template(&kube), third);
}

/// Writes, and waits for the edit's push to be rolled out instead of synced, for `why`.
fn edit_rolled_out(
    w: &common::watching::Watching,
    kube: &FakeKube,
    why: &str,
    edit: impl FnOnce(),
) -> String {
    let (rolls, syncs) = (rolled(w), synced(w));
    edit();
    w.wait_for("the edit rolled out", |w| rolled(w) == rolls + 1);
    let log = w.log();
    let said = log
        .lines()
        .rfind(|l| l.starts_with("not synced: "))
        .unwrap_or_else(|| panic!("no fallback said:\n{log}"));
    assert!(
        said.contains(why) && said.ends_with("; rolling out"),
        "{said}"
    );
    assert_eq!(synced(w), syncs, "{log}");
    let last = w.pushes().last().unwrap().clone();
    assert_eq!(template(kube), last);
    pod_running(kube, &last);
    last
}

#[test]
fn each_edit_that_cannot_be_synced_rolls_out_and_says_why() {
    let dev = Registry::start();
    let tree = app_tree();
    let t = tree.path();
    let (kube, _dir, config, _) = cluster_running(&prod().oci);
    // A binary compiled per platform, outside the tree.
    let out = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(out.path().join("linux-amd64")).unwrap();
    std::fs::write(out.path().join("linux-amd64/server"), "1\n").unwrap();
    let per_platform = format!(
        "{}/{{os}}-{{arch}}/server:/app/server",
        out.path().display()
    );
    let w = watch_sync(
        t,
        &dev,
        &config,
        &[
            &per_platform,
            "--settle",
            "1h",
            "--restart-on",
            "package.json",
        ],
    );
    let last = edit_rolled_out(&w, &kube, "files of a per-platform mapping", || {
        std::fs::write(out.path().join("linux-amd64/server"), "2\n").unwrap()
    });
    assert_eq!(
        in_container(&kube, &pod_running(&kube, &last), "cat /app/server"),
        "2\n"
    );
    // A file the app reads only at start.
    edit_rolled_out(
        &w,
        &kube,
        "/app/package.json matches --restart-on `package.json`",
        || std::fs::write(t.join("package.json"), "{}").unwrap(),
    );
    // Other edits still sync.
    edit_synced(&w, || std::fs::write(t.join("VERSION"), "2\n").unwrap());
    // A container without sh (busybox sh runs its own tar even without /bin/tar).
    let pod = pod_running(&kube, &template(&kube));
    in_container(&kube, &pod, "rm /bin/sh");
    let last = edit_rolled_out(&w, &kube, "has no sh or tar", || {
        std::fs::write(t.join("VERSION"), "3\n").unwrap()
    });
    // A teammate set another image: the pods no longer run the last one deployed.
    let out = kubectl(
        &config,
        &[
            "set",
            "image",
            "deployment/app",
            &format!("app={}", prod().oci),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the teammate's image running", || {
        let pods = running(&kube);
        (pods.len() == 1 && pods[0].1 == prod().oci).then_some(())
    });
    assert_ne!(last, prod().oci);
    edit_rolled_out(&w, &kube, "not the last image deployed", || {
        std::fs::write(t.join("VERSION"), "4\n").unwrap()
    });
    // RBAC refuses exec.
    kube.deny("create", "pods/exec");
    edit_rolled_out(&w, &kube, "exec refused", || {
        std::fs::write(t.join("VERSION"), "5\n").unwrap()
    });
    w.stop();
}

/// A deployment whose `app` container has this securityContext.
fn secured(image: &str, security: Value) -> Value {
    let mut d = looping_deployment("app", image);
    d["spec"]["template"]["spec"]["containers"][0]["securityContext"] = security;
    d
}

#[rstest::rstest]
#[case::read_only_root(json!({"readOnlyRootFilesystem": true}), "Read-only file system")]
#[case::another_user(json!({"runAsUser": 1000}), "Permission denied")]
fn a_container_that_cannot_take_the_files_rolls_out(#[case] security: Value, #[case] why: &str) {
    let dev = Registry::start();
    let tree = app_tree();
    let kube = FakeKube::start_with_containers();
    kube.add("deployments", NS, secured(&prod().oci, security));
    let dir = tempfile::tempdir().unwrap();
    let config = kube.kubeconfig(dir.path(), "kind-dev", NS, None, "t");
    pod_running(&kube, &prod().oci);
    let w = watch_sync(tree.path(), &dev, &config, &["--settle", "1h"]);
    edit_rolled_out(&w, &kube, why, || {
        std::fs::write(tree.path().join("VERSION"), "2\n").unwrap()
    });
    w.stop();
}

#[rstest::rstest]
#[case::without_a_deploy_target(&["--sync"][..], "--sync applies edits to the deployed containers: add --deploy (or `deploy` in layerup.toml)")]
#[case::a_settle_that_is_no_duration(&["--sync", "--deploy", "deployment/app", "--settle", "soon"][..], "--settle `soon` is not a duration (like 30s, 2m)")]
#[case::a_bad_glob(&["--sync", "--deploy", "deployment/app", "--restart-on", "a[b"][..], "--restart-on `a[b`: ")]
fn a_sync_that_cannot_work_is_a_usage_error_before_anything_runs(
    #[case] extra: &[&str],
    #[case] says: &str,
) {
    let tree = app_tree();
    let run = Layerup::new()
        .args(["watch"])
        .args(
            push_args(tree.path(), "127.0.0.1:1/base:1", "127.0.0.1:1/dev:1")
                .into_iter()
                .skip(1),
        )
        .args(extra)
        .run();
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.starts_with(&format!("error: {says}")),
        "{}",
        run.stderr
    );
}

/// A compiled service under `watch --build --sync`: an edit of its source is compiled, and the
/// new binary answers in the running container; a broken edit is said, the container keeps the
/// last good binary, and the watch goes on to the mended one.
#[test]
fn a_rebuilt_binary_answers_in_the_running_container_and_a_failed_build_changes_nothing() {
    let dev = Registry::start();
    let svc = c_service("v1");
    let (kube, _dir, config, _) = cluster_running(&prod().oci);
    let state = tempfile::tempdir().unwrap();
    let layerup = layerup_in(
        svc.path(),
        &[
            "watch",
            "-v",
            "--debounce",
            "300",
            "./out/hello:/app/hello",
            "--build",
            C_BUILD,
            "--build-dep",
            "*.c",
            "--base",
            &prod().oci,
            "--to",
            &dev.reference("dev/app:dev"),
            "--deploy",
            "deployment/app",
            "--sync",
            "--settle",
            "1h",
        ],
    )
    .env("LAYERUP_STATE_DIR", state.path())
    .env("KUBECONFIG", &config);
    let w = common::watching::Watching::of(layerup, tempfile::tempdir().unwrap());
    w.wait_for("the first rollout", |w| rolled(w) == 1);
    let first = w.pushes()[0].clone();
    let pod = pod_running(&kube, &first);
    assert_eq!(in_container(&kube, &pod, "/app/hello"), "v1\n");

    edit_synced(&w, || {
        std::fs::write(svc.path().join("main.c"), main_c("v2")).unwrap()
    });
    assert_eq!(in_container(&kube, &pod, "/app/hello"), "v2\n");
    assert_eq!(running(&kube), vec![(pod.clone(), first.clone(), 0)]);

    let pushes = w.pushes().len();
    std::fs::write(svc.path().join("main.c"), main_c("v3\"")).unwrap();
    w.wait_for("the failed build", |w| w.log().contains("(still watching)"));
    assert!(
        w.log().contains("error: the build `mkdir -p out && cc"),
        "{}",
        w.log()
    );
    assert_eq!(w.pushes().len(), pushes);
    assert_eq!(in_container(&kube, &pod, "/app/hello"), "v2\n");

    edit_synced(&w, || {
        std::fs::write(svc.path().join("main.c"), main_c("v4")).unwrap()
    });
    assert_eq!(in_container(&kube, &pod, "/app/hello"), "v4\n");
    assert_eq!(rolled(&w), 1, "{}", w.log());
    w.stop();
}
