//! Blob uploads that survive bad links (distribution spec, "Pushing blobs").
//!
//! A blob up to one chunk goes in one request (POST, then PUT with the body). A larger one goes
//! in chunks: PATCH with `Content-Range`, each answered by a `Range` that is checked against what
//! was sent. When a PATCH fails, the upload's status (GET on its location, `204` with `Range`)
//! says how much arrived, and the upload goes on from there: the bytes of the current chunk are
//! kept until the registry acknowledges them, so at most one chunk is sent again. Registries that
//! cannot resume (distribution 2.8 drops a session whose PATCH was cut: 404 BLOB_UPLOAD_INVALID)
//! get that one blob started again from its first byte, with a fresh session and a fresh source.
//! A registry that refuses PATCH gets every later blob in one request.
//!
//! Source bytes are verified as they pass ([`crate::digest::Verified`]); the last piece of a blob
//! is sent only once its source has ended cleanly, so a blob with the wrong bytes is never
//! committed, and that failure is final rather than retried.

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use oci_spec::distribution::Reference;
use oci_spec::image::Digest;
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RANGE};
use reqwest::{Response, StatusCode};
use tokio::sync::Mutex;

use super::send::{backoff, Verdict};
use super::{location, status_error, Registry, Target};
use crate::digest;
use crate::error::{Error, ExitCode, Result};
use crate::store::ByteStream;

