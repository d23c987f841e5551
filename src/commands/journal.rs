//! The change journal (`push --journal`): a watcher per source directory, started by the first
//! push that asks for it, that answers "what changed since token T" on a Unix socket in the state,
//! so that a one-shot push reads what changed instead of the whole tree — as git's fsmonitor
//! keeps `git status` fast. It goes after 10 quiet minutes. Any doubt (another instance, an
//! overflow, an error, too many events, no answer in time) answers "walk".
//!
//! Ordering: the client creates a cookie file in a directory the same watcher watches, and the
//! answer waits for its event — one inotify descriptor delivers in order, so every change made
//! before the question is in the answer. notify 8.2 delivers a new directory's event before it
//! adds the directory's watch (`inotify.rs`, `handle_inotify`): such paths are named again in
//! the next answer, so that a file made inside in between is read then.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, Watcher};

use crate::error::{Error, Result};

/// The environment variables a push starts the watcher with (`main` looks for them first).
pub const ROOT_VAR: &str = "LAYERUP_JOURNAL_ROOT";
pub const DIR_VAR: &str = "LAYERUP_JOURNAL_DIR";
/// Seconds of quiet before the watcher goes (600 unless set: the tests set less).
const IDLE_VAR: &str = "LAYERUP_JOURNAL_IDLE";
/// More events than this since the oldest token still wanted: walk instead.
const MAX_EVENTS: usize = 20_000;
/// How long a question waits for its cookie, and a client for its answer.
const WAIT: Duration = Duration::from_secs(2);

/// Where a journal stands: the watcher's instance and its event count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Token {
    pub instance: u64,
    pub seq: u64,
}

/// A journal's answer: where it stands now, and the paths changed since the token asked about
/// (`None`: it cannot tell; walk).
pub struct Answer {
    pub token: Token,
    pub changed: Option<Vec<PathBuf>>,
}

/// The directory of the journal of `root` in the state `state`.
pub fn dir_for(state: &Path, root: &Path) -> PathBuf {
    let key = crate::oci::digest::sha256(root.as_os_str().as_encoded_bytes());
    state.join("journal").join(&key.digest()[..24])
}

#[derive(Default)]
struct Log {
    instance: u64,
    seq: u64,
    /// Tokens before this cannot be answered: something was lost after them.
    lost: u64,
    events: Vec<(u64, PathBuf)>,
    /// Created or renamed since the last answer: named again after it.
    fresh: Vec<PathBuf>,
    cookies: HashSet<std::ffi::OsString>,
    asked: Option<Instant>,
}

impl Log {
    fn doubt(&mut self) {
        self.seq += 1;
        self.lost = self.seq;
        self.events.clear();
        self.fresh.clear();
    }

    fn add(&mut self, path: PathBuf) {
        self.seq += 1;
        self.events.push((self.seq, path));
    }
}

type Shared = Arc<(Mutex<Log>, Condvar)>;

/// Runs the watcher of `root` until it has been asked nothing for a while. Another watcher of
/// the same root already running: returns at once.
pub fn serve(root: &Path, dir: &Path) -> Result<()> {
    let cookies = dir.join("cookies");
    std::fs::create_dir_all(&cookies).map_err(|e| Error::io("create", &cookies, &e))?;
    let lock_path = dir.join("lock");
    let lock =
        std::fs::File::create(&lock_path).map_err(|e| Error::io("create", &lock_path, &e))?;
    if lock.try_lock().is_err() {
        return Ok(());
    }
    let idle = std::env::var(IDLE_VAR)
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(600), Duration::from_secs);
    let instance = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id());
    let shared: Shared = Arc::new((
        Mutex::new(Log {
            instance,
            ..Log::default()
        }),
        Condvar::new(),
    ));
    let on_event = {
        let (shared, cookies) = (shared.clone(), cookies.clone());
        move |res: notify::Result<notify::Event>| record(&shared, &cookies, res)
    };
    let fail = |e: notify::Error| Error::internal(format!("cannot watch {}: {e}", root.display()));
    let mut watcher = notify::recommended_watcher(on_event).map_err(fail)?;
    watcher
        .watch(root, RecursiveMode::Recursive)
        .map_err(fail)?;
    watcher
        .watch(&cookies, RecursiveMode::NonRecursive)
        .map_err(fail)?;
    let sock = dir.join("sock");
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock).map_err(|e| Error::io("listen on", &sock, &e))?;
    let _ = std::fs::write(dir.join("pid"), std::process::id().to_string());
    shared.0.lock().expect("journal lock").asked = Some(Instant::now());
    let quiet = {
        let (shared, dir) = (shared.clone(), dir.to_path_buf());
        move || loop {
            std::thread::sleep(Duration::from_millis(200));
            let asked = shared.0.lock().expect("journal lock").asked;
            if asked.is_some_and(|a| a.elapsed() > idle) {
                let _ = std::fs::remove_file(dir.join("sock"));
                let _ = std::fs::remove_file(dir.join("pid"));
                std::process::exit(0);
            }
        }
    };
    std::thread::spawn(quiet);
    for conn in listener.incoming().flatten() {
        let _ = answer(&shared, &cookies, conn);
    }
    drop(lock);
    Ok(())
}

