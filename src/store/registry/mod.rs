//! The only place that talks HTTP to registries (OCI distribution spec v1.1), on reqwest.
//!
//! Every request goes through [`Registry::send`], which retries what a bad link or a busy registry
//! causes (see `send.rs`), and blob uploads go through a resumable chunked upload (`upload.rs`).
//! `oci-client` was used here first; it was dropped because none of this can be built on it:
//! its calls neither retry nor expose the response (no `Retry-After`, no `Range`, no upload
//! `Location`), its chunked push cannot resume, and its token request carries one scope, while a
//! cross-repository mount needs `repository:<from>:pull` in the destination's token.

mod ahead;
mod kept_auth;
mod send;
mod siblings;
mod status;
pub mod transport;
mod upload;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use oci_spec::distribution::Reference;
use oci_spec::image::Digest;
use reqwest::header::{HeaderValue, ACCEPT, CONTENT_TYPE, LOCATION, RANGE, WWW_AUTHENTICATE};
use reqwest::Method;
use reqwest::StatusCode;

use crate::error::{redact_url, Error, ExitCode, Result};
use crate::oci::digest;
use crate::oci::manifest::{self, Document};
use crate::oci::reference::is_loopback;
use crate::oci::stream::{self, ByteStream};
use crate::store::auth::{self, Credentials};
use send::Verdict;
use status::status_error;
pub use status::RegistryError;

/// Manifests over 4 MiB are refused by distribution and most registries; never read more.
const MANIFEST_LIMIT: usize = 4 << 20;
/// A token service's answer is a few KiB; never read more than this.
const TOKEN_LIMIT: usize = 1 << 20;
const USER_AGENT: &str = concat!("layerup/", env!("CARGO_PKG_VERSION"));

/// How layerup treats the network; the defaults are the command line's (`cli::TransferArgs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Plain HTTP to registries that are not on loopback.
    pub insecure: bool,
    /// Tries per request (and per blob) before giving up: 1 means no retry.
    pub attempts: u32,
    /// A request that moves no byte for this long has failed (and is retried).
    pub stall: Duration,
    /// Bytes per PATCH when an upload goes in chunks: after a failure, or from the start with
    /// `chunked`. Blobs up to this size go in one `PUT`.
    pub chunk: u64,
    /// Every blob larger than `chunk` in chunks from its first byte (`--chunk-size` given), for
    /// registries or proxies that cannot take a whole blob in one request.
    pub chunked: bool,
}

pub struct Registry {
    http: reqwest::Client,
    options: Options,
    /// What [`Registry::login`] found for each (host, repository).
    access: Mutex<HashMap<(String, String), Access>>,
    /// How each host takes blobs, as its answers taught this run (`upload::Style`).
    styles: Mutex<HashMap<String, upload::Style>>,
    /// Upload sessions a refused mount opened (ECR and GAR answer a mount with 202 and a
    /// `Location`), by (host, repository, digest): the blob's upload goes on there.
    opened: Mutex<HashMap<(String, String, String), String>>,
    /// Upload sessions opened ahead of need (`ahead`), by (host, repository).
    spares: Mutex<HashMap<(String, String), Vec<ahead::Spare>>>,
    /// Hosts that have answered in this run: a refused connection to one is a restart or a
    /// blip worth retrying, while one to a host never reached is a wrong address.
    answered: Mutex<HashSet<String>>,
    /// Every secret this run sends (passwords, tokens, their encodings), to strip from whatever
    /// a registry says back before it is shown.
    secrets: Mutex<Vec<String>>,
    /// Each host's answer to `GET /v2/`, asked once per run (the base and the destination on
    /// one registry, read and written at once, share it: one round trip less per push).
    challenges: PerHost<Challenge>,
    /// Each host's check of the basic credentials, made once per run.
    checked: PerHost<()>,
    /// The state directory: documents read by digest are kept there between runs
    /// (`store::kept`), and which registries asked for no authentication.
    state: std::sync::OnceLock<std::path::PathBuf>,
    /// Hosts taken to be open this run because the last run found them so (their `GET /v2/`
    /// skipped): a 401 from one logs in there and then.
    assumed_open: Mutex<HashSet<String>>,
    /// Hosts whose challenge this run took from the last run's record (no `GET /v2/`): a login
    /// failing there asks again before it gives up.
    recalled: Mutex<HashSet<String>>,
    /// Where each blob is on each registry, this run and before (`siblings`).
    places: Mutex<siblings::Places>,
    /// Tokens widened to `pull` on a sibling repository for a mount, once per run each.
    widened: PerHost<()>,
}

/// What is learnt once per host in a run: the first caller works it out, the others (even
/// at the same time) wait for its answer; a failure is not kept, the next caller tries again.
struct PerHost<T>(Mutex<HashMap<String, Arc<tokio::sync::OnceCell<T>>>>);

impl<T> Default for PerHost<T> {
    fn default() -> Self {
        PerHost(Mutex::new(HashMap::new()))
    }
}

impl<T: Clone> PerHost<T> {
    async fn once<F>(&self, host: &str, work: impl FnOnce() -> F) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        let cell = self
            .0
            .lock()
            .expect("per-host lock")
            .entry(host.to_string())
            .or_default()
            .clone();
        cell.get_or_try_init(work).await.cloned()
    }
}

/// How requests for one repository are authenticated.
#[derive(Clone, Default)]
struct Access {
    header: Option<HeaderValue>,
    /// For a bearer token fetched from a token service: how to fetch a fresh one when it expires.
    renew: Option<Renew>,
}

#[derive(Clone)]
struct Renew {
    realm: String,
    service: Option<String>,
    scopes: Vec<String>,
    creds: Credentials,
    /// Where its token is kept between runs (`kept_auth`).
    kept: String,
}

