//! Blob uploads that survive bad links (distribution spec, "Pushing blobs").
//!
//! A blob up to 64 KiB goes in the POST itself (`?digest=`, the spec's "single POST") where
//! the registry takes that (zot: 201); distribution opens a session instead (202), where the
//! bytes go on in the PUT, and the host is not asked so again. A blob up to one chunk goes in
//! two requests (POST, then PUT with the body). A larger one
//! streams in one PATCH with the whole body, then an empty PUT — one round trip and one append
//! on the registry, as docker and crane send it. Only when that PATCH fails does the upload go
//! in chunks: the upload's status (GET on its location, `204` with `Range`) says how much
//! arrived, and PATCHes with `Content-Range` go on from there, each answer's `Range` checked.
//! With `--chunk-size` given, larger blobs go in chunks from their first byte. Registries that
//! cannot resume (distribution 2.8 drops a session whose PATCH was cut: 404
//! BLOB_UPLOAD_INVALID) get that one blob started again from its first byte, with a fresh
//! session.
//!
//! Registries differ in what they take (docs/registries.md), and layerup goes by what each
//! answers, never by its host name, remembering it for the run ([`Style`]): one that refuses
//! PATCH gets every later blob in one PUT (Artifact Registry); one that refuses a PATCH as too
//! large gets chunks from then on (GHCR: 4 MiB); one that refuses a blob in the PUT gets it in
//! a PATCH and an empty PUT (Artifactory). A PATCH is acknowledged by any 2xx (ECR: 201), and
//! a `Range` that does not move after a 2xx is not taken as bytes lost (ECR's stays at its
//! first value): the digest the registry checks on the final PUT is the proof.
//!
//! The bytes come through a [`Cursor`]: verified as they pass, so a blob with the wrong bytes
//! is never committed and that failure is final; and able to go back to the offset a registry
//! names, re-reading its origin rather than keeping sent bytes in memory.

use std::sync::Arc;

use oci_spec::distribution::Reference;
use oci_spec::image::Digest;
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RANGE};
use reqwest::{Response, StatusCode};
use tokio::sync::Mutex;

use super::send::{backoff, refuses_token, Verdict};
use super::{location, status_error, write_record, Registry, Target};
use crate::error::{Error, ExitCode, Result};
use crate::oci::stream::{self, Cursor};

/// How one try at a blob ended, when it did not fail for good.
enum Step {
    Done,
    /// Start the blob over, for this reason.
    Again(String),
}

/// What a `PATCH` the registry answered `202` came to.
enum Ack {
    /// Bytes were acknowledged; the cursor stands after them.
    Advanced,
    /// None were: a failure to recover from.
    Nothing(String),
    /// Start the blob over.
    Again(Step),
}

/// How the bytes after the acknowledged offset are sent.
#[derive(Clone, Copy, PartialEq)]
enum Pace {
    /// Everything left, in one PATCH without `Content-Range` (a streamed upload).
    Whole,
    /// At most one chunk per PATCH, with `Content-Range`.
    Chunks,
}

type Action<'a> = &'a (dyn Fn() -> String + Sync);

/// The state's directory of what each registry taught about uploads.
const STYLES: &str = "upload-styles";

/// What a registry's answers taught about how it takes blobs, kept per host for the run and
/// in the state for the next runs (`upload-styles/<host>`), so that a one-shot push does not
/// meet the same refusal every time.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub(super) struct Style {
    /// Every blob in the PUT that completes its upload: a PATCH was refused.
    whole: bool,
    /// At most one chunk per PATCH: a whole-blob PATCH was refused as too large.
    chunks: bool,
    /// Never a blob in the PUT: that was refused; a PATCH, then an empty PUT.
    patch: bool,
    /// No small blob in the POST that opens an upload: the registry opened a session instead
    /// (distribution), or refused it.
    no_single_post: bool,
}

/// Blobs up to this size go in the POST itself (distribution spec, "single POST") where the
/// registry takes that: one round trip. Where it does not, they are sent again in the session
/// it opened — a cost paid once per registry, as what it answered is kept.
const SINGLE_POST_MAX: u64 = 64 << 10;

/// What a single-POST upload came to.
enum Single {
    Done,
    /// Not taken: the blob's bytes, read, and the session the registry opened instead (else
    /// one is opened as usual).
    Not(Option<String>, bytes::Bytes),
}

