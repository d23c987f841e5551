//! The only place that talks HTTP to registries (OCI distribution spec v1.1).
//!
//! Blob and manifest writes, blob reads and existence checks go through `oci-client`. Three pieces
//! are written here because `oci-client` 0.18 cannot do them:
//! - **Login.** Its token request carries one scope (`repository:<repo>:<op>`), but a
//!   cross-repository mount needs `repository:<from>:pull` in the same token (distribution token
//!   spec; without it the registry answers 202 and the blob is uploaded again). It also swallows
//!   token errors (`get_auth_token` ends in `.ok()??`), so bad credentials surface later as a bare
//!   401; and for an open registry it probes `/v2/` again before every request. [`Registry::login`]
//!   reads the challenge once, fetches one token with every scope this run needs, and puts it in
//!   `oci-client`'s token cache, so `oci-client` never fetches tokens itself.
//! - **Manifest GET.** `pull_manifest_raw` drops the `Content-Type`, which decides what a
//!   document without `mediaType` is; and it would store credentials in a way that re-probes.
//! - **Mount fallback.** A registry may answer a mount with 202 (an upload session instead);
//!   `mount_blob` reports that as a spec violation, which here means "not mounted, copy it".

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::token_cache::{RegistryToken, RegistryTokenType};
use oci_client::RegistryOperation;
use oci_spec::distribution::Reference;
use oci_spec::image::Digest;
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::Method;
use reqwest::StatusCode;

use crate::auth;
use crate::digest;
use crate::error::{redact_url, Error, ExitCode, Result};
use crate::manifest;
use crate::reference::is_loopback;
use crate::store::ByteStream;

/// Manifests over 4 MiB are refused by distribution and most registries; never read more.
const MANIFEST_LIMIT: usize = 4 << 20;
const USER_AGENT: &str = concat!("layerup/", env!("CARGO_PKG_VERSION"));

pub struct Registry {
    oci: oci_client::Client,
    http: reqwest::Client,
    insecure: bool,
    /// `Authorization` values from [`Registry::login`], by (host, repository), for the requests
    /// made here rather than by `oci-client`.
    headers: Mutex<HashMap<(String, String), HeaderValue>>,
}

/// A manifest or index exactly as the registry sent it.
pub struct Fetched {
    pub bytes: Bytes,
    pub digest: Digest,
    pub content_type: Option<String>,
}

enum Challenge {
    Open,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

impl Registry {
    /// `hosts` are every registry this run talks to: plain HTTP is decided per host up front
    /// (loopback, or `insecure`), and everything else is TLS with verified certificates.
    pub fn new(hosts: &[&str], insecure: bool) -> Result<Self> {
        let plain: Vec<String> = hosts
            .iter()
            .filter(|h| insecure || is_loopback(h))
            .map(|h| h.to_string())
            .collect();
        let oci = oci_client::Client::try_from(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(plain),
            // One POST and one streamed PUT per blob. Chunked PATCHes would add a round trip
            // per 4 MiB and buy nothing until uploads can resume.
            use_monolithic_push: true,
            connect_timeout: Some(Duration::from_secs(15)),
            read_timeout: Some(Duration::from_secs(120)),
            user_agent: USER_AGENT,
            ..Default::default()
        })
        .map_err(|e| Error::internal(format!("cannot set up the HTTP client: {e}")))?;
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| Error::internal(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Registry {
            oci,
            http,
            insecure,
            headers: Mutex::new(HashMap::new()),
        })
    }

