//! Upload sessions opened ahead of need: a push that will likely send new blobs to a registry
//! that wants a session per blob (distribution: `POST`, then `PUT`) opens them while it still
//! reads the base and the destination, so that the `POST`'s round trip is not paid after.
//! What is not used by the end of the push is cancelled (`DELETE` on its location).

use std::sync::Arc;

use oci_spec::distribution::Reference;
use reqwest::StatusCode;
use tokio::task::JoinHandle;

use super::{Registry, Target};

/// A session being opened: its location and chunk size once the registry answers, or `None`
/// when it did not (the upload then opens its own, as if none had been asked ahead).
pub(super) type Spare = JoinHandle<Option<(String, u64)>>;

impl Registry {
    /// Opens `n` upload sessions in `repo` in the background, for this run's uploads there to
    /// take, where its registry is known to take no blob in the `POST` (a blob's upload there
    /// is two round trips, of which this takes the first off the push's path).
    pub fn open_ahead(self: &Arc<Self>, repo: &Reference, n: usize) {
        let t = Target::of(repo);
        if !self.session_per_blob(t.host) {
            return;
        }
        let base = self.origin(t.host);
        let opening: Vec<Spare> = (0..n)
            .map(|_| {
                let (me, repo, base) = (self.clone(), repo.clone(), base.clone());
                tokio::spawn(async move {
                    let action = || format!("cannot open an upload in {}", repo.whole());
                    match me.start_upload(Target::of(&repo), &base, &action).await {
                        Ok(opened) => Some(opened),
                        Err(e) => {
                            tracing::debug!("{e} (ahead of need; opened when needed instead)");
                            None
                        }
                    }
                })
            })
            .collect();
        self.spares
            .lock()
            .expect("spares lock")
            .entry(key(t))
            .or_default()
            .extend(opening);
    }

    /// A session opened ahead in `t`'s repository, once the registry has answered; `None` when
    /// none is left (or none opened).
    pub(super) async fn take_spare(&self, t: Target<'_>) -> Option<(String, u64)> {
        loop {
            let spare = self
                .spares
                .lock()
                .expect("spares lock")
                .get_mut(&key(t))
                .and_then(Vec::pop)?;
            if let Ok(Some(opened)) = spare.await {
                return Some(opened);
            }
        }
    }

    /// Cancels the sessions opened ahead in `repo` that no upload took, at once: a registry
    /// keeps an abandoned one until it expires (distribution: a week). A failure only leaves it
    /// to expire.
    pub async fn cancel_spares(&self, repo: &Reference) {
        let t = Target::of(repo);
        let left = self
            .spares
            .lock()
            .expect("spares lock")
            .remove(&key(t))
            .unwrap_or_default();
        let cancel = left.into_iter().map(|spare| async move {
            let Ok(Some((loc, _))) = spare.await else {
                return;
            };
            let action = || format!("cannot cancel an upload in {}", repo.whole());
            match self.send(t, &action, &|c| c.delete(&loc)).await {
                Ok(r) if r.status().is_success() || r.status() == StatusCode::NOT_FOUND => {}
                Ok(r) => tracing::debug!("{}: {}", action(), r.status()),
                Err(e) => tracing::debug!("{e}"),
            }
        });
        futures_util::future::join_all(cancel).await;
    }
}

/// Where a repository's spare sessions are kept: (host, repository).
fn key(t: Target<'_>) -> (String, String) {
    (t.host.to_string(), t.repo.to_string())
}
