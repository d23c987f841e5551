//! The `--ref-file` tags a destination keeps. Each push with `--ref-file` adds a tag
//! (`layerup-<digest prefix>`, Tilt wants a new one per image), and they would pile up: the
//! newest [`KEEP`] are kept, and once twice that many are there the older ones are deleted at
//! once (one cleanup every [`KEEP`] pushes, not a round trip on every push of the inner loop).

use oci_spec::image::Digest;

use crate::build::state::State;
use crate::error::Result;
use crate::store::Store;

/// The `--ref-file` tags kept per destination.
pub const KEEP: usize = 5;

/// Records this push's ref tag, naming `image`, in the state; returns the tags (with their
/// images) to delete now: all but the newest [`KEEP`], once [`KEEP`] × 2 are there.
pub(super) fn record(next: &mut State, tag: &str, image: &Digest) -> Vec<(String, Digest)> {
    next.ref_tags.retain(|(t, _)| t != tag);
    next.ref_tags.push((tag.to_string(), image.clone()));
    if next.ref_tags.len() < KEEP * 2 {
        return Vec::new();
    }
    let cut = next.ref_tags.len() - KEEP;
    let doomed: Vec<(String, Digest)> = next.ref_tags.drain(..cut).collect();
    let kept: Vec<&Digest> = next.ref_tags.iter().map(|(_, d)| d).collect();
    doomed
        .into_iter()
        .filter(|(_, d)| !kept.contains(&d) && d != image)
        .collect()
}

/// Deletes `doomed` from `dest`: by tag where the registry can (OCI distribution 1.1); else by
/// digest — which deletes every tag naming that image — only when no tag but layerup's own
/// names it. Returns the tags deleted; a registry that allows no delete keeps them all.
pub(super) async fn delete(dest: &Store, doomed: &[(String, Digest)]) -> Result<Vec<String>> {
    let mut deleted = Vec::new();
    let mut others: Option<Vec<(String, Option<Digest>)>> = None;
    for (tag, image) in doomed {
        if dest.delete(tag).await? {
            deleted.push(tag.clone());
            continue;
        }
        // No tag deletes here (distribution 2.x): the image goes, with its tags, unless a tag
        // someone else made names it.
        if others.is_none() {
            let mut named = Vec::new();
            for t in dest.tags().await? {
                if !t.starts_with("layerup-") {
                    let d = dest.tag_digest(&t).await?;
                    named.push((t, d));
                }
            }
            others = Some(named);
        }
        let held = others
            .iter()
            .flatten()
            .any(|(_, d)| d.as_ref() == Some(image));
        if !held && dest.delete(image.as_ref()).await? {
            deleted.push(tag.clone());
        }
    }
    Ok(deleted)
}