/// One registry repository, as requests name it.
#[derive(Clone, Copy)]
struct Target<'a> {
    host: &'a str,
    repo: &'a str,
}

impl<'a> Target<'a> {
    fn of(r: &'a Reference) -> Self {
        Target {
            host: r.resolve_registry(),
            repo: r.repository(),
        }
    }
}

#[derive(Clone, PartialEq)]
enum Challenge {
    Open,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

impl Registry {
    /// Plain HTTP is used for loopback hosts, or every host with `options.insecure`; everything
    /// else is TLS with verified certificates.
    pub fn new(options: Options) -> Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .dns_resolver(Arc::new(transport::Resolver))
            .connect_timeout(options.stall.min(Duration::from_secs(15)))
            .read_timeout(options.stall)
            .build()
            .map_err(|e| Error::internal(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Registry {
            http,
            options,
            access: Mutex::new(HashMap::new()),
            styles: Mutex::new(HashMap::new()),
            opened: Mutex::new(HashMap::new()),
            spares: Mutex::new(HashMap::new()),
            answered: Mutex::new(HashSet::new()),
            secrets: Mutex::new(Vec::new()),
            challenges: PerHost::default(),
            checked: PerHost::default(),
            state: std::sync::OnceLock::new(),
            assumed_open: Mutex::new(HashSet::new()),
            recalled: Mutex::new(HashSet::new()),
            places: Mutex::new(siblings::Places::default()),
            widened: PerHost::default(),
        })
    }

    /// Remembers across runs in the state directory `dir` from now on (the first one given
    /// wins): documents read by digest, and which registries ask for no authentication.
    pub fn remember_in(&self, dir: std::path::PathBuf) {
        let _ = self.state.set(dir);
    }

    /// The document kept for `digest`, checked against it.
    pub fn kept(&self, digest: &oci_spec::image::Digest) -> Option<Vec<u8>> {
        crate::store::kept::get(&self.state.get()?.join("documents"), digest)
    }

    /// Keeps a document read by digest, for the next run.
    pub fn keep(&self, digest: &oci_spec::image::Digest, bytes: &[u8]) {
        if let Some(dir) = self.state.get() {
            crate::store::kept::put(&dir.join("documents"), digest, bytes);
        }
    }

    /// A manifest or index by tag. The state keeps which digest the tag named last run, and
    /// that document: when a `HEAD` says the tag still names it, that is the whole read (a HEAD
    /// is not counted against Docker Hub's pull limit, and carries no body). Else a `GET`.
    pub async fn manifest_by_tag(&self, repo: &Reference, tag: &str) -> Result<Document> {
        let record = self.tag_record(repo, tag);
        let last = record
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|text| {
                let (digest, media_type) = text.split_once('\n')?;
                let digest: Digest = digest.parse().ok()?;
                let bytes = self.kept(&digest)?;
                Some(Document {
                    bytes: bytes.into(),
                    digest,
                    media_type: media_type.trim().to_string(),
                })
            });
        if let Some(doc) = last {
            let res = self.manifest_request(Method::HEAD, repo, tag).await?;
            if res.status().is_success() && content_digest(&res).as_ref() == Some(&doc.digest) {
                return Ok(doc);
            }
        }
        let doc = self.manifest(repo, tag).await?;
        if let Some(file) = record {
            self.keep(&doc.digest, &doc.bytes);
            write_record(
                &file,
                format!("{}\n{}\n", doc.digest, doc.media_type).as_bytes(),
            );
        }
        Ok(doc)
    }

    /// Where the state keeps the digest `repo:tag` named last.
    fn tag_record(&self, repo: &Reference, tag: &str) -> Option<std::path::PathBuf> {
        let name = format!("{}/{}:{tag}", repo.resolve_registry(), repo.repository());
        let hex = digest::sha256(name.as_bytes()).digest().to_string();
        Some(self.state.get()?.join("tags").join(hex))
    }

    /// Where the state says `host` asked for no authentication last time.
    fn open_record(&self, host: &str) -> Option<std::path::PathBuf> {
        self.host_record("open-registries", host)
    }

    /// A file of the state, in `dir`, about `host`.
    fn host_record(&self, dir: &str, host: &str) -> Option<std::path::PathBuf> {
        let name: String = host
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Some(self.state.get()?.join(dir).join(name))
    }

    /// Records whether `host` asked for no authentication (a failure only costs a ping).
    fn record_open(&self, host: &str, open: bool) {
        let Some(file) = self.open_record(host) else {
            return;
        };
        match open {
            true => write_record(&file, b""),
            false => {
                let _ = std::fs::remove_file(&file);
            }
        }
    }

