//! `layerup copy` against real `docker-registry` instances: digests kept, only missing blobs
//! moved, mounts within one registry, indexes with --all, OCI layouts; results read back with
//! skopeo and run with podman.

mod common;

use common::*;
use rstest::rstest;

fn copy(args: &[&str]) -> Run {
    Layerup::new().args(["copy"]).args(args).run()
}

/// Config and layer digests a manifest names.
fn blobs_of(manifest: &serde_json::Value) -> Vec<String> {
    let mut out = vec![manifest["config"]["digest"].as_str().unwrap().to_string()];
    out.extend(
        manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string()),
    );
    out
}

fn repo_of(reference: &str) -> (&str, &str) {
    let (host, rest) = reference.split_once('/').unwrap();
    (host, rest.split([':', '@']).next().unwrap())
}

#[rstest]
#[case::oci("oci")]
#[case::docker("docker")]
fn a_copy_keeps_the_digest_and_runs(#[case] flavour: &str) {
    let prod = prod();
    let source = if flavour == "oci" {
        &prod.oci
    } else {
        &prod.docker
    };
    let dev = Registry::start();
    let run = copy(&[source, &dev.reference("dev/app:1.0")]);
    let pinned = run.ok();
    let (host, repo) = repo_of(source);
    let want = raw_manifest_bytes(host, repo, flavour);
    assert_eq!(pinned, format!("{}/dev/app@{}", dev.host, sha256(&want)));
    assert_eq!(
        raw_manifest_bytes(&dev.host, "dev/app", "1.0"),
        want,
        "byte for byte"
    );
    let manifest: serde_json::Value = serde_json::from_slice(&want).unwrap();
    let mut uploaded = dev.uploaded();
    uploaded.sort();
    let mut named = blobs_of(&manifest);
    named.sort();
    assert_eq!(uploaded, named, "each blob uploaded once");
    assert!(
        run.stderr
            .contains(&format!("to copy: {} blobs", named.len())),
        "{}",
        run.stderr
    );
    assert_eq!(inspect(pinned)["Digest"], sha256(&want));
    assert_eq!(run_in(pinned, "cat /etc/prod-release"), "prod 1.0\n");
}

#[test]
fn a_second_copy_moves_nothing_and_writes_nothing() {
    let dev = Registry::start();
    let to = dev.reference("dev/app:1.0");
    let first = copy(&[&prod().oci, &to]).ok().to_string();
    let before = dev.requests().len();
    let again = copy(&[&prod().oci, &to]);
    assert_eq!(again.ok(), first);
    assert!(again.stderr.contains("nothing to copy"), "{}", again.stderr);
    let after: Vec<_> = dev.requests().split_off(before);
    assert!(
        after.iter().all(|(m, _, _)| m == "GET" || m == "HEAD"),
        "{after:?}"
    );
}

#[test]
fn blobs_the_destination_has_are_not_sent_again() {
    let dev = Registry::start();
    let manifest = inspect_raw(&prod().oci);
    let named = blobs_of(&manifest);
    // Another tag of the same repository already holds the image: only the tag is new.
    copy(&[&prod().oci, &dev.reference("dev/app:old")]).ok();
    let uploads = dev.uploaded().len();
    let run = copy(&[&prod().oci, &dev.reference("dev/app:new")]);
    run.ok();
    assert_eq!(dev.uploaded().len(), uploads);
    assert!(
        run.stderr.contains(&format!(
            "to copy: 0 blobs (0 B), 0 to mount, {} already there, then 1 manifest",
            named.len()
        )),
        "{}",
        run.stderr
    );
}

