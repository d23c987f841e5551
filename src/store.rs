//! Where an image is read from or written to — a registry repository or an OCI layout — behind
//! the one set of operations the pipeline uses.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use oci_spec::distribution::Reference;
use oci_spec::image::Digest;

use crate::error::Result;
use crate::layout::Layout;
use crate::manifest::Descriptor;
use crate::reference::{ImageRef, LayoutRef};
use crate::registry::{Fetched, Opener, Registry};

/// Blob bytes as they move between stores: streamed, never whole in memory.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// A file's bytes as a [`ByteStream`], read 256 KiB at a time.
pub fn file_stream(file: tokio::fs::File) -> ByteStream {
    tokio_util::io::ReaderStream::with_capacity(file, 256 << 10).boxed()
}

pub enum Store {
    Registry {
        registry: Arc<Registry>,
        repo: Reference,
    },
    Layout {
        layout: Layout,
        at: LayoutRef,
    },
}

impl Store {
    /// A store to read from: a layout must already exist.
    pub fn for_reading(r: &ImageRef, registry: &Arc<Registry>) -> Result<Self> {
        Self::open(r, registry, Layout::open)
    }

    /// A store to write to: a layout is created when missing.
    pub fn for_writing(r: &ImageRef, registry: &Arc<Registry>) -> Result<Self> {
        Self::open(r, registry, Layout::create)
    }

    fn open(
        r: &ImageRef,
        registry: &Arc<Registry>,
        layout: fn(&Path) -> Result<Layout>,
    ) -> Result<Self> {
        Ok(match r {
            ImageRef::Registry(repo) => Store::Registry {
                registry: registry.clone(),
                repo: repo.clone(),
            },
            ImageRef::Layout(at) => Store::Layout {
                layout: layout(&at.dir)?,
                at: at.clone(),
            },
        })
    }

    pub fn image_ref(&self) -> ImageRef {
        match self {
            Store::Registry { repo, .. } => ImageRef::Registry(repo.clone()),
            Store::Layout { at, .. } => ImageRef::Layout(at.clone()),
        }
    }

    /// Sets up access before the first request (see [`Registry::login`]); layouts need none.
    pub async fn login(&self, push: bool, mount_from: Option<&Store>) -> Result<()> {
        if let Store::Registry { registry, repo } = self {
            let from: Vec<&Reference> = match mount_from {
                Some(s) if self.same_registry(s) => s.repo().into_iter().collect(),
                _ => vec![],
            };
            registry.login(repo, push, &from).await?;
        }
        Ok(())
    }

    fn repo(&self) -> Option<&Reference> {
        match self {
            Store::Registry { repo, .. } => Some(repo),
            Store::Layout { .. } => None,
        }
    }

    /// Both are repositories of one registry, so a blob can be mounted rather than copied.
    pub fn same_registry(&self, other: &Store) -> bool {
        match (self.repo(), other.repo()) {
            (Some(a), Some(b)) => a.resolve_registry() == b.resolve_registry(),
            _ => false,
        }
    }

    /// The manifest or index the reference names (its digest if it has one, else its tag).
    pub async fn root(&self) -> Result<Fetched> {
        match self {
            Store::Registry { registry, repo } => {
                let which = repo.digest().or(repo.tag()).unwrap_or("latest").to_string();
                registry.manifest(repo, &which).await
            }
            Store::Layout { layout, at } => {
                let d = layout.find(at.tag.as_deref(), at.digest.as_ref())?;
                self.manifest(&d).await
            }
        }
    }

    /// A child manifest of an index, by its descriptor.
    pub async fn manifest(&self, d: &Descriptor) -> Result<Fetched> {
        match self {
            Store::Registry { registry, repo } => registry.manifest(repo, d.digest.as_ref()).await,
            Store::Layout { layout, .. } => Ok(Fetched {
                bytes: layout.blob_bytes(&d.digest)?.into(),
                digest: d.digest.clone(),
                content_type: Some(d.media_type.clone()).filter(|m| !m.is_empty()),
            }),
        }
    }

