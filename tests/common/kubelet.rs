//! A kubelet that runs the pods of the tests' API server as real containers (podman + runc),
//! pulling each container's image by its reference from the test registries; and `pods/exec`
//! as the API server serves it: a WebSocket (RFC 6455) speaking the channel protocols kubectl
//! and kube-rs use (`v5.channel.k8s.io`, `v4.channel.k8s.io`: stdin 0, stdout 1, stderr 2,
//! status 3, and in v5 the close of stdin, 255), backed by `podman exec` into the container.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use sha1::Digest as _;

/// The podman container that runs a pod's container.
pub fn container_name(prefix: &str, pod: &str, container: &str) -> String {
    format!("{prefix}-{pod}-{container}")
}

/// What the kubelet does to the cluster's state, through the API server's own functions.
pub trait Cluster: Send + Sync + 'static {
    /// Pods not started yet (marked as starting), and the names of every pod there is.
    fn pending(&self) -> (Vec<(String, String, Value)>, BTreeSet<String>);
    /// A container of a pod started, or could not be pulled (`Err(message)`).
    fn started(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
        image: &str,
        result: Result<String, String>,
    );
    /// A container of a pod exited and was started again.
    fn restarted(&self, ns: &str, pod: &str, container: &str);
}

/// Runs the kubelet's loop until `stop` holds.
pub fn run(prefix: String, cluster: Arc<dyn Cluster>, stop: Arc<std::sync::atomic::AtomicBool>) {
    let mut started: BTreeMap<String, (String, String, String)> = BTreeMap::new();
    let mut tick = 0u64;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
        tick += 1;
        let (pending, live) = cluster.pending();
        for (ns, pod, spec) in pending {
            for c in spec["containers"].as_array().into_iter().flatten() {
                let cname = c["name"].as_str().unwrap_or("main").to_string();
                let image = c["image"].as_str().unwrap_or("").to_string();
                let name = container_name(&prefix, &pod, &cname);
                let mut cmd = super::podman();
                cmd.args([
                    "run",
                    "-d",
                    "--name",
                    &name,
                    "--runtime",
                    "runc",
                    "--network",
                    "none",
                ])
                .args(["--tls-verify=false", "--pull=missing"]);
                // The securityContext fields a live update meets.
                let security = &c["securityContext"];
                if security["readOnlyRootFilesystem"] == true {
                    cmd.arg("--read-only");
                }
                if let Some(uid) = security["runAsUser"].as_i64() {
                    cmd.args(["--user", &uid.to_string()]);
                }
                cmd.arg(&image);
                for part in ["command", "args"] {
                    for a in c[part].as_array().into_iter().flatten() {
                        cmd.arg(a.as_str().unwrap_or(""));
                    }
                }
                let out = cmd.output();
                let result = match out {
                    Ok(o) if o.status.success() => {
                        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
                    }
                    Ok(o) => Err(String::from_utf8_lossy(&o.stderr)
                        .lines()
                        .rfind(|l| !l.trim().is_empty())
                        .unwrap_or("podman run failed")
                        .trim()
                        .to_string()),
                    Err(e) => Err(e.to_string()),
                };
                if result.is_ok() {
                    started.insert(name, (ns.clone(), pod.clone(), cname.clone()));
                }
                cluster.started(&ns, &pod, &cname, &image, result);
            }
        }
        // Pods gone: their containers go.
        let gone: Vec<String> = started
            .iter()
            .filter(|(_, (_, pod, _))| !live.contains(pod))
            .map(|(n, _)| n.clone())
            .collect();
        for name in gone {
            started.remove(&name);
            let _ = super::podman()
                .args(["rm", "-f", "-t", "0", &name])
                .output();
        }
        // Exited containers of live pods are started again, as a restartPolicy Always kubelet does.
        if tick.is_multiple_of(3) && !started.is_empty() {
            let Ok(out) = super::podman()
                .args([
                    "ps",
                    "-a",
                    "--filter",
                    &format!("name=^{prefix}-"),
                    "--format",
                    "{{.Names}}\t{{.State}}",
                ])
                .output()
            else {
                continue;
            };
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let Some((name, state)) = line.split_once('\t') else {
                    continue;
                };
                // `exited`, or in some podman versions `Exited (137) 2 seconds ago`.
                if !state.trim().to_lowercase().starts_with("exited") {
                    continue;
                }
                if let Some((ns, pod, cname)) = started.get(name).cloned() {
                    let _ = super::podman().args(["start", name]).output();
                    cluster.restarted(&ns, &pod, &cname);
                }
            }
        }
    }
    for name in started.keys() {
        let _ = super::podman().args(["rm", "-f", "-t", "0", name]).output();
    }
}

