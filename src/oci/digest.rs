//! Content digests: compute them, verify bytes against them, and verify a stream as it passes.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use oci_spec::image::{Digest, DigestAlgorithm};
use sha2::{Digest as _, Sha256, Sha512};

use crate::error::{Error, Result};

/// The digest layerup writes: sha256, as every registry accepts.
pub fn sha256(bytes: &[u8]) -> Digest {
    from_sha256(Sha256::digest(bytes).as_slice())
}

/// A digest from a finished sha256 hash.
pub fn from_sha256(hash: &[u8]) -> Digest {
    format!("sha256:{}", hex::encode(hash))
        .parse()
        .expect("64 hex digits are a valid sha256 digest")
}

/// Parses a digest string from a manifest or a registry header, naming `what` on failure.
pub fn parse(text: &str, what: &str) -> Result<Digest> {
    text.parse()
        .map_err(|e| Error::image(format!("{what} has an invalid digest `{text}`: {e}")))
}

/// A file's content hash, as the file index keeps it: sha256.
pub type Sha = [u8; 32];

/// An incremental hash for one of the algorithms a base image may use. Cloned to keep a
/// checkpoint: a transfer that must go back to an offset starts hashing again from there.
#[derive(Clone)]
pub enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub fn for_digest(expected: &Digest) -> Result<Self> {
        match expected.algorithm() {
            DigestAlgorithm::Sha256 => Ok(Hasher::Sha256(Sha256::new())),
            DigestAlgorithm::Sha512 => Ok(Hasher::Sha512(Sha512::new())),
            other => Err(Error::image(format!(
                "digest `{expected}` uses the unsupported algorithm `{other}`"
            ))),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    /// Whether the bytes hashed so far are exactly what `expected` names.
    pub fn matches(self, expected: &Digest) -> bool {
        self.finish_hex() == expected.digest()
    }

    /// The lowercase hex of the hash.
    pub fn finish_hex(self) -> String {
        match self {
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Sha512(h) => hex::encode(h.finalize()),
        }
    }
}

/// Checks that `bytes` are exactly what `expected` names; `what` says where they came from.
pub fn verify(bytes: &[u8], expected: &Digest, what: &str) -> Result<()> {
    let mut hasher = Hasher::for_digest(expected)?;
    hasher.update(bytes);
    let actual = hasher.finish_hex();
    if actual != expected.digest() {
        return Err(Error::image(format!(
            "{what} does not match its digest: expected {expected}, got {}:{actual}",
            expected.algorithm()
        )));
    }
    Ok(())
}

/// The error a [`Verified`] stream ends with: the bytes are not the ones named. Retrying the
/// same source is pointless, so transfers tell it apart from a broken connection with
/// [`is_mismatch`].
#[derive(Debug)]
pub struct Mismatch(pub String);

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Mismatch {}

pub fn is_mismatch(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Mismatch>())
}

/// Passes a byte stream through, and fails its last poll if the bytes did not hash to the
/// expected digest or were not the expected size. A consumer that commits only after the stream
/// ends cleanly (a registry upload's final PUT, a layout's rename) therefore never commits
/// mismatched bytes.
pub struct Verified<S> {
    inner: S,
    hasher: Option<Hasher>,
    expected: Digest,
    expected_size: u64,
    seen: u64,
    what: String,
}

impl<S> Verified<S> {
    pub fn new(inner: S, expected: &Digest, expected_size: u64, what: String) -> Result<Self> {
        Ok(Verified {
            inner,
            hasher: Some(Hasher::for_digest(expected)?),
            expected: expected.clone(),
            expected_size,
            seen: 0,
            what,
        })
    }
}

impl<S> Stream for Verified<S>
where
    S: Stream<Item = std::io::Result<Bytes>> + Unpin,
{
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.seen += chunk.len() as u64;
                if let Some(h) = this.hasher.as_mut() {
                    h.update(&chunk);
                }
                if this.seen > this.expected_size {
                    this.hasher = None;
                    return Poll::Ready(Some(Err(std::io::Error::other(Mismatch(format!(
                        "{} is longer than the {} bytes its descriptor states",
                        this.what, this.expected_size
                    ))))));
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(None) => match this.hasher.take() {
                None => Poll::Ready(None),
                Some(h) => {
                    let actual = h.finish_hex();
                    if this.seen != this.expected_size {
                        Poll::Ready(Some(Err(std::io::Error::other(Mismatch(format!(
                            "{} ended after {} of {} bytes",
                            this.what, this.seen, this.expected_size
                        ))))))
                    } else if actual != this.expected.digest() {
                        Poll::Ready(Some(Err(std::io::Error::other(Mismatch(format!(
                            "{} does not match its digest {}",
                            this.what, this.expected
                        ))))))
                    } else {
                        Poll::Ready(None)
                    }
                }
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[test]
    fn sha256_of_empty_input_is_the_well_known_value() {
        assert_eq!(
            sha256(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn verify_names_both_digests_on_mismatch() {
        let expected = sha256(b"right");
        let err = verify(b"wrong", &expected, "config blob").unwrap_err();
        assert!(err
            .to_string()
            .starts_with("config blob does not match its digest"));
        assert!(err.to_string().contains(&expected.to_string()));
    }

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = std::io::Result<Bytes>> + Unpin {
        futures_util::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn verified_stream_passes_matching_bytes() {
        let s = Verified::new(chunks(&[b"ab", b"c"]), &sha256(b"abc"), 3, "blob".into()).unwrap();
        let out: Vec<_> = s.collect().await;
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|r| r.is_ok()));
    }

    #[tokio::test]
    async fn verified_stream_fails_at_the_end_on_wrong_bytes() {
        let s = Verified::new(chunks(&[b"ab", b"d"]), &sha256(b"abc"), 3, "blob".into()).unwrap();
        let out: Vec<_> = s.collect().await;
        let last = out.last().unwrap().as_ref().unwrap_err().to_string();
        assert!(last.contains("does not match its digest"), "{last}");
    }

    #[tokio::test]
    async fn verified_stream_fails_on_short_body() {
        let s = Verified::new(chunks(&[b"ab"]), &sha256(b"abc"), 3, "blob".into()).unwrap();
        let out: Vec<_> = s.collect().await;
        let last = out.last().unwrap().as_ref().unwrap_err().to_string();
        assert!(last.contains("ended after 2 of 3 bytes"), "{last}");
    }
}
