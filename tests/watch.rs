//! `layerup watch` against the real registry: bursts of writes coalesce into one push, and a
//! change during a push is answered by exactly one more; with `--deploy`, each push reaches the
//! workload (the tests' own Kubernetes API server).

mod common;

use std::time::Duration;

use common::watching::Watching;
use common::*;

/// Long enough for another push to have started, had anything triggered one.
const SETTLE: Duration = Duration::from_millis(1500);

#[test]
fn a_burst_of_writes_is_one_push() {
    let dev = Registry::start();
    let tree = app_tree();
    let w = Watching::start(tree.path(), &dev.reference("dev/app:watch"));
    w.wait_for("the first push", |w| w.pushes().len() == 1);
    for i in 0..300 {
        std::fs::write(tree.path().join(format!("gen-{i}.txt")), format!("{i}\n")).unwrap();
    }
    w.wait_for("a second push", |w| w.pushes().len() == 2);
    std::thread::sleep(SETTLE);
    let pushes = w.pushes();
    assert_eq!(pushes.len(), 2, "{}", w.log());
    let log = w.stop();
    let status = log.lines().find(|l| l.starts_with("delta:")).unwrap();
    assert!(
        status.starts_with("delta: 300 changed, 0 deleted, "),
        "{log}"
    );
    assert!(status.ends_with(&format!(" → {}", pushes[1])), "{log}");
}

#[test]
fn an_edit_during_a_push_gives_exactly_one_more_push() {
    let dev = Registry::start();
    let tree = app_tree();
    let w = Watching::start(tree.path(), &dev.reference("dev/app:watch"));
    w.wait_for("the first push", |w| w.pushes().len() == 1);
    // Bytes that do not compress keep the next push busy for a while. Written beside the tree
    // and renamed in: one event, and never a half-written file for the push to read (on a
    // loaded machine the write itself outlasts the debounce).
    let beside = tree.path().with_extension("noise");
    std::fs::write(&beside, noise(8 << 20)).unwrap();
    std::fs::rename(&beside, tree.path().join("noise.bin")).unwrap();
    w.wait_for("the second push start", |w| {
        w.log().contains("changes seen; pushing")
    });
    // Renamed in too: a file half-written when the push reads it fails that push ("changed
    // while layerup was reading it"), which is right, but not what this test is about.
    let beside = tree.path().with_extension("during");
    std::fs::write(&beside, "written during a push\n").unwrap();
    std::fs::rename(&beside, tree.path().join("during.txt")).unwrap();
    w.wait_for("a third push", |w| w.pushes().len() == 3);
    std::thread::sleep(SETTLE);
    let pushes = w.pushes();
    assert_eq!(pushes.len(), 3, "{}", w.log());
    w.stop();
    assert_eq!(
        run_in(
            &pushes[2],
            "cat /app/during.txt && test -s /app/noise.bin && echo noise"
        ),
        "written during a push\nnoise\n"
    );
}