/// Opens a blob's bytes from the start; called again when the blob has to start over.
pub type Opener<'a> = &'a (dyn Fn() -> BoxFuture<'a, Result<ByteStream>> + Send + Sync);

/// How one try at a blob ended, when it did not fail for good.
enum Step {
    Done,
    /// Start the blob over, for this reason.
    Again(String),
}

impl Registry {
    /// Uploads the blob `open` yields, of known `digest` and `size`, to `repo`.
    pub async fn upload(
        &self,
        repo: &Reference,
        digest: &Digest,
        size: u64,
        open: Opener<'_>,
    ) -> Result<()> {
        let t = Target::of(repo);
        let action = || format!("cannot upload blob {digest} to {}", repo.whole());
        let mut tries = 0;
        loop {
            tries += 1;
            let why = match self
                .upload_once(t, digest, size, open().await?, &action)
                .await?
            {
                Step::Done => return Ok(()),
                Step::Again(why) => why,
            };
            // The last try may have landed although its answer was lost.
            if self.has_blob(repo, digest).await? {
                return Ok(());
            }
            self.again(tries, &action(), &why, "starting it again", backoff(tries))
                .await?;
        }
    }

    async fn upload_once(
        &self,
        t: Target<'_>,
        digest: &Digest,
        size: u64,
        source: ByteStream,
        action: &(dyn Fn() -> String + Sync),
    ) -> Result<Step> {
        let base = format!("{}://{}/", self.scheme(t.host), t.host);
        let url = self.url(t, "blobs/uploads/");
        let res = self.send(t, action, &|c| c.post(&url)).await?;
        if res.status() != StatusCode::ACCEPTED {
            let status = res.status();
            let body = res.text().await.unwrap_or_default();
            return Err(status_error(status, &body, &action(), t.host));
        }
        let Some(mut loc) = location(&base, &res) else {
            return Err(Error::new(
                ExitCode::Registry,
                format!(
                    "{}: registry {} started an upload without a Location",
                    action(),
                    t.host
                ),
            ));
        };
        // A registry may ask for larger chunks (`OCI-Chunk-Min-Length`, distribution spec 1.1).
        let chunk = res
            .headers()
            .get("OCI-Chunk-Min-Length")
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .map_or(self.options.chunk, |min| min.max(self.options.chunk));
        let feed = Arc::new(Mutex::new(Feed::new(source, size, chunk.min(size))));

        if size <= chunk || self.monolithic.lock().expect("lock").contains(t.host) {
            let res = self
                .body_request(self.http.put(with_digest(&loc, digest)), t, &feed, 0, size)
                .await;
            return match res {
                Ok(r) if r.status().is_success() => Ok(Step::Done),
                Ok(r) => self.refused(r, t, action).await,
                Err(e) => Ok(match self.broken(&feed, &e, t).await? {
                    Ok(why) => Step::Again(why),
                    Err(step) => step,
                }),
            };
        }

        let mut tries = 0;
        loop {
            let (acked, read) = feed.lock().await.position();
            if acked == size {
                break;
            }
            let end = (acked + chunk).min(size).max(read);
            let req = self
                .http
                .patch(&loc)
                .header("Content-Range", format!("{acked}-{}", end - 1));
            let failure = match self.body_request(req, t, &feed, acked, end).await {
                Ok(r) if r.status() == StatusCode::ACCEPTED => {
                    loc = location(&base, &r).unwrap_or(loc);
                    // Spec: the registry MUST send Range; without it, trust the 202.
                    match range_end(&r).unwrap_or(end) {
                        n if n > acked && n <= end => {
                            feed.lock().await.ack(n);
                            tries = 0;
                            continue;
                        }
                        // Kept nothing: a failure like any other, or this would never end.
                        n if n == acked => "the registry kept none of the chunk".to_string(),
                        n => {
                            return Ok(Step::Again(format!(
                                "the registry acknowledged {n} bytes after {end} were sent"
                            )))
                        }
                    }
                }
                Ok(r) if r.status() == StatusCode::NOT_FOUND => {
                    return Ok(Step::Again("the registry lost the upload session".into()));
                }
                Ok(r) if matches!(r.status().as_u16(), 400 | 405 | 415 | 501) => {
                    self.monolithic
                        .lock()
                        .expect("lock")
                        .insert(t.host.to_string());
                    return Ok(Step::Again(format!(
                        "the registry refused a chunk ({}); sending blobs in one request",
                        r.status()
                    )));
                }
                Ok(r) if r.status() == StatusCode::UNAUTHORIZED => {
                    if !self.renew(t).await? {
                        return self.refused(r, t, action).await;
                    }
                    "the token expired".to_string()
                }
                Ok(r) => match self.judge_status(&r, tries + 1) {
                    Some(Verdict::Retry(_, why)) => why,
                    Some(Verdict::Fail(e)) => return Err(e.context(action())),
                    None if r.status() == StatusCode::RANGE_NOT_SATISFIABLE => {
                        "the registry disagrees about the upload's offset".to_string()
                    }
                    None => return self.refused(r, t, action).await,
                },
                Err(e) => match self.broken(&feed, &e, t).await? {
                    Ok(why) => why,
                    Err(step) => return Ok(step),
                },
            };
            tries += 1;
            let why = format!("{failure} at byte {acked}");
            self.again(
                tries,
                &action(),
                &why,
                "asking where the upload stands",
                backoff(tries),
            )
            .await?;
            let (_, read) = feed.lock().await.position();
            match self.upload_status(t, &base, &loc, action).await? {
                Some((n, next)) if n > acked.max(1) && n <= read => {
                    loc = next;
                    feed.lock().await.ack(n);
                }
                Some((n, next)) if n == acked && acked > 0 => loc = next,
                Some((n, _)) => {
                    return Ok(Step::Again(format!(
                        "the registry holds {n} bytes of the upload, {acked} were acknowledged \
                         and {read} sent"
                    )))
                }
                None => {
                    return Ok(Step::Again(
                        "the registry dropped the upload session after the failure".into(),
                    ))
                }
            }
        }

        let done = with_digest(&loc, digest);
        let res = self
            .send(t, action, &|c| c.put(&done).header(CONTENT_LENGTH, 0))
            .await?;
        if res.status().is_success() {
            return Ok(Step::Done);
        }
        self.refused(res, t, action).await
    }

    /// Sends `req` with the bytes `from..end` of the blob as its body.
    async fn body_request(
        &self,
        mut req: reqwest::RequestBuilder,
        t: Target<'_>,
        feed: &Arc<Mutex<Feed>>,
        from: u64,
        end: u64,
    ) -> reqwest::Result<Response> {
        if let Some(h) = self.header_for(t) {
            req = req.header(AUTHORIZATION, h);
        }
        let body = body(feed.clone(), end);
        let res = req
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, end - from)
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await;
        if res.is_ok() {
            self.answered(t.host);
        }
        res
    }

    /// `GET` on the upload: `(bytes held, next location)`, or `None` when the session is gone.
    /// `Range: 0-0` is read as nothing held (it could be one byte; resending it is harmless).
    async fn upload_status(
        &self,
        t: Target<'_>,
        base: &str,
        loc: &str,
        action: &(dyn Fn() -> String + Sync),
    ) -> Result<Option<(u64, String)>> {
        let res = self.send(t, action, &|c| c.get(loc)).await?;
        match res.status() {
            StatusCode::NO_CONTENT | StatusCode::OK => {
                let held = range_end(&res).filter(|n| *n > 1).unwrap_or(0);
                let next = location(base, &res).unwrap_or_else(|| loc.to_string());
                Ok(Some((held, next)))
            }
            _ => Ok(None),
        }
    }

    /// A final answer that is not success: a lost session is worth another try, anything else
    /// is worded as the error it is.
    async fn refused(
        &self,
        res: Response,
        t: Target<'_>,
        action: &(dyn Fn() -> String + Sync),
    ) -> Result<Step> {
        let status = res.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(Step::Again("the registry lost the upload session".into()));
        }
        if let Some(Verdict::Retry(_, why)) = self.judge_status(&res, 1) {
            return Ok(Step::Again(why));
        }
        let body = res.text().await.unwrap_or_default();
        Err(status_error(status, &body, &action(), t.host))
    }

    /// A request that broke off, because its source failed (wrong bytes are final; a broken
    /// download means starting the blob again) or because the link to the registry did (the
    /// upload may go on): `Step::Again`, or the link's failure.
    async fn broken(
        &self,
        feed: &Arc<Mutex<Feed>>,
        e: &reqwest::Error,
        t: Target<'_>,
    ) -> Result<std::result::Result<String, Step>> {
        if let Some(err) = feed.lock().await.failed.take() {
            if digest::is_mismatch(&err) {
                return Err(Error::image(err.to_string()));
            }
            return Ok(Err(Step::Again(format!("reading the blob failed: {err}"))));
        }
        match self.judge_transport(e, t.host, 1) {
            Verdict::Retry(_, why) => Ok(Ok(why)),
            Verdict::Fail(e) => Err(e),
        }
    }
}

