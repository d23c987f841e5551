//! A registry front: an HTTP/1.1 server in front of the tests' real `distribution` registry that
//! answers as one hosted registry does where it differs from `distribution` in documented ways
//! (docs/registries.md names the public source of each). The front does the authentication
//! (the registry behind it is open), issues and checks its own tokens, and rewrites requests and
//! answers; blobs and manifests are still stored and checked by the real registry, so what a
//! test reads back there is what a real push left.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;

/// One hosted registry's documented differences from `distribution`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Ecr,
    Gar,
    Acr,
    Ghcr,
    Hub,
    Harbor,
    Quay,
    Artifactory,
    Nexus,
    Gitlab,
    Zot,
}

impl Mode {
    /// The user name a developer logs in with there.
    pub fn user(self) -> &'static str {
        match self {
            Mode::Ecr => "AWS",
            Mode::Gar => "oauth2accesstoken",
            Mode::Acr => "00000000-0000-0000-0000-000000000000",
            Mode::Harbor => "robot$layerup+ci",
            Mode::Quay => "layerup+robot",
            _ => "layerup",
        }
    }

    pub fn password(self) -> &'static str {
        "s3cret-for-the-front"
    }

    /// Basic authentication only (no token service).
    fn basic(self) -> bool {
        matches!(
            self,
            Mode::Ecr | Mode::Artifactory | Mode::Nexus | Mode::Zot
        )
    }

    /// The token service is on a host of its own (auth.docker.io, GAR's, GitLab's).
    fn realm_elsewhere(self) -> bool {
        matches!(self, Mode::Hub | Mode::Gar | Mode::Gitlab)
    }

    /// Blob reads are redirected to storage on another host (S3, GCS).
    fn redirects_blobs(self) -> bool {
        matches!(self, Mode::Ecr | Mode::Gar)
    }

    /// Upload `Location`s are relative.
    fn relative_locations(self) -> bool {
        matches!(self, Mode::Nexus | Mode::Acr | Mode::Quay)
    }
}

/// What crossed the front: method, path with query, status answered.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub status: u16,
    /// Which listener: "registry", "token" or "storage".
    pub at: &'static str,
    /// An `Authorization` header came with it.
    pub authorized: bool,
    pub when: std::time::Instant,
}

#[derive(Clone)]
struct Grant {
    /// (repository, actions) granted.
    scopes: Vec<(String, String)>,
    /// Requests left before it expires (a deterministic stand-in for `expires_in`).
    left: u32,
}

#[derive(Default)]
struct State {
    tokens: HashMap<String, Grant>,
    next: u64,
    /// GAR: single-use upload paths the front handed out, to the registry's location.
    sessions: HashMap<String, String>,
    /// ECR: the first `Range` each upload session answered (it never advances after).
    stale_range: HashMap<String, String>,
    /// ECR: upload sessions whose last PATCH was under 5 MiB.
    small_chunk: HashMap<String, bool>,
    /// Docker Hub: the one 429 was sent.
    limited: bool,
    seen: Vec<Seen>,
}

struct Shared {
    mode: Mode,
    upstream: String,
    host: String,
    token_host: String,
    storage_host: String,
    state: Mutex<State>,
    /// ECR's tag immutability: a tag once written is never written again, even to the same
    /// digest (400 `TAG_INVALID`).
    immutable: AtomicBool,
    /// ECR before it took OCI 1.1: a manifest with a `subject` is refused (405).
    no_subject: AtomicBool,
}

pub struct Front {
    pub host: String,
    pub mode: Mode,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    hosts: Vec<String>,
}

/// Requests a token of Docker Hub or GHCR is good for before it expires.
pub const TOKEN_USES: u32 = 12;

