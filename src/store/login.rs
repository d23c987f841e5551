//! Where a login is kept: where docker, podman, skopeo and crane will find it — the credential
//! helper the user's docker config names for the registry (`credHelpers`, then `credsStore`),
//! else `auths` in the file the user keeps credentials in (`$REGISTRY_AUTH_FILE`; their docker
//! config; a containers auth.json when that is what they have; else a new docker config). Files
//! are written whole and renamed into place, mode 0600; nothing else in them changes.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use base64::Engine as _;
use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};
use crate::store::auth::{normalise_key, server_url};

/// Where a registry's login goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// `docker-credential-<helper>`, as `file` configures it.
    Helper { helper: String, file: PathBuf },
    /// `auths` in this file (docker's config.json and containers' auth.json share the format).
    File(PathBuf),
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Helper { helper, file } => write!(
                f,
                "credential helper docker-credential-{helper} (as {} says)",
                file.display()
            ),
            Place::File(p) => write!(f, "{}", p.display()),
        }
    }
}

fn var(k: &str) -> Option<PathBuf> {
    std::env::var_os(k)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// docker's config file: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
fn docker_config() -> Option<PathBuf> {
    var("DOCKER_CONFIG")
        .map(|d| d.join("config.json"))
        .or_else(|| var("HOME").map(|h| h.join(".docker/config.json")))
}

/// The containers auth.json files that exist, in the order they are read.
fn containers_files() -> Vec<PathBuf> {
    let xdg = var("XDG_RUNTIME_DIR").map(|d| d.join("containers/auth.json"));
    let home = var("HOME").map(|h| h.join(".config/containers/auth.json"));
    [xdg, home]
        .into_iter()
        .flatten()
        .filter(|p| p.is_file())
        .collect()
}

fn read_json(path: &Path) -> Result<Option<Map<String, Value>>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", path, &e)),
    };
    if text.trim().is_empty() {
        return Ok(Some(Map::new()));
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(m)) => Ok(Some(m)),
        _ => Err(Error::auth(format!(
            "`{}` is not a JSON object: layerup leaves it as it is",
            path.display()
        ))),
    }
}

/// The credential helper the docker config names for `registry` (`credHelpers`, then
/// `credsStore`), if any.
fn docker_helper(registry: &str) -> Result<Option<Place>> {
    let Some(path) = docker_config() else {
        return Ok(None);
    };
    let Some(config) = read_json(&path)? else {
        return Ok(None);
    };
    let helper = config
        .get("credHelpers")
        .and_then(Value::as_object)
        .and_then(|h| {
            h.iter()
                .find(|(k, _)| normalise_key(k) == normalise_key(registry))
                .map(|(_, v)| v)
        })
        .or_else(|| config.get("credsStore"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    Ok(helper.map(|h| Place::Helper {
        helper: h.to_string(),
        file: path,
    }))
}

/// Where a login for `registry` is kept, as the user's files say.
pub fn place(registry: &str) -> Result<Place> {
    if let Some(f) = var("REGISTRY_AUTH_FILE") {
        return Ok(Place::File(f));
    }
    if let Some(helper) = docker_helper(registry)? {
        return Ok(helper);
    }
    let docker = docker_config();
    if let Some(path) = docker.as_ref().filter(|p| p.is_file()) {
        return Ok(Place::File(path.clone()));
    }
    if let Some(f) = containers_files().into_iter().next() {
        return Ok(Place::File(f));
    }
    docker.map(Place::File).ok_or_else(|| {
        Error::auth("no HOME, DOCKER_CONFIG or REGISTRY_AUTH_FILE to keep a login in")
    })
}

/// Keeps `user`'s `secret` for `registry` at `place`.
pub async fn store(place: &Place, registry: &str, user: &str, secret: &str) -> Result<()> {
    match place {
        Place::Helper { helper, .. } => {
            let input = serde_json::json!({
                "ServerURL": server_url(registry),
                "Username": user,
                "Secret": secret,
            })
            .to_string();
            helper_call(helper, "store", &input).await
        }
        Place::File(path) => {
            let mut config = read_json(path)?.unwrap_or_default();
            let auths = config
                .entry("auths")
                .or_insert_with(|| Value::Object(Map::new()));
            let Some(auths) = auths.as_object_mut() else {
                return Err(Error::auth(format!(
                    "`auths` in `{}` is not an object: layerup leaves it as it is",
                    path.display()
                )));
            };
            auths.retain(|k, _| normalise_key(k) != normalise_key(registry));
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"));
            auths.insert(key(registry), serde_json::json!({ "auth": encoded }));
            write_private(path, &pretty(config))
        }
    }
}

/// The key a file keeps `registry` under: docker's for Docker Hub, else the host.
fn key(registry: &str) -> String {
    server_url(registry)
}

/// Forgets `registry` everywhere a login for it is kept: its helper (`erase`) and every
/// `auths` entry of the files layerup reads. Returns where it was.
pub async fn erase(registry: &str) -> Result<Vec<String>> {
    let mut gone = Vec::new();
    if let Some(place) = docker_helper(registry)? {
        if let Place::Helper { helper, .. } = &place {
            helper_call(helper, "erase", &server_url(registry)).await?;
        }
        gone.push(place.to_string());
    }
    let mut files: Vec<PathBuf> = var("REGISTRY_AUTH_FILE").into_iter().collect();
    files.extend(containers_files());
    files.extend(docker_config());
    files.dedup();
    for path in files {
        let Some(mut config) = read_json(&path)? else {
            continue;
        };
        let Some(auths) = config.get_mut("auths").and_then(Value::as_object_mut) else {
            continue;
        };
        let before = auths.len();
        auths.retain(|k, _| normalise_key(k) != normalise_key(registry));
        if auths.len() != before {
            write_private(&path, &pretty(config))?;
            gone.push(path.display().to_string());
        }
    }
    Ok(gone)
}

fn pretty(config: serde_json::Map<String, Value>) -> Vec<u8> {
    serde_json::to_vec_pretty(&Value::Object(config)).expect("JSON values serialise")
}

/// Writes `text` to `path` readable by its owner only: whole, then renamed into place. A
/// directory it makes is its owner's only too.
pub(crate) fn write_private(path: &Path, text: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io("create", dir, &e))?;
    let tmp = dir.join(format!(
        ".{}.layerup-{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("config"),
        std::process::id()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::io("write", &tmp, &e))?;
    f.write_all(text)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io("write", &tmp, &e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("write", path, &e))
}

/// Runs `docker-credential-<helper> <action>` with `input` on its stdin (the
/// docker-credential-helpers protocol). What it says is never shown but its first line on
/// stderr: its stdout may echo the secret.
async fn helper_call(helper: &str, action: &str, input: &str) -> Result<()> {
    let program = format!("docker-credential-{helper}");
    let mut child = tokio::process::Command::new(&program)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            Error::auth(format!(
                "credential helper `{program}` could not start: {}",
                crate::error::os_reason(&e)
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes()).await;
    }
    let out = child.wait_with_output().await.map_err(|e| {
        Error::auth(format!(
            "credential helper `{program}` failed: {}",
            crate::error::os_reason(&e)
        ))
    })?;
    if out.status.success() {
        return Ok(());
    }
    let said = crate::error::first_line(&String::from_utf8_lossy(&out.stderr));
    Err(Error::auth(format!(
        "credential helper `{program} {action}` failed ({}){}",
        out.status,
        if said.is_empty() {
            String::new()
        } else {
            format!(": {said}")
        }
    )))
}
