//! Every registry our users push to, as a front in front of the tests' real registry emulates
//! it (`common::front`, sources in docs/registries.md): a first push, a delta push and copies
//! of an image over 8 MiB go through each, and what they left is read back from the real
//! registry with skopeo and run with podman.

mod common;

use common::front::{Front, Mode, Seen};
use common::*;
use rstest::rstest;

/// A registry behind a front, the prod base and a 9 MiB image already in it, and a docker
/// config holding the front's credentials.
struct Setup {
    registry: Registry,
    front: Front,
    config: tempfile::TempDir,
    state: tempfile::TempDir,
}

fn setup(mode: Mode) -> Setup {
    let registry = Registry::start();
    skopeo(&[
        "copy",
        "-q",
        &format!("docker://{}", prod().oci),
        &format!("docker://{}", registry.reference("prod/app:1")),
    ]);
    let big = tempfile::tempdir().unwrap();
    std::fs::write(big.path().join("blob.bin"), noise(9 << 20)).unwrap();
    push_tree(
        big.path(),
        &prod().oci,
        &registry.reference("src/big:1"),
        &[],
    )
    .ok();
    let front = Front::start(&registry.host, mode);
    let config = tempfile::tempdir().unwrap();
    std::fs::write(
        config.path().join("config.json"),
        front.docker_config().to_string(),
    )
    .unwrap();
    Setup {
        registry,
        front,
        config,
        state: tempfile::tempdir().unwrap(),
    }
}

impl Setup {
    fn layerup(&self) -> Layerup {
        Layerup::new()
            .env("DOCKER_CONFIG", self.config.path())
            .env("LAYERUP_STATE_DIR", self.state.path())
    }

    fn push(&self, tree: &std::path::Path, base: &str, to: &str) -> Run {
        self.layerup().args(push_args(tree, base, to)).run()
    }

    fn copy(&self, from: &str, to: &str, extra: &[&str]) -> Run {
        self.layerup().args(["copy", from, to]).args(extra).run()
    }

    fn seen(&self, pick: impl Fn(&Seen) -> bool) -> Vec<Seen> {
        self.front.seen().into_iter().filter(pick).collect()
    }

    /// The image `repo:tag` is the same, byte for byte, behind the front as `src/big:1`.
    fn assert_big_copied(&self, repo: &str, tag: &str) {
        let host = &self.registry.host;
        let want = raw_manifest_bytes(host, "src/big", "1");
        assert_eq!(raw_manifest_bytes(host, repo, tag), want);
        let doc: serde_json::Value = serde_json::from_slice(&want).unwrap();
        let mut digests = vec![doc["config"]["digest"].as_str().unwrap().to_string()];
        for l in doc["layers"].as_array().unwrap() {
            digests.push(l["digest"].as_str().unwrap().to_string());
        }
        for d in digests {
            assert!(has_blob(host, repo, &d), "{d} is missing from {repo}");
        }
        let config = inspect_config(&self.registry.reference(&format!("{repo}:{tag}")));
        assert!(config["rootfs"]["diff_ids"].as_array().unwrap().len() >= 2);
    }
}