impl Front {
    pub fn start(upstream: &str, mode: Mode) -> Front {
        let listeners: Vec<TcpListener> = (0..3)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let hosts: Vec<String> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().to_string())
            .collect();
        let shared = Arc::new(Shared {
            mode,
            upstream: upstream.to_string(),
            host: hosts[0].clone(),
            token_host: if mode.realm_elsewhere() {
                hosts[1].clone()
            } else {
                hosts[0].clone()
            },
            storage_host: hosts[2].clone(),
            state: Mutex::new(State::default()),
            immutable: AtomicBool::new(false),
            no_subject: AtomicBool::new(false),
        });
        let stop = Arc::new(AtomicBool::new(false));
        for (listener, at) in listeners.into_iter().zip(["registry", "token", "storage"]) {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let shared = shared.clone();
                    std::thread::spawn(move || {
                        let _ = serve(conn, &shared, at);
                    });
                }
            });
        }
        Front {
            host: hosts[0].clone(),
            mode,
            shared,
            stop,
            hosts,
        }
    }

    pub fn reference(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.host)
    }

    /// Turns ECR's tag immutability on.
    pub fn immutable_tags(&self) {
        self.shared.immutable.store(true, Ordering::SeqCst);
    }

    /// Turns ECR's old refusal of manifests with a `subject` on.
    pub fn no_subject(&self) {
        self.shared.no_subject.store(true, Ordering::SeqCst);
    }

    /// Forgets every token it issued (a restart, or tokens revoked): each is refused from now.
    pub fn forget_tokens(&self) {
        self.shared.state.lock().unwrap().tokens.clear();
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.shared.state.lock().unwrap().seen.clone()
    }

    /// A docker config (`config.json`) with this front's credentials, as `docker login` writes.
    pub fn docker_config(&self) -> serde_json::Value {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            self.mode.user(),
            self.mode.password()
        ));
        serde_json::json!({ "auths": { &self.host: { "auth": auth } } })
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for h in &self.hosts {
            let _ = TcpStream::connect(h);
        }
    }
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }

    fn repo(&self) -> Option<String> {
        let rest = self.path.strip_prefix("/v2/")?;
        let rest = rest.split('?').next()?;
        ["/blobs/", "/manifests/", "/tags/", "/referrers/"]
            .iter()
            .find_map(|k| rest.find(k).map(|i| rest[..i].to_string()))
    }

    fn query(&self, name: &str) -> Option<String> {
        super::query_param(&self.path, name)
    }

    fn is_upload(&self) -> bool {
        self.path.contains("/blobs/uploads/") || self.path.starts_with("/upload/")
    }
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn new(status: u16, body: &str) -> Answer {
        Answer {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    fn error(status: u16, code: &str, message: &str) -> Answer {
        Answer::new(
            status,
            &format!(r#"{{"errors":[{{"code":"{code}","message":"{message}"}}]}}"#),
        )
    }

    fn with(mut self, k: &str, v: String) -> Answer {
        self.headers.push((k.to_string(), v));
        self
    }

    fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }

    fn set_header(&mut self, name: &str, value: Option<String>) {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        if let Some(v) = value {
            self.headers.push((name.to_string(), v));
        }
    }
}

fn header_in<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

type Headers = Vec<(String, String)>;

/// A request's or answer's head (`proxy::read_head`), its headers as (name, value).
fn read_message(r: &mut impl BufRead) -> std::io::Result<Option<(String, Headers)>> {
    Ok(super::proxy::read_head(r)?.map(|(first, lines)| {
        let headers = lines
            .iter()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        (first, headers)
    }))
}

fn serve(conn: TcpStream, shared: &Shared, at: &'static str) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let Some((first, headers)) = read_message(&mut reader)? else {
        return Ok(());
    };
    let mut parts = first.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    assert!(
        header_in(&headers, "transfer-encoding").is_none(),
        "the front takes bodies with a Content-Length only: {first}"
    );
    let len: usize = header_in(&headers, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;
    let req = Request {
        method,
        path,
        headers,
        body,
    };
    let answer = match at {
        "token" => token(shared, &req),
        "storage" => storage(shared, &req),
        _ if req.path.starts_with("/token") && shared.token_host == shared.host => {
            token(shared, &req)
        }
        _ => registry(shared, &req),
    };
    shared.state.lock().unwrap().seen.push(Seen {
        method: req.method.clone(),
        path: req.path.clone(),
        status: answer.status,
        at,
        authorized: req.header("authorization").is_some(),
        when: std::time::Instant::now(),
    });
    let mut conn = conn;
    let mut head = format!("HTTP/1.1 {} Front\r\n", answer.status);
    for (k, v) in &answer.headers {
        if !matches!(
            k.to_ascii_lowercase().as_str(),
            "content-length" | "connection" | "transfer-encoding" | "keep-alive"
        ) {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    let length = if req.method == "HEAD" {
        answer
            .header("content-length")
            .map_or_else(|| answer.body.len().to_string(), str::to_string)
    } else {
        answer.body.len().to_string()
    };
    head.push_str(&format!(
        "Content-Length: {length}\r\nConnection: close\r\n\r\n"
    ));
    conn.write_all(head.as_bytes())?;
    if req.method != "HEAD" {
        conn.write_all(&answer.body)?;
    }
    Ok(())
}

/// Sends `req` on to the registry behind (path and headers as given), and reads its answer.
fn forward(shared: &Shared, method: &str, path: &str, req: &Request) -> Answer {
    let mut up = TcpStream::connect(&shared.upstream).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    for (k, v) in &req.headers {
        if !matches!(
            k.to_ascii_lowercase().as_str(),
            "connection" | "keep-alive" | "authorization" | "content-length"
        ) {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        req.body.len()
    ));
    up.write_all(head.as_bytes()).unwrap();
    up.write_all(&req.body).unwrap();
    let mut r = BufReader::new(up);
    let (status_line, headers) = read_message(&mut r).unwrap().expect("registry answered");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(502);
    let mut body = Vec::new();
    if method != "HEAD" {
        r.read_to_end(&mut body).unwrap();
    }
    Answer {
        status,
        headers,
        body,
    }
}

fn basic_ok(mode: Mode, req: &Request) -> bool {
    let want = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        mode.user(),
        mode.password()
    ));
    req.header("authorization") == Some(&format!("Basic {want}"))
}

/// The token service: GET with basic credentials (or none: pull only), scopes as asked.
fn token(shared: &Shared, req: &Request) -> Answer {
    let mode = shared.mode;
    if req.method == "POST" && mode == Mode::Gar {
        return Answer::new(405, "method not allowed");
    }
    let authenticated = basic_ok(mode, req);
    if req.header("authorization").is_some() && !authenticated {
        return Answer::new(401, r#"{"details":"incorrect username or password"}"#);
    }
    let q = req.path.split_once('?').map_or("", |(_, q)| q);
    let scopes: Vec<(String, String)> = q
        .split('&')
        .filter_map(|kv| kv.strip_prefix("scope="))
        .map(|s| {
            s.replace("%3A", ":")
                .replace("%2F", "/")
                .replace("%2C", ",")
        })
        .filter_map(|s| {
            let s = s.strip_prefix("repository:")?;
            let (repo, actions) = s.rsplit_once(':')?;
            Some((repo.to_string(), actions.to_string()))
        })
        .collect();
    // hub-feedback#2215: more than one repository in a request was answered 400.
    if mode == Mode::Hub && scopes.len() > 1 {
        return Answer::new(400, r#"{"details":"invalid scope"}"#);
    }
    let mut granted: Vec<(String, String)> = scopes
        .into_iter()
        .map(|(r, a)| {
            if authenticated {
                (r, a)
            } else {
                (r, "pull".into())
            }
        })
        .collect();
    // ACR and Harbor grant less than asked: the first repository only.
    if matches!(mode, Mode::Acr | Mode::Harbor) {
        granted.truncate(1);
    }
    let mut st = shared.state.lock().unwrap();
    st.next += 1;
    let token = format!("front-token-{}-{}", st.next, std::process::id());
    st.tokens.insert(
        token.clone(),
        Grant {
            scopes: granted,
            left: if matches!(mode, Mode::Hub | Mode::Ghcr) {
                TOKEN_USES
            } else {
                u32::MAX
            },
        },
    );
    let body = match mode {
        Mode::Acr | Mode::Ghcr => format!(r#"{{"access_token":"{token}"}}"#),
        Mode::Hub => format!(
            r#"{{"token":"{token}","access_token":"{token}","expires_in":300,"issued_at":"2026-12-03T00:00:00Z"}}"#
        ),
        _ => format!(r#"{{"token":"{token}","expires_in":3600}}"#),
    };
    Answer::new(200, &body)
}

/// Blob storage on another host (S3, GCS): refuses any `Authorization` it was not made for.
fn storage(shared: &Shared, req: &Request) -> Answer {
    if req.header("authorization").is_some() {
        return Answer::new(
            400,
            "<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism allowed</Message></Error>",
        );
    }
    let (Some(repo), Some(digest)) = (req.query("repo"), req.query("digest")) else {
        return Answer::new(404, "no such object");
    };
    let path = format!("/v2/{repo}/blobs/{digest}");
    let mut plain = Request {
        method: req.method.clone(),
        path: path.clone(),
        headers: req
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("range"))
            .cloned()
            .collect(),
        body: Vec::new(),
    };
    plain.headers.push(("Host".into(), shared.upstream.clone()));
    forward(shared, &req.method, &path, &plain)
}

/// What a request to `repo` needs: pull to read, push to write.
fn needs(req: &Request) -> &'static str {
    if matches!(req.method.as_str(), "GET" | "HEAD") {
        "pull"
    } else {
        "push"
    }
}

/// `None`: allowed. Else the answer refusing it.
fn authorize(shared: &Shared, req: &Request) -> Option<Answer> {
    let mode = shared.mode;
    if mode.basic() {
        if basic_ok(mode, req) {
            return None;
        }
        let mut a = Answer::new(401, "Not Authorized\n")
            .with("WWW-Authenticate", format!("Basic realm=\"{mode:?}\""));
        a.set_header("Content-Type", Some("text/plain; charset=utf-8".into()));
        return Some(a);
    }
    let realm = format!("http://{}/token", shared.token_host);
    let repo = req.repo();
    let challenge = |scope: Option<&str>| {
        let mut c = format!("Bearer realm=\"{realm}\",service=\"front-{mode:?}\"");
        // GAR challenges name no scope.
        if let (Some(s), false) = (scope, mode == Mode::Gar) {
            c.push_str(&format!(",scope=\"{s}\""));
        }
        Answer::error(401, "UNAUTHORIZED", "authentication required").with("WWW-Authenticate", c)
    };
    let presented = req
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::to_string);
    let Some(token) = presented else {
        let scope = repo
            .as_ref()
            .map(|r| format!("repository:{r}:{}", needs(req)));
        return Some(challenge(scope.as_deref()));
    };
    let mut st = shared.state.lock().unwrap();
    let Some(grant) = st.tokens.get_mut(&token) else {
        return Some(challenge(None));
    };
    // (GHCR's chunks are exempt, so that the 4 MiB refusal is met whatever the order.)
    let exempt = mode == Mode::Ghcr && req.method == "PATCH";
    if grant.left == 0 && !exempt {
        return Some(if mode == Mode::Ghcr {
            Answer::error(403, "DENIED", "requested access to the resource is denied")
        } else {
            challenge(repo.as_deref()).with("X-Front", "expired".into())
        });
    }
    grant.left = grant.left.saturating_sub(1);
    let repo = repo?;
    let need = needs(req);
    let mut wanted = vec![(repo.clone(), need)];
    if let Some(from) = req.query("from") {
        if req.query("mount").is_some() {
            wanted.push((from, "pull"));
        }
    }
    let has = |(r, a): &(String, &str)| {
        grant
            .scopes
            .iter()
            .any(|(gr, ga)| gr == r && ga.split(',').any(|x| x == *a || x == "*"))
    };
    if wanted.iter().all(has) {
        return None;
    }
    // ACR and Harbor answer a token with too little scope by asking for basic credentials.
    if matches!(mode, Mode::Acr | Mode::Harbor) {
        return Some(
            Answer::error(401, "UNAUTHORIZED", "unauthorized to access repository")
                .with("WWW-Authenticate", format!("Basic realm=\"{mode:?}\"")),
        );
    }
    Some(challenge(Some(&format!("repository:{repo}:{need}"))))
}

fn registry(shared: &Shared, req: &Request) -> Answer {
    if let Some(refusal) = authorize(shared, req) {
        return refusal;
    }
    let mode = shared.mode;
    if let Some(a) = refuse(shared, req) {
        return a;
    }
    let mut path = req.path.clone();
    // GAR's single-use upload paths, each mapped to the registry's location.
    if mode == Mode::Gar && path.starts_with("/upload/") {
        let key = path.split('?').next().unwrap().to_string();
        let Some(real) = shared.state.lock().unwrap().sessions.remove(&key) else {
            return Answer::error(
                404,
                "BLOB_UPLOAD_UNKNOWN",
                "blob upload unknown to registry",
            );
        };
        path = match path.split_once('?') {
            Some((_, q)) if real.contains('?') => format!("{real}&{q}"),
            Some((_, q)) => format!("{real}?{q}"),
            None => real,
        };
    }
    // ECR and GAR: a mount is answered with a plain upload session.
    if matches!(mode, Mode::Ecr | Mode::Gar) && req.method == "POST" && req.query("mount").is_some()
    {
        path = format!("/v2/{}/blobs/uploads/", req.repo().unwrap());
    }
    if mode.redirects_blobs() && req.method == "GET" && path.contains("/blobs/sha256:") {
        let digest = path.rsplit('/').next().unwrap().to_string();
        let url = format!(
            "http://{}/object?repo={}&digest={digest}&X-Amz-Signature=abc",
            shared.storage_host,
            req.repo().unwrap()
        );
        return Answer::new(307, "").with("Location", url);
    }
    if mode == Mode::Zot && req.path.contains("/referrers/") {
        return referrers_api(shared, req);
    }
    // zot takes a whole blob in the POST that would open an upload (`?digest=`): 201.
    let single = req.method == "POST" && req.query("mount").is_none();
    if let (Mode::Zot, true, Some(digest)) = (mode, single, req.query("digest")) {
        return single_post(shared, req, &digest);
    }
    let mut answer = forward(shared, &req.method, &path, req);
    // GitLab: a fallback tag `sha256-<hex>` that is not there resolves to the digest it names.
    let fallback = path.rsplit_once("/manifests/sha256-").map(|(_, hex)| hex);
    if let (Mode::Gitlab, 404, Some(hex)) = (mode, answer.status, fallback) {
        if !hex.contains('.') && matches!(req.method.as_str(), "GET" | "HEAD") {
            let subject = path.replace("/manifests/sha256-", "/manifests/sha256:");
            answer = forward(shared, &req.method, &subject, req);
        }
    }
    if mode == Mode::Zot && req.method == "PUT" && answer.status == 201 {
        if let Some(subject) = listed_by_api(shared, req) {
            answer.set_header("OCI-Subject", Some(subject));
        }
    }
    rewrite(shared, req, &mut answer);
    answer
}

/// zot's single-POST upload: a session opened behind, the body put there whole.
fn single_post(shared: &Shared, req: &Request, digest: &str) -> Answer {
    let repo = req.repo().unwrap();
    let opened = upstream(
        shared,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        ("Accept", "*/*"),
        Vec::new(),
    );
    let loc = opened.header("Location").unwrap_or_default().to_string();
    let loc = loc
        .split_once("/v2/")
        .map(|(_, p)| format!("/v2/{p}"))
        .unwrap_or(loc);
    let sep = if loc.contains('?') { '&' } else { '?' };
    let put = format!("{loc}{sep}digest={}", digest.replace(':', "%3A"));
    let done = upstream(
        shared,
        "PUT",
        &put,
        ("Content-Type", "application/octet-stream"),
        req.body.clone(),
    );
    if done.status != 201 {
        return done;
    }
    Answer::new(201, "").with("Location", format!("/v2/{repo}/blobs/{digest}"))
}

/// zot's referrers API, kept by the front in the registry behind as the fallback tag's index
/// (`GET /v2/<repo>/referrers/<digest>`: that index, or an empty one).
fn referrers_api(shared: &Shared, req: &Request) -> Answer {
    let repo = req.repo().unwrap_or_default();
    let digest = req
        .path
        .rsplit('/')
        .next()
        .unwrap_or("")
        .split('?')
        .next()
        .unwrap_or("");
    let tag = digest.replace(':', "-");
    let index = upstream_manifest(shared, &repo, &tag).unwrap_or_else(|| {
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#
            .to_vec()
    });
    let mut a = Answer::new(200, "");
    a.body = index;
    a.set_header(
        "Content-Type",
        Some("application/vnd.oci.image.index.v1+json".into()),
    );
    a
}

/// A request of the front's own to the registry behind.
fn upstream(
    shared: &Shared,
    method: &str,
    path: &str,
    header: (&str, &str),
    body: Vec<u8>,
) -> Answer {
    let req = Request {
        method: method.into(),
        path: path.into(),
        headers: vec![
            ("Host".into(), shared.upstream.clone()),
            (header.0.into(), header.1.into()),
        ],
        body,
    };
    forward(shared, method, path, &req)
}

const MANIFEST_TYPES: &str =
    "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json";

/// A manifest the registry behind holds under `reference`, as bytes.
fn upstream_manifest(shared: &Shared, repo: &str, reference: &str) -> Option<Vec<u8>> {
    let path = format!("/v2/{repo}/manifests/{reference}");
    let a = upstream(shared, "GET", &path, ("Accept", MANIFEST_TYPES), Vec::new());
    (a.status == 200).then_some(a.body)
}

/// zot lists a manifest with a `subject` by itself: the front adds it to the index it keeps
/// for that subject. The subject's digest, when there was one.
fn listed_by_api(shared: &Shared, req: &Request) -> Option<String> {
    let doc: serde_json::Value = serde_json::from_slice(&req.body).ok()?;
    let subject = doc.get("subject")?.get("digest")?.as_str()?.to_string();
    let repo = req.repo()?;
    let tag = subject.replace(':', "-");
    let mut index: serde_json::Value = upstream_manifest(shared, &repo, &tag)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| {
            serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []})
        });
    let mut entry = serde_json::json!({
        "mediaType": doc.get("mediaType").cloned().unwrap_or_default(),
        "digest": super::sha256(&req.body),
        "size": req.body.len(),
    });
    if let Some(t) = doc.get("artifactType") {
        entry["artifactType"] = t.clone();
    }
    index["manifests"].as_array_mut()?.push(entry);
    let bytes = serde_json::to_vec(&index).unwrap();
    let path = format!("/v2/{repo}/manifests/{tag}");
    let index_type = ("Content-Type", "application/vnd.oci.image.index.v1+json");
    (upstream(shared, "PUT", &path, index_type, bytes).status == 201).then_some(subject)
}

