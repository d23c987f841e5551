//! The transfer engine against the faults real links and registries produce, injected by the
//! project's proxy between layerup and a real registry (or the in-process resumable one). Each
//! test reads the end state from the registry itself: the image complete with every blob, or a
//! clear failure with no manifest naming a missing blob.

mod common;

use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use common::proxy::{Fault, Proxy, Req};
use common::resumable::Resumable;
use common::*;

/// Chunks small enough that the big layer takes several PATCHes.
const CHUNK: u64 = 512 << 10;

/// A source image with a 3 MiB layer that does not compress, in a registry of its own.
struct Big {
    registry: Registry,
    reference: String,
    manifest: Vec<u8>,
    /// (digest, size) of the config and every layer.
    blobs: Vec<(String, u64)>,
    /// The 3 MiB layer.
    big: (String, u64),
}

fn big() -> &'static Big {
    static BIG: OnceLock<Big> = OnceLock::new();
    BIG.get_or_init(|| image_with(3 << 20))
}

/// An image whose big layer (6 MiB) is over the default chunk size: without `--chunk-size` it
/// goes in one PATCH.
fn large() -> &'static Big {
    static LARGE: OnceLock<Big> = OnceLock::new();
    LARGE.get_or_init(|| image_with(6 << 20))
}

fn image_with(bytes: usize) -> Big {
    {
        let registry = Registry::start();
        let tree = tempfile::tempdir().unwrap();
        std::fs::write(tree.path().join("blob.bin"), noise(bytes)).unwrap();
        let to = registry.reference("src/app:big");
        push_tree(tree.path(), &prod().oci, &to, &[]).ok();
        let manifest = raw_manifest_bytes(&registry.host, "src/app", "big");
        let doc: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        let mut blobs = vec![(
            doc["config"]["digest"].as_str().unwrap().to_string(),
            doc["config"]["size"].as_u64().unwrap(),
        )];
        for l in doc["layers"].as_array().unwrap() {
            blobs.push((
                l["digest"].as_str().unwrap().to_string(),
                l["size"].as_u64().unwrap(),
            ));
        }
        let big = blobs.iter().max_by_key(|b| b.1).unwrap().clone();
        assert!(big.1 > 3 * CHUNK, "the big layer spans several chunks");
        Big {
            registry,
            reference: to,
            manifest,
            blobs,
            big,
        }
    }
}

impl Big {
    fn total(&self) -> u64 {
        self.blobs.iter().map(|b| b.1).sum()
    }

    /// The copy is complete in `host/repo:tag`: the same manifest bytes and every blob.
    fn assert_copied(&self, host: &str, repo: &str, tag: &str) {
        assert_eq!(raw_manifest_bytes(host, repo, tag), self.manifest);
        for (d, _) in &self.blobs {
            assert!(has_blob(host, repo, d), "{d} is missing");
        }
    }
}

fn copy_via(to: &str, extra: &[&str]) -> Run {
    Layerup::new()
        .args(["copy", &big().reference, to, "--chunk-size", "512K"])
        .args(extra)
        .run()
}

/// A rule that applies `fault` to the `n`th request (from 1) matching `pick`, and forwards
/// everything else.
fn nth(
    n: usize,
    pick: impl Fn(&Req) -> bool + Send + 'static,
    fault: impl FnOnce() -> Fault + Send + 'static,
) -> impl FnMut(&Req) -> Fault + Send + 'static {
    let mut seen = 0;
    let mut fault = Some(fault);
    move |r: &Req| {
        if pick(r) {
            seen += 1;
            if seen == n {
                return fault.take().unwrap()();
            }
        }
        Fault::Forward
    }
}

fn is_patch(r: &Req) -> bool {
    r.method == "PATCH" && r.is_upload()
}

/// A copy of the large image with no `--chunk-size`: each blob in one request.
fn copy_large_via(to: &str) -> Run {
    Layerup::new().args(["copy", &large().reference, to]).run()
}