#[rstest]
#[case::ecr(Mode::Ecr)]
#[case::gar(Mode::Gar)]
#[case::acr(Mode::Acr)]
#[case::ghcr(Mode::Ghcr)]
#[case::hub(Mode::Hub)]
#[case::harbor(Mode::Harbor)]
#[case::quay(Mode::Quay)]
#[case::artifactory(Mode::Artifactory)]
#[case::nexus(Mode::Nexus)]
#[case::gitlab(Mode::Gitlab)]
#[case::zot(Mode::Zot)]
fn push_delta_and_copy_through(#[case] mode: Mode) {
    let s = setup(mode);
    let tree = app_tree();
    let base = s.front.reference("prod/app:1");
    let to = s.front.reference("dev/app:dev");

    let first = s.push(tree.path(), &base, &to);
    let pinned = first.ok().lines().last().unwrap().to_string();
    let digest = digest_of(&pinned).to_string();
    let behind = s.registry.reference(&format!("dev/app@{digest}"));
    assert_eq!(inspect(&behind)["Digest"], digest.as_str());

    std::fs::write(
        tree.path().join("pkg/sub/data.txt"),
        format!("{mode:?} edit\n"),
    )
    .unwrap();
    let before = s.front.seen().len();
    let second = s.push(tree.path(), &base, &to);
    // What the first push learnt about uploads was kept: no refusal met twice.
    let refused: Vec<_> = s.front.seen()[before..]
        .iter()
        .filter(|r| r.status >= 400 && !matches!(r.status, 401 | 403))
        .filter(|r| r.path.contains("/blobs/uploads/"))
        .cloned()
        .collect();
    assert!(refused.is_empty(), "{refused:?}");
    let pinned = second.ok().lines().last().unwrap().to_string();
    let behind = s
        .registry
        .reference(&format!("dev/app@{}", digest_of(&pinned)));
    assert_eq!(
        run_in(&behind, "cat /app/pkg/sub/data.txt").trim(),
        format!("{mode:?} edit")
    );

    // Over 8 MiB from another registry (every blob uploaded), then within this one (mounts).
    let copy_in = s.copy(
        &s.registry.reference("src/big:1"),
        &s.front.reference("dst/big:1"),
        &[],
    );
    copy_in.ok();
    s.assert_big_copied("dst/big", "1");
    let copy_within = s.copy(
        &s.front.reference("src/big:1"),
        &s.front.reference("mirror/big:1"),
        &[],
    );
    copy_within.ok();
    s.assert_big_copied("mirror/big", "1");

    let stderr = [
        first.stderr,
        second.stderr,
        copy_in.stderr,
        copy_within.stderr,
    ]
    .join("\n");
    assert!(
        !stderr.contains(mode.password()),
        "the password leaked:\n{stderr}"
    );
    behaves_as(mode, &s, &stderr);
}

/// What each mode did to the requests, so the test could not pass without meeting it.
fn behaves_as(mode: Mode, s: &Setup, stderr: &str) {
    let storage = s.seen(|r| r.at == "storage");
    match mode {
        Mode::Ecr | Mode::Gar => {
            assert!(!storage.is_empty(), "blob reads went to storage");
            assert!(
                storage.iter().all(|r| !r.authorized && r.status < 300),
                "storage saw no credentials: {storage:?}"
            );
            let mounts = s.seen(|r| r.method == "POST" && r.path.contains("mount="));
            assert!(!mounts.is_empty() && mounts.iter().all(|r| r.status == 202));
        }
        _ => assert!(storage.is_empty()),
    }
    match mode {
        Mode::Ecr => {
            assert!(!s
                .seen(|r| r.method == "PATCH" && r.status == 201)
                .is_empty());
        }
        Mode::Gar => {
            assert!(s.seen(|r| r.method == "PATCH" && r.status < 300).is_empty());
            assert!(!s.seen(|r| r.at == "token").is_empty());
        }
        Mode::Ghcr => {
            let patches = s.seen(|r| r.method == "PATCH");
            assert!(patches.iter().any(|r| r.status == 416), "{patches:?}");
            assert!(!s.seen(|r| r.status == 403).is_empty(), "a token expired");
        }
        Mode::Hub => {
            let limited = s.seen(|r| r.status == 429);
            assert_eq!(limited.len(), 1);
            assert!(
                stderr.contains("429") && stderr.contains("remaining"),
                "{stderr}"
            );
            // Retry-After named a date about 2 s on: nothing was asked before it (at least 1 s).
            let next = s.seen(|r| r.path == limited[0].path && r.when > limited[0].when);
            assert!(
                next[0].when - limited[0].when >= std::time::Duration::from_secs(1),
                "asked again too soon"
            );
            // The base's tag was read once; the second push only asked whether it moved (HEAD,
            // which Docker Hub does not count).
            let gets = s.seen(|r| r.method == "GET" && r.path == "/v2/prod/app/manifests/1");
            assert_eq!(
                gets.iter().filter(|r| r.status == 200).count(),
                1,
                "{gets:?}"
            );
            assert!(!s.seen(|r| r.at == "token" && r.status == 400).is_empty());
            assert!(!s
                .seen(|r| r.at == "registry" && r.status == 401 && r.authorized)
                .is_empty());
        }
        Mode::Harbor => {
            let mounts = s.seen(|r| r.method == "POST" && r.path.contains("mount="));
            assert!(mounts.iter().all(|r| r.status == 401), "{mounts:?}");
        }
        Mode::Artifactory => {
            assert!(!s.seen(|r| r.method == "PUT" && r.status == 404).is_empty());
            assert!(!s
                .seen(|r| r.method == "PATCH" && r.status == 202)
                .is_empty());
        }
        _ => {}
    }
}

