//! `inspect`: what an image is — its index (if any), the platform's manifest, config and
//! layers — read without downloading a layer.

use std::sync::Arc;

use crate::build::base::{self, Base};
use crate::error::Result;
use crate::oci::manifest::Kind;
use crate::oci::platform::{entry_platform, Platform};
use crate::oci::reference::ImageRef;
use crate::store::registry::{Options, Registry};
use crate::store::Store;

/// A validated `layerup inspect`.
#[derive(Debug, Clone)]
pub struct InspectPlan {
    pub image: ImageRef,
    pub platform: Platform,
    pub net: Options,
}

/// An index entry: platform (`unknown/unknown` for attestations), digest, media type, size.
pub struct Child {
    pub platform: String,
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

pub struct Inspected {
    /// The reference pinned by the top document's digest.
    pub reference: String,
    pub media_type: String,
    /// The index's entries, when the reference names an index.
    pub children: Option<Vec<Child>>,
    /// The image for the platform asked for.
    pub image: Base,
    pub image_media_type: String,
}

pub async fn run(plan: &InspectPlan) -> Result<Inspected> {
    let (r, platform) = (&plan.image, &plan.platform);
    let registry = Arc::new(Registry::new(plan.net)?);
    let store = Store::for_reading(r, &registry)?;
    store.login(false, None).await?;
    let root = store.root().await?;
    let what = format!("`{r}`");
    let (kind, doc) = root.classify(&what)?;
    let children = matches!(kind, Kind::Index(_)).then(|| {
        doc["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| Child {
                platform: entry_platform(e).map_or("-".into(), |p| p.to_string()),
                digest: e["digest"].as_str().unwrap_or("").to_string(),
                media_type: e["mediaType"].as_str().unwrap_or("").to_string(),
                size: e["size"].as_u64().unwrap_or(0),
            })
            .collect()
    });
    let (reference, content_type) = (r.pinned(&root.digest), root.media_type.clone());
    let image = base::resolve_from(&store, root, platform, false).await?;
    let image_media_type = image.manifest["mediaType"]
        .as_str()
        .unwrap_or(image.family.manifest())
        .to_string();
    Ok(Inspected {
        reference,
        media_type: doc["mediaType"]
            .as_str()
            .map(str::to_string)
            .unwrap_or(content_type),
        children,
        image,
        image_media_type,
    })
}