#[test]
fn a_reset_mid_blob_on_a_resumable_registry_goes_on_from_where_it_stands() {
    let large = large();
    let reg = Resumable::start();
    let proxy = Proxy::start(&reg.host, nth(1, is_patch, || Fault::CutAt(2_000_000)));
    let run = copy_large_via(&proxy.reference("dev/app:1"));
    run.ok();
    assert_eq!(reg.manifest("dev/app", "1").unwrap(), large.manifest);
    for (d, size) in &large.blobs {
        let held = reg.blob(d).unwrap_or_else(|| panic!("{d} is missing"));
        assert_eq!((held.len() as u64, sha256(&held)), (*size, d.clone()));
    }
    let patches: Vec<_> = proxy
        .stats()
        .seen
        .into_iter()
        .filter(|s| s.method == "PATCH")
        .collect();
    assert_eq!(
        (patches[0].status, patches[0].content_length),
        (0, large.big.1),
        "the first PATCH carried the whole blob, and was cut"
    );
    assert!(
        patches.len() >= 2,
        "then chunks from the offset: {patches:?}"
    );
    let again = proxy.stats().upload_bytes - large.total();
    assert!(
        again <= 4 << 20,
        "{again} bytes sent again, more than one chunk: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("asking where the upload stands")
            && !run.stderr.contains("starting it again"),
        "resumed, not restarted: {}",
        run.stderr
    );
}

#[test]
fn a_reset_mid_blob_on_distribution_sends_only_that_blob_again() {
    let large = large();
    let dev = Registry::start();
    let proxy = Proxy::start(&dev.host, nth(1, is_patch, || Fault::CutAt(2_000_000)));
    let run = copy_large_via(&proxy.reference("dev/app:1"));
    run.ok();
    large.assert_copied(&dev.host, "dev/app", "1");
    let again = proxy.stats().upload_bytes - large.total();
    assert!(again > 0, "the cut was not seen");
    assert!(
        again <= large.big.1,
        "{again} bytes sent again, more than the cut blob's {}",
        large.big.1
    );
    assert!(run.stderr.contains("starting it again"), "{}", run.stderr);
}

#[test]
fn a_download_cut_mid_blob_goes_on_with_a_range_request() {
    let large = large();
    let dev = Registry::start();
    let target = large.big.0.clone();
    let source = Proxy::start(
        &large.registry.host,
        nth(
            1,
            move |r: &Req| r.is_blob_get() && r.path.ends_with(&target),
            || Fault::CutAnswerAt(2_500_000),
        ),
    );
    let run = Layerup::new()
        .args(["copy", &source.reference("src/app:big")])
        .args([dev.reference("dev/app:1")])
        .run();
    run.ok();
    large.assert_copied(&dev.host, "dev/app", "1");
    let gets: Vec<_> = source
        .stats()
        .seen
        .into_iter()
        .filter(|s| s.path.ends_with(&large.big.0))
        .collect();
    assert_eq!(gets.len(), 2, "{gets:?}");
    let from: u64 = gets[1]
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the second GET asks for a range: {gets:?}"));
    assert!(from > 0 && from <= 2_500_000, "went on from byte {from}");
    let downloaded = source.stats().download_bytes;
    assert!(
        downloaded <= large.total() + (1 << 20),
        "{downloaded} bytes downloaded for {}",
        large.total()
    );
    assert!(
        run.stderr.contains("reading on from there") && !run.stderr.contains("starting it again"),
        "the upload never saw the break: {}",
        run.stderr
    );
}

#[test]
fn a_cut_chunk_on_distribution_sends_only_that_blob_again() {
    let big = big();
    let dev = Registry::start();
    let proxy = Proxy::start(&dev.host, nth(3, is_patch, || Fault::CutAt(100_000)));
    let run = copy_via(&proxy.reference("dev/app:1"), &[]);
    run.ok();
    big.assert_copied(&dev.host, "dev/app", "1");
    let again = proxy.stats().upload_bytes - big.total();
    // distribution 2.8 drops the session of a cut PATCH: the blob starts over, and only it.
    assert!(again > 0, "the cut was not seen");
    assert!(
        again <= big.big.1,
        "{again} bytes sent again, more than the cut blob's {}",
        big.big.1
    );
    assert!(run.stderr.contains("starting it again"), "{}", run.stderr);
}

