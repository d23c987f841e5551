//! A token service for distribution's `auth.token` (the docker registry token spec): checks basic
//! credentials, grants what it is asked for (pull only, for anonymous callers), and signs an RS256
//! JWT with the `openssl` CLI using a certificate the registry trusts. It records every scope set
//! it was asked for, so tests can see what layerup requested.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use base64::Engine as _;

use super::{require, run, Registry, RegistryOptions};

pub const SERVICE: &str = "layerup-test-registry";
/// The OAuth2 refresh token (a docker config's `identitytoken`) the service takes.
pub const REFRESH: &str = "refresh-0123456789abcdef";
pub const ISSUER: &str = "layerup-test-issuer";

/// A form's fields, in order.
pub type Form = Vec<(String, String)>;

pub struct TokenServer {
    pub realm: String,
    pub cert: PathBuf,
    /// The `scope` parameters of each token request, in order.
    pub requests: Arc<Mutex<Vec<Vec<String>>>>,
    /// Grant only the first scope of a request, as token services may ("grant less than asked").
    pub partial: Arc<std::sync::atomic::AtomicBool>,
    /// The form fields of each OAuth2 request (POST), in order.
    pub posts: Arc<Mutex<Vec<Form>>>,
    _dir: tempfile::TempDir,
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn decode_query(v: &str) -> String {
    let bytes = v.replace('+', " ").into_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) =
                u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or(""), 16)
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

impl TokenServer {
    pub fn start(user: &str, password: &str) -> Self {
        require("openssl", "openssl");
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        let cert = dir.path().join("cert.pem");
        run(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=layerup-test-token",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let realm = format!("http://{}/token", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let partial = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let posts = Arc::new(Mutex::new(Vec::new()));
        let (key_c, cert_c, req_c, partial_c, posts_c) = (
            key.clone(),
            cert.clone(),
            requests.clone(),
            partial.clone(),
            posts.clone(),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut first = String::new();
                if reader.read_line(&mut first).is_err() {
                    continue;
                }
                let mut authorization = None;
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':') {
                        if k.eq_ignore_ascii_case("authorization") {
                            authorization = Some(v.trim().to_string());
                        }
                        if k.eq_ignore_ascii_case("content-length") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                }
                let target = first.split(' ').nth(1).unwrap_or("");
                // OAuth2 (distribution's oauth.md): a form with a refresh token, scopes
                // separated by spaces, answered with `access_token`.
                if first.starts_with("POST ") {
                    let mut body = vec![0; length];
                    let _ = std::io::Read::read_exact(&mut reader, &mut body);
                    let fields: Vec<(String, String)> = String::from_utf8_lossy(&body)
                        .split('&')
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, v)| (decode_query(k), decode_query(v)))
                        .collect();
                    posts_c.lock().unwrap().push(fields.clone());
                    let field = |name: &str| {
                        fields
                            .iter()
                            .find(|(k, _)| k == name)
                            .map(|(_, v)| v.clone())
                            .unwrap_or_default()
                    };
                    let scopes: Vec<String> =
                        field("scope").split(' ').map(str::to_string).collect();
                    let (status, body) = if field("grant_type") == "refresh_token"
                        && field("refresh_token") == REFRESH
                    {
                        let t = token_body(&key_c, &cert_c, "oauth-user", &scopes, true);
                        let t: serde_json::Value = serde_json::from_str(&t).unwrap();
                        let body = serde_json::json!({
                            "access_token": t["token"], "expires_in": 300,
                            "scope": field("scope"),
                        });
                        ("200 OK", body.to_string())
                    } else {
                        (
                            "400 Bad Request",
                            r#"{"error":"invalid_grant"}"#.to_string(),
                        )
                    };
                    let _ = write!(conn, "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                    continue;
                }
                let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
                let scopes: Vec<String> = query
                    .split('&')
                    .filter_map(|kv| kv.strip_prefix("scope="))
                    .map(decode_query)
                    .collect();
                req_c.lock().unwrap().push(scopes.clone());
                let scopes: Vec<String> = if partial_c.load(std::sync::atomic::Ordering::SeqCst) {
                    scopes.into_iter().take(1).collect()
                } else {
                    scopes
                };
                let (status, body) = match authorization.as_deref() {
                    Some(a) if a == expected => (
                        "200 OK",
                        token_body(&key_c, &cert_c, user_of(&expected), &scopes, true),
                    ),
                    Some(_) => (
                        "401 Unauthorized",
                        r#"{"details":"bad credentials"}"#.to_string(),
                    ),
                    None => ("200 OK", token_body(&key_c, &cert_c, "", &scopes, false)),
                };
                let _ = write!(conn, "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
            }
        });
        TokenServer {
            realm,
            cert,
            requests,
            partial,
            posts,
            _dir: dir,
        }
    }

    /// A registry that trusts this token service (distribution `auth.token`).
    pub fn registry(&self) -> Registry {
        Registry::start_with(RegistryOptions {
            htpasswd: None,
            token: Some((
                self.realm.clone(),
                SERVICE.into(),
                ISSUER.into(),
                self.cert.clone(),
            )),
        })
    }
}

fn user_of(_basic: &str) -> &'static str {
    "authenticated-user"
}

/// Grants each `repository:NAME:ACTIONS` scope; anonymous callers get `pull` only.
fn token_body(
    key: &Path,
    cert: &Path,
    subject: &str,
    scopes: &[String],
    authenticated: bool,
) -> String {
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .flat_map(|s| s.split(' '))
        .filter_map(|s| {
            let mut parts = s.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            let actions: Vec<&str> = actions
                .split(',')
                .filter(|a| authenticated || *a == "pull")
                .collect();
            Some(serde_json::json!({"type": kind, "name": name, "actions": actions}))
        })
        .collect();
    let pem = std::fs::read_to_string(cert).unwrap();
    let der_b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [der_b64]});
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": subject, "aud": SERVICE, "exp": now + 300, "nbf": now - 10,
        "iat": now, "jti": format!("{now}-{}", scopes.len()), "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let out = super::output_with_input(
        Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(key),
        signing_input.as_bytes(),
    );
    assert!(out.status.success(), "openssl could not sign");
    let token = format!("{signing_input}.{}", b64url(&out.stdout));
    serde_json::json!({"token": token, "expires_in": 300}).to_string()
}
