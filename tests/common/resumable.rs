//! An in-process registry that implements what distribution 2.8 does not: resumable uploads as
//! the OCI distribution spec describes them. A PATCH cut off mid-body keeps the bytes that
//! arrived, and `GET` on the upload answers `204` with the `Range` held, so a client can go on
//! from there. Only the endpoints a push or copy uses; everything in memory.

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use super::sha256;

#[derive(Default)]
struct Store {
    blobs: HashMap<String, Vec<u8>>,
    uploads: HashMap<String, Vec<u8>>,
    /// (repository, tag or digest) → (bytes, media type).
    manifests: HashMap<(String, String), (Vec<u8>, String)>,
    next: u64,
}

pub struct Resumable {
    pub host: String,
    store: Arc<Mutex<Store>>,
}

impl Resumable {
    pub fn start() -> Resumable {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let store = Arc::new(Mutex::new(Store::default()));
        let s = store.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &s);
                });
            }
        });
        Resumable { host, store }
    }

    /// The blob's bytes, if the registry holds it.
    pub fn blob(&self, digest: &str) -> Option<Vec<u8>> {
        self.store.lock().unwrap().blobs.get(digest).cloned()
    }

    pub fn manifest(&self, repo: &str, reference: &str) -> Option<Vec<u8>> {
        let s = self.store.lock().unwrap();
        s.manifests
            .get(&(repo.to_string(), reference.to_string()))
            .map(|m| m.0.clone())
    }
}

fn respond(
    c: &mut TcpStream,
    status: u16,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    c.write_all(head.as_bytes())?;
    c.write_all(body)
}

fn error(c: &mut TcpStream, status: u16, code: &str) -> std::io::Result<()> {
    let body = format!(r#"{{"errors":[{{"code":"{code}","message":"{code}"}}]}}"#);
    respond(
        c,
        status,
        &[("Content-Type", "application/json".into())],
        body.as_bytes(),
    )
}

fn serve(conn: TcpStream, store: &Mutex<Store>) -> std::io::Result<()> {
    let mut r = BufReader::new(conn.try_clone()?);
    let mut c = conn;
    let (first, headers) = super::read_head(&mut r)?;
    let mut parts = first.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // Whatever arrives is kept, even when the client is cut off mid-body.
    let mut body = Vec::with_capacity(length);
    let _ = (&mut r).take(length as u64).read_to_end(&mut body);
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .map(|v| v.replace("%3A", ":").replace("%3a", ":"))
    };

    if path == "/v2/" {
        return respond(&mut c, 200, &[], b"{}");
    }
    let rest = path.strip_prefix("/v2/").unwrap_or("");
    let mut s = store.lock().unwrap();
    if let Some(i) = rest.rfind("/blobs/uploads") {
        let repo = &rest[..i];
        let id = rest[i + "/blobs/uploads".len()..].trim_start_matches('/');
        let loc = |id: &str| format!("/v2/{repo}/blobs/uploads/{id}");
        let range = |n: usize| format!("0-{}", n.saturating_sub(1));
        match method.as_str() {
            "POST" => {
                s.next += 1;
                let id = format!("u{}", s.next);
                s.uploads.insert(id.clone(), Vec::new());
                drop(s);
                return respond(
                    &mut c,
                    202,
                    &[("Location", loc(&id)), ("Range", "0-0".into())],
                    b"",
                );
            }
            "PATCH" => {
                let Some(held) = s.uploads.get_mut(id) else {
                    drop(s);
                    return error(&mut c, 404, "BLOB_UPLOAD_UNKNOWN");
                };
                let start: Option<usize> = headers
                    .get("content-range")
                    .and_then(|v| v.split('-').next()?.parse().ok());
                if start.is_some_and(|st| st != held.len()) {
                    let n = held.len();
                    drop(s);
                    return respond(&mut c, 416, &[("Range", range(n))], b"");
                }
                held.extend_from_slice(&body);
                let n = held.len();
                drop(s);
                return respond(
                    &mut c,
                    202,
                    &[("Location", loc(id)), ("Range", range(n))],
                    b"",
                );
            }
            "GET" => {
                let Some(held) = s.uploads.get(id) else {
                    drop(s);
                    return error(&mut c, 404, "BLOB_UPLOAD_UNKNOWN");
                };
                let n = held.len();
                drop(s);
                return respond(
                    &mut c,
                    204,
                    &[("Location", loc(id)), ("Range", range(n))],
                    b"",
                );
            }
            "PUT" => {
                let Some(mut held) = s.uploads.remove(id) else {
                    drop(s);
                    return error(&mut c, 404, "BLOB_UPLOAD_UNKNOWN");
                };
                held.extend_from_slice(&body);
                let want = param("digest").unwrap_or_default();
                if sha256(&held) != want {
                    drop(s);
                    return error(&mut c, 400, "DIGEST_INVALID");
                }
                s.blobs.insert(want.clone(), held);
                drop(s);
                return respond(
                    &mut c,
                    201,
                    &[
                        ("Location", format!("/v2/{repo}/blobs/{want}")),
                        ("Docker-Content-Digest", want.clone()),
                    ],
                    b"",
                );
            }
            _ => {}
        }
    }
    if let Some(i) = rest.rfind("/blobs/") {
        let d = &rest[i + "/blobs/".len()..];
        let Some(blob) = s.blobs.get(d).cloned() else {
            drop(s);
            return error(&mut c, 404, "BLOB_UNKNOWN");
        };
        drop(s);
        let body = if method == "GET" { &blob[..] } else { &[][..] };
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nDocker-Content-Digest: {d}\r\nConnection: close\r\n\r\n",
            blob.len()
        );
        c.write_all(head.as_bytes())?;
        return c.write_all(body);
    }
    if let Some(i) = rest.rfind("/manifests/") {
        let repo = rest[..i].to_string();
        let reference = rest[i + "/manifests/".len()..].to_string();
        match method.as_str() {
            "PUT" => {
                let doc: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let named = doc["config"]["digest"].as_str().into_iter().chain(
                    doc["layers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|l| l["digest"].as_str()),
                );
                for d in named {
                    if !s.blobs.contains_key(d) {
                        drop(s);
                        return error(&mut c, 400, "MANIFEST_BLOB_UNKNOWN");
                    }
                }
                let d = sha256(&body);
                let ct = headers.get("content-type").cloned().unwrap_or_default();
                s.manifests
                    .insert((repo.clone(), reference), (body.clone(), ct.clone()));
                s.manifests.insert((repo, d.clone()), (body, ct));
                drop(s);
                return respond(&mut c, 201, &[("Docker-Content-Digest", d)], b"");
            }
            "GET" | "HEAD" => {
                let Some((bytes, ct)) = s.manifests.get(&(repo, reference)).cloned() else {
                    drop(s);
                    return error(&mut c, 404, "MANIFEST_UNKNOWN");
                };
                drop(s);
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: {ct}\r\nDocker-Content-Digest: {}\r\nConnection: close\r\n\r\n",
                    bytes.len(),
                    sha256(&bytes)
                );
                c.write_all(head.as_bytes())?;
                if method == "GET" {
                    c.write_all(&bytes)?;
                }
                return Ok(());
            }
            _ => {}
        }
    }
    drop(s);
    error(&mut c, 405, "UNSUPPORTED")
}
