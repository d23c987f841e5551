//! Files that differ per platform (`{os}`, `{arch}`, `{variant}` in SRC): one layer for each
//! platform's image, above the shared app layers — built whole when its files change, and the
//! last push's used again while their stamp stays the same.

use std::path::{Path, PathBuf};

use crate::build::base::Base;
use crate::build::compression::Compression;
use crate::build::entry::{Entry, Mapping, Own, RawMapping, PLACEHOLDERS};
use crate::build::lower::Lower;
use crate::build::state::PlatformLayer;
use crate::build::{index, stack, tree};
use crate::error::{Error, Result};
use crate::oci::platform::Platform;

/// One platform's layer for this push, and its blob file when it was built now (`None`: the
/// last push's, in the image the destination holds).
pub struct Built {
    pub made: PlatformLayer,
    pub file: Option<PathBuf>,
}

/// What one platform's layer is made from.
pub struct Job {
    platform: Platform,
    mappings: Vec<Mapping>,
    /// The directories above the mappings, as this platform's base has them.
    chain: Vec<Entry>,
    lower: Lower,
    /// Where its blob is written when it is built.
    path: PathBuf,
}

/// What shapes every platform's layer besides its files.
pub struct Settings {
    pub owner: Option<(u32, u32)>,
    pub ignore: Vec<String>,
    pub own: Vec<Own>,
    /// Every entry's mtime (`SOURCE_DATE_EPOCH`).
    pub mtime: u64,
    pub compression: Compression,
}

/// The job of `base`'s platform: the per-platform mappings `raw` filled in with it. Its os,
/// architecture and variant come from a registry: only plain names fill a path (`..` would
/// take files from elsewhere). A platform whose source is missing is an error naming both.
pub fn job(
    raw: &[RawMapping],
    (base, lower): (&Base, &Lower),
    workdir: &str,
    path: &Path,
    confined: Option<&Path>,
) -> Result<Job> {
    let plain = |t: &str| {
        !t.is_empty()
            && t != "."
            && t != ".."
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    };
    let Some(platform) = Platform::of_config(&base.config).filter(|p| {
        plain(&p.os) && plain(&p.architecture) && p.variant.as_deref().is_none_or(plain)
    }) else {
        return Err(Error::image(format!(
            "base image `{}` names no usable os and architecture: {} cannot be filled in",
            base.name,
            PLACEHOLDERS.join(", ")
        )));
    };
    let mut mappings = Vec::new();
    for m in raw {
        let one = m.for_platform(&platform);
        crate::build::entry::confined(&one.src, confined)?;
        if std::fs::symlink_metadata(&one.src).is_err() {
            return Err(Error::input(format!(
                "source `{}` does not exist (`{}` for {platform})",
                one.src.display(),
                m.src.display()
            )));
        }
        mappings.push(one.resolve(workdir));
    }
    // Placed through this platform's base, with the directories above as it has them.
    let lowers = std::slice::from_ref(lower);
    let file = |m: &Mapping| std::fs::metadata(&m.src).is_ok_and(|md| md.is_file());
    let mappings = crate::build::lower::place_all(lowers, &mappings, &file)?;
    let chain = crate::build::lower::chain(lowers, &mappings, &file)?;
    Ok(Job {
        platform,
        mappings,
        chain,
        lower: lower.clone(),
        path: path.to_path_buf(),
    })
}

/// Each job's layer: the one in `last` for its platform while the files' stamp (and the
/// settings that shape the bytes) is the same and none was written within the racy window of
/// that build; else built now. Reads and compresses files: run it off the async threads.
pub fn build(jobs: Vec<Job>, settings: &Settings, last: &[PlatformLayer]) -> Result<Vec<Built>> {
    let format = stack::format();
    jobs.into_iter()
        .map(|job| {
            let built_at = stack::now_ns();
            let mut entries = tree::collect(
                &job.mappings,
                settings.owner,
                &settings.ignore,
                &settings.own,
            )?;
            tree::with_chain(&mut entries, &job.chain);
            crate::build::lower::check_links(std::slice::from_ref(&job.lower), &entries)?;
            // A layer of gzip, its stamp as before zstd existed; one of zstd says its level.
            let codec = match settings.compression {
                Compression::Gzip => String::new(),
                Compression::Zstd(level) => format!(" zstd:{level}"),
            };
            let stamp = format!(
                "{} {format}{codec} {}",
                settings.mtime,
                index::stamp(&entries)
            );
            let platform = job.platform.to_string();
            let same = last.iter().find(|l| {
                l.platform == platform
                    && l.stamp == stamp
                    && !index::racy_since(&entries, l.built_at)
            });
            if let Some(l) = same {
                return Ok(Built {
                    made: l.clone(),
                    file: None,
                });
            }
            let by = format!("{} for {platform}", stack::created_by(&job.mappings));
            let bytes = (settings.mtime, settings.compression);
            let layer = stack::write_plain(&entries, &by, bytes, &job.path)?;
            Ok(Built {
                made: PlatformLayer {
                    platform,
                    layer,
                    stamp,
                    built_at,
                },
                file: Some(job.path),
            })
        })
        .collect()
}
