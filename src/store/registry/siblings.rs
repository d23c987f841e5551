//! The base crosses once per registry: where each blob was last seen on each registry — in
//! this run, and in earlier ones (the state's `blobs-seen/<host>`) — so that a blob one
//! repository holds is mounted into the next instead of sent again, and one that another
//! repository is receiving right now (a project's images on one base) is waited for, then
//! mounted. A mount refused (the blob gone, a token without `pull` there) falls back to the
//! upload it replaced.

use std::collections::HashMap;
use std::io::Write;

use oci_spec::distribution::Reference;
use oci_spec::image::Digest;
use tokio::sync::watch;

use super::{Registry, Target};
use crate::error::Result;

/// The state's directory of where blobs were seen, a file per registry host.
const DIR: &str = "blobs-seen";
/// A host's file is rewritten from what it says once it grows past this (lines repeat).
const COMPACT_AT: u64 = 4 << 20;

/// Where a blob is on one registry, as this run knows it.
#[derive(Clone)]
pub(super) enum Place {
    /// Held by this repository.
    Held(String),
    /// Being uploaded to this repository now; `true` is sent when it landed.
    Landing(String, watch::Receiver<bool>),
}

/// What [`Registry::claim`] found for a blob about to be sent to a repository.
pub(super) enum Claim {
    /// Another repository of the registry holds it: mount it from there.
    Mount(String),
    /// Nobody has it: send it, and tell the others waiting when it landed.
    Send(Option<watch::Sender<bool>>),
}

/// Blobs seen per host: digest → repository (`Places` in the registry's state).
#[derive(Default)]
pub(super) struct Places {
    /// Per host: loaded from the state on first use.
    hosts: HashMap<String, HashMap<String, Place>>,
}

impl Registry {
    fn seen_file(&self, host: &str) -> Option<std::path::PathBuf> {
        self.host_record(DIR, host)
    }

    /// The places of `host`, loaded from the state once per run.
    fn with_places<R>(&self, host: &str, f: impl FnOnce(&mut HashMap<String, Place>) -> R) -> R {
        let mut places = self.places.lock().expect("places lock");
        let map = places.hosts.entry(host.to_string()).or_insert_with(|| {
            let text = self
                .seen_file(host)
                .and_then(|f| std::fs::read_to_string(f).ok())
                .unwrap_or_default();
            text.lines()
                .filter_map(|l| l.split_once(' '))
                .filter(|(d, r)| d.parse::<Digest>().is_ok() && !r.is_empty())
                .map(|(d, r)| (d.to_string(), Place::Held(r.to_string())))
                .collect()
        });
        f(map)
    }

    /// `repo` of `t`'s host holds `digest`: remembered for this run, and for the next ones
    /// (a line appended to the host's file, unless it said so already).
    pub(super) fn saw(&self, t: Target<'_>, digest: &Digest) {
        let new = self.with_places(t.host, |map| {
            let place = map.get(digest.as_ref());
            let known = matches!(place, Some(Place::Held(r)) if r == t.repo);
            // A landing elsewhere keeps its waiters: they mount from there once it landed.
            if !matches!(place, Some(Place::Landing(r, _)) if r != t.repo) {
                map.insert(digest.to_string(), Place::Held(t.repo.to_string()));
            }
            !known
        });
        if new {
            if let Some(file) = self.seen_file(t.host) {
                append_line(&file, &format!("{digest} {}\n", t.repo));
            }
        }
    }