    /// The body of a registry's answer, at most 64 KiB, with every secret of this run replaced
    /// by `<redacted>`: a registry that echoes a credential back does not get it printed.
    async fn answer_text(&self, res: reqwest::Response) -> String {
        let mut text = String::new();
        let mut body = res.bytes_stream();
        while let Some(Ok(piece)) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&piece));
            if text.len() > 64 << 10 {
                break;
            }
        }
        self.scrub(&text)
    }

    /// `text` with every secret of this run replaced by `<redacted>`.
    fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in self.secrets.lock().expect("secrets lock").iter() {
            if !s.is_empty() && out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "<redacted>");
            }
        }
        out
    }

    /// Remembers a secret this run sends, so it is never shown.
    fn secret(&self, value: &str) {
        let mut all = self.secrets.lock().expect("secrets lock");
        if !all.iter().any(|s| s == value) {
            all.push(value.to_string());
        }
    }

    /// Tries per request (`--tries`): also how often a broken read is taken up again.
    pub fn tries(&self) -> u32 {
        self.options.attempts
    }

    fn scheme(&self, host: &str) -> &'static str {
        if self.options.insecure || is_loopback(host) {
            "http"
        } else {
            "https"
        }
    }

    /// `scheme://host/`: what a `Location` relative to the registry is joined to.
    fn origin(&self, host: &str) -> String {
        format!("{}://{host}/", self.scheme(host))
    }

    fn url(&self, t: Target, path: &str) -> String {
        format!("{}://{}/v2/{}/{path}", self.scheme(t.host), t.host, t.repo)
    }

    /// Gets whatever `repo` needs before any other request: nothing for an open registry, the
    /// configured basic credentials, or one bearer token covering `repository:<repo>:pull` (and
    /// `push` when `push`), plus `pull` on each of `mount_from` for cross-repository mounts.
    pub async fn login(
        &self,
        repo: &Reference,
        push: bool,
        mount_from: &[&Reference],
    ) -> Result<()> {
        let host = repo.resolve_registry();
        let creds = auth::lookup(repo.registry()).await?;
        let challenge = self.challenge(host).await?;
        let mut scopes = vec![format!(
            "repository:{}:{}",
            repo.repository(),
            if push { "pull,push" } else { "pull" }
        )];
        scopes.extend(
            mount_from
                .iter()
                .filter(|m| m.repository() != repo.repository())
                .map(|m| format!("repository:{}:pull", m.repository())),
        );
        let access = match self
            .access_for(host, challenge.clone(), creds.clone(), scopes.clone())
            .await
        {
            // The challenge the last run kept may be stale: ask the registry, and try again if
            // it asks otherwise now.
            Err(e) if self.recalled.lock().expect("recalled lock").remove(host) => {
                tracing::debug!("{e}; asking registry {host} how it authenticates now");
                let now = self.ping(host).await?;
                self.keep_challenge(host, &now);
                if now == challenge {
                    return Err(e);
                }
                self.access_for(host, now, creds, scopes).await?
            }
            other => other?,
        };
        self.access
            .lock()
            .expect("access lock")
            .insert((host.to_string(), repo.repository().to_string()), access);
        Ok(())
    }

    /// What requests to `host` carry, as its `challenge` asks: nothing, the basic credentials
    /// (checked once per host), or a bearer token for `scopes`.
    async fn access_for(
        &self,
        host: &str,
        challenge: Challenge,
        creds: Credentials,
        scopes: Vec<String>,
    ) -> Result<Access> {
        Ok(match challenge {
            Challenge::Open => Access::default(),
            Challenge::Basic => match &creds {
                Credentials::Basic(user, pass) => {
                    let raw = base64::Engine::encode(
                        &base64::engine::general_purpose::STANDARD,
                        format!("{user}:{pass}"),
                    );
                    self.secret(pass);
                    self.secret(&raw);
                    // Once per host: a second repository of it takes the same credentials; and
                    // not again within the hour a run before checked them.
                    if !self.checked_lately(host, &creds) {
                        self.checked
                            .once(host, || async {
                                self.check_basic(host, user, pass).await?;
                                self.keep_checked(host, &creds);
                                Ok(())
                            })
                            .await?;
                    }
                    Access {
                        header: Some(secret_header(host, format!("Basic {raw}"))?),
                        renew: None,
                    }
                }
                Credentials::Identity(_) => {
                    return Err(Error::auth(format!(
                        "registry {host} asks for a username and password, and what is configured \
                         for it is an OAuth2 identity token, which only a token service takes \
                         (run `layerup login {host} -u USER` with a username and password)"
                    )))
                }
                _ => {
                    return Err(Error::auth(format!(
                        "registry {host} requires a username and password, and none is configured \
                         for it (run `layerup login {host} -u USER`)"
                    )))
                }
            },
            Challenge::Bearer { realm, service } => match &creds {
                Credentials::Bearer(t) => {
                    self.secret(t);
                    Access {
                        header: Some(secret_header(host, format!("Bearer {t}"))?),
                        renew: None,
                    }
                }
                _ => {
                    if let Credentials::Basic(_, secret) | Credentials::Identity(secret) = &creds {
                        self.secret(secret);
                    }
                    let mut renew = Renew {
                        realm,
                        service,
                        scopes,
                        creds,
                        kept: String::new(),
                    };
                    renew.kept = Self::token_name(host, &renew);
                    if let Some((token, scopes)) = self.kept_token(&renew.kept) {
                        renew.scopes = scopes;
                        return Ok(Access {
                            header: Some(secret_header(host, format!("Bearer {token}"))?),
                            renew: Some(renew),
                        });
                    }
                    let (token, life) = match self.fetch_token(host, &renew).await {
                        // Refused for the mount sources beside the repository (Docker Hub
                        // answered several scopes with 400, hub-feedback#2215): the repository
                        // alone; mounts then fail and their blobs are copied.
                        Err(e) if renew.scopes.len() > 1 && e.code() == ExitCode::Auth => {
                            tracing::debug!("{e}; asking for {} alone", renew.scopes[0]);
                            renew.scopes.truncate(1);
                            self.fetch_token(host, &renew).await?
                        }
                        other => other?,
                    };
                    self.keep_token(&renew.kept, &token, &renew.scopes, life);
                    Access {
                        header: Some(secret_header(host, format!("Bearer {token}"))?),
                        renew: Some(renew),
                    }
                }
            },
        })
    }

    /// Checks `user` and `secret` against registry `host` before they are kept: `GET /v2/` with
    /// them (a basic-auth registry), or a token from its token service for no repository in
    /// particular (a bearer one), as `docker login` does. `false`: the registry asks for no
    /// credentials at all.
    pub async fn verify(&self, host: &str, user: &str, secret: &str) -> Result<bool> {
        self.secret(secret);
        match self.ping(host).await? {
            Challenge::Open => Ok(false),
            Challenge::Basic => self.check_basic(host, user, secret).await.map(|()| true),
            Challenge::Bearer { realm, service } => {
                let renew = Renew {
                    realm,
                    service,
                    scopes: Vec::new(),
                    creds: Credentials::Basic(user.into(), secret.into()),
                    kept: String::new(),
                };
                self.fetch_token(host, &renew).await.map(|_| true)
            }
        }
    }

    /// A fresh token for `t` after a 401 (the old one expired during a long transfer); `false`
    /// when `t` has no token service to ask.
    async fn renew(&self, t: Target<'_>) -> Result<bool> {
        let key = (t.host.to_string(), t.repo.to_string());
        let renew = self
            .access
            .lock()
            .expect("access lock")
            .get(&key)
            .and_then(|a| a.renew.clone());
        let Some(renew) = renew else {
            // Basic credentials refused: the check a run before kept holds no more.
            self.forget_checked(t.host);
            return Ok(false);
        };
        self.forget_token(&renew.kept);
        let (token, life) = self.fetch_token(t.host, &renew).await?;
        self.keep_token(&renew.kept, &token, &renew.scopes, life);
        let header = secret_header(t.host, format!("Bearer {token}"))?;
        if let Some(a) = self.access.lock().expect("access lock").get_mut(&key) {
            a.header = Some(header);
        }
        Ok(true)
    }

    /// Makes `t`'s token cover `pull` on `from_repo` too, for a mount from there: one token
    /// request per run and repository, where the token comes from a token service. `false`
    /// when that service would not (Docker Hub refuses a second repository in a request).
    async fn widen(&self, t: Target<'_>, from_repo: &str) -> bool {
        let key = (t.host.to_string(), t.repo.to_string());
        let renew = self
            .access
            .lock()
            .expect("access lock")
            .get(&key)
            .and_then(|a| a.renew.clone());
        // Open, basic or a configured token: nothing to widen.
        let Some(mut renew) = renew else {
            return true;
        };
        let scope = format!("repository:{from_repo}:pull");
        if renew.scopes.contains(&scope) {
            return true;
        }
        let once = format!("{} {} {from_repo}", t.host, t.repo);
        let widened = self
            .widened
            .once(&once, || async {
                renew.scopes.push(scope);
                let (token, life) = self.fetch_token(t.host, &renew).await?;
                self.keep_token(&renew.kept, &token, &renew.scopes, life);
                let header = secret_header(t.host, format!("Bearer {token}"))?;
                if let Some(a) = self.access.lock().expect("access lock").get_mut(&key) {
                    a.header = Some(header);
                    a.renew = Some(renew);
                }
                Ok(())
            })
            .await;
        if let Err(e) = &widened {
            tracing::debug!("{e}: no mount from {from_repo}");
        }
        widened.is_ok()
    }

    /// The credentials for `t`, for a request to `url`: only when `url` is on `t`'s own host.
    /// A registry may send an upload to another host (its `Location`); credentials go only to
    /// the host they were given for, as docker and containerd do.
    fn header_for(&self, t: Target<'_>, url: &reqwest::Url) -> Option<HeaderValue> {
        if !self.same_origin(t.host, url) {
            return None;
        }
        self.access
            .lock()
            .expect("access lock")
            .get(&(t.host.to_string(), t.repo.to_string()))
            .and_then(|a| a.header.clone())
    }

    /// How `host` wants to be authenticated: [`Registry::ping`], once per run.
    async fn challenge(&self, host: &str) -> Result<Challenge> {
        self.challenges
            .once(host, || async {
                // Open last time: taken as open without asking (a 401 logs in then).
                if self.open_record(host).is_some_and(|f| f.exists()) {
                    self.assumed_open
                        .lock()
                        .expect("assumed lock")
                        .insert(host.to_string());
                    return Ok(Challenge::Open);
                }
                // Basic or a token service last time: no need to ask again.
                if let Some(challenge) = self.kept_challenge(host) {
                    self.recalled
                        .lock()
                        .expect("recalled lock")
                        .insert(host.to_string());
                    return Ok(challenge);
                }
                let challenge = self.ping(host).await?;
                self.record_open(host, matches!(challenge, Challenge::Open));
                self.keep_challenge(host, &challenge);
                Ok(challenge)
            })
            .await
    }

    /// `host` was taken as open this run on the word of an earlier one.
    fn was_taken_as_open(&self, host: &str) -> bool {
        self.assumed_open
            .lock()
            .expect("assumed lock")
            .contains(host)
    }

    /// `t` was sent without credentials on the word of an earlier run that its registry is
    /// open, and has none yet.
    fn taken_as_open(&self, t: Target<'_>) -> bool {
        self.was_taken_as_open(t.host)
            && self
                .access
                .lock()
                .expect("access lock")
                .get(&(t.host.to_string(), t.repo.to_string()))
                .is_none_or(|a| a.header.is_none())
    }

    /// A registry taken as open answered 401 (`challenge`, its `WWW-Authenticate`): it is
    /// not any more. Logs in for `t` as [`Registry::login`] would have, pull and push.
    async fn log_in_now(&self, t: Target<'_>, challenge: &str) -> Result<()> {
        tracing::info!(
            "registry {} asks for authentication now; logging in",
            t.host
        );
        self.record_open(t.host, false);
        let challenge = parse_challenge(challenge).ok_or_else(|| {
            Error::auth(format!(
                "registry {} asks for authentication with a challenge layerup does not understand",
                t.host
            ))
        })?;
        self.keep_challenge(t.host, &challenge);
        let creds = auth::lookup(t.host).await?;
        let scopes = match t.repo {
            "" => Vec::new(),
            repo => vec![format!("repository:{repo}:pull,push")],
        };
        let access = self.access_for(t.host, challenge, creds, scopes).await?;
        self.access
            .lock()
            .expect("access lock")
            .insert((t.host.to_string(), t.repo.to_string()), access);
        Ok(())
    }

    /// `GET /v2/`: is the registry there, and how does it want to be authenticated?
    async fn ping(&self, host: &str) -> Result<Challenge> {
        let url = format!("{}://{host}/v2/", self.scheme(host));
        let t = Target { host, repo: "" };
        let res = self
            .send(t, &|| format!("reach registry {host}"), &|c| c.get(&url))
            .await?;
        match res.status() {
            s if s.is_success() => Ok(Challenge::Open),
            StatusCode::UNAUTHORIZED => {
                let header = res
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("");
                parse_challenge(header).ok_or_else(|| {
                    Error::auth(format!(
                        "registry {host} asks for authentication with a challenge layerup does not understand: `{}`",
                        header.chars().take(120).collect::<String>()
                    ))
                })
            }
            s => Err(Error::new(
                ExitCode::Registry,
                format!("{host} does not look like a registry: GET /v2/ answered {s}"),
            )),
        }
    }

    /// One `GET /v2/` with the credentials, so a wrong password is reported as that, up front.
    async fn check_basic(&self, host: &str, user: &str, pass: &str) -> Result<()> {
        let url = format!("{}://{host}/v2/", self.scheme(host));
        let t = Target { host, repo: "" };
        let res = self
            .send(t, &|| format!("log in to registry {host}"), &|c| {
                c.get(&url).basic_auth(user, Some(pass))
            })
            .await?;
        match res.status() {
            s if s.is_success() => Ok(()),
            s @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => Err(Error::auth(format!(
                "registry {host} refused the username and password configured for it ({s})"
            ))),
            s => Err(Error::new(
                ExitCode::Registry,
                format!("registry {host} answered {s} to a login check"),
            )),
        }
    }

    /// The distribution token flow: `GET realm?service=…&scope=…` with basic credentials when
    /// there are any, answered by `{"token"}` or `{"access_token"}`.
    async fn fetch_token(&self, host: &str, renew: &Renew) -> Result<(String, Option<u64>)> {
        let Renew {
            realm,
            service,
            scopes,
            creds,
            ..
        } = renew;
        let realm_url = reqwest::Url::parse(realm)
            .map_err(|_| Error::auth(format!("registry {host} names an invalid token realm")))?;
        let realm_host = realm_url.host_str().unwrap_or("").to_string();
        let realm_authority = match realm_url.port() {
            Some(p) => format!("{realm_host}:{p}"),
            None => realm_host.clone(),
        };
        if realm_url.scheme() != "https"
            && matches!(creds, Credentials::Basic(..) | Credentials::Identity(_))
            && !(self.options.insecure || is_loopback(&realm_authority))
        {
            return Err(Error::auth(format!(
                "registry {host} asks for credentials to be sent to {} over plain HTTP; refusing \
                 (pass --insecure to allow it)",
                redact_url(realm)
            )));
        }
        let mut query: Vec<(&str, &str)> = scopes.iter().map(|s| ("scope", s.as_str())).collect();
        if let Some(s) = service {
            query.push(("service", s));
        }
        let t = Target {
            host: &realm_authority,
            repo: "",
        };
        // An identity token is an OAuth2 refresh token: POSTed as a form, scopes in one field.
        let scope = scopes.join(" ");
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", "refresh_token"),
            ("client_id", "layerup"),
            ("scope", &scope),
        ];
        if let Credentials::Identity(refresh) = creds {
            form.push(("refresh_token", refresh));
        }
        if let Some(s) = service {
            form.push(("service", s));
        }
        let res = self
            .send(
                t,
                &|| format!("get a token for registry {host}"),
                &|c| match creds {
                    Credentials::Identity(_) => c.post(realm_url.clone()).form(&form),
                    Credentials::Basic(u, p) => c
                        .get(realm_url.clone())
                        .query(&query)
                        .basic_auth(u, Some(p)),
                    _ => c.get(realm_url.clone()).query(&query),
                },
            )
            .await?;
        let status = res.status();
        // OAuth2 says 400 `invalid_grant` for a refresh token it does not take (expired).
        if status == StatusCode::BAD_REQUEST && matches!(creds, Credentials::Identity(_)) {
            return Err(Error::auth(format!(
                "the token service of registry {host} refused the configured identity token \
                 ({status}): it may have expired; log in to {host} again"
            )));
        }
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            return Err(Error::auth(format!(
                "the token service of registry {host} refused {} for {} ({status})",
                if matches!(creds, Credentials::Anonymous) {
                    "anonymous access"
                } else {
                    "the configured credentials"
                },
                scopes.join(" ")
            )));
        }
        if !status.is_success() {
            return Err(Error::auth(format!(
                "the token service of registry {host} answered {status}"
            )));
        }
        // A token answer is small; one that goes on and on is not read to the end.
        let mut raw = Vec::new();
        let mut stream = res.bytes_stream();
        while let Some(piece) = stream.next().await {
            let piece = piece.map_err(|e| transport::error(&e, host))?;
            raw.extend_from_slice(&piece);
            if raw.len() > TOKEN_LIMIT {
                return Err(Error::auth(format!(
                    "the token service of registry {host} sent more than 1 MiB"
                )));
            }
        }
        let body: serde_json::Value = serde_json::from_slice(&raw).map_err(|_| {
            Error::auth(format!(
                "the token service of registry {host} sent no JSON token"
            ))
        })?;
        let token = body
            .get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .ok_or_else(|| {
                Error::auth(format!(
                    "the token service of registry {host} sent no token"
                ))
            })?;
        self.secret(&token);
        let life = body.get("expires_in").and_then(|v| v.as_u64());
        Ok((token, life))
    }

    /// GET or HEAD on a manifest, accepting every manifest and index type layerup reads.
    async fn manifest_request(
        &self,
        method: Method,
        repo: &Reference,
        tag_or_digest: &str,
    ) -> Result<reqwest::Response> {
        let t = Target::of(repo);
        let url = self.url(t, &format!("manifests/{tag_or_digest}"));
        let accept = manifest::ACCEPT.join(", ");
        self.send(t, &|| format!("read manifest {}", repo.whole()), &|c| {
            c.request(method.clone(), &url).header(ACCEPT, &accept)
        })
        .await
    }

    /// Fetches a manifest or index by tag or digest, verifying it against the digest when one
    /// was asked for, or against `Docker-Content-Digest` when the registry sent one. A body cut
    /// or stalled on its way is asked for again, as any other request.
    pub async fn manifest(&self, repo: &Reference, tag_or_digest: &str) -> Result<Document> {
        let host = repo.resolve_registry();
        let what = format!("manifest {}", repo.whole());
        let action = || format!("cannot read {what}");
        let mut tries = 0;
        loop {
            tries += 1;
            let res = self
                .manifest_request(Method::GET, repo, tag_or_digest)
                .await?;
            let status = res.status();
            if !status.is_success() {
                let body = self.answer_text(res).await;
                return Err(status_error(status, &body, &action(), host));
            }
            let content_type = res
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let header_digest = content_digest(&res);
            if res
                .content_length()
                .is_some_and(|l| l > MANIFEST_LIMIT as u64)
            {
                return Err(Error::image(format!("{what} is larger than 4 MiB")));
            }
            let mut bytes = Vec::new();
            let mut body = res.bytes_stream();
            let mut broke = None;
            while let Some(chunk) = body.next().await {
                match chunk {
                    Ok(chunk) => bytes.extend_from_slice(&chunk),
                    Err(e) => {
                        broke = Some(e);
                        break;
                    }
                }
                if bytes.len() > MANIFEST_LIMIT {
                    return Err(Error::image(format!("{what} is larger than 4 MiB")));
                }
            }
            if let Some(e) = broke {
                match self.judge_transport(&e, host, tries) {
                    Verdict::Retry(wait, why) if tries < self.options.attempts => {
                        let next = format!("try {} of {}", tries + 1, self.options.attempts);
                        self.again(tries, &action(), &why, &next, wait).await?;
                        continue;
                    }
                    Verdict::Retry(..) => {
                        return Err(send::gave_up(
                            transport::error(&e, host).context(action()),
                            tries,
                        ))
                    }
                    Verdict::Fail(e) => return Err(e.context(action())),
                }
            }
            let asked: Option<Digest> = tag_or_digest.parse().ok();
            let digest = match asked.or(header_digest) {
                Some(expected) => {
                    digest::verify(&bytes, &expected, &what)?;
                    expected
                }
                None => digest::sha256(&bytes),
            };
            return Ok(Document {
                bytes: bytes.into(),
                digest,
                media_type: content_type.unwrap_or_default(),
            });
        }
    }

    /// The digest of the manifest a tag or digest names (HEAD), or `None` when there is none.
    pub async fn manifest_digest(
        &self,
        repo: &Reference,
        tag_or_digest: &str,
    ) -> Result<Option<Digest>> {
        let host = repo.resolve_registry();
        let res = self
            .manifest_request(Method::HEAD, repo, tag_or_digest)
            .await?;
        let status = res.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(status_error(
                status,
                "",
                &format!("cannot check manifest {}", repo.whole()),
                host,
            ));
        }
        if let Some(d) = content_digest(&res) {
            return Ok(Some(d));
        }
        // A digest asked for and answered 200 is held. A tag with no digest header (ECR): the
        // manifest itself, hashed, says which it names.
        if let Ok(asked) = tag_or_digest.parse::<Digest>() {
            return Ok(Some(asked));
        }
        Ok(Some(self.manifest(repo, tag_or_digest).await?.digest))
    }

    /// A blob's bytes from offset `from` (a `Range` request), unverified: read it through a
    /// [`stream::Cursor`]. A registry that ignores `Range` sends it whole; the first `from`
    /// bytes are dropped. Registries may redirect to storage elsewhere; reqwest follows, and
    /// drops the `Authorization` header when the host changes.
    pub async fn blob_from(
        &self,
        repo: &Reference,
        digest: &Digest,
        from: u64,
    ) -> Result<ByteStream> {
        let t = Target::of(repo);
        let url = self.url(t, &format!("blobs/{digest}"));
        let action = || format!("cannot read blob {digest} from {}", repo.whole());
        let range = format!("bytes={from}-");
        let res = self
            .send(t, &action, &|c| {
                let req = c.get(&url);
                if from > 0 {
                    req.header(RANGE, &range)
                } else {
                    req
                }
            })
            .await?;
        let status = res.status();
        if !status.is_success() {
            let body = self.answer_text(res).await;
            return Err(status_error(status, &body, &action(), t.host));
        }
        // A body that breaks is worded like any transport failure (a stall as a timeout), and
        // keeps its exit code through the cursor that reads it.
        let host = t.host.to_string();
        let body = res
            .bytes_stream()
            .map(move |r| r.map_err(|e| std::io::Error::other(transport::error(&e, &host))))
            .boxed();
        Ok(if status == StatusCode::PARTIAL_CONTENT || from == 0 {
            body
        } else {
            stream::skip(body, from)
        })
    }

    pub async fn has_blob(&self, repo: &Reference, digest: &Digest) -> Result<bool> {
        let t = Target::of(repo);
        let url = self.url(t, &format!("blobs/{digest}"));
        let action = || format!("cannot check for blob {digest} in {}", repo.whole());
        let res = self.send(t, &action, &|c| c.head(&url)).await?;
        match res.status() {
            s if s.is_success() => {
                self.saw(t, digest);
                Ok(true)
            }
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(status_error(s, "", &action(), t.host)),
        }
    }

    /// Asks the registry to link a blob it already holds in `from` into `to`. `false` when it
    /// would not, and the blob must be copied instead: a 202 (an upload session instead of a
    /// mount; abandoned, it expires), a blob it does not have, or a refusal (a token without
    /// `pull` on `from` gets 401 from distribution). A mount only saves bytes; a real credential
    /// problem surfaces on the upload that follows.
    pub async fn mount(&self, to: &Reference, from: &Reference, digest: &Digest) -> Result<bool> {
        let t = Target::of(to);
        let url = self.url(t, "blobs/uploads/");
        let query = [
            ("mount", digest.to_string()),
            ("from", from.repository().into()),
        ];
        let action = || format!("mount of {digest} from {}", from.whole());
        let res = self
            .send(t, &action, &|c| c.post(&url).query(&query))
            .await?;
        if res.status() == StatusCode::CREATED {
            self.saw(t, digest);
            return Ok(true);
        }
        tracing::debug!(status = %res.status(), "{}: not mounted, copying instead", action());
        // An upload session instead of a mount: the copy goes there, one POST less.
        let base = self.origin(t.host);
        if let (StatusCode::ACCEPTED, Some(loc)) = (res.status(), location(&base, &res)) {
            self.opened
                .lock()
                .expect("opened lock")
                .insert((t.host.into(), t.repo.into(), digest.to_string()), loc);
        }
        Ok(false)
    }

    /// The descriptors the OCI 1.1 referrers API lists for `digest` (the manifests whose
    /// `subject` it is); `None` where the registry has no such API — distribution 2.x, GHCR and
    /// GitLab answer 404 — or answers with something that is not an index.
    pub async fn referrers(
        &self,
        repo: &Reference,
        digest: &Digest,
    ) -> Result<Option<Vec<serde_json::Value>>> {
        let t = Target::of(repo);
        let url = self.url(t, &format!("referrers/{digest}"));
        let action = || format!("cannot list the referrers of {digest} in {}", repo.whole());
        let res = self
            .send(t, &action, &|c| {
                c.get(&url).header(ACCEPT, manifest::OCI_INDEX)
            })
            .await?;
        let status = res.status();
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            let body = self.answer_text(res).await;
            return Err(status_error(status, &body, &action(), t.host));
        }
        if !status.is_success() {
            return Ok(None);
        }
        let mut raw = Vec::new();
        let mut body = res.bytes_stream();
        while let Some(piece) = body.next().await {
            raw.extend_from_slice(&piece.map_err(|e| transport::error(&e, t.host))?);
            if raw.len() > MANIFEST_LIMIT {
                return Ok(None);
            }
        }
        Ok(serde_json::from_slice::<serde_json::Value>(&raw)
            .ok()
            .and_then(|v| v.get("manifests")?.as_array().cloned()))
    }

    /// Deletes a tag (OCI distribution 1.1 `DELETE /manifests/<tag>`), or a manifest by
    /// digest — which takes every tag naming it along. `false` when the registry allows no such
    /// delete (distribution 2.x refuses a tag: 400 `DIGEST_INVALID`; deletes disabled: 405).
    pub async fn delete(&self, repo: &Reference, tag_or_digest: &str) -> Result<bool> {
        let t = Target::of(repo);
        let url = self.url(t, &format!("manifests/{tag_or_digest}"));
        let action = || format!("cannot delete {tag_or_digest} from {}", repo.whole());
        let res = self.send(t, &action, &|c| c.delete(&url)).await?;
        match res.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(true),
            StatusCode::BAD_REQUEST | StatusCode::METHOD_NOT_ALLOWED => Ok(false),
            s => {
                let body = self.answer_text(res).await;
                Err(status_error(s, &body, &action(), t.host))
            }
        }
    }

    /// The repository's tags (`GET /tags/list`; one page: a development repository's tags).
    pub async fn tags(&self, repo: &Reference) -> Result<Vec<String>> {
        let t = Target::of(repo);
        let url = self.url(t, "tags/list");
        let action = || format!("cannot list the tags of {}", repo.whole());
        let res = self.send(t, &action, &|c| c.get(&url)).await?;
        let status = res.status();
        if !status.is_success() {
            let body = self.answer_text(res).await;
            return Err(status_error(status, &body, &action(), t.host));
        }
        let body = self.answer_text(res).await;
        let v: serde_json::Value = serde_json::from_str(&body).map_err(|_| {
            Error::new(
                ExitCode::Registry,
                format!("{}: registry {} sent no tag list", action(), t.host),
            )
        })?;
        Ok(v.get("tags")
            .and_then(|t| t.as_array())
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect())
    }

    /// Writes a manifest under `tag_or_digest`; the registry checks every blob it names is
    /// present.
    pub async fn put_manifest(
        &self,
        repo: &Reference,
        tag_or_digest: &str,
        bytes: Bytes,
        media_type: &str,
    ) -> Result<()> {
        let t = Target::of(repo);
        let url = self.url(t, &format!("manifests/{tag_or_digest}"));
        let action = || format!("cannot write manifest {}", repo.whole());
        let res = self
            .send(t, &action, &|c| {
                c.put(&url)
                    .header(CONTENT_TYPE, media_type)
                    .body(bytes.clone())
            })
            .await?;
        let status = res.status();
        if status.is_success() {
            return Ok(());
        }
        let body = self.answer_text(res).await;
        let e = status_error(status, &body, &action(), t.host);
        let refused =
            status == StatusCode::UNSUPPORTED_MEDIA_TYPE || body.contains("MANIFEST_INVALID");
        if refused && media_type.contains(".docker.") {
            // zot (and registries set to OCI only) refuse Docker schema 2.
            return Err(e.suffixed(
                "(this registry may not take Docker schema 2 manifests: `layerup push --format oci` \
                 writes OCI ones, with the same layers)",
            ));
        }
        Err(e)
    }
}

