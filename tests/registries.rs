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
    seed_referrers(&registry, "src/big", "1");
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

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const SPDX: &str = "application/spdx+json";

/// The referrers `repo:tag` is given, as oras and cosign leave them on a registry with no
/// referrers API: an SBOM artifact whose `subject` is the image, listed by the fallback tag
/// `sha256-<hex>`, and a cosign signature under `sha256-<hex>.sig`.
struct Referrers {
    /// The SBOM's manifest digest.
    sbom: String,
    /// The fallback tag and cosign's.
    fallback: String,
    sig: String,
    /// Every blob they name.
    blobs: Vec<String>,
}

fn referrers_of(subject_manifest: &[u8]) -> Referrers {
    let subject = sha256(subject_manifest);
    let hex = subject.trim_start_matches("sha256:");
    let (sbom, _, blobs) = sbom_and_sig(&subject, subject_manifest.len());
    Referrers {
        sbom,
        fallback: format!("sha256-{hex}"),
        sig: format!("sha256-{hex}.sig"),
        blobs,
    }
}

/// The SBOM manifest (digest, bytes), the signature manifest's bytes, and their blobs' digests;
/// the same bytes every time for one subject.
type Made = (Vec<u8>, Vec<u8>, Vec<(Vec<u8>, String)>);

fn sbom_and_sig(subject: &str, subject_size: usize) -> (String, Made, Vec<String>) {
    let empty = b"{}".to_vec();
    let sbom_blob = format!(r#"{{"spdxVersion":"SPDX-2.3","name":"{subject}"}}"#).into_bytes();
    let payload = format!(r#"{{"critical":{{"image":{{"docker-manifest-digest":"{subject}"}}}}}}"#)
        .into_bytes();
    let blobs: Vec<(Vec<u8>, String)> = [empty, sbom_blob, payload]
        .into_iter()
        .map(|b| {
            let d = sha256(&b);
            (b, d)
        })
        .collect();
    let desc = |media: &str, i: usize| serde_json::json!({"mediaType": media, "digest": blobs[i].1, "size": blobs[i].0.len()});
    let sbom = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SPDX,
        "config": desc("application/vnd.oci.empty.v1+json", 0),
        "layers": [desc(SPDX, 1)],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": subject_size},
    });
    let sig = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": desc("application/vnd.oci.image.config.v1+json", 0),
        "layers": [desc("application/vnd.dev.cosign.simplesigning.v1+json", 2)],
    });
    let sbom = serde_json::to_vec(&sbom).unwrap();
    let sig = serde_json::to_vec(&sig).unwrap();
    let digests = blobs.iter().map(|b| b.1.clone()).collect();
    (sha256(&sbom), (sbom, sig, blobs), digests)
}

/// Gives `repo:tag` on `reg` the referrers of [`referrers_of`].
fn seed_referrers(reg: &Registry, repo: &str, tag: &str) -> Referrers {
    let subject_manifest = raw_manifest_bytes(&reg.host, repo, tag);
    let subject = sha256(&subject_manifest);
    let (sbom_digest, (sbom, sig, blobs), _) = sbom_and_sig(&subject, subject_manifest.len());
    for (bytes, _) in &blobs {
        put_blob(&reg.host, repo, bytes);
    }
    put_manifest(&reg.host, repo, &sbom_digest, OCI_MANIFEST, &sbom);
    let r = referrers_of(&subject_manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": sbom_digest, "size": sbom.len(), "artifactType": SPDX}],
    });
    put_manifest(
        &reg.host,
        repo,
        &r.fallback,
        OCI_INDEX,
        &serde_json::to_vec(&index).unwrap(),
    );
    put_manifest(&reg.host, repo, &r.sig, OCI_MANIFEST, &sig);
    r
}

