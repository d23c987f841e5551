//! Referrers travel with `copy`: the signatures, SBOMs and attestations of the copied image.
//! Found through the source's OCI 1.1 referrers API, else its `sha256-<hex>` fallback tag (an
//! index of them: GHCR, GitLab and distribution 2.x have no API), and cosign's `.sig`, `.att`
//! and `.sbom` tags. Each is copied byte for byte once the image is there, and listed as the
//! destination supports: its API lists it by itself, else the fallback tag is written (what it
//! listed already kept).

use std::collections::HashSet;

use futures_util::future::try_join_all;
use futures_util::{stream, StreamExt, TryStreamExt};
use oci_spec::image::Digest;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::oci::manifest::{Descriptor, Document, Kind, OCI_INDEX};
use crate::store::Store;
use crate::transfer::{self, Blob, Known, Moved, Role, Slots, Source};

/// Referrer manifests read at once.
const READS: usize = 16;

/// cosign's tags beside an image: `sha256-<hex>.<suffix>`.
const COSIGN: [&str; 3] = ["sig", "att", "sbom"];

/// The referrers of one subject.
struct Found {
    /// Listed by the API or the fallback tag: their descriptors as listed, and the manifests.
    listed: Vec<(Value, Document)>,
    /// cosign's tagged manifests, with their tags.
    tagged: Vec<(String, Document)>,
}

/// The fallback tag of `subject` (distribution spec 1.1, "Referrers tag schema").
fn fallback_tag(subject: &Digest) -> String {
    format!("{}-{}", subject.algorithm(), subject.digest())
}

/// Copies the referrers of `subject` from `source` to `dest`, after the image itself: the
/// blobs that moved, and how many referrers there were.
pub async fn copy(
    source: &Store,
    dest: &Store,
    subject: &Digest,
    slots: &Slots,
) -> Result<(Vec<Moved>, usize)> {
    let found = find(source, subject).await?;
    let count = found.listed.len() + found.tagged.len();
    if count == 0 {
        return Ok((Vec::new(), 0));
    }
    Ok((write(source, dest, subject, found, slots).await?, count))
}

/// What refers to `subject` in `source`: the API (else the fallback tag) and cosign's tags
/// asked at once, then the listed manifests read at once.
async fn find(source: &Store, subject: &Digest) -> Result<Found> {
    let tag = fallback_tag(subject);
    let listed = async {
        match source.referrers(subject).await? {
            Some(listed) => Ok(listed),
            None => listed_by_tag(source, subject).await,
        }
    };
    let cosign = try_join_all(COSIGN.map(|suffix| {
        let tag = format!("{tag}.{suffix}");
        async move { Ok::<_, Error>(source.tagged(&tag).await?.map(|doc| (tag, doc))) }
    }));
    let (listed, cosign) = tokio::try_join!(listed, cosign)?;
    let mut seen = HashSet::new();
    let mut unique = Vec::new();
    for raw in listed {
        let d = Descriptor::parse(&raw, &format!("a referrer of {subject}"))?;
        if seen.insert(d.digest.clone()) {
            unique.push((raw, d));
        }
    }
    let docs: Vec<Document> = stream::iter(&unique)
        .map(|(_, d)| source.manifest(d))
        .buffered(READS)
        .try_collect()
        .await?;
    Ok(Found {
        listed: unique.into_iter().map(|(raw, _)| raw).zip(docs).collect(),
        tagged: cosign.into_iter().flatten().collect(),
    })
}

/// The entries of the fallback tag's index of `subject` in `store`. GitLab may resolve a
/// missing `sha256-<hex>` tag to the subject itself (an index's children are not referrers).
async fn listed_by_tag(store: &Store, subject: &Digest) -> Result<Vec<Value>> {
    let tag = fallback_tag(subject);
    match store.tagged(&tag).await? {
        Some(doc) if doc.digest != *subject => entries(&doc, &tag),
        _ => Ok(Vec::new()),
    }
}

