//! The base image: its manifest (through an index to the chosen platform) and its config, raw
//! bytes kept and digests verified. Its layers are never downloaded here.

use oci_spec::image::Digest;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::oci::manifest::{self, Descriptor, Document, Family, Kind};
use crate::oci::platform::{self, Platform};
use crate::store::Store;

#[derive(Debug, Clone)]
pub struct Base {
    /// How the user named it, for messages and the `base.name` annotation.
    pub name: String,
    /// The platform manifest's digest (a child of the index when the reference names one).
    pub digest: Digest,
    pub family: Family,
    /// The manifest as JSON, field order kept.
    pub manifest: Value,
    pub config: Value,
    pub layers: Vec<Descriptor>,
}

impl Base {
    /// The working directory the base's config sets, where app images keep their code.
    pub fn working_dir(&self) -> Option<&str> {
        self.config
            .pointer("/config/WorkingDir")
            .and_then(Value::as_str)
            .filter(|w| w.starts_with('/'))
    }
}

/// Reads the base image's manifest and config from `store`: from an index, the `want` image.
/// With `asked` (`--platform` was given), a single-platform image must be of that platform too.
pub async fn resolve(store: &Store, want: &Platform, asked: bool) -> Result<Base> {
    resolve_from(store, store.root().await?, want, asked).await
}

/// [`resolve`] from the reference's document, already fetched.
pub async fn resolve_from(
    store: &Store,
    root: Document,
    want: &Platform,
    asked: bool,
) -> Result<Base> {
    let name = store.image_ref().to_string();
    let (kind, doc) = root.classify(&format!("base image `{name}`"))?;
    let (fetched, family, doc) = match kind {
        Kind::Manifest(family) => (root, family, doc),
        Kind::Index(_) => {
            let entry = platform::select(&doc, want, &format!("base index `{name}`"))?;
            let child = store.manifest(&entry).await?;
            let what = format!("the {want} manifest of `{name}`");
            match child.classify(&what)? {
                (Kind::Manifest(family), doc) => (child, family, doc),
                (Kind::Index(_), _) => {
                    return Err(Error::image(format!(
                        "{what} is another index; layerup does not follow nested indexes"
                    )))
                }
            }
        }
    };
    let (config_desc, layers) = image_parts(&doc, &name)?;
    let config_bytes = store.blob_bytes(&config_desc).await?;
    let config = check_config(&config_bytes, layers.len(), &name)?;
    if let (true, Kind::Manifest(_)) = (asked, kind) {
        check_platform(&config, want, &name)?;
    }
    Ok(Base {
        name,
        digest: fetched.digest,
        family,
        manifest: doc,
        config,
        layers,
    })
}

/// The index of a multi-platform base, as read.
#[derive(Debug, Clone)]
pub struct BaseIndex {
    pub name: String,
    pub digest: Digest,
    pub family: Family,
    pub doc: Value,
}

/// The base's images for every platform of `want` (`None`: every platform its index has,
/// attestations aside), each with its index entry, and the index. A single-platform base gives
/// its one image and no index — when it is of a platform asked for.
pub async fn resolve_many(
    store: &Store,
    want: Option<&[Platform]>,
) -> Result<(Vec<(Descriptor, Base)>, Option<BaseIndex>)> {
    let root = store.root().await?;
    let name = store.image_ref().to_string();
    let (kind, doc) = root.classify(&format!("base image `{name}`"))?;
    let Kind::Index(family) = kind else {
        let entry = Descriptor::new("", root.digest.clone(), root.bytes.len() as u64);
        let base =
            match want {
                Some([one]) => resolve_from(store, root, one, true).await?,
                Some(many) => {
                    // One image, several platforms asked: it can be at most one of them.
                    let base = resolve_from(store, root, &many[0], false).await?;
                    let has = Platform::of_config(&base.config);
                    return Err(Error::new(
                        crate::error::ExitCode::NotFound,
                        format!(
                        "base image `{name}` is a single-platform image ({}): it cannot give {}",
                        has.map_or("platform unknown".into(), |p| p.to_string()),
                        many.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                    ),
                    ));
                }
                None => resolve_from(store, root, &Platform::host(), false).await?,
            };
        return Ok((vec![(entry, base)], None));
    };
    let what = format!("base index `{name}`");
    let platforms: Vec<Platform> = match want {
        Some(w) => w.to_vec(),
        None => {
            let mut all: Vec<Platform> = Vec::new();
            for e in doc
                .get("manifests")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(p) = platform::entry_platform(e).filter(|p| p.os != "unknown") else {
                    continue;
                };
                // The app layer is a Linux tree: a Windows image takes layers of another shape
                // (`Files/`, `Hives/`), and would get one it cannot use.
                if p.os != "linux" {
                    tracing::warn!("{what}: leaving out {p}: layerup's layers are for Linux");
                    continue;
                }
                if !all.contains(&p) {
                    all.push(p);
                }
            }
            if all.is_empty() {
                return Err(Error::image(format!("{what} lists no Linux platforms")));
            }
            all
        }
    };
    let mut images = Vec::new();
    for p in &platforms {
        let entry = platform::select(&doc, p, &what)?;
        let child = store.manifest(&entry).await?;
        let base = resolve_from(store, child, p, true).await?;
        images.push((entry, base));
    }
    // In the index's order, whatever the order asked.
    let position = |d: &Descriptor| {
        doc.get("manifests")
            .and_then(Value::as_array)
            .and_then(|m| {
                m.iter().position(|e| {
                    e.get("digest").and_then(Value::as_str) == Some(d.digest.as_ref())
                })
            })
    };
    images.sort_by_key(|(e, _)| position(e));
    Ok((
        images,
        Some(BaseIndex {
            name,
            digest: root.digest,
            family,
            doc,
        }),
    ))
}

