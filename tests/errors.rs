//! Bad input ends in one readable line, a documented exit code, and nothing written to the
//! destination — checked from the destination registry's own access log.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::*;
use rstest::rstest;

/// The one line layerup printed on stderr, which must be its only output.
fn one_error_line(run: &Run) -> &str {
    assert!(
        run.stdout.is_empty(),
        "nothing on stdout on failure: {}",
        run.stdout
    );
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "exactly one line on stderr:\n{}",
        run.stderr
    );
    lines[0]
        .strip_prefix("error: ")
        .expect("the line starts with `error: `")
}

fn assert_untouched(dev: &Registry) {
    assert!(
        dev.writes().is_empty(),
        "nothing may be written to the destination: {:?}",
        dev.writes()
    );
}

#[test]
fn a_malformed_reference_is_a_usage_error_before_any_request() {
    let dev = Registry::start();
    let tree = app_tree();
    let run = push_tree(
        tree.path(),
        &prod().oci,
        &format!("{}/Dev/App:1", dev.host),
        &[],
    );
    assert_eq!(run.code, 2);
    assert_eq!(
        one_error_line(&run),
        format!(
            "invalid --to `{}/Dev/App:1`: repository names are lowercase",
            dev.host
        )
    );
    assert!(
        dev.requests().is_empty(),
        "no request at all: {:?}",
        dev.requests()
    );
}

#[test]
fn a_destination_with_a_digest_is_refused() {
    let run = push(&[
        ".",
        "--base",
        &prod().oci,
        "--to",
        &format!("127.0.0.1:1/a@sha256:{}", "a".repeat(64)),
    ]);
    assert_eq!(run.code, 2);
    assert!(one_error_line(&run)
        .ends_with("names a digest; give a tag (the digest is computed and printed)"));
}

#[test]
fn a_missing_source_path_is_named_before_any_request() {
    let dev = Registry::start();
    let run = push(&[
        "/nonexistent/src:/app",
        "--base",
        &prod().oci,
        "--to",
        &dev.reference("dev/app:x"),
    ]);
    assert_eq!(run.code, 3);
    assert_eq!(
        one_error_line(&run),
        "source `/nonexistent/src` does not exist"
    );
    assert!(dev.requests().is_empty());
}