/// The entries of an index (a fallback tag's).
fn entries(doc: &Document, what: &str) -> Result<Vec<Value>> {
    match doc.classify(&format!("`{what}`"))? {
        (Kind::Index(_), v) => Ok(v
            .get("manifests")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()),
        // Not a list of referrers: nothing to copy from it.
        _ => Ok(Vec::new()),
    }
}

/// Writes `found` to `dest`: every blob, then each manifest (by digest, cosign's under their
/// tags), then — where `dest` has no referrers API — the fallback tag listing them.
async fn write(
    source: &Store,
    dest: &Store,
    subject: &Digest,
    found: Found,
    slots: &Slots,
) -> Result<Vec<Moved>> {
    let docs = found
        .listed
        .iter()
        .map(|(_, d)| d)
        .chain(found.tagged.iter().map(|(_, d)| d));
    let mut blobs = Vec::new();
    for doc in docs {
        let what = format!("referrer {} of {subject}", doc.digest);
        let (kind, value) = doc.classify(&what)?;
        if let Kind::Index(_) = kind {
            return Err(Error::image(format!(
                "{what} is an index; layerup copies referrers that are manifests"
            )));
        }
        for d in crate::oci::manifest::blobs_of(&value, &what)? {
            if !d.is_foreign() {
                blobs.push(Blob {
                    descriptor: d,
                    source: Source::Store(source.clone()),
                    role: Role::Blob,
                    known: Known::Unknown,
                });
            }
        }
    }
    let mut seen = HashSet::new();
    blobs.retain(|b| seen.insert(b.descriptor.digest.clone()));
    let moved = transfer::send(dest, &blobs, slots).await?;
    for (_, doc) in &found.listed {
        dest.put_child(doc).await?;
    }
    // A tag already naming the same is not written again (ECR's immutable tags refuse that).
    for (tag, doc) in &found.tagged {
        if dest.tag_digest(tag).await?.as_ref() != Some(&doc.digest) {
            dest.put_tag(tag, doc).await?;
        }
    }
    if !found.listed.is_empty() && dest.referrers(subject).await?.is_none() {
        let kept = listed_by_tag(dest, subject).await?;
        if let Some(index) = fallback_index(kept, &found.listed) {
            dest.put_tag(&fallback_tag(subject), &index).await?;
        }
    }
    Ok(moved)
}

/// The fallback index: what the destination's tag listed, then the copied referrers not in it;
/// `None` when it listed every one already.
fn fallback_index(kept: Vec<Value>, listed: &[(Value, Document)]) -> Option<Document> {
    let mut have: HashSet<String> = kept
        .iter()
        .filter_map(|e| e.get("digest")?.as_str().map(str::to_string))
        .collect();
    let mut manifests = kept;
    let before = manifests.len();
    for (raw, doc) in listed {
        if have.insert(doc.digest.to_string()) {
            manifests.push(raw.clone());
        }
    }
    if manifests.len() == before {
        return None;
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    });
    Some(Document::new(
        serde_json::to_vec(&index).expect("JSON values serialise"),
        OCI_INDEX,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fallback_tag_is_algorithm_dash_hex() {
        let d = crate::oci::digest::sha256(b"x");
        assert_eq!(fallback_tag(&d), format!("sha256-{}", d.digest()));
    }

    #[test]
    fn a_fallback_index_keeps_what_it_listed_and_adds_each_referrer_once() {
        let a = Document::new(br#"{"a":1}"#.to_vec(), OCI_INDEX);
        let b = Document::new(br#"{"b":1}"#.to_vec(), OCI_INDEX);
        let entry = |d: &Document| json!({"digest": d.digest.to_string(), "size": 7});
        let listed = [(entry(&a), a.clone()), (entry(&b), b.clone())];
        let index = fallback_index(vec![entry(&a)], &listed).unwrap();
        assert!(fallback_index(vec![entry(&a), entry(&b)], &listed).is_none());
        let v: Value = serde_json::from_slice(&index.bytes).unwrap();
        let digests: Vec<&str> = v["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["digest"].as_str().unwrap())
            .collect();
        assert_eq!(digests, [a.digest.as_ref(), b.digest.as_ref()]);
        assert_eq!(v["mediaType"], OCI_INDEX);
    }
}