/// A single-platform base asked for another platform is not silently taken instead.
fn check_platform(config: &Value, want: &Platform, name: &str) -> Result<()> {
    match Platform::of_config(config) {
        Some(p) if p.serves(want) => Ok(()),
        Some(p) => Err(Error::new(
            crate::error::ExitCode::NotFound,
            format!(
                "base image `{name}` is a single-platform image: it has {p}, not {want} (leave \
                 out --platform, or use a base with a {want} image)"
            ),
        )),
        None => Ok(()),
    }
}

const CONFIG_TYPES: &[&str] = &[
    manifest::OCI_CONFIG,
    manifest::DOCKER_CONFIG,
    // Early (2016) docker and skopeo wrote this for a Docker image config.
    "application/octet-stream",
];

/// The config descriptor and layers of a manifest, refusing anything that is not a runnable
/// container image: artifacts, signatures, attestations, encrypted layers.
pub fn image_parts(doc: &Value, name: &str) -> Result<(Descriptor, Vec<Descriptor>)> {
    let what = format!("base image `{name}`");
    if let Some(t) = doc.get("artifactType").and_then(Value::as_str) {
        return Err(Error::image(format!(
            "{what} is an artifact (`{t}`), not a container image"
        )));
    }
    let config = Descriptor::parse(
        doc.get("config").unwrap_or(&Value::Null),
        &format!("{what}'s config descriptor"),
    )?;
    if !CONFIG_TYPES.contains(&config.media_type.as_str()) {
        return Err(Error::image(format!(
            "{what} is not a container image: its config is `{}`",
            config.media_type
        )));
    }
    let layers = doc
        .get("layers")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::image(format!("{what} has no layers list")))?
        .iter()
        .enumerate()
        .map(|(i, l)| Descriptor::parse(l, &format!("{what}'s layer {i}")))
        .collect::<Result<Vec<_>>>()?;
    if let Some(l) = layers.iter().find(|l| !is_tar_layer(&l.media_type)) {
        return Err(Error::image(format!(
            "{what} is not a container image: layer {} is `{}`",
            l.digest, l.media_type
        )));
    }
    if let Some(l) = layers.iter().find(|l| l.media_type.contains("encrypted")) {
        return Err(Error::image(format!(
            "{what} has an encrypted layer ({}); layerup cannot append to encrypted images",
            l.digest
        )));
    }
    Ok((config, layers))
}

/// OCI `…layer.v1.tar[+gzip|+zstd]` (also non-distributable and encrypted), Docker `…rootfs…`.
fn is_tar_layer(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.oci.image.layer.")
        || media_type.starts_with("application/vnd.docker.image.rootfs.")
}

