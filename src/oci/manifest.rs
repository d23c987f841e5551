//! Manifest and index documents: media types, telling them apart, and reading descriptors (pure).

use bytes::Bytes;
use oci_spec::image::Digest;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::oci::digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
const SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// What layerup asks registries for: images and indexes in both families, never schema 1.
pub const ACCEPT: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// The two media-type families. A new image keeps its base's family, so a Docker-typed prod image
/// stays readable by whatever already reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Oci,
    Docker,
}

impl Family {
    pub fn manifest(self) -> &'static str {
        match self {
            Family::Oci => OCI_MANIFEST,
            Family::Docker => DOCKER_MANIFEST,
        }
    }
    pub fn config(self) -> &'static str {
        match self {
            Family::Oci => OCI_CONFIG,
            Family::Docker => DOCKER_CONFIG,
        }
    }
    pub fn layer_gzip(self) -> &'static str {
        match self {
            Family::Oci => OCI_LAYER_GZIP,
            Family::Docker => DOCKER_LAYER_GZIP,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Manifest(Family),
    Index(Family),
}

/// Parses a manifest or index and says which it is. `content_type` is what the registry sent (or
/// what a layout descriptor said); the document's own `mediaType` wins when both are present,
/// and an OCI document may omit it (image-spec: "SHOULD be used"), so its shape decides.
pub fn classify(bytes: &[u8], content_type: Option<&str>, what: &str) -> Result<(Kind, Value)> {
    let doc: Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::image(format!("{what} is not valid JSON: {e}")))?;
    let Some(obj) = doc.as_object() else {
        return Err(Error::image(format!("{what} is not a JSON object")));
    };
    let declared = match obj.get("mediaType") {
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(Error::image(format!("{what} has a non-string mediaType"))),
        None => content_type
            .map(|c| c.split(';').next().unwrap_or("").trim())
            .filter(|c| !matches!(*c, "" | "application/json" | "application/octet-stream")),
    };
    let schema = obj.get("schemaVersion").and_then(Value::as_i64);
    if schema == Some(1) || matches!(declared, Some(SCHEMA1 | SCHEMA1_SIGNED)) {
        return Err(Error::image(format!(
            "{what} is a Docker schema 1 manifest, which layerup does not read; \
             re-push the image with a current docker, or convert it with `skopeo copy --format v2s2`"
        )));
    }
    let known = match declared {
        Some(OCI_MANIFEST) => Some(Kind::Manifest(Family::Oci)),
        Some(DOCKER_MANIFEST) => Some(Kind::Manifest(Family::Docker)),
        Some(OCI_INDEX) => Some(Kind::Index(Family::Oci)),
        Some(DOCKER_LIST) => Some(Kind::Index(Family::Docker)),
        Some(other) => {
            return Err(Error::image(format!(
                "{what} has the unsupported media type `{other}` (layerup reads OCI and Docker \
                 schema 2 images and indexes)"
            )))
        }
        None => None,
    };
    if schema != Some(2) {
        return Err(Error::image(format!(
            "{what} has schemaVersion {}, expected 2",
            obj.get("schemaVersion")
                .map_or("missing".into(), Value::to_string)
        )));
    }
    let kind = match known {
        Some(kind) => kind,
        None if obj.get("manifests").is_some_and(Value::is_array) => Kind::Index(Family::Oci),
        None if obj.contains_key("config") && obj.contains_key("layers") => {
            Kind::Manifest(Family::Oci)
        }
        None => {
            return Err(Error::image(format!(
                "{what} has no mediaType and is neither an image manifest nor an index"
            )))
        }
    };
    Ok((kind, doc))
}

/// A manifest or index exactly as read, or as it will be written: its bytes (never
/// re-serialised: its digest is theirs), and its media type — for a document read, what the
/// store said it is (`Content-Type`, a layout descriptor's; empty when nothing was said); for
/// one to write, what it is written with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub bytes: Bytes,
    pub digest: Digest,
    pub media_type: String,
}

impl Document {
    /// A document layerup made: its digest is its bytes' sha256.
    pub fn new(bytes: Vec<u8>, media_type: &str) -> Self {
        Document {
            digest: digest::sha256(&bytes),
            bytes: bytes.into(),
            media_type: media_type.to_string(),
        }
    }

    /// Parses it and says whether it is an image manifest or an index (see [`classify`]).
    pub fn classify(&self, what: &str) -> Result<(Kind, Value)> {
        let said = Some(self.media_type.as_str()).filter(|m| !m.is_empty());
        classify(&self.bytes, said, what)
    }

    /// The document as it is written elsewhere, bytes unchanged: with its own `mediaType`,
    /// else what its index's descriptor (`described`) or the store that sent it said, else its
    /// family's type by shape. `doc` and `kind` are what [`Document::classify`] gave.
    pub fn to_write(self, doc: &Value, described: &str, kind: Kind) -> Document {
        let declared = doc
            .get("mediaType")
            .and_then(Value::as_str)
            .map(str::to_string);
        let sent = Some(
            self.media_type
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_string(),
        )
        .filter(|c| ACCEPT.contains(&c.as_str()));
        let by_shape = match kind {
            Kind::Manifest(Family::Oci) => OCI_MANIFEST,
            Kind::Manifest(Family::Docker) => DOCKER_MANIFEST,
            Kind::Index(Family::Oci) => OCI_INDEX,
            Kind::Index(Family::Docker) => DOCKER_LIST,
        };
        let media_type = declared
            .or(Some(described.to_string()).filter(|d| !d.is_empty()))
            .or(sent)
            .unwrap_or_else(|| by_shape.to_string());
        Document { media_type, ..self }
    }
}