#[test]
fn within_one_registry_blobs_are_mounted_and_no_byte_is_uploaded() {
    let reg = Registry::start();
    let from = reg.reference("prod/app:1");
    skopeo(&[
        "copy",
        "-q",
        &format!("docker://{}", prod().oci),
        &format!("docker://{from}"),
    ]);
    let named = blobs_of(&inspect_raw(&from));
    let before = reg.requests().len();
    let run = copy(&[&from, &reg.reference("dev/app:1")]);
    run.ok();
    assert!(
        run.stderr.contains(&format!("{} to mount", named.len())),
        "{}",
        run.stderr
    );
    let after = reg.requests().split_off(before);
    let mut mounted = reg.mounted();
    mounted.sort();
    let mut want = named.clone();
    want.sort();
    assert_eq!(mounted, want);
    assert!(
        !after
            .iter()
            .any(|(m, p, _)| (m == "PUT" || m == "PATCH") && p.contains("/blobs/uploads/")),
        "blob bytes were uploaded: {after:?}"
    );
}

#[test]
fn without_all_an_index_is_resolved_to_the_platform() {
    let dev = Registry::start();
    let run = copy(&[
        &prod().multi,
        &dev.reference("dev/app:arm"),
        "--platform",
        "linux/arm64",
    ]);
    let pinned = run.ok();
    let index = inspect_raw(&prod().multi);
    let arm = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == "arm64")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(digest_of(pinned), arm);
    assert_eq!(inspect_config(pinned)["architecture"], "arm64");
}

#[test]
fn all_copies_the_index_and_every_child_byte_for_byte_attestations_included() {
    let prod_reg = Registry::start();
    let (source, index) = attested_index(&prod_reg);
    let dev = Registry::start();
    let run = copy(&["--all", &source, &dev.reference("dev/app:1.0")]);
    let pinned = run.ok();
    assert_eq!(digest_of(pinned), sha256(&index));
    assert_eq!(raw_manifest_bytes(&dev.host, "dev/app", "1.0"), index);
    let doc: serde_json::Value = serde_json::from_slice(&index).unwrap();
    let children = doc["manifests"].as_array().unwrap();
    assert_eq!(children.len(), 3);
    for child in children {
        let d = child["digest"].as_str().unwrap();
        let bytes = raw_manifest_bytes(&dev.host, "dev/app", d);
        assert_eq!(
            bytes,
            raw_manifest_bytes(&prod_reg.host, "prod/app", d),
            "child {d}"
        );
        let manifest: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        for blob in blobs_of(&manifest) {
            assert!(has_blob(&dev.host, "dev/app", &blob), "{blob} of {d}");
        }
    }
    assert!(
        run.stderr.contains("then 4 manifests"),
        "three children and the index: {}",
        run.stderr
    );
    // skopeo reads the copied index and picks a platform from it.
    let arm = skopeo(&[
        "inspect",
        "--override-arch",
        "arm64",
        &format!("docker://{}", dev.reference("dev/app:1.0")),
    ]);
    assert!(arm.contains("\"Architecture\": \"arm64\""), "{arm}");
}

#[test]
fn copies_go_to_and_from_oci_layouts_with_the_same_digest() {
    let dir = tempfile::tempdir().unwrap();
    let mirror = format!("oci:{}:app", dir.path().join("mirror").display());
    let to_layout = copy(&[&prod().oci, &mirror]);
    let pinned = to_layout.ok().to_string();
    let want = sha256(&raw_manifest_bytes(
        repo_of(&prod().oci).0,
        "prod/app",
        "oci",
    ));
    assert_eq!(digest_of(&pinned), want);
    // skopeo reads the layout as an image.
    let seen: serde_json::Value = serde_json::from_str(&skopeo(&["inspect", &mirror])).unwrap();
    assert_eq!(seen["Digest"], want);

    let dev = Registry::start();
    let back = copy(&[&mirror, &dev.reference("dev/app:from-layout")]);
    assert_eq!(digest_of(back.ok()), want);
    assert_eq!(run_in(back.ok(), "cat /etc/prod-release"), "prod 1.0\n");
}

#[test]
fn a_digest_destination_is_refused_before_any_request() {
    let run = copy(&[&prod().oci, "127.0.0.1:9/dev/app@sha256:0000000000000000000000000000000000000000000000000000000000000000"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("names a digest; give a tag"),
        "{}",
        run.stderr
    );
}
