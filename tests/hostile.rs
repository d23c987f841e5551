//! layerup under attack: a hostile registry, a careless teammate's tree, a mistyped command.
//! Each security case asserts from what the other side received (a listener logging headers),
//! or from the bytes layerup wrote, never from layerup's own word.

mod common;

use base64::Engine as _;
use common::proxy::{Fault, Proxy, Req};
use common::recorder::Recorder;
use common::token::TokenServer;
use common::*;

const USER: &str = "dev-bot";
const PASSWORD: &str = "s3cret-Pa55word";

/// A docker config directory whose `auths` hold the user and password for `host`.
fn config_for(host: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let config = serde_json::json!({ "auths": { host: { "auth": auth } } });
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    dir
}

/// Answers the upload POST (not a mount) with a `Location` on `other`.
fn send_uploads_to(other: &str) -> impl FnMut(&Req) -> Fault + Send + 'static {
    let other = other.to_string();
    move |r: &Req| {
        if r.method == "POST" && r.path.contains("/blobs/uploads/") && !r.path.contains("mount=") {
            let loc = format!("http://{other}/v2/dev/app/blobs/uploads/stolen?_state=x");
            Fault::Answer(202, vec![("Location", loc)], String::new())
        } else {
            Fault::Forward
        }
    }
}

/// Pushes (and copies) through `proxy` to a registry that wants credentials, with the upload
/// sent on to `other`: `other` must never see them, and the error names it.
fn assert_credentials_stay_home(proxy: &Proxy, other: &Recorder, config: &tempfile::TempDir) {
    let tree = app_tree();
    for args in [
        push_args(tree.path(), &prod().oci, &proxy.reference("dev/app:1")).to_vec(),
        vec![
            "copy".into(),
            prod().oci.clone(),
            proxy.reference("dev/app:2"),
        ],
    ] {
        let run = Layerup::new()
            .env("DOCKER_CONFIG", config.path())
            .args(&args)
            .run();
        run.fails(5, &[&other.host, "asks for credentials"]);
        assert_eq!(run.stderr.matches("error:").count(), 1, "{}", run.stderr);
        let seen = other.seen();
        assert!(!seen.is_empty(), "the upload went to the other host");
        for h in &seen {
            assert!(
                !h.headers.contains_key("authorization"),
                "credentials went to {}: {h:?}",
                other.host
            );
        }
    }
}

#[test]
fn an_upload_location_on_another_host_gets_no_basic_credentials() {
    let dev = Registry::start_with_htpasswd(USER, PASSWORD);
    let other = Recorder::start(401, &[("WWW-Authenticate", "Basic realm=\"evil\"")]);
    let proxy = Proxy::start(&dev.host, send_uploads_to(&other.host));
    assert_credentials_stay_home(&proxy, &other, &config_for(&proxy.host));
}

#[test]
fn an_upload_location_on_another_host_gets_no_bearer_token() {
    let tokens = TokenServer::start(USER, PASSWORD);
    let dev = tokens.registry();
    let other = Recorder::start(
        401,
        &[(
            "WWW-Authenticate",
            "Bearer realm=\"http://127.0.0.1:1/token\"",
        )],
    );
    let proxy = Proxy::start(&dev.host, send_uploads_to(&other.host));
    assert_credentials_stay_home(&proxy, &other, &config_for(&proxy.host));
}

#[test]
fn a_registry_message_cannot_forge_lines_or_drive_the_terminal() {
    let body = "{\"errors\":[{\"code\":\"DENIED\",\"message\":\"no\\nerror: forged line\\u001b[2J\\u001b]0;pwned\\u0007\\u009b31m\"}]}";
    let proxy = Proxy::start(&prod().registry.host, move |r: &Req| {
        if r.path.contains("/manifests/") {
            Fault::Answer(403, vec![], body.into())
        } else {
            Fault::Forward
        }
    });
    let tree = app_tree();
    let dev = Registry::start();
    for json in [false, true] {
        let mut run = Layerup::new().args(push_args(
            tree.path(),
            &proxy.reference("prod/app:oci"),
            &dev.reference("dev/app:1"),
        ));
        if json {
            run = run.args(["--json"]);
        }
        let run = run.run();
        run.fails(5, &["DENIED: no\\nerror: forged line\\u{1b}[2J"]);
        assert_eq!(run.stderr.lines().count(), 1, "{:?}", run.stderr);
        for out in [&run.stderr, &run.stdout] {
            assert!(
                !out.chars().any(|c| c.is_control() && c != '\n'),
                "a control character reached the terminal: {out:?}"
            );
        }
    }
}