/// Whether `repo` on `host` holds the referrers of `repo:tag`, byte for byte as the source
/// `src/big` had them, listed by its fallback tag.
fn has_referrers(host: &str, repo: &str, tag: &str) -> bool {
    let r = referrers_of(&raw_manifest_bytes(host, repo, tag));
    let get = |reference: &str| {
        let accept = format!("{OCI_MANIFEST}, {OCI_INDEX}");
        let path = format!("/v2/{repo}/manifests/{reference}");
        let (status, _, body) = http(host, "GET", &path, &[("Accept", &accept)], b"");
        (status == 200).then_some(body)
    };
    let Some(index) = get(&r.fallback) else {
        return false;
    };
    let index: serde_json::Value = serde_json::from_slice(&index).unwrap();
    let listed = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["digest"] == r.sbom.as_str() && e["artifactType"] == SPDX);
    let sbom_same = get(&r.sbom).is_some_and(|b| sha256(&b) == r.sbom);
    let sig_same = get(&r.sig).is_some();
    listed && sbom_same && sig_same && r.blobs.iter().all(|d| has_blob(host, repo, d))
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
    assert!(
        copy_in.stderr.contains("and 2 referrers"),
        "{}",
        copy_in.stderr
    );
    s.assert_big_copied("dst/big", "1");
    assert!(has_referrers(&s.registry.host, "dst/big", "1"));
    let copy_within = s.copy(
        &s.front.reference("src/big:1"),
        &s.front.reference("mirror/big:1"),
        &[],
    );
    copy_within.ok();
    assert!(
        copy_within.stderr.contains("and 2 referrers"),
        "{}",
        copy_within.stderr
    );
    s.assert_big_copied("mirror/big", "1");
    assert!(has_referrers(&s.registry.host, "mirror/big", "1"));

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
    let api = s.seen(|r| r.path.contains("/referrers/"));
    let fallback_puts = s.seen(|r| r.method == "PUT" && r.path.contains("/manifests/sha256-"));
    match mode {
        // zot lists referrers itself: layerup read them there and wrote no fallback tag.
        Mode::Zot => {
            assert!(api.iter().any(|r| r.status == 200), "{api:?}");
            assert!(
                fallback_puts.iter().all(|r| r.path.ends_with(".sig")),
                "{fallback_puts:?}"
            );
        }
        _ => {
            assert!(api.iter().all(|r| r.status == 404), "{api:?}");
            assert!(fallback_puts.iter().any(|r| !r.path.ends_with(".sig")));
        }
    }
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
            // Each refused mount's session took the blob: no upload was started besides.
            let posts = s.seen(|r| r.method == "POST" && r.path.starts_with("/v2/mirror/"));
            assert!(posts.iter().all(|r| r.path.contains("mount=")), "{posts:?}");
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

/// `--referrers=false` leaves them behind; a destination whose fallback tag lists a referrer
/// already keeps it beside the copied ones.
#[test]
fn referrers_can_be_left_behind_and_join_what_the_destination_lists() {
    let s = setup(Mode::Ghcr);
    let alone = s.copy(
        &s.front.reference("src/big:1"),
        &s.front.reference("bare/big:1"),
        &["--referrers=false"],
    );
    alone.ok();
    assert!(!alone.stderr.contains("referrer"), "{}", alone.stderr);
    s.assert_big_copied("bare/big", "1");
    assert!(!has_referrers(&s.registry.host, "bare/big", "1"));
    assert!(s
        .seen(|r| r.path.contains("/referrers/") || r.path.contains("sha256-"))
        .is_empty());

    // The destination has the image and a fallback tag listing another referrer (one it holds:
    // distribution refuses an index naming a manifest it does not).
    skopeo(&[
        "copy",
        "-q",
        &format!("docker://{}", prod().oci),
        &format!("docker://{}", s.registry.reference("bare/big:other")),
    ]);
    let other = seed_referrers(&s.registry, "bare/big", "other");
    let subject = raw_manifest_bytes(&s.registry.host, "src/big", "1");
    let mine = referrers_of(&subject);
    let theirs = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": other.sbom, "size": 1}],
    });
    put_manifest(
        &s.registry.host,
        "bare/big",
        &mine.fallback,
        OCI_INDEX,
        &serde_json::to_vec(&theirs).unwrap(),
    );
    s.copy(
        &s.front.reference("src/big:1"),
        &s.front.reference("bare/big:1"),
        &[],
    )
    .ok();
    assert!(has_referrers(&s.registry.host, "bare/big", "1"));
    let index: serde_json::Value = serde_json::from_slice(&raw_manifest_bytes(
        &s.registry.host,
        "bare/big",
        &mine.fallback,
    ))
    .unwrap();
    let listed: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["digest"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [other.sbom.as_str(), mine.sbom.as_str()]);

    // Again: every tag names what it would be given already, and none is written (an
    // immutable tag would refuse it).
    let before = s.front.seen().len();
    s.copy(
        &s.front.reference("src/big:1"),
        &s.front.reference("bare/big:1"),
        &[],
    )
    .ok();
    let tags_written: Vec<_> = s.front.seen()[before..]
        .iter()
        .filter(|r| {
            r.method == "PUT"
                && r.path.contains("/manifests/")
                && !r.path.contains("/manifests/sha256:")
        })
        .cloned()
        .collect();
    assert!(tags_written.is_empty(), "{tags_written:?}");
}

