//! A fault-injecting HTTP/1.1 proxy between layerup and a registry: every request is forwarded
//! on a fresh upstream connection (both answers carry `Connection: close`), unless the test's rule
//! says to answer it itself, cut its body at a byte, stall its answer, or corrupt its body. It
//! counts what crossed it, so tests can say how many bytes were sent again.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request as the rule sees it.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub content_length: u64,
    /// The `Range` header, if any.
    pub range: Option<String>,
}

impl Req {
    /// A PATCH or PUT carrying blob bytes to an upload session.
    pub fn is_upload(&self) -> bool {
        matches!(self.method.as_str(), "PATCH" | "PUT")
            && self.path.contains("/blobs/uploads/")
            && self.content_length > 0
    }

    pub fn is_blob_get(&self) -> bool {
        self.method == "GET" && self.path.contains("/blobs/sha256:")
    }
}

/// What the proxy does with one request.
pub enum Fault {
    Forward,
    /// Answer with this status, headers and body; the registry never sees the request.
    Answer(u16, Vec<(&'static str, String)>, String),
    /// Forward the first `n` body bytes, then drop both connections.
    CutAt(u64),
    /// Forward the request, then hold the answer back this long before passing it on.
    Stall(Duration),
    /// Forward the request, then hold the answer back until the check is true (checked every
    /// 10 ms), or at most this long.
    HoldUntil(Box<dyn Fn() -> bool + Send>, Duration),
    /// Forward, flipping one byte of the answer's body at this offset.
    Corrupt(u64),
    /// Forward the first `n` body bytes, run the hook (kill the registry, say), drop both ends.
    CutAndRun(u64, Box<dyn FnOnce() + Send>),
    /// Forward, then pass on only the first `n` bytes of the answer's body and drop both ends.
    CutAnswerAt(u64),
    /// Forward, pass on the first `n` bytes of the answer's body, then hold the rest this long.
    StallAnswerAt(u64, Duration),
}

type Rule = Box<dyn FnMut(&Req) -> Fault + Send>;

#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub at: Instant,
    pub range: Option<String>,
    /// The request body's length.
    pub content_length: u64,
}

#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Blob bytes forwarded to the registry in PATCH and PUT bodies of upload sessions.
    pub upload_bytes: u64,
    /// Blob bytes passed back to the client in answers to blob GETs.
    pub download_bytes: u64,
    /// Every request: method, path, the status the client got (0 when cut), when it came.
    pub seen: Vec<Seen>,
}

pub struct Proxy {
    pub host: String,
    stats: Arc<Mutex<Stats>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(upstream: &str, rule: impl FnMut(&Req) -> Fault + Send + 'static) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let stats = Arc::new(Mutex::new(Stats::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let rule: Arc<Mutex<Rule>> = Arc::new(Mutex::new(Box::new(rule)));
        let upstream = upstream.to_string();
        let (s, st) = (stats.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (s, rule, up) = (s.clone(), rule.clone(), upstream.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &up, &rule, &s);
                });
            }
        });
        Proxy { host, stats, stop }
    }

    pub fn stats(&self) -> Stats {
        self.stats.lock().unwrap().clone()
    }

    pub fn reference(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.host)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.host);
    }
}

/// Reads a head (request or response) up to the blank line: the first line and the header lines.
pub fn read_head(r: &mut impl BufRead) -> std::io::Result<Option<(String, Vec<String>)>> {
    let mut first = String::new();
    if r.read_line(&mut first)? == 0 {
        return Ok(None);
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line)?;
        let line = line.trim_end().to_string();
        if line.is_empty() {
            break;
        }
        headers.push(line);
    }
    Ok(Some((first.trim_end().to_string(), headers)))
}