    /// Before `digest` is sent to `to`: another repository of the registry that holds it (or is
    /// receiving it now: waited for), to mount from; else a claim to send it, which the others
    /// wait for.
    pub(super) async fn claim(&self, to: &Reference, digest: &Digest) -> Claim {
        let t = Target::of(to);
        loop {
            let place = self.with_places(t.host, |map| {
                let place = map.get(digest.as_ref()).cloned();
                if place.is_none() {
                    let (tx, rx) = watch::channel(false);
                    map.insert(digest.to_string(), Place::Landing(t.repo.to_string(), rx));
                    return Err(tx);
                }
                Ok(place)
            });
            match place {
                Err(tx) => return Claim::Send(Some(tx)),
                Ok(Some(Place::Held(repo))) if repo != t.repo => return Claim::Mount(repo),
                Ok(Some(Place::Landing(repo, mut rx))) if repo != t.repo => {
                    // Landed: mounted from there. Its sender gone (failed): asked again.
                    if rx.wait_for(|landed| *landed).await.is_ok() {
                        return Claim::Mount(repo);
                    }
                    self.with_places(t.host, |map| {
                        if matches!(map.get(digest.as_ref()), Some(Place::Landing(r, _)) if *r == repo)
                        {
                            map.remove(digest.as_ref());
                        }
                    });
                }
                // This repository's own (the HEAD said missing: deleted since), or landing here.
                Ok(_) => return Claim::Send(None),
            }
        }
    }

    /// Mounts `digest` into `to` from `from_repo` of the same registry, widening the token to
    /// `pull` on it first where it comes from a token service. `false`: not mounted (refused,
    /// gone, or no token for it), and the blob is sent instead.
    pub(super) async fn mount_sibling(
        &self,
        to: &Reference,
        from_repo: &str,
        digest: &Digest,
    ) -> Result<bool> {
        let t = Target::of(to);
        if !self.widen(t, from_repo).await {
            return Ok(false);
        }
        let from = format!("{}/{from_repo}", t.host);
        let Ok(from) = from.parse::<Reference>() else {
            return Ok(false);
        };
        let mounted = self.mount(to, &from, digest).await?;
        if !mounted {
            // Not there any more (deleted, collected), or not ours to read: forget it.
            self.with_places(t.host, |map| {
                if matches!(map.get(digest.as_ref()), Some(Place::Held(r)) if r == from_repo) {
                    map.remove(digest.as_ref());
                }
            });
        }
        Ok(mounted)
    }
}

impl Registry {
    /// Puts `digest` in `to`: mounted from another repository of the registry that holds it or
    /// is receiving it now, else uploaded from the cursor. `true`: mounted.
    pub async fn put_blob(
        &self,
        to: &Reference,
        digest: &Digest,
        cursor: std::sync::Arc<tokio::sync::Mutex<crate::oci::stream::Cursor>>,
    ) -> Result<bool> {
        let claim = self.claim(to, digest).await;
        if let Claim::Mount(from) = &claim {
            if self.mount_sibling(to, from, digest).await? {
                return Ok(true);
            }
        }
        let sent = self.upload(to, digest, cursor).await;
        claim.done(sent.is_ok());
        sent.map(|()| false)
    }
}

impl Claim {
    /// The blob landed (or not): those waiting for it go on.
    pub(super) fn done(self, landed: bool) {
        if let Claim::Send(Some(tx)) = self {
            let _ = tx.send(landed);
        }
    }
}

/// Appends `line` to `file` (one write: lines from runs at once do not interleave), compacting
/// the file first once it is large. A failure only costs a later run a mount.
fn append_line(file: &std::path::Path, line: &str) {
    if std::fs::metadata(file).is_ok_and(|m| m.len() > COMPACT_AT) {
        compact(file);
    }
    let _ = file
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(file)
        })
        .and_then(|mut f| f.write_all(line.as_bytes()));
}

/// Rewrites `file` with the last place of each blob only.
fn compact(file: &std::path::Path) {
    let Ok(text) = std::fs::read_to_string(file) else {
        return;
    };
    let last: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once(' ')).collect();
    let mut out: Vec<String> = last.iter().map(|(d, r)| format!("{d} {r}\n")).collect();
    out.sort();
    let tmp = file.with_extension(format!("layerup-{}", std::process::id()));
    if std::fs::write(&tmp, out.concat()).is_ok() {
        let _ = std::fs::rename(&tmp, file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compacting_keeps_the_last_place_of_each_blob() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("h");
        let (a, b) = (
            format!("sha256:{}", "a".repeat(64)),
            format!("sha256:{}", "b".repeat(64)),
        );
        std::fs::write(&f, format!("{a} one\n{b} two\n{a} three\n")).unwrap();
        compact(&f);
        let text = std::fs::read_to_string(&f).unwrap();
        assert_eq!(text, format!("{a} three\n{b} two\n"));
    }
}