/// The blob's source, read once, in order, across all the requests of one upload.
struct Feed {
    source: ByteStream,
    size: u64,
    /// Read from the source but beyond the end of the request that read it.
    leftover: Option<Bytes>,
    /// Bytes sent but not yet acknowledged: from `acked` to `acked + kept.len()`.
    kept: BytesMut,
    acked: u64,
    /// Why the source failed, when it did.
    failed: Option<std::io::Error>,
    /// The source failed: no more bytes from this feed.
    dead: bool,
}

impl Feed {
    /// `keep` is the most bytes ever kept: one chunk, allocated once.
    fn new(source: ByteStream, size: u64, keep: u64) -> Self {
        Feed {
            source,
            size,
            leftover: None,
            kept: BytesMut::with_capacity(keep as usize),
            acked: 0,
            failed: None,
            dead: false,
        }
    }

    /// (acknowledged, read so far).
    fn position(&self) -> (u64, u64) {
        (self.acked, self.acked + self.kept.len() as u64)
    }

    /// The registry holds the first `n` bytes: forget them.
    fn ack(&mut self, n: u64) {
        let drop = (n - self.acked) as usize;
        self.kept.advance(drop.min(self.kept.len()));
        if self.kept.is_empty() {
            self.kept.clear();
        }
        self.acked = n;
    }

    /// The next piece, up to `end`: first what was already read, then the source's bytes.
    /// The piece that completes the blob comes only after the source has ended cleanly.
    async fn next(&mut self, end: u64) -> Option<std::io::Result<Bytes>> {
        let (_, read) = self.position();
        if read >= end || self.dead {
            return None;
        }
        let piece = match self.leftover.take() {
            Some(p) => p,
            None => match self.source.next().await {
                Some(Ok(p)) => p,
                Some(Err(e)) => return Some(Err(self.fail(e))),
                None => {
                    let e = std::io::Error::other(digest::Mismatch(format!(
                        "the blob ended after {read} of {} bytes",
                        self.size
                    )));
                    return Some(Err(self.fail(e)));
                }
            },
        };
        let mut piece = piece;
        let want = (end - read) as usize;
        if piece.len() > want {
            self.leftover = Some(piece.split_off(want));
        }
        if read + piece.len() as u64 == self.size {
            match self.source.next().await {
                None => {}
                Some(Err(e)) => return Some(Err(self.fail(e))),
                Some(Ok(_)) => {
                    let e = std::io::Error::other(digest::Mismatch(format!(
                        "the blob is longer than its {} bytes",
                        self.size
                    )));
                    return Some(Err(self.fail(e)));
                }
            }
        }
        self.kept.extend_from_slice(&piece);
        Some(Ok(piece))
    }

