//! What a push writes, once the new image is made: its blobs (where each comes from, what is
//! known of it in the destination) and manifests through the one write path
//! ([`transfer::write`]), then the state for the next push — and Tilt's `--ref-file` tag.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use oci_spec::image::Digest;

use super::blocking;
use crate::build::image::{Image, NewLayer};
use crate::build::new_image::NewImage;
use crate::build::per_platform;
use crate::build::stack::Mode;
use crate::build::state::{self, State};
use crate::error::{Error, Result};
use crate::oci::reference::ImageRef;
use crate::store::Store;
use crate::transfer::{self, Blob, Known, Manifests, Moved, Role, Slots, Source};

/// What becomes of the state after the push.
pub(super) enum Save {
    /// A one-shot push: written while the push runs, put in place only once it succeeded.
    Staged(Option<PathBuf>),
    /// A watch: handed back, to be written after the push returns.
    Later,
}

/// Writes the new image to `dest`: the blobs it lacks, the manifests (none when its tag already
/// names this image), then `more_tags` (`--tag`, the `--ref-file` tag), written whatever the
/// image. Returns each blob's report, and the state to keep when it is [`Save::Later`].
#[allow(clippy::too_many_arguments)]
pub(super) async fn write(
    made: &NewImage,
    next: Box<State>,
    source: &Store,
    dest: &Store,
    at_tag: Option<&Digest>,
    more_tags: Vec<String>,
    slots: &Slots,
    save: Save,
) -> Result<(Vec<Moved>, Option<Box<State>>)> {
    let unchanged = made.mode == Mode::Unchanged && at_tag == Some(&made.top().digest);
    // A delta and its config are new by nature: asking about them saves nothing. With only
    // per-platform files changed, the other platforms' configs are not.
    let new = if matches!(made.mode, Mode::Full { .. })
        || (made.mode == Mode::Unchanged && made.platform_files_changed)
    {
        Known::Unknown
    } else {
        Known::Missing
    };
    let mut blobs = blobs(
        &made.images,
        &made.uploads,
        &made.per_platform,
        source,
        &made.present,
        new,
    );
    if unchanged {
        blobs.iter_mut().for_each(|b| b.known = Known::Present);
    }
    let children = made.children();
    let mut tags = Vec::new();
    if !unchanged {
        tags.push(dest.tag().to_string());
    }
    tags.extend(more_tags);
    let transfer = async {
        transfer::survey(dest, &mut blobs).await?;
        let manifests = Manifests {
            children: if unchanged { &[] } else { &children },
            top: made.top(),
            tags,
        };
        transfer::write(dest, &blobs, manifests, slots).await
    };
    match save {
        Save::Later => Ok((transfer.await?, Some(next))),
        Save::Staged(path) => {
            let path = path.filter(|_| made.save);
            let stage = blocking(move || Ok(path.map(|f| (state::stage(&f, &next), f))));
            let (moved, staged) = tokio::try_join!(transfer, stage)?;
            if let Some((staged, file)) = staged {
                if let Err(e) = staged.and_then(state::Staged::commit) {
                    // The push succeeded; only the next one's speed is at stake.
                    tracing::warn!("{e}; the next push will be a full one");
                    state::remove(&file);
                }
            }
            Ok((moved, None))
        }
    }
}

/// Writes the state of a watched push, after it: a failure only costs the next run's speed.
pub(crate) fn save_state(file: &Path, state: &State) {
    if let Err(e) = state::stage(file, state).and_then(state::Staged::commit) {
        tracing::warn!("{e}; the next run will push in full");
        state::remove(file);
    }
}

/// Every blob the images name, each once, where its bytes come from: this run's files, the
/// configs in memory, the base's store for the rest. `present` are known to be in the
/// destination; `new` is what is known of this run's blobs.
fn blobs(
    images: &[Image],
    uploads: &[(NewLayer, PathBuf)],
    platform_layers: &[per_platform::Built],
    source: &Store,
    present: &HashSet<Digest>,
    new: Known,
) -> Vec<Blob> {
    let mut seen = HashSet::new();
    let mut out: Vec<Blob> = Vec::new();
    for l in images.iter().flat_map(|i| &i.layers) {
        if !seen.insert(l.digest.clone()) {
            continue;
        }
        let upload = uploads.iter().find(|u| u.0.digest == l.digest);
        let platform = platform_layers
            .iter()
            .find(|b| b.made.layer.digest == l.digest);
        let (source, known) = match (upload, platform) {
            (Some((_, path)), _) => (Source::File(path.clone()), new),
            // Rebuilt: the same bytes as the last push's more often than not.
            (
                None,
                Some(per_platform::Built {
                    file: Some(path), ..
                }),
            ) => (Source::File(path.clone()), Known::Unknown),
            // The last push's, in the image the destination holds.
            (None, Some(per_platform::Built { file: None, .. })) => {
                (Source::Store(source.clone()), Known::Present)
            }
            (None, None) => (Source::Store(source.clone()), Known::Unknown),
        };
        out.push(Blob {
            descriptor: l.clone(),
            source,
            role: Role::Layer,
            known: if present.contains(&l.digest) {
                Known::Present
            } else {
                known
            },
        });
    }
    for image in images {
        if !seen.insert(image.config_descriptor.digest.clone()) {
            continue;
        }
        out.push(Blob {
            descriptor: image.config_descriptor.clone(),
            source: Source::Bytes(Bytes::clone(&image.config)),
            role: Role::Config,
            known: new,
        });
    }
    out
}

/// Tilt's `outputs_image_ref_to` wants a tag it has not seen before for new content, and will
/// not take a digest (tilt#5987): the image is also tagged by its digest, as Tilt's own builds
/// are tagged. The tag, for [`write`].
pub(super) fn ref_tag(digest: &Digest) -> String {
    let hex = digest.digest();
    format!("layerup-{}", &hex[..16.min(hex.len())])
}

/// Writes the reference under the `--ref-file` tag to `file`.
pub(super) fn write_ref_file(to: &ImageRef, tag: &str, file: &Path) -> Result<()> {
    // The plan refused --ref-file with a layout destination.
    let ImageRef::Registry(r) = to else {
        return Err(Error::internal("--ref-file with a layout destination"));
    };
    let line = format!("{}/{}:{tag}\n", r.registry(), r.repository());
    std::fs::write(file, line).map_err(|e| Error::io("write the --ref-file", file, &e))
}