fn record(shared: &Shared, cookies: &Path, res: notify::Result<notify::Event>) {
    let (log, arrived) = &**shared;
    let mut l = log.lock().expect("journal lock");
    match res {
        Err(_) => l.doubt(),
        // A read changes nothing (the push's own walk reads the files).
        Ok(event) if matches!(event.kind, EventKind::Access(_)) => {}
        Ok(event) => {
            if event.need_rescan() {
                l.doubt();
            }
            let fresh = matches!(
                event.kind,
                EventKind::Create(_) | EventKind::Modify(notify::event::ModifyKind::Name(_))
            );
            for p in event.paths {
                if p.parent() == Some(cookies) {
                    if let Some(name) = p.file_name() {
                        l.cookies.insert(name.to_os_string());
                    }
                    continue;
                }
                if fresh {
                    l.fresh.push(p.clone());
                }
                l.add(p);
            }
            if l.events.len() > MAX_EVENTS {
                l.doubt();
            }
        }
    }
    arrived.notify_all();
}

/// One question: `INSTANCE SEQ COOKIE\n`; the answer `ok|walk INSTANCE SEQ\n`, then with `ok`
/// the changed paths, each ended by a NUL.
fn answer(shared: &Shared, cookies: &Path, conn: UnixStream) -> std::io::Result<()> {
    conn.set_read_timeout(Some(WAIT))?;
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let since = Token {
        instance: parts.next().and_then(|p| p.parse().ok()).unwrap_or(0),
        seq: parts.next().and_then(|p| p.parse().ok()).unwrap_or(0),
    };
    let cookie = std::ffi::OsString::from(parts.next().unwrap_or(""));
    let (log, arrived) = &**shared;
    let (mut l, waited) = arrived
        .wait_timeout_while(log.lock().expect("journal lock"), WAIT, |l| {
            !l.cookies.contains(&cookie)
        })
        .expect("journal lock");
    let seen = !waited.timed_out();
    l.cookies.remove(&cookie);
    let _ = std::fs::remove_file(cookies.join(&cookie));
    l.asked = Some(Instant::now());
    let now = Token {
        instance: l.instance,
        seq: l.seq,
    };
    let known = seen && since.instance == l.instance && since.seq >= l.lost && since.seq <= l.seq;
    let mut out = format!(
        "{} {} {}\n",
        if known { "ok" } else { "walk" },
        now.instance,
        now.seq
    )
    .into_bytes();
    if known {
        for (_, p) in l.events.iter().filter(|(s, _)| *s > since.seq) {
            out.extend_from_slice(p.as_os_str().as_encoded_bytes());
            out.push(0);
        }
    }
    // Named again after this answer (their watch may have come after it was read).
    let fresh = std::mem::take(&mut l.fresh);
    for p in fresh {
        l.add(p);
    }
    // Nobody asks about tokens older than the last answer's but the one client that got it.
    drop(l);
    (&conn).write_all(&out)
}

/// Asks the journal of `root` what changed since `since`, starting its watcher when none runs
/// (then the answer is "walk", with the token to ask about next time). `None` when no watcher
/// could be reached.
pub fn ask(state: &Path, root: &Path, since: Option<Token>) -> Option<Answer> {
    let dir = dir_for(state, root);
    let sock = dir.join("sock");
    // A Unix socket's path has room for 107 bytes.
    if sock.as_os_str().len() > 100 {
        tracing::debug!(
            "no change journal: {} is too long a path for a socket",
            sock.display()
        );
        return None;
    }
    let conn = match UnixStream::connect(&sock) {
        Ok(c) => c,
        Err(_) => {
            let mut watcher = start(root, &dir)?;
            // Setting up the watches takes a while on a large tree; a watcher that failed
            // (its exit) is not waited for.
            let until = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(c) = UnixStream::connect(&sock) {
                    break c;
                }
                if Instant::now() > until || !matches!(watcher.try_wait(), Ok(None)) {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    };
    let cookie = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_nanos()
    );
    std::fs::write(dir.join("cookies").join(&cookie), b"").ok()?;
    let since = since.unwrap_or(Token {
        instance: 0,
        seq: 0,
    });
    conn.set_read_timeout(Some(WAIT * 2)).ok()?;
    (&conn)
        .write_all(format!("{} {} {cookie}\n", since.instance, since.seq).as_bytes())
        .ok()?;
    let mut raw = Vec::new();
    (&conn).read_to_end(&mut raw).ok()?;
    let head_end = raw.iter().position(|b| *b == b'\n')?;
    let head = std::str::from_utf8(&raw[..head_end]).ok()?;
    let mut parts = head.split(' ');
    let (verdict, instance, seq) = (parts.next()?, parts.next()?, parts.next()?);
    let token = Token {
        instance: instance.parse().ok()?,
        seq: seq.parse().ok()?,
    };
    let changed = (verdict == "ok").then(|| {
        raw[head_end + 1..]
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| {
                use std::os::unix::ffi::OsStrExt;
                PathBuf::from(std::ffi::OsStr::from_bytes(p))
            })
            .collect()
    });
    Some(Answer { token, changed })
}

/// Starts the watcher of `root` in a process of its own (a group of its own: a Ctrl-C meant for
/// the push does not reach it), its output discarded.
fn start(root: &Path, dir: &Path) -> Option<std::process::Child> {
    use std::os::unix::fs::DirBuilderExt;
    use std::os::unix::process::CommandExt;
    // Its owner's only: nobody else asks it, nor listens in its place.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .ok()?;
    std::process::Command::new(std::env::current_exe().ok()?)
        .env(ROOT_VAR, root)
        .env(DIR_VAR, dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .ok()
}
