//! Credentials as docker users keep them — `auths` in a docker config.json, a credential helper
//! on PATH, `credsStore` — against real registries with htpasswd basic auth and with token auth.
//! No credential may appear in any output, even with -vv.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use base64::Engine as _;
use common::token::TokenServer;
use common::*;

const USER: &str = "dev-bot";
const PASSWORD: &str = "s3cret-Pa55word";

fn basic_b64(user: &str, pass: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
}

/// A docker config directory, and a directory for credential helpers to put on PATH.
struct Client {
    config: tempfile::TempDir,
    bin: tempfile::TempDir,
}

impl Client {
    fn new(config: serde_json::Value) -> Self {
        let c = Client {
            config: tempfile::tempdir().unwrap(),
            bin: tempfile::tempdir().unwrap(),
        };
        std::fs::write(c.config_file(), config.to_string()).unwrap();
        c
    }

    fn config_file(&self) -> PathBuf {
        self.config.path().join("config.json")
    }

    /// Installs `docker-credential-<name>` running `script` (POSIX sh).
    fn helper_script(&self, name: &str, script: &str) {
        let path = self.bin.path().join(format!("docker-credential-{name}"));
        std::fs::write(&path, format!("#!/bin/sh\n{script}")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A helper that answers for `host` only, and says "not found" otherwise, as real ones do.
    fn helper(&self, name: &str, host: &str) {
        self.helper_script(
            name,
            &format!(
                "[ \"$1\" = get ] || exit 2\nread -r server\nif [ \"$server\" = \"{host}\" ]; then\n  printf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}' \"$server\"\nelse\n  echo 'credentials not found in native keychain'; exit 1\nfi\n"
            ),
        );
    }

    /// `layerup push` of the app tree from `base` to `to`, as this client.
    fn push(&self, base: &str, to: &str, extra: &[&str]) -> Run {
        let tree = app_tree();
        let path = format!(
            "{}:{}",
            self.bin.path().display(),
            std::env::var("PATH").unwrap()
        );
        Layerup::new()
            .env("DOCKER_CONFIG", self.config.path())
            .env("PATH", path)
            .args(push_args(tree.path(), base, to))
            .args(extra)
            .run()
    }
}

fn auths(host: &str, entry: serde_json::Value) -> serde_json::Value {
    serde_json::json!({ "auths": { host: entry } })
}

/// No form of the secret is in what layerup printed.
fn assert_no_secret(run: &Run) {
    for needle in [
        PASSWORD.to_string(),
        basic_b64(USER, PASSWORD),
        common::token::REFRESH.to_string(),
    ] {
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

/// The manifest of an image in an authenticated registry, as skopeo reads it.
fn raw_manifest(pinned: &str) -> String {
    let creds = format!("{USER}:{PASSWORD}");
    skopeo(&[
        "inspect",
        "--raw",
        "--creds",
        &creds,
        &format!("docker://{pinned}"),
    ])
}

fn assert_refused(run: &Run, message: &str) {
    assert_eq!(run.code, 5, "{}", run.stderr);
    assert_eq!(run.stderr.trim(), format!("error: {message}"));
}

#[test]
fn credentials_from_docker_config_auths_push_to_a_basic_auth_registry() {
    let dev = Registry::start_with_htpasswd(USER, PASSWORD);
    let client = Client::new(auths(
        &dev.host,
        serde_json::json!({"auth": basic_b64(USER, PASSWORD)}),
    ));
    let run = client.push(&prod().oci, &dev.reference("dev/app:dev"), &["-vv"]);
    let pinned = run.ok().to_string();
    assert_no_secret(&run);
    let manifest = raw_manifest(&pinned);
    assert!(manifest.contains("application/vnd.oci.image.layer.v1.tar+gzip"));

    // Base and destination on this one registry: one ping, one check of the password.
    let base = dev.reference("prod/app:1");
    seed_base(&base);
    let before = dev.requests().len();
    client.push(&base, &dev.reference("dev/app:two"), &[]).ok();
    let v2: Vec<u16> = dev.requests()[before..]
        .iter()
        .filter(|(m, p, _)| m == "GET" && p == "/v2/")
        .map(|r| r.2)
        .collect();
    assert_eq!(v2, [401, 200], "the ping, then the password's check");
}

#[test]
fn a_credential_helper_on_path_supplies_the_password() {
    let dev = Registry::start_with_htpasswd(USER, PASSWORD);
    let client = Client::new(serde_json::json!({"credHelpers": {&dev.host: "layerup-test"}}));
    client.helper("layerup-test", &dev.host);
    let run = client.push(&prod().oci, &dev.reference("dev/app:dev"), &["-vv"]);
    run.ok();
    assert_no_secret(&run);
}

#[test]
fn creds_store_is_the_helper_for_every_registry() {
    // Base and destination on one authenticated registry: base layers are mounted within it.
    let reg = Registry::start_with_htpasswd(USER, PASSWORD);
    let base = reg.reference("prod/app:1");
    seed_base(&base);
    let client = Client::new(serde_json::json!({"credsStore": "store"}));
    client.helper("store", &reg.host);
    client.push(&base, &reg.reference("dev/app:dev"), &[]).ok();
    assert_eq!(
        reg.mounted().len(),
        prod().layers().len(),
        "base layers mounted within the registry"
    );
}

#[test]
fn no_credentials_for_a_basic_auth_registry_says_how_to_add_them() {
    let dev = Registry::start_with_htpasswd(USER, PASSWORD);
    let run =
        Client::new(serde_json::json!({})).push(&prod().oci, &dev.reference("dev/app:dev"), &[]);
    assert_refused(
        &run,
        &format!("registry {h} requires a username and password, and none is configured for it (run `layerup login {h} -u USER`)", h = dev.host),
    );
    assert!(dev.writes().is_empty());
}

#[test]
fn a_wrong_password_is_reported_without_echoing_it() {
    let dev = Registry::start_with_htpasswd(USER, PASSWORD);
    let client = Client::new(auths(
        &dev.host,
        serde_json::json!({"username": USER, "password": "wrong-Pa55word"}),
    ));
    let run = client.push(&prod().oci, &dev.reference("dev/app:dev"), &["-vv"]);
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
    let client = Client::new(serde_json::json!({"credHelpers": {&dev.host: "not-installed"}}));
    let run = client.push(&prod().oci, &dev.reference("dev/app:dev"), &[]);
    assert_refused(
        &run,
        &format!(
            "credential helper `docker-credential-not-installed` (configured for {} in `{}`) is not on PATH",
            dev.host,
            client.config_file().display()
        ),
    );
    assert!(dev.writes().is_empty());
}

#[test]
fn a_failing_helper_is_named_with_its_message() {
    let dev = Registry::start();
    let client = Client::new(serde_json::json!({"credHelpers": {&dev.host: "broken"}}));
    client.helper_script("broken", "echo 'keychain is locked' >&2\nexit 3\n");
    let run = client.push(&prod().oci, &dev.reference("dev/app:dev"), &[]);
    assert_refused(
        &run,
        &format!(
            "credential helper `docker-credential-broken` (configured for {} in `{}`) failed (exit status: 3): keychain is locked",
            dev.host,
            client.config_file().display()
        ),
    );
}

#[test]
fn a_bearer_token_covers_push_and_the_mount_source_in_one_request() {
    let tokens = TokenServer::start(USER, PASSWORD);
    let reg = tokens.registry();
    let base = reg.reference("prod/app:1");
    seed_base(&base);
    tokens.requests.lock().unwrap().clear();
    let client = Client::new(auths(
        &reg.host,
        serde_json::json!({"auth": basic_b64(USER, PASSWORD)}),
    ));
    let run = client.push(&base, &reg.reference("dev/app:dev"), &["-vv"]);
    let pinned = run.ok().to_string();
    assert_no_secret(&run);
    let asked = tokens.requests.lock().unwrap().clone();
    let both = [
        "repository:dev/app:pull,push".to_string(),
        "repository:prod/app:pull".to_string(),
    ];
    assert!(
        asked
            .iter()
            .any(|scopes| both.iter().all(|s| scopes.contains(s))),
        "one token request covered the destination and the mount source: {asked:?}"
    );
    assert_eq!(
        reg.mounted().len(),
        prod().layers().len(),
        "the registry accepted the token for every mount"
    );
    let manifest = raw_manifest(&pinned);
    assert!(manifest.contains("layers"));
}

#[test]
fn a_token_service_refusing_the_credentials_is_an_auth_error() {
    let tokens = TokenServer::start(USER, PASSWORD);
    let reg = tokens.registry();
    let client = Client::new(auths(
        &reg.host,
        serde_json::json!({"username": USER, "password": "nope-nope"}),
    ));
    let run = client.push(&prod().oci, &reg.reference("dev/app:dev"), &[]);
    assert_refused(
        &run,
        &format!("the token service of registry {} refused the configured credentials for repository:dev/app:pull,push (401 Unauthorized)", reg.host),
    );
    assert!(!run.stderr.contains("nope-nope"));
    assert!(reg.writes().is_empty());
}

#[test]
fn a_mount_the_token_does_not_allow_falls_back_to_copying() {
    let tokens = TokenServer::start(USER, PASSWORD);
    let reg = tokens.registry();
    let base = reg.reference("prod/app:1");
    seed_base(&base);
    let uploads_before = reg.uploaded().len();
    tokens
        .partial
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let client = Client::new(auths(
        &reg.host,
        serde_json::json!({"auth": basic_b64(USER, PASSWORD)}),
    ));
    client.push(&base, &reg.reference("dev/app:dev"), &[]).ok();
    assert!(reg.mounted().is_empty(), "the registry refused every mount");
    let uploads = reg.uploaded()[uploads_before..].to_vec();
    for layer in prod().layers() {
        assert!(
            uploads.contains(&layer),
            "base layer {layer} was copied instead"
        );
    }
}

#[test]
fn docker_config_wins_over_home_and_home_is_the_fallback() {
    // With DOCKER_CONFIG set, a password in ~/.docker/config.json is not used; without it, it is.
    let dev = Registry::start_with_htpasswd(USER, PASSWORD);
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".docker")).unwrap();
    let stray = auths(
        &dev.host,
        serde_json::json!({"auth": basic_b64(USER, PASSWORD)}),
    );
    std::fs::write(home.path().join(".docker/config.json"), stray.to_string()).unwrap();
    let client = Client::new(serde_json::json!({}));
    let tree = app_tree();
    let run = Layerup::new()
        .env("DOCKER_CONFIG", client.config.path())
        .env("HOME", home.path())
        .args(push_args(
            tree.path(),
            &prod().oci,
            &dev.reference("dev/app:x"),
        ))
        .run();
    assert_eq!(run.code, 5);
    let fallback = Layerup::new()
        .env("HOME", home.path())
        .env("DOCKER_CONFIG", "")
        .args(push_args(
            tree.path(),
            &prod().oci,
            &dev.reference("dev/app:x"),
        ))
        .run();
    fallback.ok();
}

/// `skopeo login` writes a containers auth.json (the format podman and buildah share).
fn skopeo_login(authfile: &std::path::Path, host: &str) {
    skopeo(&[
        "login",
        "--authfile",
        &authfile.display().to_string(),
        "-u",
        USER,
        "-p",
        PASSWORD,
        host,
    ]);
}

#[test]
fn credentials_from_a_containers_auth_json_as_skopeo_wrote_it() {
    let dev = Registry::start_with_htpasswd(USER, PASSWORD);
    // docker's config has a wrong password: auth.json comes first, as skopeo and podman read them.
    let client = Client::new(auths(
        &dev.host,
        serde_json::json!({"auth": basic_b64(USER, "wrong")}),
    ));
    let dir = tempfile::tempdir().unwrap();
    let authfile = dir.path().join("auth.json");
    skopeo_login(&authfile, &dev.host);
    let tree = app_tree();
    let run = Layerup::new()
        .env("DOCKER_CONFIG", client.config.path())
        .env("REGISTRY_AUTH_FILE", &authfile)
        .args(push_args(
            tree.path(),
            &prod().oci,
            &dev.reference("dev/app:dev"),
        ))
        .run();
    let pinned = run.ok().to_string();
    assert_no_secret(&run);
    assert!(raw_manifest(&pinned).contains("layers"));

    // Without REGISTRY_AUTH_FILE, the one under $XDG_RUNTIME_DIR.
    let runtime = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(runtime.path().join("containers")).unwrap();
    std::fs::copy(&authfile, runtime.path().join("containers/auth.json")).unwrap();
    let mut l = Layerup::new()
        .env("DOCKER_CONFIG", client.config.path())
        .env("XDG_RUNTIME_DIR", runtime.path())
        .env("HOME", dir.path())
        .args(push_args(
            tree.path(),
            &prod().oci,
            &dev.reference("dev/app:xdg"),
        ));
    l.command().env_remove("REGISTRY_AUTH_FILE");
    l.run().ok();
}

#[test]
fn a_failing_helper_never_has_its_output_printed() {
    let dev = Registry::start();
    let client = Client::new(serde_json::json!({"credHelpers": {&dev.host: "leaky"}}));
    client.helper_script(
        "leaky",
        &format!("printf '{{\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}'\nexit 1\n"),
    );
    for json in [false, true] {
        let extra: &[&str] = if json { &["--json"] } else { &[] };
        let run = client.push(&prod().oci, &dev.reference("dev/app:dev"), extra);
        run.fails(5, &["docker-credential-leaky", "failed (exit status: 1)"]);
        assert_no_secret(&run);
    }
}

/// An OAuth2 identity token (what `az acr login` and `gcloud` helpers leave: `identitytoken` in
/// `auths`, or a helper answering the user `<token>`) is traded at the token service for an
/// access token, with one POST covering the destination and the mount source.
#[rstest::rstest]
#[case::in_auths(false)]
#[case::from_a_helper(true)]
fn an_identity_token_is_traded_for_an_access_token(#[case] helper: bool) {
    use common::token::REFRESH;
    let tokens = TokenServer::start(USER, PASSWORD);
    let reg = tokens.registry();
    let base = reg.reference("prod/app:1");
    seed_base(&base);
    let client = if helper {
        let c = Client::new(serde_json::json!({"credHelpers": {&reg.host: "oauth"}}));
        c.helper_script(
            "oauth",
            &format!(
                "read -r server\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"<token>\",\"Secret\":\"{REFRESH}\"}}' \"$server\"\n"
            ),
        );
        c
    } else {
        Client::new(auths(
            &reg.host,
            serde_json::json!({"identitytoken": REFRESH}),
        ))
    };
    let run = client.push(&base, &reg.reference("dev/app:dev"), &["-vv"]);
    let pinned = run.ok().to_string();
    assert_no_secret(&run);
    let posts = tokens.posts.lock().unwrap().clone();
    let field = |post: &[(String, String)], k: &str| {
        post.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    // The one for the push: the destination and the mount source in one scope field.
    let post = posts
        .iter()
        .find(|p| field(p, "scope").contains("repository:dev/app:pull,push"))
        .unwrap_or_else(|| panic!("no token POST for the push: {posts:?}"));
    assert_eq!(field(post, "grant_type"), "refresh_token");
    assert_eq!(field(post, "refresh_token"), REFRESH);
    assert_eq!(field(post, "service"), common::token::SERVICE);
    let scope = field(post, "scope");
    assert!(
        scope.contains("repository:dev/app:pull,push")
            && scope.contains("repository:prod/app:pull"),
        "{scope}"
    );
    assert_eq!(reg.mounted().len(), prod().layers().len());
    assert!(raw_manifest(&pinned).contains("layers"));
}

#[test]
fn an_identity_token_the_service_refuses_is_an_auth_error() {
    let tokens = TokenServer::start(USER, PASSWORD);
    let reg = tokens.registry();
    let client = Client::new(auths(
        &reg.host,
        serde_json::json!({"identitytoken": "refresh-that-expired"}),
    ));
    let run = client.push(&prod().oci, &reg.reference("dev/app:dev"), &[]);
    assert_refused(
        &run,
        &format!(
            "the token service of registry {} refused the configured identity token (400 Bad \
             Request): it may have expired; log in to {} again",
            reg.host, reg.host
        ),
    );
    assert!(
        !run.stderr.contains("refresh-that-expired"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(reg.writes().is_empty());
}

/// A registry that asks for basic credentials cannot take an identity token: said so, with
/// what to do, and the token is never sent to it.
#[test]
fn an_identity_token_for_a_basic_auth_registry_is_an_error_saying_so() {
    let reg = Registry::start_with_htpasswd(USER, PASSWORD);
    let client = Client::new(auths(
        &reg.host,
        serde_json::json!({"identitytoken": common::token::REFRESH}),
    ));
    let run = client.push(&prod().oci, &reg.reference("dev/app:dev"), &[]);
    assert_refused(
        &run,
        &format!(
            "registry {h} asks for a username and password, and what is configured for it is an \
             OAuth2 identity token, which only a token service takes (run `layerup login {h} -u USER` \
             with a username and password)",
            h = reg.host
        ),
    );
    assert!(!reg.log().contains(common::token::REFRESH));
    assert!(reg.writes().is_empty());
}

/// Issue 26: no level of `-v` showed the registry requests. With `-vv` each request is one line:
/// method, URL (no credentials, no query), status, bytes, time — and never a secret.
#[test]
fn very_verbose_shows_each_registry_request_and_no_secret() {
    let dev = Registry::start_with_htpasswd(USER, PASSWORD);
    let client = Client::new(auths(
        &dev.host,
        serde_json::json!({"auth": basic_b64(USER, PASSWORD)}),
    ));
    let run = client.push(&prod().oci, &dev.reference("dev/app:vv"), &["-vv"]);
    run.ok();
    assert_no_secret(&run);
    let requests: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains(" -> ") && l.contains(" ms"))
        .collect();
    let h = &dev.host;
    for want in [
        format!("GET http://{h}/v2/ -> 401 Unauthorized"),
        format!("GET http://{h}/v2/ -> 200 OK"),
        format!("PUT http://{h}/v2/dev/app/manifests/vv -> 201 Created"),
    ] {
        assert!(
            requests.iter().any(|l| l.contains(&want)),
            "no `{want}` in:\n{}",
            run.stderr
        );
    }
    assert!(
        requests
            .iter()
            .all(|l| !l.contains('?') && !l.contains("_state")),
        "{}",
        run.stderr
    );
    // -vvv is the libraries' own detail; -vv is not.
    assert!(!run.stderr.contains("hyper"), "{}", run.stderr);
}

/// `layerup login` as a user runs it, from a fresh docker config directory.
fn login(config: &std::path::Path, path: &str, args: &[&str], stdin: &str) -> Run {
    let mut l = Layerup::new()
        .env("DOCKER_CONFIG", config)
        .env("PATH", path)
        .args(["login"])
        .args(args);
    // The user's own files: no REGISTRY_AUTH_FILE of the harness's.
    l.command().env_remove("REGISTRY_AUTH_FILE");
    let out = output_with_input(l.command(), stdin.as_bytes());
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

/// Issue 26: the auth error said `run docker login` to people this tool spares Docker. `layerup
/// login` checks the credentials against the registry, keeps them where skopeo and podman read
/// them, and `logout` forgets them.
#[test]
fn login_keeps_credentials_where_skopeo_and_podman_read_them_and_logout_forgets_them() {
    use std::os::unix::fs::PermissionsExt;
    let dev = Registry::start_with_htpasswd(USER, PASSWORD);
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("docker");
    let path = std::env::var("PATH").unwrap();
    // A wrong password: refused by the registry, nothing written.
    let wrong = login(
        &config,
        &path,
        &[&dev.host, "-u", USER, "--password-stdin"],
        "nope\n",
    );
    assert_eq!(wrong.code, 5, "{}", wrong.stderr);
    assert!(!config.join("config.json").exists());
    let ok = login(
        &config,
        &path,
        &[&dev.host, "-u", USER, "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert!(
        ok.stderr
            .contains(&format!("logged in to {} as {USER}", dev.host)),
        "{}",
        ok.stderr
    );
    assert!(!ok.stderr.contains(PASSWORD) && !ok.stdout.contains(PASSWORD));
    let file = config.join("config.json");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // Tools no one here wrote read it.
    let tree = app_tree();
    let pushed = Layerup::new()
        .env("DOCKER_CONFIG", &config)
        .args(push_args(
            tree.path(),
            &prod().oci,
            &dev.reference("dev/app:login"),
        ))
        .run();
    let pinned = pushed.ok().to_string();
    let authfile = file.display().to_string();
    skopeo(&[
        "inspect",
        "--authfile",
        &authfile,
        &format!("docker://{pinned}"),
    ]);
    run(podman().args([
        "pull",
        "-q",
        "--tls-verify=false",
        "--authfile",
        &authfile,
        &pinned,
    ]));
    // --password works and warns.
    let warned = login(
        &config,
        &path,
        &[&dev.host, "-u", USER, "--password", PASSWORD],
        "",
    );
    assert_eq!(warned.code, 0, "{}", warned.stderr);
    assert!(
        warned.stderr.contains("prefer --password-stdin"),
        "{}",
        warned.stderr
    );
    // logout: the entry goes, other entries stay.
    let mut kept: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    kept["auths"]["other.example.com"] = serde_json::json!({"auth": "b3RoZXI6eA=="});
    kept["credHelpersNote"] = serde_json::json!("untouched");
    std::fs::write(&file, kept.to_string()).unwrap();
    let out = Layerup::new()
        .env("DOCKER_CONFIG", &config)
        .args(["logout", &dev.host])
        .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let after: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert!(after["auths"].get(dev.host.as_str()).is_none(), "{after}");
    assert!(after["auths"].get("other.example.com").is_some(), "{after}");
    assert_eq!(after["credHelpersNote"], "untouched");
    let refused = Layerup::new()
        .env("DOCKER_CONFIG", &config)
        .args(push_args(
            tree.path(),
            &prod().oci,
            &dev.reference("dev/app:after"),
        ))
        .run();
    assert_eq!(refused.code, 5, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("run `layerup login"),
        "{}",
        refused.stderr
    );
}

/// A docker config that names a credential helper: the login goes to the helper (`store`), and
/// `logout` asks it to `erase`; the file is not touched.
#[test]
fn login_hands_the_secret_to_the_configured_helper() {
    let dev = Registry::start_with_htpasswd(USER, PASSWORD);
    let client = Client::new(serde_json::json!({"credsStore": "layerup-test"}));
    let said = client.bin.path().join("said");
    client.helper_script("layerup-test", &format!("cat > {}.$1\n", said.display()));
    let path = format!(
        "{}:{}",
        client.bin.path().display(),
        std::env::var("PATH").unwrap()
    );
    let before = std::fs::read_to_string(client.config_file()).unwrap();
    let ok = login(
        client.config.path(),
        &path,
        &[&dev.host, "-u", USER, "--password-stdin"],
        PASSWORD,
    );
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    let stored: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{}.store", said.display())).unwrap(),
    )
    .unwrap();
    assert_eq!(stored["ServerURL"], dev.host.as_str());
    assert_eq!(stored["Username"], USER);
    assert_eq!(stored["Secret"], PASSWORD);
    assert_eq!(
        std::fs::read_to_string(client.config_file()).unwrap(),
        before
    );
    let out = Layerup::new()
        .env("DOCKER_CONFIG", client.config.path())
        .env("PATH", &path)
        .args(["logout", &dev.host])
        .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(format!("{}.erase", said.display())).unwrap(),
        dev.host
    );
}

/// A registry that was open last time is taken as open (no `GET /v2/`: a round trip less); when
/// it asks for a password after all, the push logs in then and goes through, and the next run
/// asks first again.
#[test]
fn an_open_registry_is_not_pinged_again_and_one_that_closed_since_is_logged_in_to() {
    let mut dev = Registry::start();
    let client = Client::new(auths(
        &dev.host,
        serde_json::json!({"auth": basic_b64(USER, PASSWORD)}),
    ));
    let state = tempfile::tempdir().unwrap();
    let tree = app_tree();
    let host = dev.host.clone();
    let push = |tag: &str| {
        Layerup::new()
            .env("DOCKER_CONFIG", client.config.path())
            .env("LAYERUP_STATE_DIR", state.path())
            .args(push_args(
                tree.path(),
                &prod().oci,
                &format!("{host}/{tag}"),
            ))
            .run()
    };
    let pings = |dev: &Registry, from: usize| -> Vec<u16> {
        dev.requests()[from..]
            .iter()
            .filter(|(m, p, _)| m == "GET" && p == "/v2/")
            .map(|r| r.2)
            .collect()
    };
    push("dev/app:1").ok();
    assert_eq!(pings(&dev, 0), [200]);
    let before = dev.requests().len();
    push("dev/app:2").ok();
    assert_eq!(pings(&dev, before), Vec::<u16>::new(), "taken as open");

    dev.require_password(USER, PASSWORD);
    let before = dev.requests().len();
    let run = push("dev/app:3");
    let pinned = run.ok().to_string();
    assert_no_secret(&run);
    let seen = &dev.requests()[before..];
    assert_eq!(seen[0].2, 401, "{seen:?}");
    assert!(seen
        .iter()
        .any(|(m, p, s)| m == "PUT" && p.ends_with("/manifests/3") && *s == 201));
    assert!(pinned.contains("/dev/app@sha256:"), "{pinned}");
    // Closed now, and the check of the credentials kept: the next run sends them at once.
    let before = dev.requests().len();
    push("dev/app:4").ok();
    let seen = &dev.requests()[before..];
    assert_eq!(pings(&dev, before), Vec::<u16>::new(), "{seen:?}");
    assert!(seen.iter().all(|r| r.2 != 401), "{seen:?}");
}

/// The check of basic credentials is kept between runs (the next push sends no `GET /v2/`); a
/// password revoked on the registry since is reported as refused, on one line, with nothing
/// written, and the run after checks again.
#[test]
fn a_kept_check_of_a_password_revoked_since_fails_as_refused_and_is_forgotten() {
    let mut dev = Registry::start_with_htpasswd(USER, PASSWORD);
    let client = Client::new(auths(
        &dev.host,
        serde_json::json!({"auth": basic_b64(USER, PASSWORD)}),
    ));
    let state = tempfile::tempdir().unwrap();
    let tree = app_tree();
    let host = dev.host.clone();
    let push = |tag: &str| {
        Layerup::new()
            .env("DOCKER_CONFIG", client.config.path())
            .env("LAYERUP_STATE_DIR", state.path())
            .args(push_args(
                tree.path(),
                &prod().oci,
                &format!("{host}/{tag}"),
            ))
            .run()
    };
    let pings = |dev: &Registry, from: usize| {
        dev.requests()[from..]
            .iter()
            .filter(|(m, p, _)| m == "GET" && p == "/v2/")
            .count()
    };
    push("dev/app:1").ok();
    let before = dev.requests().len();
    push("dev/app:2").ok();
    assert_eq!(pings(&dev, before), 0);

    let line = run(std::process::Command::new("htpasswd").args(["-Bbn", USER, "another-Pa55word"]));
    std::fs::write(dev.data_dir().with_file_name("htpasswd"), line.trim()).unwrap();
    dev.restart();
    let writes = dev.writes().len();
    let refused = push("dev/app:3");
    refused.fails(
        5,
        &["answered 401 Unauthorized (check the credentials for this registry)"],
    );
    assert_eq!(
        refused.stderr.trim().lines().count(),
        1,
        "{}",
        refused.stderr
    );
    assert_eq!(dev.writes().len(), writes);
    let before = dev.requests().len();
    push("dev/app:4").fails(5, &["refused the username and password"]);
    // Checked again, and asked whether it still takes a password at all.
    assert_eq!(pings(&dev, before), 2);
}