impl Registry {
    /// Uploads the blob the cursor reads, of known `digest`, to `repo`.
    pub async fn upload(
        &self,
        repo: &Reference,
        digest: &Digest,
        cursor: Arc<Mutex<Cursor>>,
    ) -> Result<()> {
        let t = Target::of(repo);
        let action = || format!("cannot upload blob {digest} to {}", repo.whole());
        let mut tries = 0;
        loop {
            tries += 1;
            let why = match self.upload_once(t, digest, &cursor, &action).await? {
                Step::Done => {
                    self.saw(t, digest);
                    return Ok(());
                }
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

    /// One try at a blob: a new upload session, then the bytes — in one request when the blob
    /// fits in a chunk or the registry takes only that, else streamed PATCHes — then the PUT that
    /// completes it.
    async fn upload_once(
        &self,
        t: Target<'_>,
        digest: &Digest,
        cursor: &Arc<Mutex<Cursor>>,
        action: Action<'_>,
    ) -> Result<Step> {
        let size = {
            let mut c = cursor.lock().await;
            if let Err(e) = c.seek(0).await {
                return Err(self.cursor_failure(&mut c, &e));
            }
            c.size()
        };
        let base = self.origin(t.host);
        let opened = self.opened.lock().expect("opened lock").remove(&(
            t.host.to_string(),
            t.repo.to_string(),
            digest.to_string(),
        ));
        let style = self.style(t.host);
        if opened.is_none() && size <= SINGLE_POST_MAX && !style.no_single_post {
            match self
                .single_post(t, &base, digest, cursor, size, action)
                .await?
            {
                Single::Done => return Ok(Step::Done),
                // The bytes in hand, not read again (a blob of another registry would be).
                Single::Not(opened, bytes) if !self.style(t.host).patch => {
                    let loc = match opened {
                        Some(loc) => loc,
                        None => self.open_upload(t, &base, action).await?.0,
                    };
                    return self.put_bytes(t, &loc, digest, bytes, action).await;
                }
                Single::Not(..) => self.rewind(cursor, 0).await?,
            }
        }
        let (loc, chunk) = match opened {
            Some(loc) => (loc, self.options.chunk),
            None => self.open_upload(t, &base, action).await?,
        };
        let style = self.style(t.host);
        if style.whole || (size <= chunk && !style.patch) {
            return self.put_whole(t, &loc, digest, cursor, size, action).await;
        }
        let loc = match self
            .patches(t, &base, loc, cursor, (size, chunk), action)
            .await?
        {
            Ok(loc) => loc,
            Err(step) => return Ok(step),
        };
        let done = with_digest(&loc, digest);
        let res = self
            .send(t, action, &|c| c.put(&done).header(CONTENT_LENGTH, 0))
            .await?;
        if res.status().is_success() {
            return Ok(Step::Done);
        }
        self.refused(res, t, action).await
    }

    /// An upload session for a blob: one opened ahead of need, else a new one.
    async fn open_upload(
        &self,
        t: Target<'_>,
        base: &str,
        action: Action<'_>,
    ) -> Result<(String, u64)> {
        match self.take_spare(t).await {
            Some(opened) => Ok(opened),
            None => self.start_upload(t, base, action).await,
        }
    }

    /// `POST` a new upload session: its location, and the chunk size to use with it (a
    /// registry may ask for larger chunks: `OCI-Chunk-Min-Length`, distribution spec 1.1).
    pub(super) async fn start_upload(
        &self,
        t: Target<'_>,
        base: &str,
        action: Action<'_>,
    ) -> Result<(String, u64)> {
        let url = self.url(t, "blobs/uploads/");
        let res = self.send(t, action, &|c| c.post(&url)).await?;
        if res.status() != StatusCode::ACCEPTED {
            let status = res.status();
            let body = self.answer_text(res).await;
            return Err(status_error(status, &body, &action(), t.host));
        }
        let Some(loc) = location(base, &res) else {
            return Err(Error::new(
                ExitCode::Registry,
                format!(
                    "{}: registry {} started an upload without a Location",
                    action(),
                    t.host
                ),
            ));
        };
        let chunk = res
            .headers()
            .get("OCI-Chunk-Min-Length")
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .map_or(self.options.chunk, |min| min.max(self.options.chunk));
        Ok((loc, chunk))
    }

    /// The whole blob in the `POST` that would open an upload (`?digest=`): 201, done. A
    /// registry that answers otherwise is not asked so again (kept in its style).
    async fn single_post(
        &self,
        t: Target<'_>,
        base: &str,
        digest: &Digest,
        cursor: &Arc<Mutex<Cursor>>,
        size: u64,
        action: Action<'_>,
    ) -> Result<Single> {
        // Small: read whole (verified on the way), so that `send` can retry and renew.
        let mut bytes = Vec::with_capacity(size as usize);
        let mut body = stream::body(cursor.clone(), size);
        while let Some(piece) = futures_util::StreamExt::next(&mut body).await {
            match piece {
                Ok(p) => bytes.extend_from_slice(&p),
                Err(e) => return Err(self.cursor_failure(&mut *cursor.lock().await, &e)),
            }
        }
        let bytes = bytes::Bytes::from(bytes);
        let url = self.url(t, "blobs/uploads/");
        let query = [("digest", digest.to_string())];
        let res = self
            .send(t, action, &|c| {
                c.post(&url)
                    .query(&query)
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .body(bytes.clone())
            })
            .await?;
        let status = res.status();
        if status == StatusCode::CREATED {
            return Ok(Single::Done);
        }
        // 202 (a session instead), a refusal, or another 2xx that does not say it stored it.
        if status.is_success() || refuses_body(status) {
            tracing::debug!(
                "{} answered {status} to a blob in a POST; not sent so again",
                t.host
            );
            self.learn(t.host, |s| s.no_single_post = true);
            let opened = location(base, &res).filter(|_| status == StatusCode::ACCEPTED);
            return Ok(Single::Not(opened, bytes));
        }
        let body = self.answer_text(res).await;
        Err(status_error(status, &body, &action(), t.host))
    }

    /// A small blob already read, in the `PUT` that completes the upload at `loc`.
    async fn put_bytes(
        &self,
        t: Target<'_>,
        loc: &str,
        digest: &Digest,
        bytes: bytes::Bytes,
        action: Action<'_>,
    ) -> Result<Step> {
        let done = with_digest(loc, digest);
        let res = self
            .send(t, action, &|c| {
                c.put(&done)
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .body(bytes.clone())
            })
            .await?;
        if res.status().is_success() {
            return Ok(Step::Done);
        }
        self.refused(res, t, action).await
    }

    /// The whole blob in the `PUT` that completes the upload.
    async fn put_whole(
        &self,
        t: Target<'_>,
        loc: &str,
        digest: &Digest,
        cursor: &Arc<Mutex<Cursor>>,
        size: u64,
        action: Action<'_>,
    ) -> Result<Step> {
        let res = self
            .body_request(self.http.put(with_digest(loc, digest)), t, cursor, size)
            .await;
        self.check_elsewhere(t, &res, action)?;
        match res {
            Ok(r) if r.status().is_success() => Ok(Step::Done),
            Ok(r) if refuses_body(r.status()) && !self.style(t.host).whole => {
                self.learn(t.host, |s| s.patch = true);
                Ok(Step::Again(format!(
                    "the registry refused the blob in the PUT that completes an upload ({}); \
                     sending blobs in a PATCH, then an empty PUT",
                    r.status()
                )))
            }
            Ok(r) if refuses_token(r.status()) && self.renew(t).await? => Ok(Step::Again(format!(
                "the registry refused the token ({}); fetched a fresh one",
                r.status()
            ))),
            Ok(r) => self.refused(r, t, action).await,
            Err(e) => Ok(match self.broken(cursor, &e, t).await? {
                Ok(why) => Step::Again(why),
                Err(step) => step,
            }),
        }
    }

    /// The bytes in `PATCH`es: everything in one streamed request, then after a failure a
    /// chunk per request from where the registry says it stands. The location to complete the
    /// upload at, once every byte is acknowledged; or the step to take instead.
    async fn patches(
        &self,
        t: Target<'_>,
        base: &str,
        mut loc: String,
        cursor: &Arc<Mutex<Cursor>>,
        (size, chunk): (u64, u64),
        action: Action<'_>,
    ) -> Result<std::result::Result<String, Step>> {
        let mut pace = if self.options.chunked || self.style(t.host).chunks {
            Pace::Chunks
        } else {
            Pace::Whole
        };
        let mut tries = 0;
        loop {
            let acked = cursor.lock().await.position();
            if acked == size {
                return Ok(Ok(loc));
            }
            let end = match pace {
                Pace::Whole => size,
                Pace::Chunks => (acked + chunk).min(size),
            };
            let mut req = self.http.patch(&loc);
            if pace == Pace::Chunks {
                req = req.header("Content-Range", format!("{acked}-{}", end - 1));
            }
            let res = self.body_request(req, t, cursor, end).await;
            self.check_elsewhere(t, &res, action)?;
            let failure = match res {
                // 202 as the spec says; ECR answers 201.
                Ok(r) if r.status().is_success() => {
                    loc = location(base, &r).unwrap_or(loc);
                    match self.acknowledged(&r, cursor, acked, end).await? {
                        Ack::Advanced => {
                            tries = 0;
                            continue;
                        }
                        Ack::Nothing(why) => why,
                        Ack::Again(step) => return Ok(Err(step)),
                    }
                }
                Ok(r) if r.status() == StatusCode::RANGE_NOT_SATISFIABLE && pace == Pace::Whole => {
                    // Too large for one request (GHCR: 4 MiB): chunks, for every later blob too.
                    self.learn(t.host, |s| s.chunks = true);
                    "the registry refused the blob in one PATCH (416); sending it in chunks"
                        .to_string()
                }
                Ok(r) => match self.patch_refused(r, t, tries, action).await? {
                    Ok(why) => why,
                    Err(step) => return Ok(Err(step)),
                },
                Err(e) => match self.broken(cursor, &e, t).await? {
                    Ok(why) => why,
                    Err(step) => return Ok(Err(step)),
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
            // From here on, chunks: each acknowledged, so another failure costs at most one.
            pace = Pace::Chunks;
            let sent = cursor.lock().await.position();
            match self.upload_status(t, base, &loc, action).await? {
                Some((n, next)) if n <= sent => {
                    loc = next;
                    self.rewind(cursor, n).await?;
                }
                Some((n, _)) => {
                    return Ok(Err(Step::Again(format!(
                        "the registry holds {n} bytes of the upload, {sent} were sent"
                    ))))
                }
                None => {
                    return Ok(Err(Step::Again(
                        "the registry dropped the upload session after the failure".into(),
                    )))
                }
            }
        }
    }

    /// What a `202` to a `PATCH` of the bytes `acked..end` acknowledged.
    async fn acknowledged(
        &self,
        r: &Response,
        cursor: &Arc<Mutex<Cursor>>,
        acked: u64,
        end: u64,
    ) -> Result<Ack> {
        // Spec: the registry MUST send Range; without it, trust the 202.
        Ok(match range_end(r).unwrap_or(end) {
            n if n == end => Ack::Advanced,
            n if n > acked && n < end => {
                self.rewind(cursor, n).await?;
                Ack::Advanced
            }
            // A 2xx whose Range did not move: ECR's stays at its first value while it keeps
            // every byte (aws/containers-roadmap#2831). The final PUT's digest check decides.
            n if n == acked && acked > 0 => {
                tracing::debug!("the registry's Range stayed at {n} after a 2xx; going on");
                Ack::Advanced
            }
            // Kept nothing of the first bytes: a failure like any other.
            n if n == acked => Ack::Nothing("the registry kept none of the bytes sent".into()),
            n => Ack::Again(Step::Again(format!(
                "the registry acknowledged {n} bytes after {end} were sent"
            ))),
        })
    }

    /// A `PATCH` answered with anything but `202`: the failure to recover from (`Ok`), or the
    /// step to take (start over: a lost session, a registry that takes no chunks).
    async fn patch_refused(
        &self,
        r: Response,
        t: Target<'_>,
        tries: u32,
        action: Action<'_>,
    ) -> Result<std::result::Result<String, Step>> {
        let status = r.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(Err(Step::Again(
                "the registry lost the upload session".into(),
            )));
        }
        if matches!(status.as_u16(), 400 | 405 | 415 | 501) && !self.style(t.host).patch {
            self.learn(t.host, |s| s.whole = true);
            return Ok(Err(Step::Again(format!(
                "the registry refused a chunk ({status}); sending blobs in one request"
            ))));
        }
        if refuses_token(status) {
            if !self.renew(t).await? {
                return self.refused(r, t, action).await.map(Err);
            }
            return Ok(Ok(format!(
                "the registry refused the token ({status}); fetched a fresh one"
            )));
        }
        match self.judge_status(&r, tries + 1) {
            Some(Verdict::Retry(_, why)) => Ok(Ok(why)),
            Some(Verdict::Fail(e)) => Err(e.context(action())),
            None if status == StatusCode::RANGE_NOT_SATISFIABLE => Ok(Ok(
                "the registry disagrees about the upload's offset".to_string(),
            )),
            None => self.refused(r, t, action).await.map(Err),
        }
    }

    /// An upload sent on to another host that asks for credentials: final (see `send`).
    fn check_elsewhere(
        &self,
        t: Target<'_>,
        res: &reqwest::Result<Response>,
        action: Action<'_>,
    ) -> Result<()> {
        match res {
            Ok(r)
                if r.status() == StatusCode::UNAUTHORIZED && !self.same_origin(t.host, r.url()) =>
            {
                Err(self.refused_elsewhere(t, r, action))
            }
            _ => Ok(()),
        }
    }

    /// Goes back to offset `n`, which the registry holds.
    async fn rewind(&self, cursor: &Arc<Mutex<Cursor>>, n: u64) -> Result<()> {
        let mut c = cursor.lock().await;
        match c.seek(n).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.cursor_failure(&mut c, &e)),
        }
    }

    fn cursor_failure(&self, c: &mut Cursor, e: &std::io::Error) -> Error {
        let real = c.take_failure();
        stream::failure("the blob", real.as_ref().unwrap_or(e))
    }

    /// Sends `req` with the cursor's bytes from where it stands up to `end` as its body.
    async fn body_request(
        &self,
        req: reqwest::RequestBuilder,
        t: Target<'_>,
        cursor: &Arc<Mutex<Cursor>>,
        end: u64,
    ) -> reqwest::Result<Response> {
        let from = cursor.lock().await.position();
        let body = stream::body(cursor.clone(), end);
        let mut req = req
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, end - from)
            .body(reqwest::Body::wrap_stream(body))
            .build()?;
        if let Some(h) = self.header_for(t, req.url()) {
            req.headers_mut().insert(AUTHORIZATION, h);
        }
        let res = self.execute(req, 1).await;
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
        action: Action<'_>,
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
    async fn refused(&self, res: Response, t: Target<'_>, action: Action<'_>) -> Result<Step> {
        let status = res.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(Step::Again("the registry lost the upload session".into()));
        }
        if let Some(Verdict::Retry(_, why)) = self.judge_status(&res, 1) {
            return Ok(Step::Again(why));
        }
        let body = self.answer_text(res).await;
        Err(status_error(status, &body, &action(), t.host))
    }

    /// A request that broke off, because its source failed for good (wrong bytes, or an
    /// origin that kept failing: final) or because the link to the registry did (the upload
    /// may go on): the reason to go on, or the step to take.
    async fn broken(
        &self,
        cursor: &Arc<Mutex<Cursor>>,
        e: &reqwest::Error,
        t: Target<'_>,
    ) -> Result<std::result::Result<String, Step>> {
        if let Some(err) = cursor.lock().await.take_failure() {
            return Err(stream::failure("the blob", &err));
        }
        match self.judge_transport(e, t.host, 1) {
            Verdict::Retry(_, why) => Ok(Ok(why)),
            Verdict::Fail(e) => Err(e),
        }
    }
}

impl Registry {
    /// `host` is known to take no blob in the `POST` that opens an upload: every blob there
    /// needs a session of its own.
    pub(super) fn session_per_blob(&self, host: &str) -> bool {
        self.style(host).no_single_post
    }

