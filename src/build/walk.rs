//! One directory source read on every core: what it holds, unsorted, for `tree::collect`.
//!
//! A walk of a 100,000-file tree is ~100,000 `fstatat` calls and the strings for their paths:
//! CPU work in the kernel and in userspace, which splits across cores by directory. Workers
//! take directories from one shared stack and put the subdirectories they find back on it.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex};

use crate::build::entry::{unsupported, whiteout_named, Kind, OwnRel, WHITEOUT};
use crate::build::ignore::IgnoreRules;
use crate::error::{Error, Result};

/// One path found, before hardlinks are told apart and parents are checked.
pub struct Item {
    /// The path in the image: relative, `/`-separated.
    pub path: String,
    pub kind: Kind,
    pub mode: u32,
    /// (device, inode) of a regular file with more than one name, for hardlinks.
    pub inode: Option<(u64, u64)>,
}

/// What a source directory holds.
#[derive(Default)]
pub struct Walked {
    /// Every path kept, in no particular order.
    pub items: Vec<Item>,
    /// Directories left out by ignore rules but walked, because a `!` rule may keep something
    /// inside: their paths and modes, should a kept path need them as parents.
    pub skipped: Vec<(String, u32)>,
}

/// Walks `src` (a directory), whose contents land under `dest` (an image path without the
/// leading `/`, empty for the root). Never follows a symlink: each entry is `lstat`ed relative
/// to its open directory. On trouble, the error of the first path in byte order, so that the
/// same tree always gives the same message whatever the threads did.
/// `own` are paths layerup writes inside this source: left out, never walked into. `base` is
/// the mapping's destination, which ignore rules and `own` are relative to: `dest` itself, or
/// one of its parents when a directory inside the source is walked alone (`tree::update`).
pub fn walk(
    src: PathBuf,
    dest: &str,
    base: &str,
    rules: &IgnoreRules,
    own: &[OwnRel],
    threads: usize,
) -> Result<Walked> {
    let work = Work {
        queue: Mutex::new(Queue {
            dirs: vec![(src, dest.to_string())],
            busy: 0,
        }),
        ready: Condvar::new(),
        // `rel` is the image path with the destination's part cut off.
        cut: if base.is_empty() { 0 } else { base.len() + 1 },
        rules,
        own,
    };
    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| s.spawn(|| work.run()))
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Outcome::failed("a walker thread stopped"))
            })
            .collect()
    });
    let mut all = Outcome::default();
    for o in outcomes {
        all.walked.items.extend(o.walked.items);
        all.walked.skipped.extend(o.walked.skipped);
        if let Some((at, e)) = o.error {
            all.fail(&at, e);
        }
    }
    match all.error {
        Some((_, e)) => Err(e),
        None => Ok(all.walked),
    }
}

/// Threads for a walk: one per core, up to 8 (past that, the directory cache's locks are the
/// limit, not the cores).
pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

struct Queue {
    /// Directories to read: where on disk, and their image path.
    dirs: Vec<(PathBuf, String)>,
    /// Workers reading a directory now (each may add more).
    busy: usize,
}

struct Work<'a> {
    queue: Mutex<Queue>,
    ready: Condvar,
    cut: usize,
    rules: &'a IgnoreRules,
    own: &'a [OwnRel],
}

/// One worker's share.
#[derive(Default)]
struct Outcome {
    walked: Walked,
    /// The first failing path (by image path) this worker met, and why.
    error: Option<(String, Error)>,
}

impl Outcome {
    fn failed(why: &str) -> Outcome {
        Outcome {
            error: Some((String::new(), Error::internal(why))),
            ..Outcome::default()
        }
    }

    fn fail(&mut self, at: &str, e: Error) {
        if self
            .error
            .as_ref()
            .is_none_or(|(first, _)| at < first.as_str())
        {
            self.error = Some((at.to_string(), e));
        }
    }
}

/// A directory being read: when it is done (or its worker panicked), its subdirectories join
/// the stack and the worker counts as idle, so the other workers never wait for it forever.
struct Reading<'w, 'r> {
    work: &'w Work<'r>,
    subdirs: Vec<(PathBuf, String)>,
}

impl Drop for Reading<'_, '_> {
    fn drop(&mut self) {
        self.work.done(std::mem::take(&mut self.subdirs));
    }
}