/// The digest an answer says its manifest has (`Docker-Content-Digest`), if it says one.
fn content_digest(res: &reqwest::Response) -> Option<Digest> {
    res.headers()
        .get("Docker-Content-Digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Digest>().ok())
}

/// Writes a small record of the state whole, its directory made first. A failure only costs
/// the next run a question to the registry.
fn write_record(file: &std::path::Path, bytes: &[u8]) {
    let _ = file
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(file, bytes));
}

/// A header value holding a secret: marked sensitive, so no debug output of a request shows it.
fn secret_header(host: &str, value: String) -> Result<HeaderValue> {
    let mut v = HeaderValue::try_from(value).map_err(|_| {
        Error::auth(format!(
            "the credentials for {host} cannot be sent in an HTTP header"
        ))
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// Resolves an upload `Location`, which may be relative to the registry (distribution spec).
fn absolute(base: &str, location: &HeaderValue) -> Option<String> {
    let loc = location.to_str().ok()?;
    reqwest::Url::parse(base)
        .ok()?
        .join(loc)
        .ok()
        .map(|u| u.to_string())
}

fn location(base: &str, res: &reqwest::Response) -> Option<String> {
    absolute(base, res.headers().get(LOCATION)?)
}

/// Parses `WWW-Authenticate` (RFC 7235) with `http-auth`, taking the first scheme offered.
fn parse_challenge(header: &str) -> Option<Challenge> {
    let challenges = http_auth::parse_challenges(header).ok()?;
    let first = challenges.first()?;
    if first.scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if first.scheme.eq_ignore_ascii_case("bearer") {
        let param = |name: &str| {
            first
                .params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_unescaped())
        };
        return Some(Challenge::Bearer {
            realm: param("realm")?,
            service: param("service"),
        });
    }
    None
}

impl Registry {
    /// Whether `url` is the registry `host` itself: same host and port, and the scheme layerup
    /// speaks to it (an `http://` upload location from an `https://` registry is not).
    fn same_origin(&self, host: &str, url: &reqwest::Url) -> bool {
        same_host(host, url) && url.scheme() == self.scheme(host)
    }
}

/// Whether `url` is on `host` (`host[:port]` as a reference names it), port included.
fn same_host(host: &str, url: &reqwest::Url) -> bool {
    let Some(h) = url.host_str() else {
        return false;
    };
    // `registry:443` and `https://registry/…` are one origin (Quay drops the default port).
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) if !host.ends_with(']') && p.bytes().all(|b| b.is_ascii_digit()) => {
            (n, p.parse::<u16>().ok())
        }
        _ => (host, None),
    };
    let scheme_default = match url.scheme() {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    };
    name.eq_ignore_ascii_case(h) && port.or(scheme_default) == url.port_or_known_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_port_named_or_not_is_one_origin() {
        let url = |u: &str| reqwest::Url::parse(u).unwrap();
        assert!(same_host("quay.io:443", &url("https://quay.io/v2/x")));
        assert!(same_host("quay.io", &url("https://quay.io:443/v2/x")));
        assert!(same_host(
            "127.0.0.1:5000",
            &url("http://127.0.0.1:5000/v2/")
        ));
        assert!(same_host("[::1]:5000", &url("http://[::1]:5000/v2/")));
        assert!(!same_host("quay.io:8443", &url("https://quay.io/v2/x")));
        assert!(!same_host(
            "127.0.0.1:5000",
            &url("http://127.0.0.1:5001/v2/")
        ));
        assert!(!same_host("quay.io", &url("https://storage.quay.io/x")));
    }

    #[test]
    fn tls_is_used_except_on_loopback_or_when_insecure() {
        let options = |insecure| Options {
            insecure,
            attempts: 1,
            stall: Duration::from_secs(1),
            chunk: 1 << 20,
            chunked: false,
        };
        let strict = Registry::new(options(false)).unwrap();
        assert_eq!(strict.scheme("registry.example.com"), "https");
        assert_eq!(strict.scheme("10.1.2.3:5000"), "https");
        assert_eq!(strict.scheme("127.0.0.1:5000"), "http");
        assert_eq!(strict.scheme("localhost:5000"), "http");
        let insecure = Registry::new(options(true)).unwrap();
        assert_eq!(insecure.scheme("registry.example.com"), "http");
    }

    #[test]
    fn bearer_challenge_gives_realm_and_service() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a:pull""#,
        );
        match c {
            Some(Challenge::Bearer { realm, service }) => {
                assert_eq!(realm, "https://auth.example/token");
                assert_eq!(service.as_deref(), Some("registry.example"));
            }
            _ => panic!("not a bearer challenge"),
        }
    }

    #[test]
    fn basic_challenge_is_recognised() {
        assert!(matches!(
            parse_challenge(r#"Basic realm="basic-realm""#),
            Some(Challenge::Basic)
        ));
    }
}
