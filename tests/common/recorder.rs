//! The other end of a hostile redirection: a server on loopback that records every request it
//! gets (method, path, headers — what a client really sent, not what it says it sent) and
//! answers each with one fixed status and headers.

use std::collections::BTreeMap;
use std::io::{BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
pub struct Head {
    pub method: String,
    pub path: String,
    /// Names lowercased.
    pub headers: BTreeMap<String, String>,
}

pub struct Recorder {
    pub host: String,
    seen: Arc<Mutex<Vec<Head>>>,
}

impl Recorder {
    pub fn start(status: u16, headers: &[(&str, &str)]) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let extra: String = headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\r\n"))
            .collect();
        let s = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (s, extra) = (s.clone(), extra.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let Ok((first, headers)) = super::read_head(&mut reader) else {
                        return;
                    };
                    let mut parts = first.split_whitespace();
                    let head = Head {
                        method: parts.next().unwrap_or("").to_string(),
                        path: parts.next().unwrap_or("").to_string(),
                        headers,
                    };
                    let len: u64 = head
                        .headers
                        .get("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    s.lock().unwrap().push(head);
                    let _ = std::io::copy(&mut reader.by_ref().take(len), &mut std::io::sink());
                    let mut conn = conn;
                    let _ = conn.write_all(
                        format!(
                            "HTTP/1.1 {status} X\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    );
                });
            }
        });
        Recorder { host, seen }
    }

    pub fn seen(&self) -> Vec<Head> {
        self.seen.lock().unwrap().clone()
    }
}