#[test]
fn a_registry_that_echoes_the_password_back_does_not_get_it_printed() {
    let dev = Registry::start_with_htpasswd(USER, PASSWORD);
    let echo = format!(
        "{{\"errors\":[{{\"code\":\"DENIED\",\"message\":\"you sent {PASSWORD} and {}\"}}]}}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    let proxy = Proxy::start(&dev.host, move |r: &Req| {
        if r.method == "PUT" && r.path.contains("/manifests/") {
            Fault::Answer(400, vec![], echo.clone())
        } else {
            Fault::Forward
        }
    });
    let config = config_for(&proxy.host);
    let tree = app_tree();
    let run = Layerup::new()
        .env("DOCKER_CONFIG", config.path())
        .args(push_args(
            tree.path(),
            &prod().oci,
            &proxy.reference("dev/app:1"),
        ))
        .args(["--json"])
        .run();
    run.fails(8, &["you sent <redacted> and <redacted>"]);
    assert!(!run.stderr.contains(PASSWORD) && !run.stdout.contains(PASSWORD));
}

#[test]
fn a_file_name_with_a_newline_stays_on_one_line() {
    let tree = tempfile::tempdir().unwrap();
    let _sock =
        std::os::unix::net::UnixListener::bind(tree.path().join("a\nerror: b.sock")).unwrap();
    let dev = Registry::start();
    let run = push_tree(tree.path(), &prod().oci, &dev.reference("dev/app:1"), &[]);
    run.fails(3, &["a\\nerror: b.sock` is a socket"]);
    assert_eq!(run.stderr.lines().count(), 1, "{:?}", run.stderr);
}

/// A base whose `/tmp` is 1777 and whose `/usr/local/bin` holds a tool, made with umoci and
/// pushed with skopeo to `reg` as `base/tmp:1`.
fn base_with_tmp(reg: &Registry) -> String {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rootfs");
    busybox_rootfs(&root);
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::create_dir_all(root.join("usr/local/bin")).unwrap();
    std::fs::write(root.join("usr/local/bin/base-tool"), "#!/bin/sh\n").unwrap();
    let layout = dir.path().join("layout");
    let img = format!("{}:1", layout.display());
    run(std::process::Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout));
    run(std::process::Command::new("umoci").args(["new", "--image", &img]));
    run(std::process::Command::new("umoci")
        .args(["insert", "--image", &img])
        .arg(&root)
        .arg("/"));
    run(std::process::Command::new("umoci").args([
        "config",
        "--image",
        &img,
        "--config.env",
        "PATH=/bin",
    ]));
    let base = reg.reference("base/tmp:1");
    skopeo(&[
        "copy",
        "-q",
        &format!("oci:{img}"),
        &format!("docker://{base}"),
    ]);
    base
}