    fn fail(&mut self, e: std::io::Error) -> std::io::Error {
        let shown = std::io::Error::other(e.to_string());
        self.failed = Some(e);
        self.dead = true;
        shown
    }
}

/// A request body: the kept bytes from the acknowledged offset (a resend), then the source's,
/// up to `end`.
fn body(feed: Arc<Mutex<Feed>>, end: u64) -> ByteStream {
    let kept = feed.clone();
    let resend = async move {
        let f = kept.lock().await;
        (!f.kept.is_empty()).then(|| Ok(Bytes::copy_from_slice(&f.kept)))
    };
    let resend = futures_util::stream::once(resend).filter_map(futures_util::future::ready);
    let fresh = futures_util::stream::unfold(feed.clone(), move |feed| async move {
        let item = feed.lock().await.next(end).await?;
        Some((item, feed))
    });
    resend
        .chain(fresh)
        .inspect(|r| {
            if let Ok(b) = r {
                crate::progress::sent(b.len());
            }
        })
        .boxed()
}

/// The upload location with `digest=` added, to complete the upload.
fn with_digest(loc: &str, digest: &Digest) -> String {
    let sep = if loc.contains('?') { '&' } else { '?' };
    format!(
        "{loc}{sep}digest={}",
        digest.to_string().replace(':', "%3A")
    )
}

/// The bytes a `Range: 0-<last>` (or `bytes=0-<last>`) acknowledges: `last + 1`.
fn range_end(res: &Response) -> Option<u64> {
    let text = res.headers().get(RANGE)?.to_str().ok()?;
    let text = text.trim().trim_start_matches("bytes=");
    let (_, last) = text.split_once('-')?;
    last.trim().parse::<u64>().ok().map(|n| n + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;

    fn source(parts: &[&'static [u8]]) -> ByteStream {
        stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
        .boxed()
    }

    async fn collect(s: ByteStream) -> Vec<u8> {
        let parts: Vec<_> = s.collect().await;
        parts
            .into_iter()
            .flat_map(|p| p.unwrap().to_vec())
            .collect()
    }

    #[tokio::test]
    async fn bodies_split_the_source_at_chunk_ends() {
        let feed = Arc::new(Mutex::new(Feed::new(source(&[b"abcdef", b"ghij"]), 10, 4)));
        assert_eq!(collect(body(feed.clone(), 4)).await, b"abcd");
        feed.lock().await.ack(4);
        assert_eq!(collect(body(feed.clone(), 8)).await, b"efgh");
        feed.lock().await.ack(8);
        assert_eq!(collect(body(feed.clone(), 10)).await, b"ij");
    }

    #[tokio::test]
    async fn a_partial_acknowledgement_resends_only_the_rest() {
        let feed = Arc::new(Mutex::new(Feed::new(source(&[b"abcdefgh"]), 8, 6)));
        assert_eq!(collect(body(feed.clone(), 6)).await, b"abcdef");
        feed.lock().await.ack(2);
        assert_eq!(collect(body(feed.clone(), 8)).await, b"cdefgh");
    }

    #[tokio::test]
    async fn the_last_piece_waits_for_the_source_to_end() {
        let bad = digest::Verified::new(source(&[b"abc"]), &digest::sha256(b"abd"), 3, "b".into())
            .unwrap()
            .boxed();
        let feed = Arc::new(Mutex::new(Feed::new(bad, 3, 3)));
        let parts: Vec<_> = body(feed.clone(), 3).collect().await;
        assert_eq!(parts.len(), 1, "the mismatched bytes were never yielded");
        assert!(parts[0].is_err());
        assert!(digest::is_mismatch(
            feed.lock().await.failed.as_ref().unwrap()
        ));
    }

    #[test]
    fn completing_url_keeps_the_session_state() {
        let d = digest::sha256(b"");
        assert_eq!(
            with_digest("http://r/v2/a/blobs/uploads/u?_state=x", &d),
            format!(
                "http://r/v2/a/blobs/uploads/u?_state=x&digest=sha256%3A{}",
                d.digest()
            )
        );
    }
}