/// Requests the emulated registry refuses before the registry behind sees them.
fn refuse(shared: &Shared, req: &Request) -> Option<Answer> {
    let mode = shared.mode;
    let upload = req.is_upload();
    if req.method == "PATCH" && upload {
        if let Some(range) = req.header("content-range") {
            let ok = range
                .split_once('-')
                .is_some_and(|(a, b)| a.parse::<u64>().is_ok() && b.parse::<u64>().is_ok());
            if !ok {
                return Some(Answer::error(
                    416,
                    "BLOB_UPLOAD_INVALID",
                    "bad Content-Range",
                ));
            }
        }
        match mode {
            Mode::Gar => {
                return Some(Answer::error(
                    405,
                    "UNSUPPORTED",
                    "chunked uploads are not supported; use a monolithic upload",
                ))
            }
            Mode::Ghcr if req.body.len() > 4 << 20 => {
                return Some(Answer::error(
                    416,
                    "REQUESTED_RANGE_NOT_SATISFIABLE",
                    "the request body is too large and exceeds the maximum permissible limit of 4.00MiB",
                ))
            }
            Mode::Ecr => {
                let key = session_key(&req.path);
                let mut st = shared.state.lock().unwrap();
                if st.small_chunk.get(&key) == Some(&true) {
                    return Some(Answer::error(
                        400,
                        "BLOB_UPLOAD_INVALID",
                        "the previous part was smaller than 5 MiB",
                    ));
                }
                st.small_chunk
                    .insert(key, req.body.len() < 5 << 20);
            }
            _ => {}
        }
    }
    // buildx#196: Artifactory answers a PUT that carries the blob with 404.
    if mode == Mode::Artifactory && req.method == "PUT" && upload && !req.body.is_empty() {
        return Some(Answer::error(
            404,
            "BLOB_UNKNOWN",
            "blob unknown to registry",
        ));
    }
    let manifest = req.path.contains("/manifests/");
    if mode == Mode::Nexus
        && req.method == "PUT"
        && manifest
        && req.header("content-length").is_none()
    {
        return Some(Answer::new(411, "Length Required"));
    }
    if mode == Mode::Zot && req.method == "PUT" && manifest {
        let ct = req.header("content-type").unwrap_or("");
        if ct.contains("docker") {
            // zot#3104, zot#724: OCI only; a Docker manifest is "manifest invalid".
            return Some(Answer::error(400, "MANIFEST_INVALID", "manifest invalid"));
        }
    }
    let with_subject = || {
        serde_json::from_slice::<serde_json::Value>(&req.body)
            .is_ok_and(|d| d.get("subject").is_some())
    };
    if mode == Mode::Ecr
        && req.method == "PUT"
        && manifest
        && shared.no_subject.load(Ordering::SeqCst)
        && with_subject()
    {
        return Some(Answer::error(
            405,
            "UNSUPPORTED",
            "the subject field is not supported",
        ));
    }
    if mode == Mode::Ecr
        && req.method == "PUT"
        && manifest
        && shared.immutable.load(Ordering::SeqCst)
    {
        let reference = req.path.rsplit('/').next().unwrap_or("");
        if !reference.starts_with("sha256:") {
            let accept = ("Accept", req.header("content-type").unwrap_or("*/*"));
            if upstream(shared, "HEAD", &req.path, accept, Vec::new()).status == 200 {
                return Some(Answer::error(
                    400,
                    "TAG_INVALID",
                    &format!("The image tag '{reference}' already exists and cannot be overwritten because the repository is immutable."),
                ));
            }
        }
    }
    if mode == Mode::Hub && req.method == "GET" && manifest {
        let mut st = shared.state.lock().unwrap();
        if !st.limited {
            st.limited = true;
            let when = std::time::SystemTime::now() + Duration::from_secs(2);
            return Some(
                Answer::error(
                    429,
                    "TOOMANYREQUESTS",
                    "You have reached your pull rate limit.",
                )
                .with("Retry-After", httpdate::fmt_http_date(when))
                .with("RateLimit-Limit", "100;w=21600".into())
                .with("RateLimit-Remaining", "0;w=21600".into()),
            );
        }
    }
    if mode == Mode::Harbor && req.method == "POST" && req.query("mount").is_some() {
        return Some(
            Answer::error(401, "UNAUTHORIZED", "project prod not found")
                .with("WWW-Authenticate", "Basic realm=\"harbor\"".into()),
        );
    }
    if matches!(mode, Mode::Ghcr | Mode::Gitlab) && req.path.contains("/referrers/") {
        return Some(Answer::error(404, "NOT_FOUND", "page not found"));
    }
    None
}