/// ECR before OCI 1.1 refused a manifest with a `subject` (405): the image is copied, the copy
/// fails on one line saying its referrers are not and how to copy it alone, which works.
#[test]
fn a_registry_refusing_referrers_fails_the_copy_saying_so() {
    let s = setup(Mode::Ecr);
    s.front.no_subject();
    let run = s.copy(
        &s.front.reference("src/big:1"),
        &s.front.reference("dst/big:1"),
        &[],
    );
    run.fails(
        8,
        &["was copied, its referrers not", "405", "--referrers=false"],
    );
    assert_eq!(run.stderr.trim().lines().count(), 2, "{}", run.stderr);
    s.assert_big_copied("dst/big", "1");
    assert!(!has_referrers(&s.registry.host, "dst/big", "1"));
    let alone = s.copy(
        &s.front.reference("src/big:1"),
        &s.front.reference("dst/big:1"),
        &["--referrers=false"],
    );
    alone.ok();
}

/// A one-shot push keeps what logging in cost for the next run: how the registry asks, that the
/// basic credentials passed, and each token until it expires — in owner-only files that hold no
/// password. The next push sends no `GET /v2/` and no token request; a token the registry no
/// longer takes is fetched again there and then, and the push goes through.
#[rstest]
#[case::token_service_elsewhere(Mode::Gar)]
#[case::token_without_lifetime(Mode::Acr)]
#[case::basic(Mode::Ecr)]
fn logging_in_is_kept_between_runs(#[case] mode: Mode) {
    use std::os::unix::fs::PermissionsExt;
    let s = setup(mode);
    let tree = app_tree();
    let base = s.front.reference("prod/app:1");
    let to = s.front.reference("dev/app:dev");
    let push = |edit: &str| {
        std::fs::write(tree.path().join("VERSION"), edit).unwrap();
        let before = s.front.seen().len();
        let run = s
            .layerup()
            .args(push_args(tree.path(), &base, &to))
            .args(["-vv"])
            .run();
        let pinned = run.ok().lines().last().unwrap().to_string();
        let behind = s
            .registry
            .reference(&format!("dev/app@{}", digest_of(&pinned)));
        assert_eq!(run_in(&behind, "cat /app/VERSION"), edit);
        (run, s.front.seen()[before..].to_vec())
    };
    let pings = |seen: &[Seen]| seen.iter().filter(|r| r.path == "/v2/").count();
    let tokens = |seen: &[Seen]| {
        seen.iter()
            .filter(|r| r.at == "token" || r.path.starts_with("/token"))
            .count()
    };

    let (first, seen) = push("1\n");
    assert!(pings(&seen) >= 1, "{seen:?}");
    let (second, seen) = push("2\n");
    assert_eq!(pings(&seen), 0, "{seen:?}");
    assert_eq!(tokens(&seen), 0, "{seen:?}");

    s.front.forget_tokens();
    let (third, seen) = push("3\n");
    assert_eq!(pings(&seen), 0, "{seen:?}");
    if mode != Mode::Ecr {
        assert!(
            seen.iter().any(|r| r.status == 401 && r.authorized),
            "{seen:?}"
        );
        assert!(tokens(&seen) >= 1, "{seen:?}");
    }

    let dir = s.state.path().join("auth");
    let mode_of = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode_of(&dir), 0o700);
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(files.len() >= 2, "{files:?}");
    for f in &files {
        assert_eq!(mode_of(f), 0o600, "{}", f.display());
        let text = std::fs::read_to_string(f).unwrap();
        assert!(!text.contains(mode.password()), "{text}");
    }
    for run in [first, second, third] {
        let said = format!("{}{}", run.stdout, run.stderr);
        assert!(
            !said.contains("front-token-") && !said.contains(mode.password()),
            "{said}"
        );
    }
}

