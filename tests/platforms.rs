//! Every platform of a multi-platform base: the same app layer appended to each platform's image
//! and an index of them pushed last, against the real registry — read back with skopeo, run
//! with podman, uploads counted from the registry's own log.

mod common;

use common::*;

/// The index's manifests, by platform (`os/arch`).
fn children(index: &serde_json::Value) -> Vec<(String, String)> {
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let p = &m["platform"];
            (
                format!(
                    "{}/{}",
                    p["os"].as_str().unwrap(),
                    p["architecture"].as_str().unwrap()
                ),
                m["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn every_platform_of_an_index_gets_the_same_app_layer_and_the_index_comes_last() {
    let dev = Registry::start();
    let tree = app_tree();
    let state = tempfile::tempdir().unwrap();
    let to = dev.reference("dev/app:multi");
    let push = |extra: &[&str]| {
        Layerup::new()
            .env("LAYERUP_STATE_DIR", state.path())
            .args(push_args(tree.path(), &prod().multi, &to))
            .args(["--platform", "all", "--squash-at", "100000%"])
            .args(extra)
            .run()
    };
    let run = push(&[]);
    let pinned = run.ok().to_string();
    let index = inspect_raw(&pinned);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let kids = children(&index);
    assert_eq!(
        kids.iter().map(|k| k.0.as_str()).collect::<Vec<_>>(),
        ["linux/amd64", "linux/arm64"]
    );
    let mut app_layer = None;
    for (platform, digest) in &kids {
        let child = format!("{}/dev/app@{digest}", dev.host);
        let manifest = inspect_raw(&child);
        let last = manifest["layers"].as_array().unwrap().last().unwrap()["digest"].clone();
        assert!(
            app_layer.get_or_insert(last.clone()) == &last,
            "one app layer for all"
        );
        let config = inspect_config(&child);
        assert_eq!(
            format!(
                "{}/{}",
                config["os"].as_str().unwrap(),
                config["architecture"].as_str().unwrap()
            ),
            *platform
        );
        let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
        assert_eq!(diff_ids.len(), manifest["layers"].as_array().unwrap().len());
    }
    // Children first, then the index that names them.
    let puts: Vec<String> = dev
        .requests()
        .into_iter()
        .filter(|(m, p, _)| m == "PUT" && p.contains("/manifests/"))
        .map(|(_, p, _)| p)
        .collect();
    assert!(
        puts.last().unwrap().ends_with("/manifests/multi"),
        "{puts:?}"
    );
    let version = std::fs::read_to_string(tree.path().join("VERSION")).unwrap();
    assert_eq!(run_in(&pinned, "cat /app/VERSION"), version);

    // An edit: one delta layer, uploaded once for every platform.
    std::fs::write(tree.path().join("VERSION"), "2\n").unwrap();
    let before = dev.uploaded().len();
    let again = push(&[]).ok().to_string();
    let index = inspect_raw(&again);
    let layers: Vec<String> = children(&index)
        .iter()
        .flat_map(|(_, d)| {
            inspect_raw(&format!("{}/dev/app@{d}", dev.host))["layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["digest"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let uploaded: Vec<String> = dev.uploaded()[before..].to_vec();
    let layer_uploads: Vec<&String> = uploaded.iter().filter(|u| layers.contains(u)).collect();
    assert_eq!(layer_uploads.len(), 1, "one delta blob: {uploaded:?}");
    assert_eq!(run_in(&again, "cat /app/VERSION"), "2\n");
}

#[test]
fn a_list_of_platforms_takes_those_and_a_missing_one_names_what_there_is() {
    let dev = Registry::start();
    let tree = app_tree();
    let to = dev.reference("dev/app:list");
    let run = push_tree(
        tree.path(),
        &prod().multi,
        &to,
        &["--platform", "linux/arm64,linux/amd64"],
    );
    let kids = children(&inspect_raw(run.ok()));
    // In the base's order, whatever the order asked.
    assert_eq!(
        kids.iter().map(|k| k.0.as_str()).collect::<Vec<_>>(),
        ["linux/amd64", "linux/arm64"]
    );
    let run = push_tree(
        tree.path(),
        &prod().multi,
        &to,
        &["--platform", "linux/amd64,linux/s390x"],
    );
    run.fails(
        6,
        &["has no linux/s390x image; it has linux/amd64, linux/arm64"],
    );
}

#[test]
fn the_new_index_keeps_the_bases_annotations_and_drops_its_attestations() {
    let prod_reg = Registry::start();
    let (base, _) = attested_index(&prod_reg);
    let dev = Registry::start();
    let tree = app_tree();
    let pinned = push_tree(
        tree.path(),
        &base,
        &dev.reference("dev/app:att"),
        &["--platform", "all"],
    )
    .ok()
    .to_string();
    let index = inspect_raw(&pinned);
    let kids = children(&index);
    assert_eq!(
        kids.iter().map(|k| k.0.as_str()).collect::<Vec<_>>(),
        ["linux/amd64", "linux/arm64"],
        "the attestation described the base's images, not these"
    );
    let a = &index["annotations"];
    assert_eq!(
        a["org.opencontainers.image.source"],
        "https://example.com/prod"
    );
    assert_eq!(a["org.opencontainers.image.base.name"], base.as_str());
}

/// A mapping whose SRC names `{os}`/`{arch}`: each platform's image gets its own files (a binary
/// compiled per platform) in a layer of their own above the shared app layers; an edit of one
/// platform's files uploads that layer alone, and the shared layers stay deltas.
#[test]
fn a_per_platform_mapping_gives_each_platform_its_own_files() {
    let dev = Registry::start();
    let tree = app_tree();
    let out = tempfile::tempdir().unwrap();
    for arch in ["amd64", "arm64"] {
        let dir = out.path().join(format!("linux-{arch}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("server"), format!("built for {arch}\n")).unwrap();
    }
    let state = tempfile::tempdir().unwrap();
    let to = dev.reference("dev/app:bin");
    let per_platform = format!(
        "{}/{{os}}-{{arch}}/server:/app/bin/server",
        out.path().display()
    );
    let push = || {
        Layerup::new()
            .env("LAYERUP_STATE_DIR", state.path())
            .args(push_args(tree.path(), &prod().multi, &to))
            .args([&per_platform, "--platform", "all", "--squash-at", "100000%"])
            .run()
    };
    let first = push();
    let pinned = first.ok().to_string();
    let kids = children(&inspect_raw(&pinned));
    let image = |digest: &str| format!("{}/dev/app@{digest}", dev.host);
    let layers = |digest: &str| -> Vec<String> {
        inspect_raw(&image(digest))["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect()
    };
    let (amd, arm) = (layers(&kids[0].1), layers(&kids[1].1));
    assert_eq!(amd.len(), prod().layers().len() + 2, "{amd:?}");
    // The shared app layer is the same; the top one is each platform's own.
    assert_eq!(amd[amd.len() - 2], arm[arm.len() - 2]);
    assert_ne!(amd.last(), arm.last());
    assert_eq!(
        run_in(&image(&kids[0].1), "cat /app/bin/server /app/VERSION"),
        format!(
            "built for amd64\n{}",
            std::fs::read_to_string(tree.path().join("VERSION")).unwrap()
        )
    );
    let arm_tree = unpacked_tree(&image(&kids[1].1));
    assert!(
        arm_tree["bin/server"].ends_with(&format!("file {:?}", b"built for arm64\n")),
        "{:?}",
        arm_tree.get("bin/server")
    );

    // One platform's binary rebuilt: its layer alone is uploaded; the shared tree is unchanged.
    std::fs::write(out.path().join("linux-arm64/server"), "rebuilt for arm64\n").unwrap();
    let before = dev.uploaded().len();
    let again = push();
    again.ok();
    assert!(
        again
            .stderr
            .starts_with("no changes but per platform; per platform: 2 layers, 1 uploaded;"),
        "{}",
        again.stderr
    );
    let uploaded = dev.uploaded()[before..].to_vec();
    let kids2 = children(&inspect_raw(again.ok()));
    let arm2 = layers(&kids2[1].1);
    let configs = 1;
    assert_eq!(uploaded.len(), 1 + configs, "{uploaded:?}");
    assert!(uploaded.contains(arm2.last().unwrap()), "{uploaded:?}");
    assert_eq!(layers(&kids2[0].1), amd, "amd64's image is the same");
}

#[rstest::rstest]
#[case::a_platform_without_its_files(&["--platform", "all"][..], 3, "does not exist (`")]
#[case::a_placeholder_in_dest(&["--platform", "all"][..], 2, "goes in SRC")]
fn a_per_platform_mapping_that_cannot_work_says_why(
    #[case] extra: &[&str],
    #[case] code: i32,
    #[case] says: &str,
) {
    let dev = Registry::start();
    let tree = app_tree();
    let out = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(out.path().join("linux-amd64")).unwrap();
    std::fs::write(out.path().join("linux-amd64/server"), "x").unwrap();
    let mapping = if code == 2 {
        format!(
            "{}/linux-amd64/server:/app/{{arch}}/server",
            out.path().display()
        )
    } else {
        format!(
            "{}/{{os}}-{{arch}}/server:/app/server",
            out.path().display()
        )
    };
    let run = Layerup::new()
        .args(push_args(
            tree.path(),
            &prod().multi,
            &dev.reference("dev/app:x"),
        ))
        .args([mapping.as_str()])
        .args(extra)
        .run();
    assert_eq!(run.code, code, "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains(says), "{}", run.stderr);
    if code == 3 {
        assert!(run.stderr.contains("linux-arm64/server"), "{}", run.stderr);
        assert!(run.stderr.contains("for linux/arm64"), "{}", run.stderr);
    }
    assert!(dev.uploaded().is_empty(), "nothing is pushed");
}

/// Only per-platform files (a Go service's binary): one layer on the base, no empty app layer;
/// a single-platform base fills in its own platform.
#[test]
fn per_platform_files_alone_add_one_layer() {
    let dev = Registry::start();
    let out = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(out.path().join("linux-amd64")).unwrap();
    std::fs::write(out.path().join("linux-amd64/server"), "amd64 only\n").unwrap();
    let mapping = format!(
        "{}/{{os}}-{{arch}}/server:/app/server",
        out.path().display()
    );
    let run = push(&[
        &mapping,
        "--base",
        &prod().oci,
        "--to",
        &dev.reference("dev/bin:1"),
    ]);
    let pinned = run.ok().to_string();
    assert_eq!(
        inspect(&pinned)["Layers"].as_array().unwrap().len(),
        prod().layers().len() + 1
    );
    assert_eq!(run_in(&pinned, "cat /app/server"), "amd64 only\n");
}

/// `prod/app:multi` copied into `reg`, then an index of its entries changed by `edit`, seeded
/// under `prod/app:TAG`.
fn edited_index(reg: &Registry, tag: &str, edit: impl Fn(&mut Vec<serde_json::Value>)) -> String {
    skopeo(&[
        "copy",
        "-q",
        "--all",
        "--preserve-digests",
        &format!("docker://{}", prod().multi),
        &format!("docker://{}", reg.reference("prod/app:multi")),
    ]);
    let multi = inspect_raw(&prod().multi);
    let mut entries = multi["manifests"].as_array().unwrap().clone();
    edit(&mut entries);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    });
    put_manifest(
        &reg.host,
        "prod/app",
        tag,
        "application/vnd.oci.image.index.v1+json",
        &serde_json::to_vec(&index).unwrap(),
    );
    reg.reference(&format!("prod/app:{tag}"))
}

/// Issue 21: `--platform all` appended the (Linux) app layer to a windows/amd64 entry too.
#[test]
fn all_platforms_are_the_linux_ones_and_a_windows_platform_is_refused() {
    let reg = Registry::start();
    let base = edited_index(&reg, "withwindows", |entries| {
        let mut win = entries[0].clone();
        win["platform"] = serde_json::json!({"os": "windows", "architecture": "amd64", "os.version": "10.0.17763.1"});
        entries.push(win);
    });
    let tree = app_tree();
    let to = reg.reference("dev/app:all");
    let run = Layerup::new()
        .args(push_args(tree.path(), &base, &to))
        .args(["--platform", "all"])
        .run();
    let pinned = run.ok().to_string();
    assert!(
        run.stderr.contains("leaving out windows/amd64"),
        "{}",
        run.stderr
    );
    let kids = children(&inspect_raw(&pinned));
    assert_eq!(
        kids.iter().map(|k| k.0.as_str()).collect::<Vec<_>>(),
        ["linux/amd64", "linux/arm64"]
    );
    let refused = Layerup::new()
        .args(push_args(tree.path(), &base, &to))
        .args(["--platform", "windows/amd64"])
        .run();
    refused.fails(2, &["--platform windows/amd64", "Linux layers"]);
}

/// Issue 21: an index child whose descriptor size disagrees with the manifest was accepted.
#[test]
fn an_index_that_misstates_a_childs_size_is_refused_and_nothing_is_written() {
    let reg = Registry::start();
    let base = edited_index(&reg, "missized", |entries| {
        let size = entries[0]["size"].as_u64().unwrap();
        entries[0]["size"] = serde_json::json!(size + 1);
    });
    let tree = app_tree();
    let dev = Registry::start();
    let run = Layerup::new()
        .args(push_args(tree.path(), &base, &dev.reference("dev/app:x")))
        .args(["--platform", "all"])
        .run();
    run.fails(7, &["bytes, but its index says"]);
    assert!(dev.writes().is_empty());
}
