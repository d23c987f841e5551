//! `layerup inspect`: what an image is — its index (if any), the platform's manifest, config and
//! layers — read without downloading a layer.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::base::{self, Base};
use crate::error::Result;
use crate::manifest::{self, Kind};
use crate::platform::{entry_platform, Platform};
use crate::reference::ImageRef;
use crate::registry::{Options, Registry};
use crate::store::Store;

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

pub async fn inspect(r: &ImageRef, platform: &Platform, net: Options) -> Result<Inspected> {
    let registry = Arc::new(Registry::new(net)?);
    let store = Store::for_reading(r, &registry)?;
    store.login(false, None).await?;
    let root = store.root().await?;
    let what = format!("`{r}`");
    let (kind, doc) = manifest::classify(&root.bytes, root.content_type.as_deref(), &what)?;
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
    let (reference, content_type) = (r.pinned(&root.digest), root.content_type.clone());
    let image = base::resolve_from(&store, root, platform).await?;
    let image_media_type = image.manifest["mediaType"]
        .as_str()
        .unwrap_or(image.family.manifest())
        .to_string();
    Ok(Inspected {
        reference,
        media_type: doc["mediaType"]
            .as_str()
            .map(str::to_string)
            .or(content_type)
            .unwrap_or_default(),
        children,
        image,
        image_media_type,
    })
}

/// The `--json` document.
pub fn to_json(i: &Inspected) -> Value {
    let children = i.children.as_ref().map(|c| {
        c.iter()
            .map(|c| json!({"platform": c.platform, "digest": c.digest, "media_type": c.media_type, "size": c.size}))
            .collect::<Vec<_>>()
    });
    json!({
        "reference": i.reference,
        "media_type": i.media_type,
        "manifests": children,
        "image": {
            "digest": i.image.digest.to_string(),
            "media_type": i.image_media_type,
            "config": i.image.config,
            "layers": i.image.layers.iter().map(|l| json!({
                "digest": l.digest.to_string(), "size": l.size, "media_type": l.media_type,
            })).collect::<Vec<_>>(),
        },
    })
}

/// The human summary, a few lines.
pub fn to_text(i: &Inspected, human: impl Fn(u64) -> String) -> String {
    let mut out = vec![format!("{}  {}", i.reference, i.media_type)];
    for c in i.children.iter().flatten() {
        out.push(format!(
            "  {:<16} {}  {}",
            c.platform,
            c.digest,
            human(c.size)
        ));
    }
    let img = &i.image;
    let cfg = &img.config["config"];
    if i.children.is_some() {
        out.push(format!("{}  {}", img.digest, i.image_media_type));
    }
    let platform = format!(
        "{}/{}",
        img.config["os"].as_str().unwrap_or("?"),
        img.config["architecture"].as_str().unwrap_or("?")
    );
    out.push(format!(
        "platform {platform}, created {}",
        img.config["created"].as_str().unwrap_or("-")
    ));
    let show = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) if s.is_empty() => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    for (name, key) in [
        ("entrypoint", "Entrypoint"),
        ("cmd", "Cmd"),
        ("workdir", "WorkingDir"),
        ("user", "User"),
    ] {
        out.push(format!("  {name:<10} {}", show(&cfg[key])));
    }
    for e in cfg["Env"].as_array().into_iter().flatten() {
        out.push(format!("  env        {}", show(e)));
    }
    for (k, v) in cfg["Labels"].as_object().into_iter().flatten() {
        out.push(format!("  label      {k}={}", show(v)));
    }
    let total: u64 = img.layers.iter().map(|l| l.size).sum();
    out.push(format!("layers: {}, {}", img.layers.len(), human(total)));
    let history: Vec<&Value> = img.config["history"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|h| h["empty_layer"] != true)
        .collect();
    for (n, l) in img.layers.iter().enumerate() {
        let by = history
            .get(n)
            .and_then(|h| h["created_by"].as_str())
            .map(|c| format!("  {}", c.chars().take(60).collect::<String>()))
            .unwrap_or_default();
        out.push(format!("  {}  {:>10}{by}", l.digest, human(l.size)));
    }
    out.join("\n")
}