const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Serves one exec: the WebSocket handshake, then `podman exec` of `command` in `container`.
pub fn exec(
    mut c: TcpStream,
    headers: &BTreeMap<String, String>,
    container: &str,
    command: &[String],
    stdin: bool,
) -> std::io::Result<()> {
    let key = headers
        .get("sec-websocket-key")
        .cloned()
        .unwrap_or_default();
    let offered: Vec<String> = headers
        .get("sec-websocket-protocol")
        .map(|p| p.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_default();
    let Some(proto) = ["v5.channel.k8s.io", "v4.channel.k8s.io"]
        .into_iter()
        .find(|p| offered.iter().any(|o| o == p))
    else {
        let body = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"no supported exec protocol","reason":"BadRequest","code":400}"#;
        return c.write_all(format!("HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes());
    };
    let accept = base64::engine::general_purpose::STANDARD
        .encode(sha1::Sha1::digest(format!("{key}{WS_GUID}").as_bytes()));
    c.write_all(
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: {proto}\r\n\r\n"
        )
        .as_bytes(),
    )?;
    let mut cmd = super::podman();
    cmd.arg("exec");
    if stdin {
        cmd.arg("-i");
    }
    cmd.arg(container)
        .args(command)
        .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = Arc::new(Mutex::new(c.try_clone()?));
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            let status = json!({"metadata": {}, "status": "Failure", "message": e.to_string(), "reason": "InternalError"});
            send(&out, 2, &[3], status.to_string().as_bytes())?;
            return close(&out);
        }
    };
    let mut child_in = child.stdin.take();
    // The client's frames: stdin, its close (v5), the connection's close.
    let reader_out = out.clone();
    let mut reader = c.try_clone()?;
    let input = std::thread::spawn(move || {
        while let Ok((op, payload)) = read_frame(&mut reader) {
            match op {
                0x8 => break,
                0x9 => {
                    let _ = send(&reader_out, 0xA, &[], &payload);
                }
                0x2 | 0x1 if !payload.is_empty() => match payload[0] {
                    0 => {
                        if let Some(w) = child_in.as_mut() {
                            if w.write_all(&payload[1..]).is_err() {
                                child_in = None;
                            }
                        }
                    }
                    255 if payload.get(1) == Some(&0) => child_in = None,
                    _ => {}
                },
                _ => {}
            }
        }
    });
    let pump = |stream: Box<dyn Read + Send>, channel: u8| {
        let out = out.clone();
        std::thread::spawn(move || {
            let mut stream = stream;
            let mut buf = [0u8; 16 << 10];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 || send(&out, 2, &[channel], &buf[..n]).is_err() {
                    break;
                }
            }
        })
    };
    let so = pump(Box::new(child.stdout.take().unwrap()), 1);
    let se = pump(Box::new(child.stderr.take().unwrap()), 2);
    let status = child.wait()?;
    let _ = so.join();
    let _ = se.join();
    let code = status.code().unwrap_or(1);
    let doc = if code == 0 {
        json!({"metadata": {}, "status": "Success"})
    } else {
        json!({"metadata": {}, "status": "Failure",
               "message": format!("command terminated with non-zero exit code: error executing command {command:?}, exit code {code}"),
               "reason": "NonZeroExitCode",
               "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}})
    };
    send(&out, 2, &[3], doc.to_string().as_bytes())?;
    close(&out)?;
    drop(input);
    Ok(())
}

fn close(out: &Arc<Mutex<TcpStream>>) -> std::io::Result<()> {
    send(out, 0x8, &[], &1000u16.to_be_bytes())?;
    std::thread::sleep(Duration::from_millis(50));
    let _ = out.lock().unwrap().shutdown(std::net::Shutdown::Both);
    Ok(())
}

/// One frame from the client (masked, as clients send them); fragments joined.
fn read_frame(r: &mut impl Read) -> std::io::Result<(u8, Vec<u8>)> {
    let mut payload = Vec::new();
    let mut opcode = None;
    loop {
        let mut h = [0u8; 2];
        r.read_exact(&mut h)?;
        let fin = h[0] & 0x80 != 0;
        let op = h[0] & 0x0f;
        let masked = h[1] & 0x80 != 0;
        let mut len = (h[1] & 0x7f) as u64;
        if len == 126 {
            let mut b = [0u8; 2];
            r.read_exact(&mut b)?;
            len = u16::from_be_bytes(b) as u64;
        } else if len == 127 {
            let mut b = [0u8; 8];
            r.read_exact(&mut b)?;
            len = u64::from_be_bytes(b);
        }
        let mut mask = [0u8; 4];
        if masked {
            r.read_exact(&mut mask)?;
        }
        let mut data = vec![0u8; len as usize];
        r.read_exact(&mut data)?;
        if masked {
            for (i, b) in data.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
        }
        if op >= 0x8 {
            // Control frames come whole, even between fragments.
            return Ok((op, data));
        }
        opcode.get_or_insert(op);
        payload.extend(data);
        if fin {
            return Ok((opcode.unwrap_or(op), payload));
        }
    }
}

/// One unmasked frame to the client: `prefix` (the channel byte) then `data`.
fn send(
    out: &Arc<Mutex<TcpStream>>,
    opcode: u8,
    prefix: &[u8],
    data: &[u8],
) -> std::io::Result<()> {
    let len = prefix.len() + data.len();
    let mut frame = vec![0x80 | opcode];
    if len < 126 {
        frame.push(len as u8);
    } else if len <= 0xffff {
        frame.push(126);
        frame.extend((len as u16).to_be_bytes());
    } else {
        frame.push(127);
        frame.extend((len as u64).to_be_bytes());
    }
    frame.extend(prefix);
    frame.extend(data);
    out.lock().unwrap().write_all(&frame)
}