#[test]
fn a_resumable_registry_gets_at_most_one_chunk_again() {
    let big = big();
    let reg = Resumable::start();
    let proxy = Proxy::start(&reg.host, nth(3, is_patch, || Fault::CutAt(100_000)));
    let run = copy_via(&proxy.reference("dev/app:1"), &[]);
    run.ok();
    assert_eq!(reg.manifest("dev/app", "1").unwrap(), big.manifest);
    for (d, size) in &big.blobs {
        let held = reg.blob(d).unwrap_or_else(|| panic!("{d} is missing"));
        assert_eq!((held.len() as u64, sha256(&held)), (*size, d.clone()));
    }
    let again = proxy.stats().upload_bytes - big.total();
    assert!(
        again <= CHUNK,
        "{again} bytes sent again, more than one chunk: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("asking where the upload stands"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("starting it again"),
        "resumed, not restarted: {}",
        run.stderr
    );
}

#[test]
fn bursts_of_503_are_retried_on_every_kind_of_request() {
    let big = big();
    let dev = Registry::start();
    let mut count = std::collections::HashMap::<String, u32>::new();
    let proxy = Proxy::start(&dev.host, move |r: &Req| {
        // The first two of each kind of request fail: /v2/, HEAD, POST, PATCH, PUT, manifest PUT.
        let kind = format!(
            "{} {}",
            r.method,
            r.path.contains("/manifests/") as u8 + 2 * r.path.contains("/uploads/") as u8
        );
        let n = count.entry(kind).or_default();
        *n += 1;
        if *n <= 2 {
            Fault::Answer(503, vec![], String::new())
        } else {
            Fault::Forward
        }
    });
    let run = copy_via(&proxy.reference("dev/app:1"), &[]);
    run.ok();
    big.assert_copied(&dev.host, "dev/app", "1");
    let seen = proxy.stats().seen;
    let refused: Vec<_> = seen.iter().filter(|s| s.status == 503).collect();
    assert!(
        refused
            .iter()
            .any(|s| s.method == "PUT" && s.path.contains("/manifests/")),
        "the manifest PUT was retried too: {refused:?}"
    );
    assert!(refused.iter().any(|s| s.method == "PATCH"));
}

#[test]
fn too_many_requests_waits_as_long_as_retry_after_says() {
    let big = big();
    let dev = Registry::start();
    let proxy = Proxy::start(
        &dev.host,
        nth(
            1,
            |r: &Req| r.method == "PUT" && r.path.contains("/manifests/"),
            || Fault::Answer(429, vec![("Retry-After", "2".into())], String::new()),
        ),
    );
    copy_via(&proxy.reference("dev/app:1"), &[]).ok();
    big.assert_copied(&dev.host, "dev/app", "1");
    let puts: Vec<_> = proxy
        .stats()
        .seen
        .into_iter()
        .filter(|s| s.method == "PUT" && s.path.contains("/manifests/"))
        .collect();
    assert_eq!(puts.len(), 2);
    assert_eq!(puts[0].status, 429);
    let waited = puts[1].at - puts[0].at;
    assert!(waited >= Duration::from_secs(2), "retried after {waited:?}");
}