impl Work<'_> {
    fn run(&self) -> Outcome {
        let mut out = Outcome::default();
        while let Some((dir, path)) = self.next() {
            let mut reading = Reading {
                work: self,
                subdirs: Vec::new(),
            };
            if let Err(e) = self.read(&dir, &path, &mut out, &mut reading.subdirs) {
                out.fail(&path, e);
            }
        }
        out
    }

    /// The next directory to read; `None` once every directory is read and no worker can find
    /// more.
    fn next(&self) -> Option<(PathBuf, String)> {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(d) = q.dirs.pop() {
                q.busy += 1;
                return Some(d);
            }
            if q.busy == 0 {
                return None;
            }
            q = self.ready.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn done(&self, subdirs: Vec<(PathBuf, String)>) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.dirs.extend(subdirs);
        q.busy -= 1;
        drop(q);
        self.ready.notify_all();
    }

    /// Reads one directory: its entries into `out`, its subdirectories (to walk) into `subdirs`.
    /// A bad entry is recorded and the others still read, so the first error in path order is
    /// found whichever worker reads what.
    fn read(
        &self,
        dir: &std::path::Path,
        dir_path: &str,
        out: &mut Outcome,
        subdirs: &mut Vec<(PathBuf, String)>,
    ) -> Result<()> {
        let read = |e: std::io::Error| Error::io("read", dir, &e);
        let rel_dir = dir_path.get(self.cut..).unwrap_or("");
        for item in std::fs::read_dir(dir).map_err(read)? {
            let item = item.map_err(read)?;
            let src = item.path();
            let name = src.file_name().unwrap_or_default();
            let Some(name) = name.to_str() else {
                let at = format!("{dir_path}/{}", name.to_string_lossy());
                out.fail(
                    &at,
                    Error::input(format!(
                        "`{}` has a name that is not UTF-8; layerup stores only UTF-8 paths",
                        src.display()
                    )),
                );
                continue;
            };
            if !self.own.is_empty() && self.own.iter().any(|o| o.is(rel_dir, name)) {
                continue;
            }
            let path = if dir_path.is_empty() {
                name.to_string()
            } else {
                format!("{dir_path}/{name}")
            };
            let meta = match item.metadata() {
                Ok(m) => m,
                Err(e) => {
                    out.fail(&path, Error::io("read", &src, &e));
                    continue;
                }
            };
            let ftype = meta.file_type();
            let mode = meta.mode() & 0o7777;
            if self.rules.excludes(&path[self.cut..]) {
                if ftype.is_dir() && self.rules.has_exceptions() {
                    subdirs.push((src, path.clone()));
                    out.walked.skipped.push((path, mode));
                }
                continue;
            }
            if name.starts_with(WHITEOUT) {
                out.fail(&path, whiteout_named(&src, name));
                continue;
            }
            let (kind, inode) = if ftype.is_dir() {
                subdirs.push((src, path.clone()));
                (Kind::Dir, None)
            } else if ftype.is_file() {
                Kind::file(src, &meta)
            } else if ftype.is_symlink() {
                match std::fs::read_link(&src) {
                    Ok(target) => (Kind::Symlink { target }, None),
                    Err(e) => {
                        out.fail(&path, Error::io("read symlink", &src, &e));
                        continue;
                    }
                }
            } else {
                out.fail(&path, unsupported(&src, ftype));
                continue;
            };
            out.walked.items.push(Item {
                path,
                kind,
                mode,
                inode,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(w: Walked) -> Vec<(String, u32, bool)> {
        let mut v: Vec<_> = w
            .items
            .into_iter()
            .map(|i| (i.path, i.mode, matches!(i.kind, Kind::Dir)))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn one_thread_or_many_find_the_same_tree_and_the_same_first_error() {
        let t = tempfile::tempdir().unwrap();
        for d in 0..30 {
            let dir = t.path().join(format!("d{d:02}/sub"));
            std::fs::create_dir_all(&dir).unwrap();
            for f in 0..5 {
                std::fs::write(dir.join(format!("f{f}")), "x").unwrap();
            }
        }
        let rules = IgnoreRules::default();
        let one = sorted(walk(t.path().into(), "app", "app", &rules, &[], 1).unwrap());
        assert_eq!(one.len(), 30 * 7);
        assert!(one.iter().all(|(p, _, _)| p.starts_with("app/d")));
        let many = sorted(walk(t.path().into(), "app", "app", &rules, &[], 4).unwrap());
        assert_eq!(one, many);

        let _a = std::os::unix::net::UnixListener::bind(t.path().join("d07/sub/a.sock")).unwrap();
        let _b = std::os::unix::net::UnixListener::bind(t.path().join("d21/b.sock")).unwrap();
        for threads in [1, 2, 4, 4, 4] {
            let err = walk(t.path().into(), "app", "app", &rules, &[], threads)
                .err()
                .unwrap();
            assert!(
                err.to_string().contains("d07/sub/a.sock` is a socket"),
                "{err}"
            );
        }
    }
}
