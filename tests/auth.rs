//! Credentials as docker users keep them — `auths` in a docker config.json, a credential helper
//! on PATH, `credsStore` — against a real registry with htpasswd basic auth. No credential may
//! appear in any output, even with -vv.

mod common;

use common::token;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::Engine as _;
use common::*;

const USER: &str = "dev-bot";
const PASSWORD: &str = "s3cret-Pa55word";

fn docker_config(dir: &Path, json: serde_json::Value) {
    std::fs::write(dir.join("config.json"), json.to_string()).unwrap();
}

fn basic_b64(user: &str, pass: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
}

/// No form of the secret is in what layerup printed.
fn assert_no_secret(run: &Run) {
    for needle in [PASSWORD.to_string(), basic_b64(USER, PASSWORD)] {
        assert!(
            !run.stdout.contains(&needle) && !run.stderr.contains(&needle),
            "a credential leaked:\n{}",
            run.stderr
        );
    }
}

/// Copies the prod base into an authenticated registry at `base`, as CI would have put it there.
fn seed_base(base: &str) {
    let creds = format!("{USER}:{PASSWORD}");
    skopeo(&[
        "copy",
        "-q",
        "--dest-creds",
        &creds,
        &format!("docker://{}", prod().oci),
        &format!("docker://{base}"),
    ]);
}

fn push_with_config(config: &Path, extra_path: Option<&Path>, args: &[&str]) -> Run {
    let mut l = Layerup::new()
        .env("DOCKER_CONFIG", config)
        .args(["push"])
        .args(args);
    if let Some(bin) = extra_path {
        l = l.env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        );
    }
    l.run()
}