#[test]
fn a_lost_upload_session_starts_the_blob_again() {
    let big = big();
    let dev = Registry::start();
    let body = r#"{"errors":[{"code":"BLOB_UPLOAD_UNKNOWN","message":"blob upload unknown"}]}"#;
    let proxy = Proxy::start(
        &dev.host,
        nth(2, is_patch, move || Fault::Answer(404, vec![], body.into())),
    );
    let run = copy_via(&proxy.reference("dev/app:1"), &[]);
    run.ok();
    big.assert_copied(&dev.host, "dev/app", "1");
    assert!(
        run.stderr.contains("lost the upload session"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_stalled_answer_times_out_and_is_retried() {
    let big = big();
    let dev = Registry::start();
    let proxy = Proxy::start(
        &dev.host,
        nth(
            1,
            |r: &Req| r.method == "HEAD",
            || Fault::Stall(Duration::from_secs(4)),
        ),
    );
    let run = copy_via(&proxy.reference("dev/app:1"), &["--stall-timeout", "1s"]);
    run.ok();
    big.assert_copied(&dev.host, "dev/app", "1");
    assert!(
        run.stderr.contains("did not answer in time"),
        "{}",
        run.stderr
    );
}

#[test]
fn wrong_bytes_from_the_source_fail_before_any_manifest_is_written() {
    let big = big();
    let dev = Registry::start();
    let target = big.big.0.clone();
    let source = Proxy::start(&big.registry.host, move |r: &Req| {
        if r.is_blob_get() && r.path.ends_with(&target) {
            Fault::Corrupt(1_000_000)
        } else {
            Fault::Forward
        }
    });
    let run = Layerup::new()
        .args(["copy", &source.reference("src/app:big")])
        .args([&dev.reference("dev/app:1"), "--chunk-size", "512K"])
        .run();
    assert_eq!(run.code, 7, "{}", run.stderr);
    assert!(
        run.stderr.contains(&big.big.0) && run.stderr.contains("does not match its digest"),
        "{}",
        run.stderr
    );
    assert_eq!(
        run.stderr.lines().count(),
        2,
        "a plan line, one error line: {}",
        run.stderr
    );
    let tag = http(&dev.host, "HEAD", "/v2/dev/app/manifests/1", &[], b"").0;
    assert_eq!(tag, 404, "no manifest was written");
    assert!(!has_blob(&dev.host, "dev/app", &big.big.0));
}

#[test]
fn a_registry_killed_mid_upload_and_restarted_gets_the_whole_image() {
    let big = big();
    let mut dev = Registry::start();
    let stop = dev.stopper();
    let (killed_tx, killed) = std::sync::mpsc::channel();
    let proxy = Proxy::start(
        &dev.host,
        nth(3, is_patch, move || {
            Fault::CutAndRun(
                100_000,
                Box::new(move || {
                    stop();
                    killed_tx.send(()).unwrap();
                }),
            )
        }),
    );
    let mut layerup = Layerup::new().args([
        "copy",
        &big.reference,
        &proxy.reference("dev/app:1"),
        "--chunk-size",
        "512K",
    ]);
    let child = layerup
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    killed
        .recv_timeout(Duration::from_secs(60))
        .expect("the registry was never killed");
    std::thread::sleep(Duration::from_millis(300));
    dev.restart();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    big.assert_copied(&dev.host, "dev/app", "1");
}

#[test]
fn a_registry_that_keeps_failing_gets_a_clear_error_and_no_manifest() {
    let dev = Registry::start();
    let proxy = Proxy::start(&dev.host, |r: &Req| {
        if r.method == "PUT" && r.path.contains("/manifests/") {
            Fault::Answer(503, vec![], String::new())
        } else {
            Fault::Forward
        }
    });
    let run = copy_via(&proxy.reference("dev/app:1"), &["--tries", "3"]);
    assert_eq!(run.code, 8, "{}", run.stderr);
    let error = run.stderr.lines().last().unwrap();
    assert_eq!(
        error,
        format!(
            "error: cannot write manifest {}/dev/app:1: registry {} answered 503 Service \
             Unavailable (gave up after 3 tries)",
            proxy.host, proxy.host
        )
    );
    assert_eq!(
        http(&dev.host, "HEAD", "/v2/dev/app/manifests/1", &[], b"").0,
        404
    );
}

#[test]
fn a_registry_that_refuses_chunks_gets_blobs_in_one_request() {
    let big = big();
    let dev = Registry::start();
    let proxy = Proxy::start(&dev.host, |r: &Req| {
        if r.method == "PATCH" {
            let body = r#"{"errors":[{"code":"UNSUPPORTED","message":"chunked uploads are not supported"}]}"#;
            Fault::Answer(405, vec![], body.into())
        } else {
            Fault::Forward
        }
    });
    // One blob at a time, so that the refusal comes before any other blob starts.
    let run = copy_via(&proxy.reference("dev/app:1"), &["--jobs", "1"]);
    run.ok();
    big.assert_copied(&dev.host, "dev/app", "1");
    let patches = proxy
        .stats()
        .seen
        .iter()
        .filter(|s| s.method == "PATCH")
        .count();
    let chunked = big.blobs.iter().filter(|b| b.1 > CHUNK).count();
    assert!(chunked >= 2, "a second blob that would be chunked");
    assert_eq!(patches, 1, "one refusal, then every blob in one request");
    assert!(
        run.stderr.contains("sending blobs in one request"),
        "{}",
        run.stderr
    );
}