/// ECR with immutable tags: a push that changed nothing writes no tag (it would be refused
/// even for the same digest); one that changed something is refused with a hint, and
/// nothing half-written names it.
#[test]
fn an_immutable_tag_is_left_alone_when_it_names_the_image_already() {
    let s = setup(Mode::Ecr);
    s.front.immutable_tags();
    let tree = app_tree();
    let base = s.front.reference("prod/app:1");
    let to = s.front.reference("dev/app:v1");
    let first = s.push(tree.path(), &base, &to);
    let pinned = first.ok().lines().last().unwrap().to_string();
    let again = s.push(tree.path(), &base, &to);
    assert_eq!(again.ok().lines().last().unwrap(), pinned);
    let tag_puts = s.seen(|r| r.method == "PUT" && r.path.ends_with("/manifests/v1"));
    assert_eq!(tag_puts.len(), 1, "{tag_puts:?}");

    std::fs::write(tree.path().join("VERSION"), "2\n").unwrap();
    let changed = s.push(tree.path(), &base, &to);
    changed.fails(8, &["TAG_INVALID", "immutable", "--tag"]);
    assert_eq!(
        changed.stderr.trim().lines().count(),
        1,
        "{}",
        changed.stderr
    );
    assert_eq!(
        inspect(&s.registry.reference("dev/app:v1"))["Digest"],
        digest_of(&pinned)
    );
}

/// ECR in chunks: each PATCH answered 201 with a `Range` stuck at the first chunk
/// (aws/containers-roadmap#2831), and chunks under 5 MiB refused before the last.
#[rstest]
#[case::five_mib_chunks("5M", false)]
#[case::one_mib_chunks("1M", true)]
fn ecr_takes_chunks_as_it_answers_them(#[case] chunk: &str, #[case] refused: bool) {
    let s = setup(Mode::Ecr);
    let run = s.copy(
        &s.registry.reference("src/big:1"),
        &s.front.reference("dst/big:1"),
        &["--chunk-size", chunk],
    );
    run.ok();
    s.assert_big_copied("dst/big", "1");
    let patches = s.seen(|r| r.method == "PATCH");
    if refused {
        assert!(patches.iter().any(|r| r.status == 400), "{patches:?}");
        assert!(
            run.stderr.contains("sending blobs in one request"),
            "{}",
            run.stderr
        );
    } else {
        assert!(
            patches.len() >= 2,
            "the 9 MiB layer went in chunks: {patches:?}"
        );
        assert!(patches.iter().all(|r| r.status == 201), "{patches:?}");
        assert!(
            run.stderr.is_empty() || !run.stderr.contains("WARN"),
            "{}",
            run.stderr
        );
    }
}

/// zot takes no Docker schema 2 manifest: a push on a Docker base says so and names the way
/// out, writing no tag; `--format oci` converts the new image (same layer blobs) and it runs.
#[test]
fn a_registry_refusing_docker_manifests_gets_oci_ones_with_format_oci() {
    let s = setup(Mode::Zot);
    skopeo(&[
        "copy",
        "-q",
        &format!("docker://{}", prod().docker),
        &format!("docker://{}", s.registry.reference("prod/docker:1")),
    ]);
    let tree = app_tree();
    let base = s.front.reference("prod/docker:1");
    let to = s.front.reference("dev/app:dev");
    let refused = s.push(tree.path(), &base, &to);
    refused.fails(8, &["MANIFEST_INVALID", "Docker schema 2", "--format oci"]);
    assert_eq!(
        refused.stderr.trim().lines().count(),
        1,
        "{}",
        refused.stderr
    );
    assert!(s
        .registry
        .requests()
        .iter()
        .all(|(m, p, _)| !(m == "PUT" && p.starts_with("/v2/dev/app/manifests/"))));

    let run = s
        .layerup()
        .args(push_args(tree.path(), &base, &to))
        .args(["--format", "oci"])
        .run();
    let pinned = run.ok().lines().last().unwrap().to_string();
    let behind = s
        .registry
        .reference(&format!("dev/app@{}", digest_of(&pinned)));
    let raw = inspect_raw(&behind);
    assert_eq!(
        raw["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        raw["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let docker = inspect_raw(&prod().docker);
    let base_layers = docker["layers"].as_array().unwrap();
    for (l, was) in raw["layers"].as_array().unwrap().iter().zip(base_layers) {
        assert_eq!(
            l["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        assert_eq!(l["digest"], was["digest"], "the same layer bytes");
    }
    assert_eq!(run_in(&behind, "cat /app/VERSION").trim(), "1.2.3");
}
