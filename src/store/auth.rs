//! Credentials for a registry, found where skopeo, podman, docker and crane find them: containers
//! `auth.json` (`$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`), then
//! `$DOCKER_CONFIG/config.json` or `~/.docker/config.json` — in each, `credHelpers`, then
//! `credsStore`, then `auths`.
//!
//! [`Credentials`]' `Debug` redacts secrets; nothing here formats a secret into a message.

use std::path::PathBuf;
use std::process::Stdio;

use base64::Engine as _;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};

/// What to authenticate with. `Debug` shows the kind and the user, never a secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Anonymous,
    Basic(String, String),
    /// A registry token used as is (`registrytoken` in a docker config).
    Bearer(String),
    /// An OAuth2 refresh token (`identitytoken` in a docker config, or a helper answering the
    /// user `<token>`, as Azure and Google registries give them): traded at the token service
    /// for an access token (distribution's `oauth.md`).
    Identity(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic(user, _) => write!(f, "Basic({user:?}, <redacted>)"),
            Credentials::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Credentials::Identity(_) => f.write_str("Identity(<redacted>)"),
        }
    }
}

/// Docker Hub's key in config files and the server URL its helpers expect.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// Credentials for `registry` (a `host[:port]` as written in the reference), or anonymous when
/// none are configured. A helper that is configured but missing or failing is an error, not a
/// silent anonymous request that the registry then refuses with a confusing 401.
pub async fn lookup(registry: &str) -> Result<Credentials> {
    for (path, named) in config_paths() {
        let found = lookup_in(&path, named, registry).await?;
        if found != Credentials::Anonymous {
            return Ok(found);
        }
    }
    Ok(Credentials::Anonymous)
}

/// What one file (docker's config.json or a containers auth.json: the same format) holds for
/// `registry`; anonymous when it does not exist or names nothing for it. A file the user named
/// (`REGISTRY_AUTH_FILE`, `DOCKER_CONFIG`) that cannot be read is an error; a default location
/// that cannot be read (another user's `$HOME` under sudo) is passed over (said with -v).
async fn lookup_in(path: &std::path::Path, named: bool, registry: &str) -> Result<Credentials> {
    let path = path.to_path_buf();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Credentials::Anonymous),
        Err(e) if !named => {
            let reason = crate::error::os_reason(&e);
            tracing::info!("passing over `{}`: {reason}", path.display());
            return Ok(Credentials::Anonymous);
        }
        Err(e) => {
            let reason = crate::error::os_reason(&e);
            return Err(Error::auth(format!(
                "cannot read credentials file `{}`: {reason}",
                path.display()
            )));
        }
    };
    let config: Value = serde_json::from_str(&text).map_err(|e| {
        Error::auth(format!(
            "cannot parse credentials file `{}`: {e}",
            path.display()
        ))
    })?;
    let server = server_url(registry);
    let helper = config
        .get("credHelpers")
        .and_then(|h| h.as_object())
        .and_then(|h| {
            h.iter()
                .find(|(k, _)| normalise_key(k) == normalise_key(registry))
                .map(|(_, v)| v)
        })
        .or_else(|| config.get("credsStore"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    if let Some(helper) = helper {
        if let Some(auth) = run_helper(helper, &server, registry, &path).await? {
            return Ok(auth);
        }
        // The helper knows nothing of this registry: an inline entry may still (docker would
        // stop here; CI files often carry both, and using the inline one is what users mean).
    }
    from_auths(&config, registry, &path)
}

/// The files to look in, in the order of containers-auth.json(5), as skopeo, podman and buildah
/// read them: `$REGISTRY_AUTH_FILE` (instead of the next two), else
/// `$XDG_RUNTIME_DIR/containers/auth.json` and `~/.config/containers/auth.json`; then docker's
/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`. The first that names the registry
/// wins.
/// Each with whether the user named it (by variable) rather than it being a default location.
fn config_paths() -> Vec<(PathBuf, bool)> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let home = var("HOME");
    let mut paths = Vec::new();
    match var("REGISTRY_AUTH_FILE") {
        Some(f) => paths.push((f, true)),
        None => {
            let xdg = var("XDG_RUNTIME_DIR").map(|d| d.join("containers/auth.json"));
            let user = home
                .as_ref()
                .map(|h| h.join(".config/containers/auth.json"));
            paths.extend([xdg, user].into_iter().flatten().map(|p| (p, false)));
        }
    }
    match var("DOCKER_CONFIG") {
        Some(d) => paths.push((d.join("config.json"), true)),
        None => paths.extend(home.map(|h| (h.join(".docker/config.json"), false))),
    }
    paths
}

fn is_docker_hub(host: &str) -> bool {
    matches!(
        host,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
}

/// `https://host:port/v1/` and `host:port` name the same registry in config files.
pub(crate) fn normalise_key(key: &str) -> String {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key).to_ascii_lowercase();
    if is_docker_hub(&host) {
        "docker.io".into()
    } else {
        host
    }
}

pub(crate) fn server_url(registry: &str) -> String {
    if is_docker_hub(registry) {
        DOCKER_HUB_KEY.into()
    } else {
        registry.into()
    }
}