#[test]
fn an_unreadable_file_is_named_and_nothing_is_pushed() {
    require("setpriv", "util-linux");
    let dev = Registry::start();
    let tree = app_tree();
    // The tree is readable by `nobody`, except one file; root reads everything, so run as nobody.
    std::fs::set_permissions(tree.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for entry in [
        "VERSION",
        "pkg",
        "pkg/sub",
        "pkg/mod.py",
        "pkg/sub/data.txt",
        "run.sh",
    ] {
        let p = tree.path().join(entry);
        let mode = if p.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let empty_config = tempfile::tempdir().unwrap();
    std::fs::set_permissions(empty_config.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_layerup"))
        .args(push_args(
            tree.path(),
            &prod().oci,
            &dev.reference("dev/app:x"),
        ))
        .env("DOCKER_CONFIG", empty_config.path())
        .env("LAYERUP_STATE_DIR", empty_config.path().join("state"))
        .env("TMPDIR", "/tmp")
        .output()
        .unwrap();
    let run = Run {
        code: out.status.code().unwrap(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    };
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert_eq!(
        one_error_line(&run),
        format!(
            "cannot read `{}`: Permission denied",
            tree.path().join("secret.key").display()
        )
    );
    assert_untouched(&dev);
}

#[test]
fn a_socket_in_the_tree_is_refused() {
    let dev = Registry::start();
    let tree = app_tree();
    let _listener = std::os::unix::net::UnixListener::bind(tree.path().join("app.sock")).unwrap();
    let run = push_tree(tree.path(), &prod().oci, &dev.reference("dev/app:x"), &[]);
    assert_eq!(run.code, 3);
    assert!(one_error_line(&run).ends_with("app.sock` is a socket; a layer holds only files, directories and symlinks (list it in .layerupignore to leave it out)"));
    assert_untouched(&dev);
}

#[test]
fn a_bad_ignore_file_names_file_and_line() {
    let dev = Registry::start();
    let tree = app_tree();
    std::fs::write(tree.path().join(".layerupignore"), "ok\n\n[unclosed\n").unwrap();
    let run = push_tree(tree.path(), &prod().oci, &dev.reference("dev/app:x"), &[]);
    assert_eq!(run.code, 3);
    assert_eq!(
        one_error_line(&run),
        format!(
            "in `{}`: line 3: `[unclosed` has a `[` with no closing `]`",
            tree.path().join(".layerupignore").display()
        )
    );
    assert_untouched(&dev);
}

#[test]
fn an_unreachable_registry_is_named() {
    let dev = Registry::start();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let tree = app_tree();
    let run = push_tree(
        tree.path(),
        &format!("127.0.0.1:{closed}/prod/app:1"),
        &dev.reference("dev/app:x"),
        &[],
    );
    assert_eq!(run.code, 4);
    assert_eq!(
        one_error_line(&run),
        format!("cannot reach registry 127.0.0.1:{closed}: Connection refused")
    );
    assert_untouched(&dev);
}

#[test]
fn an_unknown_base_tag_is_not_found() {
    let dev = Registry::start();
    let tree = app_tree();
    let base = prod().registry.reference("prod/app:no-such-tag");
    let run = push_tree(tree.path(), &base, &dev.reference("dev/app:x"), &[]);
    assert_eq!(run.code, 6);
    assert_eq!(
        one_error_line(&run),
        format!("cannot read manifest {base}: registry {} answered 404 Not Found, MANIFEST_UNKNOWN: manifest unknown", prod().registry.host)
    );
    assert_untouched(&dev);
}

#[test]
fn a_platform_the_base_lacks_lists_those_it_has() {
    let dev = Registry::start();
    let tree = app_tree();
    let run = push_tree(
        tree.path(),
        &prod().multi,
        &dev.reference("dev/app:x"),
        &["--platform", "linux/s390x"],
    );
    assert_eq!(run.code, 6);
    assert_eq!(
        one_error_line(&run),
        format!("base index `{}` has no linux/s390x image; it has linux/amd64, linux/arm64 (choose one with --platform)", prod().multi)
    );
    assert_untouched(&dev);
}

/// An OCI layout holding one real document from shared/fixtures as its only manifest.
fn layout_with(dir: &Path, fixture: &str, media_type: &str) {
    let bytes = std::fs::read(format!(
        "{}/fixtures/manifests/{fixture}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let digest = sha256(&bytes).trim_start_matches("sha256:").to_string();
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("blobs/sha256").join(&digest), &bytes).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": media_type, "digest": format!("sha256:{digest}"), "size": bytes.len(),
        "annotations": {"org.opencontainers.image.ref.name": "1"}}]});
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
}

#[rstest]
#[case::schema1(
    "docker-schema1-signed--moby--good_manifest.json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "is a Docker schema 1 manifest, which layerup does not read; re-push the image with a current docker, or convert it with `skopeo copy --format v2s2`"
)]
#[case::artifact(
    "oci-artifact-manifest--notation--53b0191218aed9a3c1f7c661736ac40cfc8eb928642348fd843ba3f0483c0c20.json",
    "application/vnd.oci.image.manifest.v1+json",
    "is an artifact (`application/vnd.unknown.artifact.v1`), not a container image"
)]
fn a_base_that_is_not_a_runnable_image_says_why(
    #[case] fixture: &str,
    #[case] media_type: &str,
    #[case] why: &str,
) {
    let dev = Registry::start();
    let layout = tempfile::tempdir().unwrap();
    layout_with(layout.path(), fixture, media_type);
    let tree = app_tree();
    let base = format!("oci:{}:1", layout.path().display());
    let run = push_tree(tree.path(), &base, &dev.reference("dev/app:x"), &[]);
    assert_eq!(run.code, 7);
    assert_eq!(one_error_line(&run), format!("base image `{base}` {why}"));
    assert_untouched(&dev);
}