fn session_key(path: &str) -> String {
    path.split('?').next().unwrap_or(path).to_string()
}

/// The registry's answer as the emulated registry would have worded it.
fn rewrite(shared: &Shared, req: &Request, a: &mut Answer) {
    let mode = shared.mode;
    if let Some(loc) = a.header("location").map(str::to_string) {
        let path = loc
            .split_once(&shared.host)
            .map_or(loc.clone(), |(_, p)| p.to_string());
        let new = if mode == Mode::Gar && (req.is_upload() || path.contains("/blobs/uploads/")) {
            let mut st = shared.state.lock().unwrap();
            st.next += 1;
            let key = format!(
                "/upload/{}/{}",
                req.repo().unwrap_or_default().replace('/', "-"),
                st.next
            );
            st.sessions.insert(key.clone(), path);
            format!("http://{}{key}", shared.host)
        } else if mode.relative_locations() {
            path
        } else {
            loc
        };
        a.set_header("Location", Some(new));
    }
    if mode == Mode::Ecr && req.method == "PATCH" && a.status == 202 {
        a.status = 201;
        let key = session_key(&req.path);
        let mut st = shared.state.lock().unwrap();
        let first = st
            .stale_range
            .entry(key)
            .or_insert_with(|| a.header("range").unwrap_or("0-0").to_string())
            .clone();
        a.set_header("Range", Some(first));
    }
    if mode == Mode::Ecr && req.path.contains("/manifests/") {
        a.set_header("Docker-Content-Digest", None);
    }
    if mode == Mode::Harbor && a.status == 404 && req.path.contains("/manifests/") {
        a.body = br#"{"errors":[{"code":"UNKNOWN","message":"artifact not found"}]}"#.to_vec();
        a.set_header("Content-Length", Some(a.body.len().to_string()));
    }
}