#[test]
fn a_failed_push_is_reported_and_watching_goes_on() {
    let dev = Registry::start();
    let tree = app_tree();
    let w = Watching::start(tree.path(), &dev.reference("dev/app:watch"));
    w.wait_for("the first push", |w| w.pushes().len() == 1);
    // A socket cannot go in a layer: that push fails, the next one works again.
    let sock = tree.path().join("app.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    w.wait_for("the failure", |w| w.log().contains("is a socket;"));
    drop(listener);
    std::fs::remove_file(&sock).unwrap();
    w.wait_for("a push after the failure", |w| w.pushes().len() == 2);
    let log = w.stop();
    assert!(log.contains("(still watching)"), "{log}");
}

#[test]
fn with_deploy_every_push_is_set_in_the_workload_and_awaited() {
    let kube = common::kube::FakeKube::start();
    kube.add(
        "deployments",
        "team-a",
        serde_json::json!({
            "metadata": {"name": "web"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "app", "image": prod().oci}]}}}
        }),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = kube.kubeconfig(dir.path(), "kind-dev", "team-a", None, "t");
    let dest = Registry::start();
    let tree = app_tree();
    let w = Watching::start_with(
        tree.path(),
        &dest.reference("dev/app:dev"),
        &["--deploy", "deployment/web"],
        Some(&config),
    );
    let image = || {
        kube.get("deployments", "team-a", "web")["spec"]["template"]["spec"]["containers"][0]
            ["image"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let rolled = |w: &Watching| w.log().matches("deployment/web: rolled out in").count();
    w.wait_for("the first rollout", |w| rolled(w) == 1);
    assert_eq!(image(), w.pushes()[0]);
    std::fs::write(tree.path().join("VERSION"), "2\n").unwrap();
    w.wait_for("the second rollout", |w| rolled(w) == 2);
    let pushes = w.pushes();
    assert_eq!(pushes.len(), 2);
    assert_ne!(pushes[0], pushes[1]);
    assert_eq!(image(), pushes[1]);
    w.stop();
}

#[test]
fn what_layerup_writes_inside_the_sources_is_neither_a_trigger_nor_in_the_image() {
    let dev = Registry::start();
    let tree = app_tree();
    let (state, tmp) = (tree.path().join(".state"), tree.path().join(".tmp"));
    std::fs::create_dir(&tmp).unwrap();
    let ref_file = tree.path().join("ref.txt");
    let layerup = Layerup::new()
        .env("LAYERUP_STATE_DIR", &state)
        .env("TMPDIR", &tmp)
        .args(["watch", "-v", "--debounce", "100"])
        .args(
            push_args(tree.path(), &prod().oci, &dev.reference("dev/app:own"))
                .into_iter()
                .skip(1),
        )
        .args(["--ref-file".as_ref(), ref_file.as_os_str()]);
    // Its state is inside the tree: the TempDir it is given holds nothing.
    let w = Watching::of(layerup, tempfile::tempdir().unwrap());
    w.wait_for("the first push", |w| !w.pushes().is_empty());
    // Its own writes (state, temporary layers, the ref file) came after the push began.
    std::thread::sleep(SETTLE * 2);
    assert_eq!(w.pushes().len(), 1, "it pushed again with no edit");
    std::fs::write(tree.path().join("VERSION"), "2\n").unwrap();
    w.wait_for("a push after an edit", |w| w.pushes().len() >= 2);
    std::thread::sleep(SETTLE);
    let pushed = w.pushes();
    assert_eq!(pushed.len(), 2, "one edit, one push: {pushed:?}");
    w.stop();
    assert!(
        ref_file.is_file() && state.is_dir(),
        "layerup wrote them inside the source"
    );
    let listed = run_in(&pushed[1], "ls -a /app");
    for own in [".state", "ref.txt"] {
        assert!(
            !listed.lines().any(|l| l == own),
            "{own} is in the image: {listed}"
        );
    }
    assert!(
        listed.lines().any(|l| l == ".tmp"),
        "the user's own TMPDIR is theirs: {listed}"
    );
    assert_eq!(run_in(&pushed[1], "ls -a /app/.tmp"), ".\n..\n");
}

/// A tree with no hardlinks (so each edit is read from its events alone): files, a nested
/// directory, a symlink.
fn plain_tree() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("pkg/sub")).unwrap();
    std::fs::write(t.path().join("VERSION"), "1\n").unwrap();
    std::fs::write(t.path().join("pkg/mod.py"), "x = 1\n").unwrap();
    std::fs::write(t.path().join("pkg/sub/data.txt"), "data\n").unwrap();
    std::os::unix::fs::symlink("pkg/mod.py", t.path().join("main.py")).unwrap();
    t
}

/// A full push of `tree` from scratch, to compare a watched image with.
fn fresh_push(tree: &std::path::Path, dev: &Registry) -> String {
    push_tree(tree, &prod().oci, &dev.reference("dev/app:fresh"), &[])
        .ok()
        .to_string()
}

