//! The new image, computed without I/O: the base's config and manifest with the app layers
//! appended, a history entry each, and the user's tweaks — serialised once, hashed exactly as
//! they will be sent.

use bytes::Bytes;
use oci_spec::image::Digest;
use serde_json::{json, Map, Value};

use crate::build::base::{Base, BaseIndex};
use crate::build::compression::Codec;
use crate::error::{Error, Result};
use crate::oci::digest;
use crate::oci::manifest::{Descriptor, Document, Family, DOCKER_LAYER_GZIP, OCI_LAYER_GZIP};

/// What `--env`, `--entrypoint`, `--cmd`, `--workdir`, `--label` and `--user` change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tweaks {
    pub env: Vec<(String, String)>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub workdir: Option<String>,
    pub labels: Vec<(String, String)>,
    pub user: Option<String>,
    /// `--annotation`: set on the manifest (and the index of several), OCI images only.
    pub annotations: Vec<(String, String)>,
    /// `--format oci`: OCI media types whatever the base's (a Docker schema 2 base converted).
    pub oci: bool,
}

impl Tweaks {
    /// The media-type family of an image on `base` (of family `base`).
    pub fn family(&self, base: Family) -> Family {
        if self.oci {
            Family::Oci
        } else {
            base
        }
    }
}

/// A base layer's descriptor in an image of `family`: Docker layer types become their OCI
/// equivalents (image-spec media-types.md, compatibility matrix); the bytes are the same.
fn layer_in(l: &Descriptor, family: Family) -> Descriptor {
    let oci = match (family, l.media_type.as_str()) {
        (Family::Oci, DOCKER_LAYER_GZIP) => OCI_LAYER_GZIP,
        (Family::Oci, "application/vnd.docker.image.rootfs.diff.tar") => {
            "application/vnd.oci.image.layer.v1.tar"
        }
        (Family::Oci, "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip") => {
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        }
        _ => return l.clone(),
    };
    let mut d = l.clone();
    d.media_type = oci.to_string();
    if let Some(raw) = d.raw.as_object_mut() {
        raw.insert("mediaType".into(), json!(oci));
    }
    d
}

/// An appended layer as the manifest and config describe it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NewLayer {
    pub digest: Digest,
    pub diff_id: Digest,
    pub size: u64,
    /// Its history entry, as `docker history` shows it.
    pub created_by: String,
    /// How its blob is compressed (layers recorded before zstd: gzip).
    #[serde(default, skip_serializing_if = "Codec::is_gzip")]
    pub codec: Codec,
}

#[derive(Debug, Clone)]
pub struct Image {
    pub config: Bytes,
    pub config_descriptor: Descriptor,
    /// Its manifest, serialised once, as it will be written.
    pub manifest: Document,
    /// Every layer the manifest names, base layers first.
    pub layers: Vec<Descriptor>,
}

impl Image {
    pub fn digest(&self) -> &Digest {
        &self.manifest.digest
    }
}

/// The index for the new images: the base's, its media type, field order and annotations
/// kept, listing each new image in the place its platform had — and nothing else. Entries for
/// platforms not pushed are left out (their images lack the app layer: a pull there would run
/// other code), and so are attestations (`unknown/unknown`: they describe the base's images, not
/// these). `images` are each base entry with the image that replaces it.
pub fn index(
    base: &BaseIndex,
    images: &[(&Descriptor, &Image)],
    tweaks: &Tweaks,
) -> Result<Document> {
    let mut index = base.doc.as_object().cloned().unwrap_or_default();
    let family = tweaks.family(base.family);
    let media_type = match family {
        Family::Oci => crate::oci::manifest::OCI_INDEX,
        Family::Docker => crate::oci::manifest::DOCKER_LIST,
    };
    index.insert("schemaVersion".into(), json!(2));
    index.insert("mediaType".into(), json!(media_type));
    let entries: Vec<Value> = images
        .iter()
        .map(|(entry, image)| {
            let mut e = entry.raw.as_object().cloned().unwrap_or_default();
            e.insert("mediaType".into(), json!(image.manifest.media_type));
            e.insert("digest".into(), json!(image.digest().to_string()));
            e.insert("size".into(), json!(image.manifest.bytes.len()));
            Value::Object(e)
        })
        .collect();
    index.insert("manifests".into(), Value::Array(entries));
    index.remove("subject");
    if family == Family::Oci {
        let annotations = index
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(a) = annotations.as_object_mut() {
            a.insert(BASE_NAME.into(), json!(base.name));
            a.insert(BASE_DIGEST.into(), json!(base.digest.to_string()));
            a.extend(
                tweaks
                    .annotations
                    .iter()
                    .map(|(k, v)| (k.clone(), json!(v))),
            );
        }
    }
    let bytes = serde_json::to_vec(&Value::Object(index))
        .map_err(|e| Error::internal(format!("cannot serialise the index: {e}")))?;
    Ok(Document::new(bytes, media_type))
}

