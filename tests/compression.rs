//! `--compression zstd`: layers a real registry stores, podman runs and umoci unpacks; deltas
//! in zstd stacked on gzip layers and back; the same bytes every time; refused where the image
//! format has no zstd layer.

mod common;

use common::*;

fn layer_types(image: &str) -> Vec<String> {
    inspect_raw(image)["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap().to_string())
        .collect()
}

/// The image's top layer, copied out by skopeo and unpacked by `zstd -d | tar -x`.
fn unpack_top_layer(image: &str) -> tempfile::TempDir {
    require("zstd", "zstd");
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    skopeo(&[
        "copy",
        "-q",
        &format!("docker://{image}"),
        &format!("oci:{}:x", layout.display()),
    ]);
    let blob = |digest: &str| {
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let top = manifest["layers"].as_array().unwrap().last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let out = tempfile::tempdir().unwrap();
    run(std::process::Command::new("sh").args([
        "-c",
        &format!(
            "zstd -dc '{}' | tar -x -C '{}'",
            blob(&top).display(),
            out.path().display()
        ),
    ]));
    out
}

const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

#[test]
fn zstd_layers_run_unpack_and_stack_with_gzip_ones() {
    let dev = Registry::start();
    let tree = app_tree();
    let state = tempfile::tempdir().unwrap();
    let to = dev.reference("dev/z:dev");
    let push = |extra: &[&str]| {
        Layerup::new()
            .env("LAYERUP_STATE_DIR", state.path())
            .args(push_args(tree.path(), &prod().oci, &to))
            .args(["--squash-at", "100000%"])
            .args(extra)
            .run()
    };
    let base = prod().layers().len();
    let first = push(&["--compression", "zstd"]).ok().to_string();
    assert_eq!(layer_types(&first)[base..], [ZSTD]);
    let version = std::fs::read_to_string(tree.path().join("VERSION")).unwrap();
    assert_eq!(run_in(&first, "cat /app/VERSION"), version);
    // skopeo copies it out, and zstd + GNU tar (no layerup code) unpack the layer to the tree's
    // files. (umoci cannot: it has no zstd, lxc/incus#1838.)
    let dir = unpack_top_layer(&first);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("app/VERSION")).unwrap(),
        version
    );
    assert_eq!(
        std::fs::read(dir.path().join("app/pkg/mod.py")).unwrap(),
        std::fs::read(tree.path().join("pkg/mod.py")).unwrap()
    );

    // A zstd delta, then a gzip one on top: each layer keeps its own type.
    std::fs::write(tree.path().join("VERSION"), "2\n").unwrap();
    let second = push(&["--compression", "zstd:19"]).ok().to_string();
    assert_eq!(layer_types(&second)[base..], [ZSTD, ZSTD]);
    std::fs::write(tree.path().join("VERSION"), "3\n").unwrap();
    let third = push(&[]).ok().to_string();
    assert_eq!(layer_types(&third)[base..], [ZSTD, ZSTD, GZIP]);
    assert_eq!(run_in(&third, "cat /app/VERSION"), "3\n");
}

#[test]
fn a_zstd_layer_is_the_same_bytes_every_time() {
    let dev = Registry::start();
    let tree = app_tree();
    let digest = |repo: &str| {
        let out = push_tree(
            tree.path(),
            &prod().oci,
            &dev.reference(repo),
            &["--compression", "zstd:9"],
        );
        digest_of(out.ok()).to_string()
    };
    assert_eq!(digest("dev/a:1"), digest("dev/b:1"));
}

#[test]
fn zstd_on_a_docker_schema_2_base_is_refused_before_anything_is_pushed() {
    let dev = Registry::start();
    let tree = app_tree();
    push_tree(
        tree.path(),
        &prod().docker,
        &dev.reference("dev/z:dev"),
        &["--compression", "zstd"],
    )
    .fails(
        2,
        &[
            "zstd layers need an OCI image",
            "is Docker schema 2",
            "--format oci",
        ],
    );
    assert_eq!(dev.writes(), vec![]);
    // Made OCI, the image on the Docker base takes a zstd layer, and runs.
    let out = push_tree(
        tree.path(),
        &prod().docker,
        &dev.reference("dev/z:oci"),
        &["--compression", "zstd", "--format", "oci"],
    );
    let pinned = out.ok().lines().last().unwrap().to_string();
    let raw = inspect_raw(&pinned);
    assert_eq!(
        raw["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        raw["layers"].as_array().unwrap().last().unwrap()["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    assert_eq!(run_in(&pinned, "cat /app/VERSION").trim(), "1.2.3");
    push_tree(
        tree.path(),
        &prod().oci,
        &dev.reference("dev/z:dev"),
        &["--compression", "zstd:22"],
    )
    .fails(
        2,
        &["--compression `zstd:22`: give gzip, zstd or zstd:LEVEL"],
    );
}