#[test]
fn edits_read_from_their_events_alone_give_the_image_a_full_push_gives() {
    use std::os::unix::fs::PermissionsExt;
    let dev = Registry::start();
    let tree = plain_tree();
    let p = |rel: &str| tree.path().join(rel);
    let w = Watching::start_with(tree.path(), &dev.reference("dev/app:ev"), &[], None);
    w.wait_for("the first push", |w| w.pushes().len() == 1);
    let edits: Vec<Box<dyn Fn()>> = vec![
        Box::new(|| std::fs::write(p("VERSION"), "2\n").unwrap()),
        Box::new(|| {
            std::fs::create_dir_all(p("new/deep")).unwrap();
            std::fs::write(p("new/deep/a.txt"), "a\n").unwrap();
            std::fs::write(p("new/b.txt"), "b\n").unwrap();
        }),
        Box::new(|| std::fs::remove_file(p("pkg/mod.py")).unwrap()),
        Box::new(|| std::fs::rename(p("new"), p("moved")).unwrap()),
        Box::new(|| {
            std::fs::set_permissions(p("VERSION"), std::fs::Permissions::from_mode(0o600)).unwrap()
        }),
        Box::new(|| std::fs::remove_dir_all(p("pkg/sub")).unwrap()),
        Box::new(|| std::fs::write(p("pkg/sub"), "a file now\n").unwrap()),
    ];
    for edit in &edits {
        let before = w.pushes().len();
        edit();
        w.wait_for("a push after the edit", |w| w.pushes().len() > before);
    }
    std::thread::sleep(SETTLE);
    let pushes = w.pushes();
    let log = w.stop();
    assert!(!log.contains("walking the whole tree"), "{log}");
    assert_eq!(
        unpacked_tree(pushes.last().unwrap()),
        unpacked_tree(&fresh_push(tree.path(), &dev)),
        "{log}"
    );
}