/// A descriptor as layerup needs it: what to fetch, how big, what it is. The JSON it came from is
/// kept alongside so a base descriptor is copied into the new manifest unchanged (annotations,
/// urls and fields layerup does not know included).
#[derive(Debug, Clone, PartialEq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    pub raw: Value,
}

impl Descriptor {
    pub fn parse(raw: &Value, what: &str) -> Result<Self> {
        let field = |name: &str| raw.get(name);
        let media_type = field("mediaType")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::image(format!("{what} has no mediaType")))?
            .to_string();
        let digest_text = field("digest")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::image(format!("{what} has no digest")))?;
        let digest = digest::parse(digest_text, what)?;
        let size = field("size")
            .and_then(Value::as_u64)
            .ok_or_else(|| Error::image(format!("{what} has no valid size")))?;
        Ok(Descriptor {
            media_type,
            digest,
            size,
            raw: raw.clone(),
        })
    }

    /// A new descriptor with only the three required fields, in the order registries write them.
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Self {
        let raw = serde_json::json!({
            "mediaType": media_type,
            "digest": digest.to_string(),
            "size": size,
        });
        Descriptor {
            media_type: media_type.to_string(),
            digest,
            size,
            raw,
        }
    }

    /// Layers the image-spec lets registries refuse to hold ("non-distributable", Docker "foreign"
    /// layers) and that name where to fetch them: they are referenced, never copied, as docker
    /// and crane do.
    pub fn is_foreign(&self) -> bool {
        (self.media_type.contains("nondistributable") || self.media_type.contains(".foreign."))
            && self
                .raw
                .get("urls")
                .and_then(Value::as_array)
                .is_some_and(|u| !u.is_empty())
    }
}

/// The config and layers of an image manifest — of any artifact too: copying does not care
/// what the blobs hold.
pub fn blobs_of(doc: &Value, what: &str) -> Result<Vec<Descriptor>> {
    let mut out = vec![Descriptor::parse(
        doc.get("config").unwrap_or(&Value::Null),
        &format!("{what}'s config descriptor"),
    )?];
    if let Some(layers) = doc.get("layers").and_then(Value::as_array) {
        for (i, l) in layers.iter().enumerate() {
            out.push(Descriptor::parse(l, &format!("{what}'s layer {i}"))?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::fixture;
    use rstest::rstest;

    #[rstest]
    #[case("docker-manifest--oras-go--f54a58bc1aac5ea1a25d796ae155dc228b3f0e11d046ae276b39c4bf2f13d8c4.json", Kind::Manifest(Family::Docker))]
    #[case("docker-manifest-list--regclient--3f5754829e9747db418bd1a5a40f418b073ed863cba4d57aaeaefa08118c4743.json", Kind::Index(Family::Docker))]
    #[case(
        "oci-manifest--ggcr--98ceaf93e482fe91b9bfd6bba07137c098e49ee2d55e69f09fb6c951e75e0e46.json",
        Kind::Manifest(Family::Oci)
    )]
    #[case("oci-index--regclient--6fe828b32b9b4572f32b16c1c0a4d675660b19ec207d010724309374252c2d6d.json", Kind::Index(Family::Oci))]
    #[case("buildkit-attestation-index--actions-toolkit--5ac2d3ac39878329a6328eba5b2a6e5e7a06279244eea0f2ea893f76cefff26c.json", Kind::Index(Family::Oci))]
    fn real_documents_are_classified(#[case] name: &str, #[case] kind: Kind) {
        let (got, _) = classify(&fixture(name), None, "fixture").unwrap();
        assert_eq!(got, kind);
    }

    #[rstest]
    #[case("docker-schema1-signed--moby--good_manifest.json", "schema 1")]
    #[case("docker-schema1-unsigned--jib--v21manifest.json", "schema 1")]
    #[case(
        "bad-not-json--containers-image--non-json.manifest.json",
        "not valid JSON"
    )]
    #[case("oci-artifact-manifest-v1--oras--8d7a27ff2662dae183f762d281f46d626ba7b6e56a72cc9959cdbcd91aad7fbc.json", "unsupported media type `application/vnd.oci.artifact.manifest.v1+json`")]
    #[case(
        "bad-schemaversion--containers-image--unknown-version.manifest.json",
        "schemaVersion"
    )]
    fn unusable_documents_are_refused_with_the_reason(#[case] name: &str, #[case] reason: &str) {
        let err = classify(&fixture(name), None, "base manifest").unwrap_err();
        assert!(err.to_string().contains(reason), "{err}");
        assert_eq!(err.code(), crate::error::ExitCode::Image);
    }

    #[test]
    fn content_type_decides_when_the_document_has_no_media_type() {
        let body = br#"{"schemaVersion":2,"config":{},"layers":[]}"#;
        let (kind, _) = classify(body, Some(DOCKER_MANIFEST), "m").unwrap();
        assert_eq!(kind, Kind::Manifest(Family::Docker));
    }

    #[test]
    fn foreign_layers_with_urls_are_not_copied() {
        let raw = serde_json::json!({
            "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            "digest": format!("sha256:{}", "b".repeat(64)), "size": 1,
            "urls": ["https://example.com/layer"]});
        assert!(Descriptor::parse(&raw, "layer").unwrap().is_foreign());
    }
}
