//! `layerup push` against real registries: the result is read by skopeo and run by podman+runc,
//! and what moved is read from the registries' own access logs.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use rstest::rstest;

#[rstest]
#[case::oci(&prod().oci, "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.layer.v1.tar+gzip")]
#[case::docker(&prod().docker, "application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.image.rootfs.diff.tar.gzip")]
fn pushed_image_runs_with_the_files_and_keeps_the_base(
    #[case] base: &str,
    #[case] manifest_type: &str,
    #[case] layer_type: &str,
) {
    let dev = Registry::start();
    let tree = app_tree();
    let to = dev.reference("dev/app:dev");
    let pinned = push_tree(tree.path(), base, &to, &[]).ok().to_string();
    assert!(
        pinned.starts_with(&format!("{}/dev/app@sha256:", dev.host)),
        "{pinned}"
    );
    assert_eq!(digest_of(&pinned).len(), 71);

    let raw = inspect_raw(&pinned);
    assert_eq!(raw["mediaType"], manifest_type);
    let layers = raw["layers"].as_array().unwrap();
    assert_eq!(layers.len(), prod().layers().len() + 1);
    assert_eq!(layers.last().unwrap()["mediaType"], layer_type);
    assert_eq!(
        inspect(&to)["Digest"],
        digest_of(&pinned),
        "the tag names the pushed digest"
    );

    let out = run_in(
        &pinned,
        "cd /app && stat -c '%n %a %u:%g %s' VERSION run.sh secret.key pkg pkg/sub && readlink main.py \
         && cat VERSION pkg/mod.py && ./run.sh && cat /etc/prod-release \
         && test \"$(stat -c %i pkg/sub/data.txt)\" = \"$(stat -c %i pkg/data-link.txt)\" && echo hardlinked",
    );
    assert_eq!(
        out,
        "VERSION 644 0:0 6\nrun.sh 755 0:0 29\nsecret.key 600 0:0 2\npkg 755 0:0 4096\npkg/sub 755 0:0 4096\n\
         pkg/mod.py\n1.2.3\nprint('hello from layerup')\nrunning prod\nprod 1.0\nhardlinked\n"
    );
}

#[test]
fn without_dest_a_directory_lands_in_the_base_working_directory() {
    let dev = Registry::start();
    let tree = app_tree();
    let src = tree.path().display().to_string();
    let to = dev.reference("dev/app:wd");
    let pinned = push(&[&src, "--base", &prod().oci, "--to", &to])
        .ok()
        .to_string();
    assert_eq!(run_in(&pinned, "pwd && cat VERSION"), "/srv\n1.2.3\n");
}

#[test]
fn several_mappings_make_one_layer() {
    let dev = Registry::start();
    let tree = app_tree();
    let conf = tempfile::tempdir().unwrap();
    std::fs::write(conf.path().join("app.conf"), "mode=dev\n").unwrap();
    let pinned = push(&[
        &format!("{}:/app", tree.path().display()),
        &format!("{}:/etc/app/", conf.path().join("app.conf").display()),
        &format!("{}:/app/VERSION", conf.path().join("app.conf").display()),
        "--base",
        &prod().docker,
        "--to",
        &dev.reference("dev/app:multi-map"),
    ])
    .ok()
    .to_string();
    assert_eq!(
        inspect(&pinned)["Layers"].as_array().unwrap().len(),
        prod().layers().len() + 1
    );
    assert_eq!(
        run_in(&pinned, "cat /etc/app/app.conf /app/VERSION"),
        "mode=dev\nmode=dev\n",
        "later mappings win"
    );
}