#[test]
fn an_overflowed_event_queue_walks_the_whole_tree_and_the_image_is_right() {
    let dev = Registry::start();
    let tree = plain_tree();
    let state = tempfile::tempdir().unwrap();
    let layerup = Layerup::new()
        .env("LAYERUP_STATE_DIR", state.path())
        .env("LAYERUP_WATCH_QUEUE", "1")
        .args(["watch", "-v", "--debounce", "300", "--squash-at", "100000%"])
        .args(
            push_args(tree.path(), &prod().oci, &dev.reference("dev/app:of"))
                .into_iter()
                .skip(1),
        );
    let w = Watching::of(layerup, state);
    w.wait_for("the first push", |w| w.pushes().len() == 1);
    for d in 0..20 {
        let dir = tree.path().join(format!("burst/{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..10 {
            std::fs::write(dir.join(format!("{f}.txt")), format!("{d} {f}\n")).unwrap();
        }
    }
    std::fs::remove_file(tree.path().join("VERSION")).unwrap();
    w.wait_for("a push after the burst", |w| w.pushes().len() >= 2);
    std::thread::sleep(SETTLE);
    let pushes = w.pushes();
    let log = w.stop();
    assert!(
        log.contains("file events were lost; walking the whole tree"),
        "{log}"
    );
    assert_eq!(
        unpacked_tree(pushes.last().unwrap()),
        unpacked_tree(&fresh_push(tree.path(), &dev))
    );
}

#[test]
fn a_change_no_event_reports_is_found_by_the_verifying_walk() {
    let dev = Registry::start();
    let tree = plain_tree();
    // A second name outside the tree: a write through it raises no event in the tree.
    let outside = tempfile::tempdir().unwrap();
    let other_name = outside.path().join("version-link");
    std::fs::hard_link(tree.path().join("VERSION"), &other_name).unwrap();
    let w = Watching::start_with(
        tree.path(),
        &dev.reference("dev/app:verify"),
        &["--verify-every", "1s"],
        None,
    );
    w.wait_for("the first push", |w| w.pushes().len() == 1);
    std::fs::write(&other_name, "written behind its back\n").unwrap();
    w.wait_for("a push from the verifying walk", |w| w.pushes().len() == 2);
    let pushed = w.pushes()[1].clone();
    let log = w.stop();
    assert!(log.contains("the tree changed without an event"), "{log}");
    assert_eq!(
        run_in(&pushed, "cat /app/VERSION"),
        "written behind its back\n"
    );
}

#[test]
fn a_service_added_under_a_running_watch_is_pushed_and_a_removed_one_stops() {
    let dev = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let service = |name: &str| {
        let d = dir.path().join("services").join(name);
        std::fs::create_dir_all(d.join("src")).unwrap();
        std::fs::write(d.join("src/NAME"), format!("{name}\n")).unwrap();
        std::fs::write(
            d.join("layerup.toml"),
            format!(
                "base = \"{}\"\nto = \"{}\"\nmappings = [\"./src:/app\"]\n",
                prod().oci,
                dev.reference(&format!("svc/{name}:dev"))
            ),
        )
        .unwrap();
        d
    };
    service("a");
    let b = service("b");
    let state = tempfile::tempdir().unwrap();
    let mut layerup = Layerup::new().env("LAYERUP_STATE_DIR", state.path()).args([
        "watch",
        "--squash-at",
        "100000%",
    ]);
    layerup.command().current_dir(dir.path());
    let w = Watching::of(layerup, state);
    let pushed = |w: &Watching, name: &str| {
        w.pushes()
            .iter()
            .filter(|l| l.starts_with(&format!("{name} ")))
            .count()
    };
    w.wait_for("a and b", |w| {
        pushed(w, "services/a") == 1 && pushed(w, "services/b") == 1
    });
    let c = service("c");
    w.wait_for("the new service", |w| pushed(w, "services/c") == 1);
    let line = w
        .pushes()
        .into_iter()
        .find(|l| l.starts_with("services/c "))
        .unwrap();
    assert_eq!(
        run_in(line.split_once(' ').unwrap().1, "cat /app/NAME"),
        "c\n"
    );
    std::fs::write(c.join("src/NAME"), "c 2\n").unwrap();
    w.wait_for("an edit of the new service", |w| {
        pushed(w, "services/c") == 2
    });

    std::fs::remove_file(b.join("layerup.toml")).unwrap();
    w.wait_for("b stopped", |w| {
        w.log().contains("services/b: its layerup.toml is gone")
    });
    std::fs::write(b.join("src/NAME"), "b 2\n").unwrap();
    std::thread::sleep(SETTLE);
    assert_eq!(pushed(&w, "services/b"), 1, "{}", w.log());
    w.stop();
}

/// Issue 21: `--ref-file ref.txt` (a bare name) with the project root as SRC pushed forever,
/// each push baking the last ref file into a new image.
#[test]
fn a_ref_file_named_bare_in_the_source_is_not_a_change() {
    let dev = Registry::start();
    let tree = app_tree();
    let mut layerup = Layerup::new().args([
        "watch",
        "-v",
        "--debounce",
        "100",
        ".:/app",
        "--base",
        &prod().oci,
        "--to",
        &dev.reference("dev/app:bare"),
        "--ref-file",
        "ref.txt",
    ]);
    layerup.command().current_dir(tree.path());
    let w = Watching::of(layerup, tempfile::tempdir().unwrap());
    w.wait_for("the first push", |w| !w.pushes().is_empty());
    std::thread::sleep(SETTLE * 2);
    assert_eq!(
        w.pushes().len(),
        1,
        "it pushed again with no edit:\n{}",
        w.log()
    );
    let pushed = w.pushes()[0].clone();
    w.stop();
    assert!(tree.path().join("ref.txt").is_file());
    let listed = run_in(&pushed, "ls -a /app");
    assert!(!listed.lines().any(|l| l == "ref.txt"), "{listed}");
}