    fn scheme(&self, host: &str) -> &'static str {
        if self.insecure || is_loopback(host) {
            "http"
        } else {
            "https"
        }
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
        let token = match challenge {
            Challenge::Open => return Ok(()),
            Challenge::Basic => match &creds {
                RegistryAuth::Basic(user, pass) => {
                    self.check_basic(host, user, pass).await?;
                    RegistryTokenType::Basic(user.clone(), pass.clone())
                }
                _ => {
                    return Err(Error::auth(format!(
                        "registry {host} requires a username and password, and none is configured \
                         for it (run `docker login {host}`, or add it to `auths` in your docker config)"
                    )))
                }
            },
            Challenge::Bearer { realm, service } => {
                let token = match &creds {
                    RegistryAuth::Bearer(t) => t.clone(),
                    _ => self.fetch_token(host, &realm, service.as_deref(), &scopes, &creds).await?,
                };
                RegistryTokenType::Bearer(RegistryToken::Token { token })
            }
        };
        // Keep the credentials with oci-client too, so it can fetch a fresh token by itself if
        // this one expires during a long transfer.
        self.oci.store_auth_if_needed(host, &creds).await;
        // Only `repo`'s slots: a mount is authenticated as the destination (oci-client sends
        // `mount_blob` with the destination's push token), and the mount source keeps the token
        // its own login got, which may grant more than this one did.
        self.oci
            .tokens
            .insert(repo, RegistryOperation::Pull, token.clone())
            .await;
        if push {
            self.oci
                .tokens
                .insert(repo, RegistryOperation::Push, token.clone())
                .await;
        }
        let mut value = match &token {
            RegistryTokenType::Basic(u, p) => {
                let raw = base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    format!("{u}:{p}"),
                );
                HeaderValue::try_from(format!("Basic {raw}"))
            }
            RegistryTokenType::Bearer(t) => HeaderValue::try_from(t.bearer_token()),
        }
        .map_err(|_| {
            Error::auth(format!(
                "the credentials for {host} cannot be sent in an HTTP header"
            ))
        })?;
        value.set_sensitive(true);
        self.headers
            .lock()
            .expect("headers lock")
            .insert((host.to_string(), repo.repository().to_string()), value);
        Ok(())
    }

    /// `GET /v2/`: is the registry there, and how does it want to be authenticated?
    async fn challenge(&self, host: &str) -> Result<Challenge> {
        let url = format!("{}://{host}/v2/", self.scheme(host));
        let res = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| transport_error(&e, host))?;
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
        let res = self
            .http
            .get(&url)
            .basic_auth(user, Some(pass))
            .send()
            .await
            .map_err(|e| transport_error(&e, host))?;
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
    async fn fetch_token(
        &self,
        host: &str,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
        creds: &RegistryAuth,
    ) -> Result<String> {
        let realm_url = reqwest::Url::parse(realm)
            .map_err(|_| Error::auth(format!("registry {host} names an invalid token realm")))?;
        let realm_host = realm_url.host_str().unwrap_or("").to_string();
        let realm_authority = match realm_url.port() {
            Some(p) => format!("{realm_host}:{p}"),
            None => realm_host.clone(),
        };
        if realm_url.scheme() != "https"
            && matches!(creds, RegistryAuth::Basic(..))
            && !(self.insecure || is_loopback(&realm_authority))
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
        let mut req = self.http.get(realm_url.clone()).query(&query);
        if let RegistryAuth::Basic(u, p) = creds {
            req = req.basic_auth(u, Some(p));
        }
        let res = req
            .send()
            .await
            .map_err(|e| transport_error(&e, &realm_authority))?;
        let status = res.status();
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            return Err(Error::auth(format!(
                "the token service of registry {host} refused {} for {} ({status})",
                if matches!(creds, RegistryAuth::Anonymous) {
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
        let body: serde_json::Value = res.json().await.map_err(|_| {
            Error::auth(format!(
                "the token service of registry {host} sent no JSON token"
            ))
        })?;
        body.get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .ok_or_else(|| {
                Error::auth(format!(
                    "the token service of registry {host} sent no token"
                ))
            })
    }

    /// GET or HEAD on a manifest, accepting every manifest and index type layerup reads.
    async fn manifest_request(
        &self,
        method: Method,
        repo: &Reference,
        tag_or_digest: &str,
    ) -> Result<reqwest::Response> {
        let host = repo.resolve_registry();
        let url = format!(
            "{}://{host}/v2/{}/manifests/{tag_or_digest}",
            self.scheme(host),
            repo.repository()
        );
        let mut req = self
            .http
            .request(method, &url)
            .header(ACCEPT, manifest::ACCEPT.join(", "));
        if let Some(h) = self.header_for(host, repo.repository()) {
            req = req.header(AUTHORIZATION, h);
        }
        req.send().await.map_err(|e| transport_error(&e, host))
    }

    /// Fetches a manifest or index by tag or digest, verifying it against the digest when one
    /// was asked for, or against `Docker-Content-Digest` when the registry sent one.
    pub async fn manifest(&self, repo: &Reference, tag_or_digest: &str) -> Result<Fetched> {
        let host = repo.resolve_registry();
        let what = format!("manifest {}", repo.whole());
        let res = self
            .manifest_request(Method::GET, repo, tag_or_digest)
            .await?;
        let status = res.status();
        if !status.is_success() {
            let body = res.text().await.unwrap_or_default();
            return Err(status_error(
                status,
                &body,
                &format!("cannot read {what}"),
                host,
            ));
        }
        let content_type = res
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let header_digest = res
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        if res
            .content_length()
            .is_some_and(|l| l > MANIFEST_LIMIT as u64)
        {
            return Err(Error::image(format!("{what} is larger than 4 MiB")));
        }
        let mut bytes = Vec::new();
        let mut body = res.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| transport_error(&e, host))?;
            bytes.extend_from_slice(&chunk);
            if bytes.len() > MANIFEST_LIMIT {
                return Err(Error::image(format!("{what} is larger than 4 MiB")));
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
        Ok(Fetched {
            bytes: bytes.into(),
            digest,
            content_type,
        })
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
        if status == reqwest::StatusCode::NOT_FOUND {
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
        // A registry that sends no digest header cannot prove it holds the one asked for.
        Ok(res
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok()))
    }

    /// Reads a whole blob that is small by nature (an image config), verified, at most 32 MiB.
    pub async fn blob_bytes(
        &self,
        repo: &Reference,
        digest: &Digest,
        size: u64,
    ) -> Result<Vec<u8>> {
        const LIMIT: u64 = 32 << 20;
        if size > LIMIT {
            return Err(Error::image(format!(
                "blob {digest} in {} claims {size} bytes; an image config is never that large",
                repo.whole()
            )));
        }
        let mut stream = self.blob_stream(repo, digest, size).await?;
        let mut out = Vec::with_capacity(size as usize);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                Error::image(format!(
                    "cannot read blob {digest} from {}: {}",
                    repo.whole(),
                    root_cause(&e)
                ))
            })?;
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// A blob as a stream that fails at its end if the bytes do not match `digest` and `size`.
    pub async fn blob_stream(
        &self,
        repo: &Reference,
        digest: &Digest,
        size: u64,
    ) -> Result<ByteStream> {
        let host = repo.resolve_registry().to_string();
        let d = digest.to_string();
        let sized = self
            .oci
            .pull_blob_stream(repo, d.as_str())
            .await
            .map_err(|e| {
                oci_error(
                    e,
                    &format!("cannot read blob {digest} from {}", repo.whole()),
                    &host,
                )
            })?;
        let what = format!("blob {digest} from {}", repo.whole());
        Ok(digest::Verified::new(sized.stream, digest, size, what)?.boxed())
    }

    pub async fn has_blob(&self, repo: &Reference, digest: &Digest) -> Result<bool> {
        let host = repo.resolve_registry();
        self.oci
            .blob_exists(repo, digest.as_ref())
            .await
            .map_err(|e| {
                oci_error(
                    e,
                    &format!("cannot check for blob {digest} in {}", repo.whole()),
                    host,
                )
            })
    }

    /// Asks the registry to link a blob it already holds in `from` into `to`. `false` when it
    /// would not, and the blob must be copied instead: a 202 (an upload session instead of a
    /// mount), a blob it does not have, or a refusal (a token without `pull` on `from` gets 401
    /// from distribution). A mount only saves bytes; a real credential problem surfaces on the
    /// upload that follows.
    pub async fn mount(&self, to: &Reference, from: &Reference, digest: &Digest) -> Result<bool> {
        match self.oci.mount_blob(to, from, digest.as_ref()).await {
            Ok(()) => Ok(true),
            Err(e) => {
                let err = oci_error(
                    e,
                    &format!("mount of {digest} from {}", from.whole()),
                    to.resolve_registry(),
                );
                if err.code() == ExitCode::Unreachable {
                    return Err(err);
                }
                tracing::debug!("not mounted, copying instead: {err}");
                Ok(false)
            }
        }
    }

    /// Uploads a blob from a stream of known digest and size: one POST, one streamed PUT.
    pub async fn upload(
        &self,
        repo: &Reference,
        digest: &Digest,
        size: u64,
        body: ByteStream,
    ) -> Result<()> {
        let body = body.map_err(OciDistributionError::IoError);
        self.oci
            .push_blob_stream(repo, body, digest.as_ref(), Some(size))
            .await
            .map(|_| ())
            .map_err(|e| {
                oci_error(
                    e,
                    &format!("cannot upload blob {digest} to {}", repo.whole()),
                    repo.resolve_registry(),
                )
            })
    }

    /// Writes a manifest under `repo`'s tag; the registry checks every blob it names is present.
    pub async fn put_manifest(
        &self,
        repo: &Reference,
        bytes: Bytes,
        media_type: &str,
    ) -> Result<()> {
        let ct = HeaderValue::from_str(media_type)
            .map_err(|_| Error::internal(format!("bad media type {media_type}")))?;
        self.oci
            .push_manifest_raw(repo, bytes, ct)
            .await
            .map(|_| ())
            .map_err(|e| {
                oci_error(
                    e,
                    &format!("cannot write manifest {}", repo.whole()),
                    repo.resolve_registry(),
                )
            })
    }

    fn header_for(&self, host: &str, repository: &str) -> Option<HeaderValue> {
        self.headers
            .lock()
            .expect("headers lock")
            .get(&(host.to_string(), repository.to_string()))
            .cloned()
    }
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

/// The innermost cause of an error chain, in plain words: what the OS or TLS library said.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current: &(dyn std::error::Error + 'static) = err;
    let mut io_reason = None;
    loop {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            io_reason = Some(crate::error::os_reason(io));
        }
        match current.source() {
            Some(next) => current = next,
            None => break,
        }
    }
    io_reason.unwrap_or_else(|| {
        let text = current.to_string();
        text.split(" for url (").next().unwrap_or(&text).to_string()
    })
}

/// A failure before any HTTP answer: DNS, connection, TLS or timeout.
fn transport_error(err: &reqwest::Error, host: &str) -> Error {
    let cause = root_cause(err);
    if err.is_timeout() {
        return Error::new(
            ExitCode::Unreachable,
            format!("registry {host} did not answer in time ({cause})"),
        );
    }
    let tls = {
        let lower = cause.to_lowercase();
        lower.contains("certificate") || lower.contains("tls") || lower.contains("corrupt message")
    };
    if tls {
        return Error::new(
            ExitCode::Unreachable,
            format!(
                "TLS with registry {host} failed: {cause} (a registry that speaks plain HTTP needs --insecure)"
            ),
        );
    }
    if err.is_connect() || err.is_request() {
        return Error::new(
            ExitCode::Unreachable,
            format!("cannot reach registry {host}: {cause}"),
        );
    }
    Error::new(
        ExitCode::Registry,
        format!("talking to registry {host} failed: {cause}"),
    )
}

/// A registry's error answer, worded from its status and its JSON error body (spec "Error Codes").
fn status_error(status: StatusCode, body: &str, action: &str, host: &str) -> Error {
    let detail = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let first = v.get("errors")?.as_array()?.first()?.clone();
            let code = first.get("code")?.as_str()?.to_string();
            let message = first
                .get("message")
                .and_then(|m| m.as_str())
                .unwrap_or("")
                .to_string();
            Some(if message.is_empty() {
                code
            } else {
                format!("{code}: {message}")
            })
        })
        .unwrap_or_else(|| {
            body.lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(160)
                .collect()
        });
    let code = match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ExitCode::Auth,
        StatusCode::NOT_FOUND => ExitCode::NotFound,
        _ => ExitCode::Registry,
    };
    let hint = match status {
        StatusCode::UNAUTHORIZED => " (check the credentials for this registry)",
        StatusCode::FORBIDDEN => " (the credentials are valid but not allowed to do this)",
        _ => "",
    };
    let detail = if detail.is_empty() {
        String::new()
    } else {
        format!(", {detail}")
    };
    Error::new(
        code,
        format!("{action}: registry {host} answered {status}{detail}{hint}"),
    )
}

