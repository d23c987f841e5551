//! Stores: where an image is read from or written to — a registry repository or an OCI layout —
//! behind the one set of operations the rest uses; and the credentials registries ask for.

pub mod auth;
pub mod kept;
pub mod layout;
pub mod login;
pub mod registry;

use std::path::Path;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use oci_spec::distribution::Reference;
use oci_spec::image::Digest;
use tokio::sync::Mutex;

use crate::error::Result;
use crate::oci::manifest::{Descriptor, Document};
use crate::oci::reference::{ImageRef, LayoutRef};
use crate::oci::stream::{self, ByteStream, Cursor, Origin};
use crate::store::layout::Layout;
use crate::store::registry::Registry;

/// Image configs are small by nature; one larger than this is refused unread.
const CONFIG_LIMIT: u64 = 32 << 20;

#[derive(Clone)]
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

    /// Opens `n` upload sessions ahead of need, where the registry wants one per blob (see
    /// `registry::ahead`); layouts need none.
    pub fn open_ahead(&self, n: usize) {
        if let Store::Registry { registry, repo } = self {
            registry.open_ahead(repo, n);
        }
    }

    /// Cancels the sessions opened ahead that no upload took.
    pub async fn cancel_spares(&self) {
        if let Store::Registry { registry, repo } = self {
            registry.cancel_spares(repo).await;
        }
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
    pub async fn root(&self) -> Result<Document> {
        match self {
            Store::Registry { registry, repo } => match repo.digest() {
                Some(d) => registry.manifest(repo, d).await,
                None => {
                    let tag = repo.tag().unwrap_or("latest");
                    registry.manifest_by_tag(repo, tag).await
                }
            },
            Store::Layout { layout, at } => {
                let d = layout.find(at.tag.as_deref(), at.digest.as_ref())?;
                self.manifest(&d).await
            }
        }
    }

    /// A child manifest of an index, by its descriptor. Its bytes must be as many as the
    /// descriptor says (containerd refuses to pull one that is not): an index that misstates
    /// a child's size is refused, not passed on.
    pub async fn manifest(&self, d: &Descriptor) -> Result<Document> {
        let doc = match self {
            // Read by digest once, kept: the next run asks for the tag alone.
            Store::Registry { registry, repo } => match registry.kept(&d.digest) {
                Some(bytes) => Document {
                    bytes: bytes.into(),
                    digest: d.digest.clone(),
                    media_type: d.media_type.clone(),
                },
                None => {
                    let doc = registry.manifest(repo, d.digest.as_ref()).await?;
                    registry.keep(&doc.digest, &doc.bytes);
                    doc
                }
            },
            Store::Layout { layout, .. } => Document {
                bytes: layout.blob_bytes(&d.digest)?.into(),
                digest: d.digest.clone(),
                media_type: d.media_type.clone(),
            },
        };
        // A size of 0 is layerup's own descriptor of a manifest fetched by tag.
        if d.size != 0 && doc.bytes.len() as u64 != d.size {
            return Err(crate::error::Error::image(format!(
                "manifest {} of `{}` is {} bytes, but its index says {}",
                d.digest,
                self.image_ref(),
                doc.bytes.len(),
                d.size
            )));
        }
        Ok(doc)
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

    /// A small blob whole (an image config), verified; a read that breaks goes on where it
    /// stopped.
    pub async fn blob_bytes(&self, d: &Descriptor) -> Result<Vec<u8>> {
        let Store::Registry { registry, .. } = self else {
            return stream::read_all(self.cursor(d)?, CONFIG_LIMIT).await;
        };
        if let Some(bytes) = registry.kept(&d.digest) {
            return Ok(bytes);
        }
        let bytes = stream::read_all(self.cursor(d)?, CONFIG_LIMIT).await?;
        registry.keep(&d.digest, &bytes);
        Ok(bytes)
    }

    /// Where the blob `d` can be read from, at any offset.
    pub fn origin(&self, d: &Descriptor) -> Arc<dyn Origin> {
        Arc::new(StoreBlob {
            store: self.clone(),
            digest: d.digest.clone(),
        })
    }

    /// The blob `d`, read through a verifying cursor.
    pub fn cursor(&self, d: &Descriptor) -> Result<Cursor> {
        let tries = match self {
            Store::Registry { registry, .. } => registry.tries(),
            Store::Layout { .. } => 1,
        };
        let what = format!("blob {} from {}", d.digest, self.image_ref());
        Cursor::new(self.origin(d), &d.digest, d.size, what, tries)
    }

    /// The blob's bytes from offset `from`, unverified (see [`Store::cursor`]).
    async fn blob_from(&self, d: &Digest, from: u64) -> Result<ByteStream> {
        match self {
            Store::Registry { registry, repo } => registry.blob_from(repo, d, from).await,
            Store::Layout { layout, .. } => layout.blob_from(d, from).await,
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

    /// Writes the blob the cursor reads; `true` when it was mounted from another repository of
    /// the registry instead (one that held it, or received it this run).
    pub async fn put_blob(&self, d: &Descriptor, cursor: Cursor) -> Result<bool> {
        let cursor = Arc::new(Mutex::new(cursor));
        match self {
            Store::Registry { registry, repo } => registry.put_blob(repo, &d.digest, cursor).await,
            Store::Layout { layout, .. } => {
                let body = stream::body(cursor.clone(), d.size);
                match layout.put_blob(&d.digest, d.size, body).await {
                    Err(e) => match cursor.lock().await.take_failure() {
                        Some(real) => Err(stream::failure(d.digest.as_ref(), &real)),
                        None => Err(e),
                    },
                    Ok(()) => Ok(false),
                }
            }
        }
    }

    /// Deletes a tag or a manifest (by digest: every tag naming it goes along); `false` when
    /// the store allows no such delete. A layout keeps what it holds.
    pub async fn delete(&self, tag_or_digest: &str) -> Result<bool> {
        match self {
            Store::Registry { registry, repo } => registry.delete(repo, tag_or_digest).await,
            Store::Layout { .. } => Ok(false),
        }
    }

    /// The repository's tags (none for a layout).
    pub async fn tags(&self) -> Result<Vec<String>> {
        match self {
            Store::Registry { registry, repo } => registry.tags(repo).await,
            Store::Layout { .. } => Ok(Vec::new()),
        }
    }

    /// What `tag` names in this repository, if anything.
    pub async fn tag_digest(&self, tag: &str) -> Result<Option<Digest>> {
        match self {
            Store::Registry { registry, repo } => registry.manifest_digest(repo, tag).await,
            Store::Layout { layout, .. } => Ok(layout.find(Some(tag), None).ok().map(|d| d.digest)),
        }
    }

    /// The tag the reference names (`latest` when it names none): where its image is written.
    pub fn tag(&self) -> &str {
        let tag = match self {
            Store::Registry { repo, .. } => repo.tag(),
            Store::Layout { at, .. } => at.tag.as_deref(),
        };
        tag.unwrap_or("latest")
    }

    /// Writes the manifest under `tag` (the reference's, or a second name for an image).
    pub async fn put_tag(&self, tag: &str, doc: &Document) -> Result<()> {
        match self {
            Store::Registry { registry, repo } => {
                registry
                    .put_manifest(repo, tag, doc.bytes.clone(), &doc.media_type)
                    .await
            }
            Store::Layout { layout, .. } => {
                layout.put_manifest(&doc.bytes, &doc.media_type, tag)?;
                Ok(())
            }
        }
    }

    /// What the referrers API of this store's registry lists for `subject`; `None` where it has
    /// none (and for a layout).
    pub async fn referrers(&self, subject: &Digest) -> Result<Option<Vec<serde_json::Value>>> {
        match self {
            Store::Registry { registry, repo } => registry.referrers(repo, subject).await,
            Store::Layout { .. } => Ok(None),
        }
    }

    /// The manifest or index under `tag` in this store's repository, `None` when there is none.
    pub async fn tagged(&self, tag: &str) -> Result<Option<Document>> {
        let Store::Registry { registry, repo } = self else {
            return Ok(None);
        };
        match registry.manifest(repo, tag).await {
            Ok(doc) => Ok(Some(doc)),
            Err(e) if e.code() == crate::error::ExitCode::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes a manifest by its digest only, untagged: an index's child, which must be there
    /// before the index that names it.
    pub async fn put_child(&self, doc: &Document) -> Result<()> {
        match self {
            Store::Registry { registry, repo } => {
                registry
                    .put_manifest(
                        repo,
                        doc.digest.as_ref(),
                        doc.bytes.clone(),
                        &doc.media_type,
                    )
                    .await
            }
            Store::Layout { layout, .. } => {
                let len = doc.bytes.len() as u64;
                let body = futures_util::stream::iter([Ok(doc.bytes.clone())]).boxed();
                layout.put_blob(&doc.digest, len, body).await
            }
        }
    }
}

/// One blob of a store, as an [`Origin`].
struct StoreBlob {
    store: Store,
    digest: Digest,
}

impl Origin for StoreBlob {
    fn open(&self, from: u64) -> BoxFuture<'_, Result<ByteStream>> {
        self.store.blob_from(&self.digest, from).boxed()
    }
}