#[test]
fn base_layers_in_the_same_registry_are_mounted_not_uploaded() {
    let reg = Registry::start();
    let base = reg.reference("prod/app:1");
    skopeo(&[
        "copy",
        "-q",
        &format!("docker://{}", prod().oci),
        &format!("docker://{base}"),
    ]);
    let uploads_before = reg.uploaded().len();
    let requests_before = reg.requests().len();
    let tree = app_tree();
    let pinned = push_tree(tree.path(), &base, &reg.reference("dev/app:dev"), &[])
        .ok()
        .to_string();
    // The base read and the destination written share the registry's one `GET /v2/`.
    let pings = reg.requests()[requests_before..]
        .iter()
        .filter(|(m, p, _)| m == "GET" && p == "/v2/")
        .count();
    assert_eq!(pings, 1);

    let base_layers = prod().layers();
    let mut mounted = reg.mounted();
    mounted.sort();
    let mut expected = base_layers.clone();
    expected.sort();
    assert_eq!(
        mounted, expected,
        "every base layer was mounted by the registry"
    );
    let mut uploads: Vec<String> = reg.uploaded()[uploads_before..].to_vec();
    uploads.sort();
    let new_layer = inspect(&pinned)["Layers"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    let config = inspect_raw(&pinned)["config"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let mut expected = vec![new_layer, config];
    expected.sort();
    assert_eq!(
        uploads, expected,
        "only the new layer and the config were uploaded"
    );
    assert!(run_in(&pinned, "cat /app/VERSION").contains("1.2.3"));
}

#[test]
fn base_layers_missing_from_another_registry_are_copied_registry_to_registry() {
    let dev = Registry::start();
    let tree = app_tree();
    let pinned = push_tree(
        tree.path(),
        &prod().docker,
        &dev.reference("team/app:dev"),
        &[],
    )
    .ok()
    .to_string();
    let uploaded = dev.uploaded();
    for layer in prod().layers() {
        assert!(
            uploaded.contains(&layer),
            "base layer {layer} was copied into the dev registry"
        );
    }
    assert!(dev.mounted().is_empty());
    let blob_reads: Vec<_> = prod()
        .registry
        .requests()
        .into_iter()
        .filter(|(m, p, s)| m == "GET" && p.contains("/blobs/") && *s == 200)
        .collect();
    for layer in prod().layers() {
        assert!(
            blob_reads.iter().any(|(_, p, _)| p.ends_with(&layer)),
            "layer {layer} was read from prod"
        );
    }
    assert_eq!(run_in(&pinned, "cat /etc/prod-release"), "prod 1.0\n");
}

#[test]
fn blobs_already_in_the_destination_are_not_uploaded_again() {
    let dev = Registry::start();
    let to = dev.reference("dev/app:dev");
    skopeo(&[
        "copy",
        "-q",
        &format!("docker://{}", prod().oci),
        &format!("docker://{}", dev.reference("dev/app:base")),
    ]);
    let tree = app_tree();
    let src = format!("{}:/app", tree.path().display());
    let after_seed = dev.uploaded().len();

    let first = push(&[&src, "--base", &prod().oci, "--to", &to])
        .ok()
        .to_string();
    let first_uploads = dev.uploaded()[after_seed..].to_vec();
    for layer in prod().layers() {
        assert!(
            !first_uploads.contains(&layer),
            "base layer {layer} was uploaded again"
        );
    }
    assert_eq!(
        first_uploads.len(),
        2,
        "new layer and config only: {first_uploads:?}"
    );

    let second = push(&[&src, "--base", &prod().oci, "--to", &to])
        .ok()
        .to_string();
    assert_eq!(second, first);
    assert_eq!(
        dev.uploaded().len(),
        after_seed + 2,
        "a repeated push uploads nothing"
    );
}

#[test]
fn the_same_inputs_give_the_same_digest_and_one_edit_changes_only_the_top_layer() {
    let dev = Registry::start();
    let to = dev.reference("dev/app:dev");
    let tree = app_tree();
    let a = push_tree(tree.path(), &prod().oci, &to, &[])
        .ok()
        .to_string();

    // The same files at another path, with other mtimes: the same image.
    let copy = tempfile::tempdir().unwrap();
    run(std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", tree.path().display()))
        .arg(copy.path()));
    std::fs::write(copy.path().join("VERSION"), "1.2.3\n").unwrap();
    let b = push_tree(copy.path(), &prod().oci, &to, &[])
        .ok()
        .to_string();
    assert_eq!(a, b);

    std::fs::write(copy.path().join("pkg/mod.py"), "print('edited')\n").unwrap();
    let c = push_tree(copy.path(), &prod().oci, &to, &[])
        .ok()
        .to_string();
    assert_ne!(a, c);
    let la = inspect(&a)["Layers"].as_array().unwrap().clone();
    let lc = inspect(&c)["Layers"].as_array().unwrap().clone();
    assert_eq!(la.len(), lc.len());
    assert_eq!(
        la[..la.len() - 1],
        lc[..lc.len() - 1],
        "base layers are unchanged"
    );
    assert_ne!(la.last(), lc.last(), "the top layer changed");
    assert_eq!(run_in(&c, "cat /app/pkg/mod.py"), "print('edited')\n");
}

#[rstest]
#[case("linux/amd64", "amd64")]
#[case("linux/arm64", "arm64")]
fn a_multi_platform_base_gives_the_requested_platform(#[case] platform: &str, #[case] arch: &str) {
    let dev = Registry::start();
    let tree = app_tree();
    let pinned = push_tree(
        tree.path(),
        &prod().multi,
        &dev.reference("dev/app:plat"),
        &["--platform", platform],
    )
    .ok()
    .to_string();
    let config = inspect_config(&pinned);
    assert_eq!(config["architecture"], arch);
    assert_eq!(config["os"], "linux");
}

#[test]
fn image_tweaks_reach_the_running_container() {
    let dev = Registry::start();
    let tree = app_tree();
    let pinned = push_tree(
        tree.path(),
        &prod().oci,
        &dev.reference("dev/app:tweaks"),
        &[
            "--env",
            "TIER=dev",
            "--env",
            "EXTRA=a b",
            "--workdir",
            "/app",
            "--entrypoint",
            r#"["sh", "-c", "echo \"$TIER|$EXTRA|$(pwd)|$(id -u):$(id -g)|$0\""]"#,
            "--cmd",
            "from-cmd",
            "--label",
            "team=web",
            "--user",
            "1000:1000",
        ],
    )
    .ok()
    .to_string();
    let out = run(podman_run().arg(&pinned));
    assert_eq!(out, "dev|a b|/app|1000:1000|from-cmd\n");
    assert_eq!(inspect(&pinned)["Labels"]["team"], "web");
}

#[test]
fn chown_and_source_date_epoch_set_owner_and_times() {
    let dev = Registry::start();
    let tree = app_tree();
    let out = Layerup::new()
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(push_args(
            tree.path(),
            &prod().oci,
            &dev.reference("dev/app:owned"),
        ))
        .args(["--chown", "1000:2000"])
        .run();
    let pinned = out.ok().to_string();
    // The files are the layer's; `/app` itself, which the base may have, is not (the runtime
    // makes it, root's).
    assert_eq!(
        run_in(
            &pinned,
            "stat -c '%u:%g %Y' /app/VERSION /app/pkg; stat -c '%u:%g' /app"
        ),
        "1000:2000 1700000000\n1000:2000 1700000000\n0:0\n"
    );
    assert_eq!(inspect_config(&pinned)["created"], "2023-11-14T22:13:20Z");
}

#[test]
fn the_ignore_file_leaves_out_what_it_names() {
    let dev = Registry::start();
    let tree = app_tree();
    std::fs::create_dir_all(tree.path().join("node_modules/x")).unwrap();
    std::fs::write(tree.path().join("node_modules/x/i.js"), "x").unwrap();
    std::fs::write(tree.path().join("debug.log"), "x").unwrap();
    std::fs::write(
        tree.path().join(".layerupignore"),
        "node_modules\n*.log\nsecret.key\n",
    )
    .unwrap();
    let pinned = push_tree(tree.path(), &prod().oci, &dev.reference("dev/app:ign"), &[])
        .ok()
        .to_string();
    let listing = run_in(&pinned, "cd /app && find . | sort");
    assert_eq!(
        listing,
        ".\n./.layerupignore\n./VERSION\n./main.py\n./pkg\n./pkg/data-link.txt\n./pkg/mod.py\n./pkg/sub\n./pkg/sub/data.txt\n./run.sh\n"
    );
}

#[test]
fn an_oci_layout_serves_as_base_and_as_destination() {
    require("umoci", "umoci");
    let tree = app_tree();
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("dev-layout");
    let base = format!("oci:{}:1", prod().layout.display());
    let pinned = push_tree(
        tree.path(),
        &base,
        &format!("oci:{}:dev", out.display()),
        &[],
    )
    .ok()
    .to_string();
    assert!(
        pinned.starts_with(&format!("oci:{}@sha256:", out.display())),
        "{pinned}"
    );

    // umoci reads and unpacks what layerup wrote: base layers copied from disk, the new layer on top.
    let bundle = out_dir.path().join("bundle");
    run(std::process::Command::new("umoci")
        .args(["unpack", "--image", &format!("{}:dev", out.display())])
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("app/VERSION")).unwrap(),
        "1.2.3\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/prod-release")).unwrap(),
        "prod 1.0\n"
    );
    let mode = std::fs::metadata(rootfs.join("app/run.sh"))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o755);

    // And from the layout to a registry: base layers go up from disk.
    let dev = Registry::start();
    let remote = push_tree(
        tree.path(),
        &base,
        &dev.reference("dev/app:from-layout"),
        &[],
    )
    .ok()
    .to_string();
    assert_eq!(
        digest_of(&remote),
        digest_of(&pinned),
        "the same image whichever way it goes"
    );
    assert_eq!(
        run_in(&remote, "cat /app/VERSION /etc/prod-release"),
        "1.2.3\nprod 1.0\n"
    );
}