const BASE_NAME: &str = "org.opencontainers.image.base.name";
const BASE_DIGEST: &str = "org.opencontainers.image.base.digest";

/// `created` (RFC 3339) comes from `SOURCE_DATE_EPOCH` or the layers' fixed mtime, so rebuilds
/// match.
pub fn build(base: &Base, app: &[NewLayer], tweaks: &Tweaks, created: &str) -> Result<Image> {
    let family = tweaks.family(base.family);
    let config = new_config(&base.config, app, tweaks, created)?;
    let config_bytes = serde_json::to_vec(&config).expect("JSON values serialise");
    let config_descriptor = Descriptor::new(
        family.config(),
        digest::sha256(&config_bytes),
        config_bytes.len() as u64,
    );
    let mut layers: Vec<Descriptor> = base.layers.iter().map(|l| layer_in(l, family)).collect();
    for l in app {
        let media_type = l.codec.media_type(family, &base.name)?;
        layers.push(Descriptor::new(media_type, l.digest.clone(), l.size));
    }

    let mut manifest = base.manifest.as_object().cloned().unwrap_or_default();
    manifest.insert("schemaVersion".into(), json!(2));
    manifest.insert("mediaType".into(), json!(family.manifest()));
    manifest.insert("config".into(), config_descriptor.raw.clone());
    manifest.insert(
        "layers".into(),
        Value::Array(layers.iter().map(|l| l.raw.clone()).collect()),
    );
    // The new image is not a referrer of whatever the base referred to.
    manifest.remove("subject");
    if family == Family::Oci {
        // image-spec annotations.md: which image this one was built on.
        let annotations = manifest
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(a) = annotations.as_object_mut() {
            a.insert(BASE_NAME.into(), json!(base.name));
            a.insert(BASE_DIGEST.into(), json!(base.digest.to_string()));
            a.extend(
                tweaks
                    .annotations
                    .iter()
                    .map(|(k, v)| (k.clone(), json!(v))),
            );
        }
    } else if !tweaks.annotations.is_empty() {
        return Err(Error::usage(format!(
            "--annotation needs an OCI image, and the base `{}` is Docker schema 2, whose \
             manifests have no annotations",
            base.name
        )));
    }
    let manifest_bytes =
        serde_json::to_vec(&Value::Object(manifest)).expect("JSON values serialise");
    Ok(Image {
        manifest: Document::new(manifest_bytes, family.manifest()),
        config: config_bytes.into(),
        config_descriptor,
        layers,
    })
}

fn new_config(base: &Value, app: &[NewLayer], tweaks: &Tweaks, created: &str) -> Result<Value> {
    let mut config = base.clone();
    let root = config
        .as_object_mut()
        .ok_or_else(|| Error::image("the base config is not a JSON object"))?;
    root.insert("created".into(), json!(created));

    let rootfs = root
        .entry("rootfs")
        .or_insert_with(|| json!({"type": "layers", "diff_ids": []}));
    rootfs
        .get_mut("diff_ids")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| Error::image("the base config has no rootfs.diff_ids"))?
        .extend(app.iter().map(|l| json!(l.diff_id.to_string())));

    let history = root.entry("history").or_insert_with(|| json!([]));
    if let Some(h) = history.as_array_mut() {
        h.extend(app.iter().map(|l| {
            json!({
                "created": created,
                "created_by": l.created_by,
                "comment": "layerup",
            })
        }));
    }

    // "config" may be missing or null in a scratch-like base.
    if !root.get("config").is_some_and(Value::is_object) {
        root.insert("config".into(), json!({}));
    }
    let run = root
        .get_mut("config")
        .and_then(Value::as_object_mut)
        .expect("just made an object");
    apply(run, tweaks);
    Ok(config)
}