fn from_auths(config: &Value, registry: &str, path: &std::path::Path) -> Result<Credentials> {
    let Some(entry) = config
        .get("auths")
        .and_then(Value::as_object)
        .and_then(|a| {
            a.iter()
                .find(|(k, _)| normalise_key(k) == normalise_key(registry))
                .map(|(_, v)| v)
        })
    else {
        return Ok(Credentials::Anonymous);
    };
    let bad = |why: &str| {
        Error::auth(format!(
            "the `auths` entry for {registry} in `{}` {why}",
            path.display()
        ))
    };
    let get = |k: &str| {
        entry
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    if let Some(token) = get("registrytoken") {
        return Ok(Credentials::Bearer(token.to_string()));
    }
    if let Some(token) = get("identitytoken") {
        return Ok(Credentials::Identity(token.to_string()));
    }
    if let Some(encoded) = get("auth") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| bad("has an `auth` value that is not base64"))?;
        let decoded =
            String::from_utf8(decoded).map_err(|_| bad("has an `auth` value that is not UTF-8"))?;
        let (user, pass) = decoded
            .split_once(':')
            .ok_or_else(|| bad("has an `auth` value that is not `user:password`"))?;
        return Ok(Credentials::Basic(user.into(), pass.into()));
    }
    match (get("username"), get("password")) {
        (Some(u), Some(p)) => Ok(Credentials::Basic(u.into(), p.into())),
        _ => Ok(Credentials::Anonymous),
    }
}

/// Runs `docker-credential-<helper> get` (docker-credential-helpers protocol: server URL on
/// stdin, `{"Username","Secret"}` on stdout). `Ok(None)` when the helper has no entry.
async fn run_helper(
    helper: &str,
    server: &str,
    registry: &str,
    config: &std::path::Path,
) -> Result<Option<Credentials>> {
    let program = format!("docker-credential-{helper}");
    let named = || {
        format!(
            "credential helper `{program}` (configured for {registry} in `{}`)",
            config.display()
        )
    };
    let mut child = tokio::process::Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::auth(format!("{} is not on PATH", named()))
            } else {
                Error::auth(format!(
                    "{} could not start: {}",
                    named(),
                    crate::error::os_reason(&e)
                ))
            }
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading its input is reported by its exit status below.
        let _ = stdin.write_all(server.as_bytes()).await;
    }
    let out = child.wait_with_output().await.map_err(|e| {
        Error::auth(format!(
            "{} failed: {}",
            named(),
            crate::error::os_reason(&e)
        ))
    })?;
    if !out.status.success() {
        // The protocol's "no entry" answer; helpers print it on stdout or stderr.
        let said = |b: &[u8]| String::from_utf8_lossy(b).to_lowercase();
        if said(&out.stdout).contains("credentials not found")
            || said(&out.stderr).contains("credentials not found")
        {
            return Ok(None);
        }
        // Never its stdout — where the protocol puts answers, a failing helper may still have
        // written the secret — only the first line of what it said on stderr.
        let why = crate::error::first_line(&String::from_utf8_lossy(&out.stderr));
        return Err(Error::auth(format!(
            "{} failed ({}){}",
            named(),
            out.status,
            if why.is_empty() {
                format!("; run `{program} get` with {server} on its input to see why")
            } else {
                format!(": {why}")
            }
        )));
    }
    let answer: Value = serde_json::from_slice(&out.stdout)
        .map_err(|_| Error::auth(format!("{} printed something that is not JSON", named())))?;
    let user = answer.get("Username").and_then(Value::as_str).unwrap_or("");
    let secret = answer.get("Secret").and_then(Value::as_str).unwrap_or("");
    if secret.is_empty() {
        return Ok(None);
    }
    if user == "<token>" {
        return Ok(Some(Credentials::Identity(secret.into())));
    }
    Ok(Some(Credentials::Basic(user.into(), secret.into())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("https://index.docker.io/v1/", "docker.io")]
    #[case("docker.io", "docker.io")]
    #[case("https://127.0.0.1:5000/v2/", "127.0.0.1:5000")]
    #[case("Registry.Example.com", "registry.example.com")]
    fn config_keys_are_normalised_as_docker_does(#[case] key: &str, #[case] host: &str) {
        assert_eq!(normalise_key(key), host);
    }

    fn auths(entry: Value) -> Value {
        serde_json::json!({ "auths": { "https://127.0.0.1:5000": entry } })
    }

    #[test]
    fn inline_auth_is_decoded() {
        let config = auths(serde_json::json!({ "auth": "Ym9iOnMzY3I6ZXQ=" })); // bob:s3cr:et
        let got = from_auths(&config, "127.0.0.1:5000", "c.json".as_ref()).unwrap();
        assert_eq!(got, Credentials::Basic("bob".into(), "s3cr:et".into()));
    }

    #[test]
    fn other_registries_stay_anonymous() {
        let config = auths(serde_json::json!({ "auth": "Ym9iOnB3" }));
        let got = from_auths(&config, "127.0.0.1:5001", "c.json".as_ref()).unwrap();
        assert_eq!(got, Credentials::Anonymous);
    }

    #[test]
    fn malformed_auth_names_the_file_not_the_value() {
        let config = auths(serde_json::json!({ "auth": "not base64!!" }));
        let err = from_auths(&config, "127.0.0.1:5000", "c.json".as_ref()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the `auths` entry for 127.0.0.1:5000 in `c.json` has an `auth` value that is not base64"
        );
    }

    #[test]
    fn debug_output_of_credentials_hides_the_secret() {
        let shown = format!("{:?}", Credentials::Basic("bob".into(), "hunter2".into()));
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
