//! Documents read by digest — a base's platform manifests and configs — kept on disk between
//! runs and checked against their digest on every read: a push of an unchanged base asks the
//! registry for its tag alone.

use std::path::{Path, PathBuf};

use oci_spec::image::Digest;

use crate::oci::digest::sha256;

/// Kept at most: a document larger than this is read from the registry each time.
const LIMIT: usize = 1 << 20;

/// Where `digest`'s document is kept under `dir` (sha256 only: the digest a file is checked by).
fn file(dir: &Path, digest: &Digest) -> Option<PathBuf> {
    let hex = digest.as_ref().strip_prefix("sha256:")?;
    hex.chars()
        .all(|c| c.is_ascii_hexdigit())
        .then(|| dir.join(hex))
}

/// The document kept for `digest`, if there is one and its bytes hash to it.
pub fn get(dir: &Path, digest: &Digest) -> Option<Vec<u8>> {
    let bytes = std::fs::read(file(dir, digest)?).ok()?;
    (sha256(&bytes) == *digest).then_some(bytes)
}

/// Keeps `bytes` as `digest`'s document (when they hash to it): written whole or not at all.
/// A failure only means the next run asks the registry again.
pub fn put(dir: &Path, digest: &Digest, bytes: &[u8]) {
    let Some(path) = file(dir, digest) else {
        return;
    };
    if bytes.len() > LIMIT || path.exists() || sha256(bytes) != *digest {
        return;
    }
    let written = std::fs::create_dir_all(dir).and_then(|()| {
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        std::io::Write::write_all(&mut tmp, bytes)?;
        tmp.persist(&path).map(|_| ()).map_err(|e| e.error)
    });
    if let Err(e) = written {
        tracing::debug!("cannot keep {digest} in {}: {e}", dir.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_kept_comes_back_only_while_it_matches_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let doc = br#"{"schemaVersion":2}"#;
        let digest = sha256(doc);
        assert_eq!(get(dir.path(), &digest), None);
        put(dir.path(), &digest, doc);
        assert_eq!(get(dir.path(), &digest).as_deref(), Some(&doc[..]));
        // Tampered with: read from the registry again.
        std::fs::write(file(dir.path(), &digest).unwrap(), b"{}").unwrap();
        assert_eq!(get(dir.path(), &digest), None);
        // Bytes that are not the digest's are never kept.
        let other = sha256(b"other");
        put(dir.path(), &other, doc);
        assert_eq!(get(dir.path(), &other), None);
    }
}