    /// The digest of the manifest under this store's tag (`digest` `None`), or whether the
    /// manifest `digest` is here: `None` when it is not.
    pub async fn manifest_digest(&self, digest: Option<&Digest>) -> Result<Option<Digest>> {
        match self {
            Store::Registry { registry, repo } => {
                let which = match digest {
                    Some(d) => d.to_string(),
                    None => repo.tag().unwrap_or("latest").to_string(),
                };
                registry.manifest_digest(repo, &which).await
            }
            Store::Layout { layout, at } => Ok(match digest {
                Some(d) => layout.has_blob(d).then(|| d.clone()),
                None => layout
                    .find(Some(at.tag.as_deref().unwrap_or("latest")), None)
                    .ok()
                    .map(|d| d.digest),
            }),
        }
    }

    pub async fn blob_bytes(&self, d: &Descriptor) -> Result<Vec<u8>> {
        match self {
            Store::Registry { registry, repo } => {
                registry.blob_bytes(repo, &d.digest, d.size).await
            }
            Store::Layout { layout, .. } => layout.blob_bytes(&d.digest),
        }
    }

    pub async fn blob_stream(&self, d: &Descriptor) -> Result<ByteStream> {
        match self {
            Store::Registry { registry, repo } => {
                registry.blob_stream(repo, &d.digest, d.size).await
            }
            Store::Layout { layout, .. } => layout.blob_stream(&d.digest, d.size).await,
        }
    }

    pub async fn has_blob(&self, d: &Digest) -> Result<bool> {
        match self {
            Store::Registry { registry, repo } => registry.has_blob(repo, d).await,
            Store::Layout { layout, .. } => Ok(layout.has_blob(d)),
        }
    }

    /// Links a blob from `from` without moving its bytes; `false` if this store cannot.
    pub async fn mount(&self, d: &Digest, from: &Store) -> Result<bool> {
        match (self, from) {
            (Store::Registry { registry, repo }, Store::Registry { repo: src, .. })
                if self.same_registry(from) =>
            {
                registry.mount(repo, src, d).await
            }
            _ => Ok(false),
        }
    }

    /// Writes the blob `open` yields; `open` is called again if the upload has to start over.
    pub async fn put_blob(&self, d: &Descriptor, open: Opener<'_>) -> Result<()> {
        match self {
            Store::Registry { registry, repo } => {
                registry.upload(repo, &d.digest, d.size, open).await
            }
            Store::Layout { layout, .. } => layout.put_blob(&d.digest, d.size, open().await?).await,
        }
    }

    /// Writes the manifest under the reference's tag (`latest` when it has none).
    pub async fn put_manifest(&self, bytes: Bytes, media_type: &str) -> Result<()> {
        let tag = match self {
            Store::Registry { repo, .. } => repo.tag(),
            Store::Layout { at, .. } => at.tag.as_deref(),
        };
        self.put_tag(tag.unwrap_or("latest"), bytes, media_type)
            .await
    }

    /// Writes the manifest under `tag` (a second name for an image already pushed).
    pub async fn put_tag(&self, tag: &str, bytes: Bytes, media_type: &str) -> Result<()> {
        match self {
            Store::Registry { registry, repo } => {
                registry.put_manifest(repo, tag, bytes, media_type).await
            }
            Store::Layout { layout, .. } => {
                layout.put_manifest(&bytes, media_type, tag)?;
                Ok(())
            }
        }
    }

    /// Writes a manifest by its digest only, untagged: an index's child, which must be there
    /// before the index that names it.
    pub async fn put_child(&self, bytes: Bytes, digest: &Digest, media_type: &str) -> Result<()> {
        match self {
            Store::Registry { registry, repo } => {
                registry
                    .put_manifest(repo, digest.as_ref(), bytes, media_type)
                    .await
            }
            Store::Layout { layout, .. } => {
                let len = bytes.len() as u64;
                let body = futures_util::stream::iter([Ok(bytes)]).boxed();
                layout.put_blob(digest, len, body).await
            }
        }
    }
}