/// Applies the tweaks to the runtime config (`config` in the image config), as docker applies
/// ENV, ENTRYPOINT, CMD, WORKDIR, LABEL and USER.
fn apply(run: &mut Map<String, Value>, t: &Tweaks) {
    if !t.env.is_empty() {
        let mut env: Vec<String> = run
            .get("Env")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        for (k, v) in &t.env {
            let entry = format!("{k}={v}");
            match env
                .iter_mut()
                .find(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) == k)
            {
                Some(existing) => *existing = entry,
                None => env.push(entry),
            }
        }
        run.insert("Env".into(), json!(env));
    }
    if let Some(ep) = &t.entrypoint {
        run.insert("Entrypoint".into(), json!(ep));
        // As in a Dockerfile and in `docker run --entrypoint`: a new entrypoint drops the
        // inherited command, whose arguments were meant for the old one.
        if t.cmd.is_none() {
            run.remove("Cmd");
        }
    }
    if let Some(cmd) = &t.cmd {
        run.insert("Cmd".into(), json!(cmd));
    }
    if let Some(w) = &t.workdir {
        run.insert("WorkingDir".into(), json!(w));
    }
    if !t.labels.is_empty() {
        if !run.get("Labels").is_some_and(Value::is_object) {
            run.insert("Labels".into(), json!({}));
        }
        let labels = run
            .get_mut("Labels")
            .and_then(Value::as_object_mut)
            .expect("just made an object");
        for (k, v) in &t.labels {
            labels.insert(k.clone(), json!(v));
        }
    }
    if let Some(u) = &t.user {
        run.insert("User".into(), json!(u));
    }
}