    fn style(&self, host: &str) -> Style {
        self.with_style(host, |s| *s)
    }

    /// Changes what `host` taught, for the run and in the state.
    fn learn(&self, host: &str, change: impl FnOnce(&mut Style)) {
        let style = self.with_style(host, |s| {
            change(s);
            *s
        });
        if let Some(file) = self.host_record(STYLES, host) {
            write_record(
                &file,
                &serde_json::to_vec(&style).expect("a style serialises"),
            );
        }
    }

    /// `f` on `host`'s style, under the lock; read from the state the first time.
    fn with_style<R>(&self, host: &str, f: impl FnOnce(&mut Style) -> R) -> R {
        let mut styles = self.styles.lock().expect("styles lock");
        f(styles.entry(host.to_string()).or_insert_with(|| {
            // What an earlier run learnt; anything unreadable is forgotten, not trusted.
            self.host_record(STYLES, host)
                .and_then(|f| std::fs::read(f).ok())
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default()
        }))
    }
}

/// A PUT carrying the blob answered so: the registry takes no blob there (Artifactory: 404
/// `BLOB_UNKNOWN`, docker/buildx#196), not a transient failure.
fn refuses_body(status: StatusCode) -> bool {
    matches!(status.as_u16(), 400 | 404 | 405 | 411 | 415 | 501)
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

    #[test]
    fn completing_url_keeps_the_session_state() {
        let d = crate::oci::digest::sha256(b"");
        assert_eq!(
            with_digest("http://r/v2/a/blobs/uploads/u?_state=x", &d),
            format!(
                "http://r/v2/a/blobs/uploads/u?_state=x&digest=sha256%3A{}",
                d.digest()
            )
        );
    }
}