/// Parses and checks an image config: a JSON object, `rootfs.diff_ids` one per layer, and a real
/// platform (attestations say `unknown`).
pub fn check_config(bytes: &[u8], layer_count: usize, name: &str) -> Result<Value> {
    let what = format!("the config of base image `{name}`");
    let config: Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::image(format!("{what} is not valid JSON: {e}")))?;
    if !config.is_object() {
        return Err(Error::image(format!("{what} is not a JSON object")));
    }
    if config.get("os").and_then(Value::as_str) == Some("unknown") {
        return Err(Error::image(format!(
            "{what} says os `unknown`: it is an attestation, not a runnable image"
        )));
    }
    let diff_ids = config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::image(format!("{what} has no rootfs.diff_ids")))?;
    if diff_ids.len() != layer_count {
        return Err(Error::image(format!(
            "{what} lists {} diff_ids but the manifest has {layer_count} layers",
            diff_ids.len()
        )));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::fixture;
    use rstest::rstest;

    #[rstest]
    #[case("docker-manifest--oras-go--f54a58bc1aac5ea1a25d796ae155dc228b3f0e11d046ae276b39c4bf2f13d8c4.json", 1)]
    #[case("oci-manifest--buildkit--common-oci-mediatypes-v30-manifest.json", 4)]
    #[case("docker-manifest--skopeo--uncompressed-image-s2-manifest.json", 1)]
    #[case(
        "oci-manifest-all-layer-types--containers-image--oci1-all-media-types.json",
        6
    )]
    #[case(
        "docker-manifest-foreign--containers-image--v2s2.nondistributable.gzip.manifest.json",
        1
    )]
    fn runnable_manifests_give_config_and_layers(#[case] name: &str, #[case] layers: usize) {
        let doc: Value = serde_json::from_slice(&fixture(name)).unwrap();
        let (_, got) = image_parts(&doc, "b").unwrap();
        assert_eq!(got.len(), layers);
    }

    #[rstest]
    #[case("buildkit-attestation-manifest--actions-toolkit--1d88e5a3e13d830277704130ae7b1aa7d9eb25f952891234d5c01f81651dcefc.json", "is `application/vnd.in-toto+json`")]
    #[case("oci-artifact-manifest--notation--53b0191218aed9a3c1f7c661736ac40cfc8eb928642348fd843ba3f0483c0c20.json", "is an artifact")]
    #[case("oci-artifact-manifest--oras--0cb8c4da7e9ff2e7eefca33141091b9239218e3125a35e17e8bcd05fa3a5e714.json", "its config is `test/signature.file`")]
    #[case("buildkit-history-record-manifest--actions-toolkit--349de5431857c53502a8ce06f8019b6bac9e0969d9745aa1befd1847d1fad0fb.json", "not a container image")]
    #[case(
        "oci-manifest-encrypted--containers-image--oci1.encrypted.json",
        "encrypted layer"
    )]
    #[case(
        "oci-manifest-urls--containers-image--oci1-artifact.json",
        "not a container image"
    )]
    fn non_images_are_refused_as_bases(#[case] name: &str, #[case] reason: &str) {
        let doc: Value = serde_json::from_slice(&fixture(name)).unwrap();
        let err = image_parts(&doc, "b").unwrap_err();
        assert!(err.to_string().contains(reason), "{err}");
    }

    #[rstest]
    #[case("docker-config--oras-go--feb5d9fea6a5e9606aa995e879d862b825965ba48de054caab5ef356dc6b3412.json", 1)]
    #[case("docker-config--skopeo--86ce150e65c72b30f885c261449d18b7c6832596916e7f654e08377b5a67b4ff.json", 1)]
    #[case("oci-config--regclient--602521dbab20f59318481ddbb36bb620d421e7f3507fa1b01e80c3fd4384568f.json", 5)]
    fn real_configs_are_accepted(#[case] name: &str, #[case] layers: usize) {
        check_config(&fixture(name), layers, "b").unwrap();
    }

    #[rstest]
    #[case(
        "oci-config--oras--1fd9a5fc54b634130102861815e2881f1eec22958d604301904c5353041794c1.json",
        0,
        "has no rootfs.diff_ids"
    )]
    #[case("buildkit-attestation-config--actions-toolkit--f3d7356a6b37f2298ef338066f12410ceb9a1f6c58fb570e84914d97870de5c2.json", 1, "attestation")]
    #[case("docker-config--oras-go--feb5d9fea6a5e9606aa995e879d862b825965ba48de054caab5ef356dc6b3412.json", 3, "lists 1 diff_ids but the manifest has 3 layers")]
    fn unusable_configs_are_refused(
        #[case] name: &str,
        #[case] layers: usize,
        #[case] reason: &str,
    ) {
        let err = check_config(&fixture(name), layers, "b").unwrap_err();
        assert!(err.to_string().contains(reason), "{err}");
    }
}