/// A `docker-credential-<name>` script that answers only for `host`, and says so otherwise.
fn helper(bin: &Path, name: &str, host: &str, user: &str, pass: &str) {
    let script = format!(
        "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread -r server\nif [ \"$server\" = \"{host}\" ]; then\n  printf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{pass}\"}}' \"$server\"\nelse\n  echo 'credentials not found in native keychain'; exit 1\nfi\n"
    );
    let path = bin.join(format!("docker-credential-{name}"));
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn credentials_from_docker_config_auths_push_to_a_basic_auth_registry() {
    let dev = Registry::start_with_htpasswd(USER, PASSWORD);
    let config = tempfile::tempdir().unwrap();
    docker_config(
        config.path(),
        serde_json::json!({"auths": {&dev.host: {"auth": basic_b64(USER, PASSWORD)}}}),
    );
    let tree = app_tree();
    let run = push_with_config(
        config.path(),
        None,
        &[
            &format!("{}:/app", tree.path().display()),
            "--base",
            &prod().oci,
            "--to",
            &dev.reference("dev/app:dev"),
            "-vv",
        ],
    );
    let pinned = run.ok().to_string();
    assert_no_secret(&run);
    let manifest = skopeo(&[
        "inspect",
        "--raw",
        "--creds",
        &format!("{USER}:{PASSWORD}"),
        &format!("docker://{pinned}"),
    ]);
    assert!(manifest.contains("application/vnd.oci.image.layer.v1.tar+gzip"));
}

#[test]
fn a_credential_helper_on_path_supplies_the_password() {
    let dev = Registry::start_with_htpasswd(USER, PASSWORD);
    let config = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    helper(bin.path(), "layerup-test", &dev.host, USER, PASSWORD);
    docker_config(
        config.path(),
        serde_json::json!({"credHelpers": {&dev.host: "layerup-test"}}),
    );
    let tree = app_tree();
    let run = push_with_config(
        config.path(),
        Some(bin.path()),
        &[
            &tree.path().display().to_string(),
            "--base",
            &prod().oci,
            "--to",
            &dev.reference("dev/app:dev"),
            "-vv",
        ],
    );
    run.ok();
    assert_no_secret(&run);
}

#[test]
fn creds_store_is_the_helper_for_every_registry() {
    // Base and destination on one authenticated registry: the helper is asked once per run for
    // it, and base layers are mounted within it.
    let reg = Registry::start_with_htpasswd(USER, PASSWORD);
    let base = reg.reference("prod/app:1");
    seed_base(&base);
    let config = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    helper(bin.path(), "store", &reg.host, USER, PASSWORD);
    docker_config(config.path(), serde_json::json!({"credsStore": "store"}));
    let tree = app_tree();
    let run = push_with_config(
        config.path(),
        Some(bin.path()),
        &[
            &tree.path().display().to_string(),
            "--base",
            &base,
            "--to",
            &reg.reference("dev/app:dev"),
        ],
    );
    run.ok();
    assert_eq!(
        reg.mounted().len(),
        prod().layers().len(),
        "base layers mounted within the registry"
    );
}

#[test]
fn no_credentials_for_a_basic_auth_registry_says_how_to_add_them() {
    let dev = Registry::start_with_htpasswd(USER, PASSWORD);
    let config = tempfile::tempdir().unwrap();
    let tree = app_tree();
    let run = push_with_config(
        config.path(),
        None,
        &[
            &tree.path().display().to_string(),
            "--base",
            &prod().oci,
            "--to",
            &dev.reference("dev/app:dev"),
        ],
    );
    assert_eq!(run.code, 5);
    assert_eq!(
        run.stderr.trim(),
        format!("error: registry {h} requires a username and password, and none is configured for it (run `docker login {h}`, or add it to `auths` in your docker config)", h = dev.host)
    );
    assert!(dev.writes().is_empty());
}

#[test]
fn a_wrong_password_is_reported_without_echoing_it() {
    let dev = Registry::start_with_htpasswd(USER, PASSWORD);
    let config = tempfile::tempdir().unwrap();
    docker_config(
        config.path(),
        serde_json::json!({"auths": {&dev.host: {"username": USER, "password": "wrong-Pa55word"}}}),
    );
    let tree = app_tree();
    let run = push_with_config(
        config.path(),
        None,
        &[
            &tree.path().display().to_string(),
            "--base",
            &prod().oci,
            "--to",
            &dev.reference("dev/app:dev"),
            "-vv",
        ],
    );
    assert_eq!(run.code, 5);
    assert!(
        run.stderr.trim_end().ends_with(&format!(
        "error: registry {} refused the username and password configured for it (401 Unauthorized)",
        dev.host
    )),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("wrong-Pa55word"));
    assert!(dev.writes().is_empty());
}

#[test]
fn a_configured_helper_that_is_missing_is_an_error_not_anonymous() {
    let dev = Registry::start();
    let config = tempfile::tempdir().unwrap();
    docker_config(
        config.path(),
        serde_json::json!({"credHelpers": {&dev.host: "not-installed"}}),
    );
    let tree = app_tree();
    let run = push_with_config(
        config.path(),
        None,
        &[
            &tree.path().display().to_string(),
            "--base",
            &prod().oci,
            "--to",
            &dev.reference("dev/app:dev"),
        ],
    );
    assert_eq!(run.code, 5);
    assert_eq!(
        run.stderr.trim(),
        format!(
            "error: credential helper `docker-credential-not-installed` (configured for {} in `{}`) is not on PATH",
            dev.host,
            config.path().join("config.json").display()
        )
    );
    assert!(dev.writes().is_empty());
}

#[test]
fn a_failing_helper_is_named_with_its_message() {
    let dev = Registry::start();
    let config = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    let path = bin.path().join("docker-credential-broken");
    std::fs::write(&path, "#!/bin/sh\necho 'keychain is locked' >&2\nexit 3\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    docker_config(
        config.path(),
        serde_json::json!({"credHelpers": {&dev.host: "broken"}}),
    );
    let tree = app_tree();
    let run = push_with_config(
        config.path(),
        Some(bin.path()),
        &[
            &tree.path().display().to_string(),
            "--base",
            &prod().oci,
            "--to",
            &dev.reference("dev/app:dev"),
        ],
    );
    assert_eq!(run.code, 5);
    assert!(
        run.stderr
            .trim()
            .ends_with("failed (exit status: 3): keychain is locked"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_bearer_token_covers_push_and_the_mount_source_in_one_request() {
    let tokens = token::TokenServer::start(USER, PASSWORD);
    let reg = tokens.registry();
    let base = reg.reference("prod/app:1");
    seed_base(&base);
    tokens.requests.lock().unwrap().clear();
    let config = tempfile::tempdir().unwrap();
    docker_config(
        config.path(),
        serde_json::json!({"auths": {&reg.host: {"auth": basic_b64(USER, PASSWORD)}}}),
    );
    let tree = app_tree();
    let run = push_with_config(
        config.path(),
        None,
        &[
            &tree.path().display().to_string(),
            "--base",
            &base,
            "--to",
            &reg.reference("dev/app:dev"),
            "-vv",
        ],
    );
    let pinned = run.ok().to_string();
    assert_no_secret(&run);
    let asked = tokens.requests.lock().unwrap().clone();
    assert!(
        asked
            .iter()
            .any(|s| s.contains(&"repository:dev/app:pull,push".to_string())
                && s.contains(&"repository:prod/app:pull".to_string())),
        "one token request covered the destination and the mount source: {asked:?}"
    );
    assert_eq!(
        reg.mounted().len(),
        prod().layers().len(),
        "the registry accepted the token for every mount"
    );
    let manifest = skopeo(&[
        "inspect",
        "--raw",
        "--creds",
        &format!("{USER}:{PASSWORD}"),
        &format!("docker://{pinned}"),
    ]);
    assert!(manifest.contains("layers"));
}

#[test]
fn a_token_service_refusing_the_credentials_is_an_auth_error() {
    let tokens = token::TokenServer::start(USER, PASSWORD);
    let reg = tokens.registry();
    let config = tempfile::tempdir().unwrap();
    docker_config(
        config.path(),
        serde_json::json!({"auths": {&reg.host: {"username": USER, "password": "nope-nope"}}}),
    );
    let tree = app_tree();
    let run = push_with_config(
        config.path(),
        None,
        &[
            &tree.path().display().to_string(),
            "--base",
            &prod().oci,
            "--to",
            &reg.reference("dev/app:dev"),
        ],
    );
    assert_eq!(run.code, 5);
    assert_eq!(
        run.stderr.trim(),
        format!("error: the token service of registry {} refused the configured credentials for repository:dev/app:pull,push (401 Unauthorized)", reg.host)
    );
    assert!(!run.stderr.contains("nope-nope"));
    assert!(reg.writes().is_empty());
}

#[test]
fn a_mount_the_token_does_not_allow_falls_back_to_copying() {
    let tokens = token::TokenServer::start(USER, PASSWORD);
    let reg = tokens.registry();
    let base = reg.reference("prod/app:1");
    seed_base(&base);
    let uploads_before = reg.uploaded().len();
    tokens
        .partial
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let config = tempfile::tempdir().unwrap();
    docker_config(
        config.path(),
        serde_json::json!({"auths": {&reg.host: {"auth": basic_b64(USER, PASSWORD)}}}),
    );
    let tree = app_tree();
    let run = push_with_config(
        config.path(),
        None,
        &[
            &tree.path().display().to_string(),
            "--base",
            &base,
            "--to",
            &reg.reference("dev/app:dev"),
        ],
    );
    run.ok();
    assert!(reg.mounted().is_empty(), "the registry refused every mount");
    let uploads = reg.uploaded()[uploads_before..].to_vec();
    for layer in prod().layers() {
        assert!(
            uploads.contains(&layer),
            "base layer {layer} was copied instead"
        );
    }
}