#[test]
fn a_base_blob_with_wrong_bytes_is_refused() {
    let dev = Registry::start();
    let layout = tempfile::tempdir().unwrap();
    run(Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", prod().layout.display()))
        .arg(layout.path()));
    // Corrupt every config blob in the copy: the config is the first blob layerup reads.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.path().join("index.json")).unwrap()).unwrap();
    for m in index["manifests"].as_array().unwrap() {
        let d = m["digest"].as_str().unwrap().trim_start_matches("sha256:");
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(layout.path().join("blobs/sha256").join(d)).unwrap(),
        )
        .unwrap();
        let config = manifest["config"]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:");
        let path = layout.path().join("blobs/sha256").join(config);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[0] = b' ';
        std::fs::write(&path, bytes).unwrap();
    }
    let tree = app_tree();
    let base = format!("oci:{}:1", layout.path().display());
    let run = push_tree(tree.path(), &base, &dev.reference("dev/app:x"), &[]);
    assert_eq!(run.code, 7);
    assert!(
        one_error_line(&run).contains("does not match its digest"),
        "{}",
        run.stderr
    );
    assert_untouched(&dev);
}

/// A push of 48 MiB that do not compress (seconds of work for a test build) into `dev`, with
/// `tmp` as TMPDIR, interrupted by `signal` once its layer file has bytes in it.
fn interrupted_push(dev: &Registry, tmp: &Path, signal: &str) -> std::process::Output {
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("noise.bin"), noise(48 << 20)).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_layerup"))
        .args(push_args(
            tree.path(),
            &prod().oci,
            &dev.reference("dev/app:x"),
        ))
        .env("TMPDIR", tmp)
        .env("DOCKER_CONFIG", tmp)
        .env("LAYERUP_STATE_DIR", tmp.join("state"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let started = |d: std::fs::DirEntry| {
        std::fs::read_dir(d.path())
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .any(|f| f.metadata().is_ok_and(|m| m.len() > 0))
    };
    while !layer_dir(tmp).is_some_and(started) {
        assert!(
            std::time::Instant::now() < deadline,
            "the layer file never appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    run(Command::new("kill").args([signal, &child.id().to_string()]));
    child.wait_with_output().unwrap()
}

/// The `layerup-*` directory of TMPDIR that layers are written into, if there is one.
fn layer_dir(tmp: &Path) -> Option<std::fs::DirEntry> {
    std::fs::read_dir(tmp)
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().starts_with("layerup-"))
}

/// Ctrl-C, and SIGTERM as Tilt, `timeout` and systemd send it, end a push the same way.
#[rstest]
#[case("-INT")]
#[case("-TERM")]
fn an_interrupt_while_compressing_leaves_no_temporary_file_and_writes_nothing(
    #[case] signal: &str,
) {
    let dev = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let out = interrupted_push(&dev, tmp.path(), signal);
    assert_eq!(out.status.code(), Some(130));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: interrupted"
    );
    assert!(
        layer_dir(tmp.path()).is_none(),
        "the temporary layer files were deleted"
    );
    assert_untouched(&dev);
}

#[test]
fn a_push_killed_outright_leaves_files_the_next_run_deletes() {
    let dev = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let out = interrupted_push(&dev, tmp.path(), "-KILL");
    assert_eq!(out.status.code(), None, "killed by the signal");
    let left = layer_dir(tmp.path())
        .expect("SIGKILL leaves the layer files")
        .path();
    assert_untouched(&dev);
    // The next run, with the same TMPDIR, deletes them: no live run holds their lock.
    let tree = app_tree();
    Layerup::new()
        .env("TMPDIR", tmp.path())
        .args(push_args(
            tree.path(),
            &prod().oci,
            &dev.reference("dev/app:y"),
        ))
        .run()
        .ok();
    assert!(!left.exists(), "{} is still there", left.display());
}

#[rstest]
#[case::missing_arguments(&["copy"][..], "the following required arguments were not provided: <SOURCE>, <DEST>; usage: layerup copy <SOURCE> <DEST>")]
#[case::unknown_flag(&["push", "--bogus"][..], "unexpected argument '--bogus' found")]
#[case::sync_flag_without_sync(&["watch", ".:/app", "--base", "127.0.0.1:1/b:1", "--to", "127.0.0.1:1/d:1", "--settle", "5s"][..], "--settle applies to live update: add --sync (or `sync = true` in layerup.toml)")]
fn a_mistyped_command_is_one_line_that_names_what_is_wrong(
    #[case] args: &[&str],
    #[case] says: &str,
) {
    let run = Layerup::new().args(args).run();
    assert_eq!(run.code, 2, "{}", run.stderr);
    let line = one_error_line(&run);
    assert!(line.starts_with(says), "{line}");
}
