//! OCI image layouts on disk (image-spec `image-layout.md`): find a manifest through `index.json`,
//! read and write blobs under `blobs/<alg>/<hex>`, and tag a manifest — blobs first, `index.json`
//! last and atomically, the same order as a registry push.

use std::io::Write;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use oci_spec::image::Digest;
use serde_json::{json, Value};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use crate::error::{Error, ExitCode, Result};
use crate::oci::digest;
use crate::oci::manifest::Descriptor;
use crate::oci::stream::{file_stream, ByteStream};

const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// How this module's temporary files begin; a killed run's are deleted by the next writer.
const TMP_PREFIX: &str = ".layerup-";

#[derive(Debug, Clone)]
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    /// An existing layout, for reading.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.join("oci-layout").is_file() || !dir.join("index.json").is_file() {
            return Err(Error::new(
                ExitCode::NotFound,
                format!(
                    "`{}` is not an OCI image layout (no oci-layout and index.json files)",
                    dir.display()
                ),
            ));
        }
        Ok(Layout { dir: dir.into() })
    }

    /// A layout to write into; created when missing.
    pub fn create(dir: &Path) -> Result<Self> {
        // An existing directory that holds something and is no layout is someone's: layerup
        // writes `blobs/` and `oci-layout` only into a layout or an empty or new directory.
        let marker = dir.join("oci-layout");
        let holds_something = std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some());
        if holds_something && !marker.exists() {
            return Err(Error::usage(format!(
                "`{}` is a directory that holds files and is not an OCI layout (no oci-layout \
                 file): give a new or empty directory, or a layout",
                dir.display()
            )));
        }
        std::fs::create_dir_all(dir.join("blobs/sha256"))
            .map_err(|e| Error::io("create layout directory", dir, &e))?;
        // Blobs and index.json half-written by a run that was killed.
        for d in [dir, &dir.join("blobs/sha256")] {
            crate::stale::remove(d, TMP_PREFIX, "");
        }
        if !marker.exists() {
            write_atomic(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let index = dir.join("index.json");
        if !index.exists() {
            write_atomic(&index, br#"{"schemaVersion":2,"manifests":[]}"#)?;
        }
        Ok(Layout { dir: dir.into() })
    }

    fn index(&self) -> Result<Value> {
        let path = self.dir.join("index.json");
        let bytes = std::fs::read(&path).map_err(|e| Error::io("read", &path, &e))?;
        let index: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::image(format!("`{}` is not valid JSON: {e}", path.display())))?;
        if !index.get("manifests").is_some_and(Value::is_array) {
            return Err(Error::image(format!(
                "`{}` has no manifests list",
                path.display()
            )));
        }
        Ok(index)
    }

    /// The descriptor `index.json` holds for `tag`, or for `digest`. With neither, the only
    /// manifest in the layout (as skopeo writes `oci:DIR`), or else the one tagged `latest`.
    pub fn find(&self, tag: Option<&str>, digest: Option<&Digest>) -> Result<Descriptor> {
        let index = self.index()?;
        let entries = index["manifests"].as_array().expect("checked in index()");
        let name_of = |e: &Value| {
            e.pointer("/annotations/org.opencontainers.image.ref.name")
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let what = format!("layout `{}`", self.dir.display());
        if let Some(d) = digest {
            if let Some(e) = entries
                .iter()
                .find(|e| e.get("digest").and_then(Value::as_str) == Some(d.as_ref()))
            {
                return Descriptor::parse(e, &format!("{what} entry {d}"));
            }
            // Not listed, but a child of a listed index may still be asked for by digest.
            let path = self.blob_path(d);
            let size = std::fs::metadata(&path)
                .map_err(|_| Error::new(ExitCode::NotFound, format!("{what} has no manifest {d}")))?
                .len();
            return Ok(Descriptor::new("", d.clone(), size));
        }
        let wanted = tag.map(str::to_string);
        let found = match &wanted {
            Some(t) => entries
                .iter()
                .rev()
                .find(|e| name_of(e).as_ref() == Some(t)),
            None if entries.len() == 1 => entries.first(),
            None => entries
                .iter()
                .rev()
                .find(|e| name_of(e).as_deref() == Some("latest")),
        };
        match found {
            Some(e) => Descriptor::parse(e, &format!("{what} entry")),
            None => {
                let tags: Vec<String> = entries.iter().filter_map(name_of).collect();
                Err(Error::new(
                    ExitCode::NotFound,
                    format!(
                        "{what} has no image tagged `{}`{}",
                        wanted.as_deref().unwrap_or("latest"),
                        if tags.is_empty() {
                            String::new()
                        } else {
                            format!("; it has {}", tags.join(", "))
                        }
                    ),
                ))
            }
        }
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.dir
            .join("blobs")
            .join(d.algorithm().to_string())
            .join(d.digest())
    }

    /// A blob that is not there is "not found"; any other failure names the file.
    fn read_error(&self, d: &Digest, path: &Path, e: &std::io::Error) -> Error {
        if e.kind() == std::io::ErrorKind::NotFound {
            let dir = self.dir.display();
            Error::new(ExitCode::NotFound, format!("layout `{dir}` lacks blob {d}"))
        } else {
            Error::io("read", path, e)
        }
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// A small blob, whole and verified.
    pub fn blob_bytes(&self, d: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(d);
        let bytes = std::fs::read(&path).map_err(|e| self.read_error(d, &path, &e))?;
        digest::verify(&bytes, d, &format!("blob `{}`", path.display()))?;
        Ok(bytes)
    }

    /// A blob's bytes from offset `from`, unverified (read it through a cursor).
    pub async fn blob_from(&self, d: &Digest, from: u64) -> Result<ByteStream> {
        let path = self.blob_path(d);
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| self.read_error(d, &path, &e))?;
        if from > 0 {
            file.seek(std::io::SeekFrom::Start(from))
                .await
                .map_err(|e| Error::io("read", &path, &e))?;
        }
        Ok(file_stream(file))
    }

    /// Writes a blob from a stream; it appears under its digest only once every byte is there
    /// and verified (temporary file, then rename).
    pub async fn put_blob(&self, d: &Digest, size: u64, body: ByteStream) -> Result<()> {
        if self.has_blob(d) {
            return Ok(());
        }
        let final_path = self.blob_path(d);
        let parent = final_path.parent().expect("blob path has a parent");
        std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, &e))?;
        let tmp = tempfile::Builder::new()
            .prefix(TMP_PREFIX)
            .tempfile_in(parent)
            .map_err(|e| Error::io("create a temporary file in", parent, &e))?;
        let (std_file, tmp_path) = tmp.into_parts();
        let mut file = tokio::fs::File::from_std(std_file);
        let mut body = digest::Verified::new(body, d, size, format!("blob {d}"))?;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Error::image(format!("cannot write blob {d}: {e}")))?;
            file.write_all(&chunk)
                .await
                .map_err(|e| Error::io("write", &tmp_path, &e))?;
        }
        file.sync_all()
            .await
            .map_err(|e| Error::io("write", &tmp_path, &e))?;
        tmp_path
            .persist(&final_path)
            .map_err(|e| Error::io("rename into", &final_path, &e.error))?;
        Ok(())
    }

    /// Stores a manifest blob and points `tag` at it in `index.json`, replacing what it named.
    pub fn put_manifest(&self, bytes: &[u8], media_type: &str, tag: &str) -> Result<Digest> {
        let d = digest::sha256(bytes);
        let path = self.blob_path(&d);
        if !path.is_file() {
            write_atomic(&path, bytes)?;
        }
        let mut index = self.index()?;
        let entries = index["manifests"]
            .as_array_mut()
            .expect("checked in index()");
        entries.retain(|e| {
            e.pointer("/annotations/org.opencontainers.image.ref.name")
                .and_then(Value::as_str)
                != Some(tag)
        });
        entries.push(json!({
            "mediaType": media_type,
            "digest": d.to_string(),
            "size": bytes.len(),
            "annotations": { REF_NAME: tag },
        }));
        let text = serde_json::to_vec(&index).expect("JSON values serialise");
        write_atomic(&self.dir.join("index.json"), &text)?;
        Ok(d)
    }
}