/// The base crosses once per registry, and falls back where the registry will not: a push to a
/// second repository mounts the base's layers from the first (where the state saw them), asking
/// its token service for `pull` there; Harbor grants the first repository only and refuses the
/// mount, and the layers are sent instead — the image is whole and runs.
#[rstest]
#[case::mounted(Mode::Gitlab, 201)]
#[case::refused(Mode::Harbor, 401)]
fn a_second_repository_mounts_the_base_from_the_first_or_falls_back(
    #[case] mode: Mode,
    #[case] answered: u16,
) {
    let s = setup(mode);
    let tree = app_tree();
    // The base from another registry: its layers are copied, not mounted from the base.
    let base = s.registry.reference("prod/app:1");
    s.push(tree.path(), &base, &s.front.reference("dev/a:1"))
        .ok();
    let run = s.push(tree.path(), &base, &s.front.reference("dev/b:1"));
    let pinned = run.ok().lines().last().unwrap().to_string();
    let from_a = s.seen(|r| {
        r.method == "POST" && r.path.contains("mount=") && r.path.contains("from=dev%2Fa")
    });
    assert!(
        !from_a.is_empty() && from_a.iter().all(|r| r.status == answered),
        "{from_a:?}"
    );
    let behind = s
        .registry
        .reference(&format!("dev/b@{}", digest_of(&pinned)));
    assert_eq!(run_in(&behind, "cat /app/VERSION").trim(), "1.2.3");
    let base_puts = s.seen(|r| r.method == "PUT" && r.path.starts_with("/v2/dev/b/blobs/uploads/"));
    match answered {
        201 => assert!(
            base_puts.len() <= 2,
            "only the app layer and config: {base_puts:?}"
        ),
        _ => assert!(base_puts.len() > 2, "{base_puts:?}"),
    }
}

/// A small blob goes in one request where the registry takes that: zot answers a blob in the
/// POST with `?digest=` 201, so a delta push sends its layer and config in one POST each and
/// no upload session. distribution opens a session instead (202): the blob goes on there, and
/// the next push does not ask again.
#[test]
fn small_blobs_go_in_one_post_where_the_registry_takes_it() {
    let s = setup(Mode::Zot);
    let tree = app_tree();
    let base = s.front.reference("prod/app:1");
    let to = s.front.reference("dev/app:dev");
    s.push(tree.path(), &base, &to).ok();
    std::fs::write(tree.path().join("VERSION"), "2\n").unwrap();
    let before = s.front.seen().len();
    let run = s.push(tree.path(), &base, &to);
    let pinned = run.ok().lines().last().unwrap().to_string();
    let seen = s.front.seen()[before..].to_vec();
    let singles: Vec<_> = seen
        .iter()
        .filter(|r| r.method == "POST" && r.path.contains("digest="))
        .collect();
    assert_eq!(singles.len(), 2, "the delta and the config: {seen:?}");
    assert!(singles.iter().all(|r| r.status == 201), "{singles:?}");
    assert!(
        !seen
            .iter()
            .any(|r| r.method == "PUT" && r.path.contains("/blobs/uploads/")),
        "{seen:?}"
    );
    let behind = s
        .registry
        .reference(&format!("dev/app@{}", digest_of(&pinned)));
    assert_eq!(run_in(&behind, "cat /app/VERSION"), "2\n");

    // distribution, straight: 202 to the first, none the next time.
    let dev = Registry::start();
    let state = tempfile::tempdir().unwrap();
    let push = |version: &str| {
        std::fs::write(tree.path().join("VERSION"), version).unwrap();
        let run = Layerup::new()
            .env("LAYERUP_STATE_DIR", state.path())
            .args(push_args(
                tree.path(),
                &prod().oci,
                &dev.reference("dev/app:dev"),
            ))
            .run();
        let pinned = run.ok().lines().last().unwrap().to_string();
        assert_eq!(run_in(&pinned, "cat /app/VERSION"), version);
    };
    let singles = |dev: &Registry| -> Vec<u16> {
        dev.requests()
            .into_iter()
            .filter(|(m, p, _)| m == "POST" && p.contains("digest="))
            .map(|r| r.2)
            .collect()
    };
    push("3\n");
    let first = singles(&dev);
    assert!(
        !first.is_empty() && first.iter().all(|s| *s == 202),
        "{first:?}"
    );
    push("4\n");
    assert_eq!(singles(&dev), first, "not asked again");
}