/// Issue 25: a delta's upload sessions are opened while the destination's tag is asked, not
/// after its answer — a round trip less on a slow link. The proxy holds the tag's answer back
/// until two upload POSTs have come (at most 10 s): the push must not have waited that out. A
/// push with nothing new opens none (the walk tells, before the tag answers); one that fails
/// after opening them cancels them: the registry keeps none.
#[test]
fn a_delta_opens_its_uploads_while_the_tag_is_asked_and_a_push_of_nothing_none() {
    use common::proxy::{Fault, Proxy, Req};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;
    let dev = Registry::start();
    let base = dev.reference("prod/base:1");
    Layerup::new().args(["copy", &prod().oci, &base]).run().ok();
    let armed = Arc::new(AtomicBool::new(false));
    let posts = Arc::new(AtomicUsize::new(0));
    let held = Arc::new(AtomicUsize::new(0));
    let by_posts = Arc::new(AtomicUsize::new(0));
    let (a, p, h, b) = (armed.clone(), posts.clone(), held.clone(), by_posts.clone());
    let proxy = Proxy::start(&dev.host, move |r: &Req| {
        if !a.load(SeqCst) {
            return Fault::Forward;
        }
        if r.method == "POST" && r.path.starts_with("/v2/dev/app/blobs/uploads/") {
            p.fetch_add(1, SeqCst);
        }
        // The base that is gone answers once the uploads are open, so that the push fails
        // after opening them.
        if r.path == "/v2/prod/base/manifests/gone" {
            let p = p.clone();
            return Fault::HoldUntil(
                Box::new(move || p.load(SeqCst) >= 2),
                std::time::Duration::from_secs(10),
            );
        }
        if r.method == "HEAD" && r.path == "/v2/dev/app/manifests/dev" {
            h.fetch_add(1, SeqCst);
            let (p, b) = (p.clone(), b.clone());
            return Fault::HoldUntil(
                Box::new(move || {
                    let two = p.load(SeqCst) >= 2;
                    if two {
                        b.fetch_add(1, SeqCst);
                    }
                    two
                }),
                std::time::Duration::from_secs(10),
            );
        }
        Fault::Forward
    });
    let tree = app_tree();
    let state = tempfile::tempdir().unwrap();
    let to = proxy.reference("dev/app:dev");
    let push = || json_push(state.path(), tree.path(), &base, &to);
    assert_eq!(push()["mode"], "full");
    armed.store(true, SeqCst);
    std::fs::write(tree.path().join("VERSION"), "2\n").unwrap();
    let before = dev.requests().len();
    let delta = push();
    assert_eq!(delta["mode"], "delta");
    assert_eq!(held.load(SeqCst), 1, "the tag asked once");
    assert_eq!(
        by_posts.load(SeqCst),
        1,
        "the tag's answer was held 10 s: no upload was opened before it came"
    );
    let seen = &dev.requests()[before..];
    let posts_seen = seen
        .iter()
        .filter(|(m, p, _)| m == "POST" && p.contains("/blobs/uploads/"))
        .count();
    assert_eq!(
        posts_seen, 2,
        "one session per new blob, none opened twice: {seen:?}"
    );
    assert_eq!(delta["requests"].as_u64().unwrap() as usize, seen.len());
    assert!(seen.len() <= 7, "{seen:?}");
    assert_eq!(dev.open_uploads("dev/app"), 0, "{seen:?}");

    // The same bytes written again (the stat moved): nothing is opened, nothing written.
    posts.store(2, SeqCst);
    std::fs::write(tree.path().join("VERSION"), "2\n").unwrap();
    let before = dev.requests().len();
    let same = push();
    assert_eq!(same["mode"], "unchanged");
    let seen = &dev.requests()[before..];
    assert!(
        seen.iter().all(|(m, _, _)| m == "HEAD" || m == "GET"),
        "{seen:?}"
    );
    assert_eq!(seen.len(), same["requests"].as_u64().unwrap() as usize);

    // A push that fails after opening them (its base is gone) cancels them.
    posts.store(0, SeqCst);
    std::fs::write(tree.path().join("VERSION"), "3\n").unwrap();
    let gone = Layerup::new()
        .env("LAYERUP_STATE_DIR", state.path())
        .args(push_args(
            tree.path(),
            &proxy.reference("prod/base:gone"),
            &to,
        ))
        .run();
    gone.fails(6, &["prod/base:gone"]);
    assert_eq!(
        posts.load(SeqCst),
        2,
        "the uploads were opened before it failed"
    );
    assert_eq!(dev.open_uploads("dev/app"), 0);
}