/// Words an `oci-client` failure the same way as [`status_error`] and [`transport_error`].
fn oci_error(err: OciDistributionError, action: &str, host: &str) -> Error {
    match err {
        OciDistributionError::RequestError(e) => {
            if let Some(status) = e.status() {
                status_error(status, "", action, host)
            } else {
                transport_error(&e, host).context(action)
            }
        }
        OciDistributionError::UnauthorizedError { .. } => {
            status_error(StatusCode::UNAUTHORIZED, "", action, host)
        }
        OciDistributionError::ServerError { code, message, .. } => status_error(
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &message,
            action,
            host,
        ),
        OciDistributionError::RegistryError { envelope, .. } => {
            let status = match envelope.errors.first().map(|e| &e.code) {
                Some(OciErrorCode::Unauthorized) => StatusCode::UNAUTHORIZED,
                Some(OciErrorCode::Denied) => StatusCode::FORBIDDEN,
                Some(
                    OciErrorCode::ManifestUnknown
                    | OciErrorCode::NameUnknown
                    | OciErrorCode::BlobUnknown
                    | OciErrorCode::NotFound,
                ) => StatusCode::NOT_FOUND,
                Some(OciErrorCode::Toomanyrequests) => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::BAD_REQUEST,
            };
            let body = serde_json::to_string(&envelope).unwrap_or_default();
            status_error(status, &body, action, host)
        }
        OciDistributionError::DigestError(e) => Error::image(format!("{action}: {e}")),
        OciDistributionError::IoError(e) => {
            Error::new(ExitCode::Registry, format!("{action}: {}", root_cause(&e)))
        }
        other => Error::new(
            ExitCode::Registry,
            format!("{action}: {}", root_cause(&other)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_is_used_except_on_loopback_or_when_insecure() {
        let hosts = ["registry.example.com", "127.0.0.1:5000", "localhost:5000"];
        let strict = Registry::new(&hosts, false).unwrap();
        assert_eq!(strict.scheme("registry.example.com"), "https");
        assert_eq!(strict.scheme("10.1.2.3:5000"), "https");
        assert_eq!(strict.scheme("127.0.0.1:5000"), "http");
        assert_eq!(strict.scheme("localhost:5000"), "http");
        let insecure = Registry::new(&hosts, true).unwrap();
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

    #[test]
    fn registry_error_body_is_worded_with_code_and_message() {
        let body = r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"9"}}]}"#;
        let err = status_error(
            StatusCode::NOT_FOUND,
            body,
            "cannot read manifest a:9",
            "reg:5000",
        );
        assert_eq!(
            err.to_string(),
            "cannot read manifest a:9: registry reg:5000 answered 404 Not Found, MANIFEST_UNKNOWN: manifest unknown"
        );
        assert_eq!(err.code(), ExitCode::NotFound);
    }

    #[test]
    fn denied_is_an_auth_failure_with_a_hint() {
        let err = status_error(StatusCode::FORBIDDEN, "", "cannot upload", "reg");
        assert_eq!(err.code(), ExitCode::Auth);
        assert!(err
            .to_string()
            .ends_with("(the credentials are valid but not allowed to do this)"));
    }
}