/// Writes through a temporary file in the same directory and renames it into place, so a reader
/// sees the old file or the new one, never half of one.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(TMP_PREFIX)
        .tempfile_in(parent)
        .map_err(|e| Error::io("create a temporary file in", parent, &e))?;
    tmp.write_all(bytes)
        .map_err(|e| Error::io("write", tmp.path(), &e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io("write", tmp.path(), &e))?;
    tmp.persist(path)
        .map_err(|e| Error::io("rename into", path, &e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writer_deletes_what_a_killed_run_left() {
        let dir = tempfile::tempdir().unwrap();
        Layout::create(dir.path()).unwrap();
        let blobs = dir.path().join("blobs/sha256");
        let left = [blobs.join(".layerup-dead"), dir.path().join(".layerup-idx")];
        let live = blobs.join(".layerup-live");
        for f in left.iter().chain([&live]) {
            std::fs::write(f, "half").unwrap();
        }
        left.iter().for_each(|f| crate::stale::age(f));
        Layout::create(dir.path()).unwrap();
        assert!(left.iter().all(|f| !f.exists()));
        assert!(live.exists(), "a live run's file stays");
    }

    #[test]
    fn a_tagged_manifest_is_found_again_and_retagging_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path()).unwrap();
        let first = layout
            .put_manifest(b"{\"a\":1}", crate::oci::manifest::OCI_MANIFEST, "dev")
            .unwrap();
        let second = layout
            .put_manifest(b"{\"a\":2}", crate::oci::manifest::OCI_MANIFEST, "dev")
            .unwrap();
        let found = Layout::open(dir.path())
            .unwrap()
            .find(Some("dev"), None)
            .unwrap();
        assert_eq!(found.digest, second);
        assert_ne!(first, second);
        let index = layout.index().unwrap();
        assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn a_missing_tag_lists_the_tags_there_are() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path()).unwrap();
        layout
            .put_manifest(b"{}", crate::oci::manifest::OCI_MANIFEST, "one")
            .unwrap();
        layout
            .put_manifest(b"{ }", crate::oci::manifest::OCI_MANIFEST, "two")
            .unwrap();
        let err = layout.find(Some("three"), None).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("has no image tagged `three`; it has one, two"),
            "{err}"
        );
        assert_eq!(err.code(), ExitCode::NotFound);
    }

    #[test]
    fn a_directory_without_layout_files_is_not_a_layout() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            Layout::open(dir.path()).unwrap_err().code(),
            ExitCode::NotFound
        );
    }

    #[tokio::test]
    async fn a_blob_with_wrong_bytes_is_never_stored() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path()).unwrap();
        let claimed = digest::sha256(b"right");
        let body =
            futures_util::stream::iter(vec![Ok(bytes::Bytes::from_static(b"wrong"))]).boxed();
        assert!(layout.put_blob(&claimed, 5, body).await.is_err());
        assert!(!layout.has_blob(&claimed));
    }
}