/// A push of `tree` with the state in `state`, `--json`: what it printed.
fn json_push(
    state: &std::path::Path,
    tree: &std::path::Path,
    base: &str,
    to: &str,
) -> serde_json::Value {
    let out = Layerup::new()
        .env("LAYERUP_STATE_DIR", state)
        .args(push_args(tree, base, to))
        .args(["--json"])
        .run();
    serde_json::from_str(out.ok()).unwrap()
}

/// `requests` in --json counts what reached the registry (its own access log says so; the base
/// is in the same registry, so that no other test's requests mix in), and a one-file delta takes
/// seven: the base's manifest (its config is kept from the first push, by digest; the registry
/// was open last time, so no `GET /v2/`), the tag's HEAD, two uploads of two requests each, and
/// the manifest PUT.
#[test]
fn json_counts_the_requests_the_registry_saw() {
    let dev = Registry::start();
    let base = dev.reference("prod/base:1");
    Layerup::new().args(["copy", &prod().oci, &base]).run().ok();
    let tree = app_tree();
    let state = tempfile::tempdir().unwrap();
    let to = dev.reference("dev/app:dev");
    let push = || json_push(state.path(), tree.path(), &base, &to);
    let before = dev.requests().len();
    let first = push();
    assert_eq!(
        first["requests"].as_u64().unwrap() as usize,
        dev.requests().len() - before
    );
    std::fs::write(tree.path().join("VERSION"), "2\n").unwrap();
    let before = dev.requests().len();
    let delta = push();
    assert_eq!(delta["mode"], "delta");
    let seen = &dev.requests()[before..];
    assert_eq!(
        delta["requests"].as_u64().unwrap() as usize,
        seen.len(),
        "{seen:?}"
    );
    assert!(seen.len() <= 7, "more requests than before: {seen:?}");
    assert!(
        !seen.iter().any(|(_, p, _)| p == "/v2/"),
        "pinged: {seen:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|(m, p, _)| m == "GET" && p.contains("/blobs/")),
        "the base's config is read again: {seen:?}"
    );
}