/// RFC 3339 for a Unix time, as image configs write `created`.
pub fn rfc3339(secs: u64) -> String {
    chrono::DateTime::from_timestamp(secs as i64, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::fixture;
    use crate::oci::manifest::Descriptor;

    const DOCKER_MANIFEST: &str = "docker-manifest--oras-go--f54a58bc1aac5ea1a25d796ae155dc228b3f0e11d046ae276b39c4bf2f13d8c4.json";
    const DOCKER_CONFIG: &str = "docker-config--oras-go--feb5d9fea6a5e9606aa995e879d862b825965ba48de054caab5ef356dc6b3412.json";

    fn base(family: Family) -> Base {
        let manifest: Value = serde_json::from_slice(&fixture(DOCKER_MANIFEST)).unwrap();
        let (_, layers) = crate::build::base::image_parts(&manifest, "hello").unwrap();
        let config = crate::build::base::check_config(&fixture(DOCKER_CONFIG), 1, "hello").unwrap();
        Base {
            name: "prod/hello:1".into(),
            digest: digest::sha256(&fixture(DOCKER_MANIFEST)),
            family,
            manifest,
            config,
            layers,
        }
    }

    fn layer() -> [NewLayer; 1] {
        [NewLayer {
            digest: digest::sha256(b"blob"),
            diff_id: digest::sha256(b"tar"),
            size: 4,
            created_by: "layerup push ./src:/app".into(),
            codec: Codec::Gzip,
        }]
    }

    fn provenance() -> String {
        rfc3339(crate::build::tar::DEFAULT_MTIME)
    }

    #[test]
    fn the_layer_is_appended_to_manifest_and_config() {
        let b = base(Family::Docker);
        let img = build(&b, &layer(), &Tweaks::default(), &provenance()).unwrap();
        let m: Value = serde_json::from_slice(&img.manifest.bytes).unwrap();
        assert_eq!(m["mediaType"], crate::oci::manifest::DOCKER_MANIFEST);
        assert_eq!(m["layers"].as_array().unwrap().len(), 2);
        assert_eq!(
            m["layers"][0], b.layers[0].raw,
            "base descriptors are copied unchanged"
        );
        assert_eq!(
            m["layers"][1]["mediaType"],
            crate::oci::manifest::DOCKER_LAYER_GZIP
        );
        assert_eq!(
            m["config"]["digest"],
            img.config_descriptor.digest.to_string()
        );
        let c: Value = serde_json::from_slice(&img.config).unwrap();
        let diff_ids = c["rootfs"]["diff_ids"].as_array().unwrap();
        assert_eq!(
            diff_ids.last().unwrap(),
            &json!(layer()[0].diff_id.to_string())
        );
        let last = c["history"].as_array().unwrap().last().unwrap();
        assert_eq!(last["created_by"], "layerup push ./src:/app");
        assert_eq!(c["created"], "1980-01-01T00:00:00Z");
        assert_eq!(img.digest(), &digest::sha256(&img.manifest.bytes));
        assert!(
            m.get("annotations").is_none(),
            "Docker manifests get no annotations"
        );
    }

    #[test]
    fn an_oci_base_gives_oci_types_and_base_annotations() {
        let b = base(Family::Oci);
        let img = build(&b, &layer(), &Tweaks::default(), &provenance()).unwrap();
        let m: Value = serde_json::from_slice(&img.manifest.bytes).unwrap();
        assert_eq!(m["mediaType"], crate::oci::manifest::OCI_MANIFEST);
        assert_eq!(m["config"]["mediaType"], crate::oci::manifest::OCI_CONFIG);
        assert_eq!(
            m["layers"][1]["mediaType"],
            crate::oci::manifest::OCI_LAYER_GZIP
        );
        assert_eq!(m["annotations"][BASE_NAME], "prod/hello:1");
        assert_eq!(m["annotations"][BASE_DIGEST], b.digest.to_string());
    }

    #[test]
    fn unknown_config_fields_and_their_order_survive() {
        let b = base(Family::Docker);
        let img = build(&b, &layer(), &Tweaks::default(), &provenance()).unwrap();
        let c: Value = serde_json::from_slice(&img.config).unwrap();
        let keys: Vec<&String> = c.as_object().unwrap().keys().collect();
        let base_keys: Vec<&String> = b.config.as_object().unwrap().keys().collect();
        assert_eq!(keys, base_keys);
        assert_eq!(c["container_config"], b.config["container_config"]);
    }

    #[test]
    fn format_oci_converts_a_docker_base_keeping_every_digest() {
        let b = base(Family::Docker);
        let tweaks = Tweaks {
            oci: true,
            ..Tweaks::default()
        };
        let img = build(&b, &layer(), &tweaks, &provenance()).unwrap();
        let m: Value = serde_json::from_slice(&img.manifest.bytes).unwrap();
        assert_eq!(m["mediaType"], crate::oci::manifest::OCI_MANIFEST);
        assert_eq!(m["config"]["mediaType"], crate::oci::manifest::OCI_CONFIG);
        for (l, was) in m["layers"].as_array().unwrap().iter().zip(&b.layers) {
            assert_eq!(l["mediaType"], OCI_LAYER_GZIP);
            assert_eq!(l["digest"], was.digest.to_string());
            assert_eq!(l["size"], was.size);
        }
        let kept = build(&b, &layer(), &Tweaks::default(), &provenance()).unwrap();
        assert_eq!(img.config, kept.config, "the same config bytes");
    }

    #[test]
    fn tweaks_change_the_runtime_config_as_docker_would() {
        let tweaks = Tweaks {
            env: vec![
                ("PATH".into(), "/app/bin".into()),
                ("MODE".into(), "dev".into()),
            ],
            entrypoint: Some(vec!["/app/run".into()]),
            cmd: None,
            workdir: Some("/app".into()),
            labels: vec![("team".into(), "web".into())],
            user: Some("1000:1000".into()),
            annotations: vec![],
            oci: false,
        };
        let img = build(&base(Family::Docker), &layer(), &tweaks, &provenance()).unwrap();
        let c: Value = serde_json::from_slice(&img.config).unwrap();
        let run = &c["config"];
        assert_eq!(run["Env"], json!(["PATH=/app/bin", "MODE=dev"]));
        assert_eq!(run["Entrypoint"], json!(["/app/run"]));
        assert!(
            run.get("Cmd").is_none(),
            "a new entrypoint drops the inherited Cmd"
        );
        assert_eq!(run["WorkingDir"], "/app");
        assert_eq!(run["Labels"]["team"], "web");
        assert_eq!(run["User"], "1000:1000");
    }

    #[test]
    fn the_same_inputs_give_the_same_digest() {
        let a = build(
            &base(Family::Oci),
            &layer(),
            &Tweaks::default(),
            &provenance(),
        )
        .unwrap();
        let b = build(
            &base(Family::Oci),
            &layer(),
            &Tweaks::default(),
            &provenance(),
        )
        .unwrap();
        assert_eq!(a.digest(), b.digest());
        let _ = Descriptor::new("x", a.digest().clone(), 1);
    }
}