#[test]
fn a_dest_never_changes_the_mode_of_a_directory_the_base_has() {
    use std::os::unix::fs::PermissionsExt;
    let reg = Registry::start();
    let base = base_with_tmp(&reg);
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("cfg"), "k=v\n").unwrap();
    let bin = src.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::write(bin.join("my-tool"), "#!/bin/sh\necho mine\n").unwrap();
    std::fs::set_permissions(bin.join("my-tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o700)).unwrap();
    let to = reg.reference("dev/tmp:1");
    let pinned = push(&[
        &format!("{}:/tmp/cfg", src.path().join("cfg").display()),
        &format!("{}:/usr/local/bin", bin.display()),
        "--base",
        &base,
        "--to",
        &to,
    ])
    .ok()
    .to_string();
    let seen = run_in(
        &pinned,
        "stat -c '%a %u' /tmp /usr/local/bin; ls /usr/local/bin; cat /tmp/cfg",
    );
    assert_eq!(seen, "1777 0\n755 0\nbase-tool\nmy-tool\nk=v\n");
}

#[test]
fn a_source_named_like_a_whiteout_is_refused_and_nothing_is_pushed() {
    let dev = Registry::start();
    for name in [".wh.server.sh", ".wh..wh..opq"] {
        let tree = app_tree();
        std::fs::write(tree.path().join("pkg").join(name), "").unwrap();
        let run = push_tree(tree.path(), &prod().oci, &dev.reference("dev/app:1"), &[]);
        run.fails(3, &[&format!("pkg/{name}` is named like a whiteout")]);
        let tree = app_tree();
        let run = push(&[
            &format!("{}:/app/{name}", tree.path().join("VERSION").display()),
            "--base",
            &prod().oci,
            "--to",
            &dev.reference("dev/app:1"),
        ]);
        run.fails(2, &["named like a whiteout"]);
    }
    assert!(dev.writes().is_empty(), "{:?}", dev.writes());
}

#[test]
fn mistyped_numbers_are_usage_errors() {
    let dev = Registry::start();
    let tree = app_tree();
    let to = dev.reference("dev/app:1");
    // Milliseconds, the usual slip: year 55840.
    let run = Layerup::new()
        .env("SOURCE_DATE_EPOCH", "1700000000000")
        .args(push_args(tree.path(), &prod().oci, &to))
        .run();
    run.fails(
        2,
        &["SOURCE_DATE_EPOCH `1700000000000` is after the year 9999"],
    );
    let run = push_tree(tree.path(), &prod().oci, &to, &["--jobs", "0"]);
    run.fails(2, &["--jobs must be at least 1"]);
    assert!(dev.writes().is_empty());
}

#[test]
fn a_layout_tag_is_never_a_path() {
    let tree = app_tree();
    let work = tempfile::tempdir().unwrap();
    let nested = work.path().join("a/b");
    std::fs::create_dir_all(&nested).unwrap();
    let mut l = Layerup::new().args(push_args(tree.path(), &prod().oci, "oci:out:../../evil"));
    l.command().current_dir(&nested);
    l.run().fails(2, &["`../../evil` is not a tag"]);
    let entries: Vec<_> = walk(work.path());
    assert_eq!(entries, ["a", "a/b"], "nothing was written anywhere");
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            out.push(e.path().strip_prefix(dir).unwrap().display().to_string());
            if e.path().is_dir() {
                todo.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// A push from the prod base through a proxy that applies `fault` to the first request
/// `pick` chooses.
fn push_through(
    pick: impl Fn(&Req) -> bool + Send + 'static,
    fault: Fault,
    extra: &[&str],
) -> (Run, Registry) {
    let mut fault = Some(fault);
    let proxy = Proxy::start(&prod().registry.host, move |r: &Req| {
        if fault.is_some() && pick(r) {
            return fault.take().unwrap();
        }
        Fault::Forward
    });
    let dev = Registry::start();
    let tree = app_tree();
    let run = push_tree(
        tree.path(),
        &proxy.reference("prod/app:oci"),
        &dev.reference("dev/app:1"),
        extra,
    );
    (run, dev)
}

fn is_manifest_get(r: &Req) -> bool {
    r.method == "GET" && r.path.contains("/manifests/")
}

fn config_digest() -> String {
    inspect_raw(&prod().oci)["config"]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_base_manifest_or_config_cut_once_is_read_again() {
    let (run, _) = push_through(is_manifest_get, Fault::CutAnswerAt(40), &[]);
    run.ok();
    let config = config_digest();
    let (run, _) = push_through(
        move |r: &Req| r.is_blob_get() && r.path.ends_with(&config),
        Fault::CutAnswerAt(40),
        &[],
    );
    run.ok();
    assert!(
        run.stderr.contains("reading on from there"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_base_read_that_stalls_is_a_timeout_retried_not_an_unusable_image() {
    let stall = Fault::StallAnswerAt(40, std::time::Duration::from_secs(3));
    let config = config_digest();
    let pick = move |r: &Req| r.is_blob_get() && r.path.ends_with(&config);
    let (run, _) = push_through(pick.clone(), stall, &["--stall-timeout", "1s"]);
    run.ok();
    assert!(
        run.stderr.contains("did not answer in time"),
        "{}",
        run.stderr
    );

    let stall = Fault::StallAnswerAt(40, std::time::Duration::from_secs(3));
    let (run, dev) = push_through(pick, stall, &["--stall-timeout", "1s", "--tries", "1"]);
    run.fails(4, &["did not answer in time"]);
    assert!(dev.writes().is_empty());

    let stall = Fault::StallAnswerAt(40, std::time::Duration::from_secs(3));
    let (run, _) = push_through(is_manifest_get, stall, &["--stall-timeout", "1s"]);
    run.ok();
    assert!(
        run.stderr.contains("did not answer in time"),
        "{}",
        run.stderr
    );
}

#[test]
fn an_ipv6_loopback_registry_can_be_named_and_is_spoken_to_over_http() {
    let dev = Registry::start_ipv6();
    assert!(dev.host.starts_with("[::1]:"));
    let tree = app_tree();
    let to = dev.reference("dev/app:v6");
    let pinned = push_tree(tree.path(), &prod().oci, &to, &[])
        .ok()
        .to_string();
    assert!(
        pinned.starts_with(&format!("{}/dev/app@sha256:", dev.host)),
        "{pinned}"
    );
    // skopeo 1.x cannot parse a bracketed IPv6 reference; the registry itself is asked.
    let manifest = raw_manifest_bytes(&dev.host, "dev/app", "v6");
    assert_eq!(sha256(&manifest), digest_of(&pinned));
}

#[test]
fn a_platform_a_single_platform_base_lacks_is_an_error_not_a_silent_other() {
    let dev = Registry::start();
    let tree = app_tree();
    let to = dev.reference("dev/app:1");
    let run = push_tree(
        tree.path(),
        &prod().oci,
        &to,
        &["--platform", "linux/s390x"],
    );
    run.fails(
        6,
        &["is a single-platform image: it has linux/amd64, not linux/s390x"],
    );
    let run = Layerup::new()
        .args(["copy", &prod().oci, &to, "--platform", "linux/s390x"])
        .run();
    run.fails(6, &["it has linux/amd64, not linux/s390x"]);
    assert!(dev.writes().is_empty());
    // Asked for what it is, or not asked at all, it is used.
    push_tree(
        tree.path(),
        &prod().oci,
        &to,
        &["--platform", "linux/amd64"],
    )
    .ok();
}

/// A base whose config names its architecture `..`: a per-platform SRC (`out/{arch}/bin`) must
/// not become `out/../bin` — files from outside what the user named.
#[test]
fn a_base_platform_cannot_steer_a_per_platform_source() {
    let reg = Registry::start();
    let config = br#"{"architecture":"..","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#;
    let c = put_blob(&reg.host, "base/odd", config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": config.len()},
        "layers": []
    });
    put_manifest(
        &reg.host,
        "base/odd",
        "1",
        "application/vnd.oci.image.manifest.v1+json",
        manifest.to_string().as_bytes(),
    );
    let out = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(out.path().join("sub/amd64/bin")).unwrap();
    std::fs::create_dir_all(out.path().join("bin")).unwrap();
    // What `sub/../bin` would name.
    std::fs::write(out.path().join("bin/secret"), "not for the image").unwrap();
    let mapping = format!("{}/sub/{{arch}}/bin:/app/bin", out.path().display());
    let run = push(&[
        &mapping,
        "--base",
        &reg.reference("base/odd:1"),
        "--to",
        &reg.reference("dev/odd:1"),
    ]);
    run.fails(7, &["names no usable os and architecture"]);
    let to_dev: Vec<_> = reg
        .writes()
        .into_iter()
        .filter(|(_, p, _)| p.contains("/dev/odd/"))
        .collect();
    assert!(to_dev.is_empty(), "nothing is pushed: {to_dev:?}");
}