fn header(headers: &[String], name: &str) -> Option<String> {
    headers.iter().find_map(|h| {
        let (k, v) = h.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// The head again, `Connection: close` in place of any connection header.
fn head_bytes(first: &str, headers: &[String]) -> Vec<u8> {
    let mut out = format!("{first}\r\n");
    for h in headers {
        let name = h
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if name != "connection" && name != "keep-alive" {
            out.push_str(h);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

fn serve(
    client: TcpStream,
    upstream: &str,
    rule: &Mutex<Rule>,
    stats: &Mutex<Stats>,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client = client;
    let Some((first, headers)) = read_head(&mut reader)? else {
        return Ok(());
    };
    let mut parts = first.split(' ');
    let req = Req {
        method: parts.next().unwrap_or("").to_string(),
        path: parts.next().unwrap_or("").to_string(),
        content_length: header(&headers, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        range: header(&headers, "range"),
    };
    assert!(
        header(&headers, "transfer-encoding").is_none(),
        "the proxy forwards only bodies with a Content-Length: {first}"
    );
    let fault = (rule.lock().unwrap())(&req);
    let at = Instant::now();
    let record = |status: u16| {
        stats.lock().unwrap().seen.push(Seen {
            method: req.method.clone(),
            path: req.path.clone(),
            status,
            at,
            range: req.range.clone(),
            content_length: req.content_length,
        })
    };
    if let Fault::Answer(status, extra, body) = &fault {
        let mut rest = vec![0u8; req.content_length as usize];
        let _ = reader.read_exact(&mut rest);
        let mut head = format!("HTTP/1.1 {status} Injected\r\nContent-Length: {}\r\nContent-Type: application/json\r\n", body.len());
        for (k, v) in extra {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("Connection: close\r\n\r\n");
        client.write_all(head.as_bytes())?;
        client.write_all(body.as_bytes())?;
        record(*status);
        return Ok(());
    }

    let mut up = TcpStream::connect(upstream)?;
    up.write_all(&head_bytes(&first, &headers))?;
    let cut = match &fault {
        Fault::CutAt(n) | Fault::CutAndRun(n, _) => Some(*n),
        _ => None,
    };
    let mut left = req.content_length;
    let mut sent = 0u64;
    let mut buf = vec![0u8; 64 << 10];
    while left > 0 {
        let mut want = buf.len().min(left as usize);
        if let Some(n) = cut {
            want = want.min((n - sent) as usize);
            if want == 0 {
                break;
            }
        }
        let got = reader.read(&mut buf[..want])?;
        if got == 0 {
            break;
        }
        up.write_all(&buf[..got])?;
        sent += got as u64;
        left -= got as u64;
        if req.is_upload() {
            stats.lock().unwrap().upload_bytes += got as u64;
        }
    }
    if cut.is_some() && left > 0 {
        if let Fault::CutAndRun(_, hook) = fault {
            hook();
        }
        let _ = up.shutdown(Shutdown::Both);
        let _ = client.shutdown(Shutdown::Both);
        record(0);
        return Ok(());
    }

    let mut upr = BufReader::new(up);
    let Some((status_line, rheaders)) = read_head(&mut upr)? else {
        let _ = client.shutdown(Shutdown::Both);
        record(0);
        return Ok(());
    };
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if let Fault::Stall(d) = &fault {
        std::thread::sleep(*d);
    }
    if let Fault::HoldUntil(check, most) = &fault {
        let until = Instant::now() + *most;
        while !check() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    client.write_all(&head_bytes(&status_line, &rheaders))?;
    let flip = match &fault {
        Fault::Corrupt(at) => Some(*at),
        _ => None,
    };
    let cut_answer = match &fault {
        Fault::CutAnswerAt(n) => Some(*n),
        _ => None,
    };
    let mut stall_answer = match &fault {
        Fault::StallAnswerAt(n, d) => Some((*n, *d)),
        _ => None,
    };
    let mut offset = 0u64;
    loop {
        let mut want = buf.len();
        if let Some(n) = cut_answer {
            want = want.min((n - offset) as usize);
            if want == 0 {
                let _ = client.shutdown(Shutdown::Both);
                record(0);
                return Ok(());
            }
        }
        if let Some((n, _)) = stall_answer {
            want = want.min((n - offset) as usize);
            if want == 0 {
                client.flush()?;
                std::thread::sleep(stall_answer.take().unwrap().1);
                continue;
            }
        }
        let got = upr.read(&mut buf[..want])?;
        if got == 0 {
            break;
        }
        if req.is_blob_get() {
            stats.lock().unwrap().download_bytes += got as u64;
        }
        if let Some(at) = flip {
            if (offset..offset + got as u64).contains(&at) {
                buf[(at - offset) as usize] ^= 0xff;
            }
        }
        offset += got as u64;
        client.write_all(&buf[..got])?;
    }
    record(status);
    Ok(())
}
