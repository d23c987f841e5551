//! The nouns of a layer's contents: a mapping from the machine into the image, and the entries a
//! layer holds — each path's kind, mode and owner, and the stat data that tells a file unchanged.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::oci::platform::Platform;

/// How whiteout names begin (image-spec layer.md): an entry so named deletes a path of the layers
/// below, so no file of the user's may carry one into a layer.
pub const WHITEOUT: &str = ".wh.";

/// The refusal of a source whose name would be read as a whiteout.
pub fn whiteout_named(src: &Path, name: &str) -> Error {
    let what = if name == ".wh..wh..opq" {
        "everything the base image has in its directory".to_string()
    } else {
        format!("the base image's `{}`", &name[WHITEOUT.len()..])
    };
    Error::input(format!(
        "`{}` is named like a whiteout (`{WHITEOUT}…`): in a layer it would delete {what}; rename \
         it, or leave it out in {}",
        src.display(),
        crate::build::ignore::FILE_NAME
    ))
}

/// A path layerup itself writes — the `--ref-file`, the state directory, a layout destination,
/// the temporary directories `$TMPDIR/layerup-*` — which is never part of a layer, nor a change
/// for `watch` to push, even when it lies inside a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Own {
    /// The directory it is in, absolute (its symlinks resolved where it exists).
    pub dir: PathBuf,
    pub name: String,
    /// Every name in `dir` that starts with `name`, not only `name` itself.
    pub prefix: bool,
}

impl Own {
    /// `path` (absolute), or a name prefixed so when `prefix`.
    pub fn new(path: &Path, prefix: bool) -> Option<Own> {
        let name = path.file_name()?.to_str()?.to_string();
        // A bare name (`--ref-file ref.txt`) is in the current directory.
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let dir = std::fs::canonicalize(dir)
            .or_else(|_| std::path::absolute(dir))
            .ok()?;
        Some(Own { dir, name, prefix })
    }

    fn names(&self, name: &str) -> bool {
        name == self.name || (self.prefix && name.starts_with(&self.name))
    }

    /// Whether `path` (absolute) is this one or inside it.
    pub fn covers(&self, path: &Path) -> bool {
        path.strip_prefix(&self.dir).ok().and_then(|rest| {
            let first = rest.components().next()?;
            Some(self.names(first.as_os_str().to_str()?))
        }) == Some(true)
    }

    /// Within a source directory `root` (canonical): the directory (relative, `/`-separated,
    /// empty for the root itself) and the name the walk must leave out there.
    pub fn within(&self, root: &Path) -> Option<OwnRel> {
        let rel = self.dir.strip_prefix(root).ok()?;
        Some(OwnRel {
            dir: rel.to_str()?.to_string(),
            own: self.clone(),
        })
    }
}

/// An [`Own`] path seen from a source directory, for the walk.
#[derive(Debug, Clone)]
pub struct OwnRel {
    pub dir: String,
    own: Own,
}

impl OwnRel {
    /// Whether the entry `name` of the directory `dir` (relative to the source) is layerup's.
    pub fn is(&self, dir: &str, name: &str) -> bool {
        self.dir == dir && self.own.names(name)
    }
}

/// Whether `path` lies inside `dir`: lexically (`..` resolved), and — for the part of it that
/// exists — with symlinks resolved. `Err` says how it leaves.
pub fn inside(dir: &Path, path: &Path) -> std::result::Result<(), String> {
    let dir_real = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut lexical = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                lexical.pop();
            }
            std::path::Component::CurDir => {}
            c => lexical.push(c),
        }
    }
    if !lexical.starts_with(dir) && !lexical.starts_with(&dir_real) {
        return Err("a `..` or absolute path leads out".into());
    }
    // The longest part that exists, symlinks resolved, must still be inside.
    match real_prefix(&lexical) {
        Some((real, _)) if !real.starts_with(&dir_real) => {
            Err(format!("a symlink leads to `{}`", real.display()))
        }
        _ => Ok(()),
    }
}

/// The longest part of `path` that exists, symlinks resolved, and the rest of `path` after it
/// (empty when all of it exists); `None` when no part of it does.
pub fn real_prefix(path: &Path) -> Option<(PathBuf, PathBuf)> {
    let mut rest = Vec::new();
    let mut existing = path;
    loop {
        if let Ok(real) = std::fs::canonicalize(existing) {
            return Some((real, rest.iter().rev().collect()));
        }
        rest.push(existing.file_name()?);
        existing = existing.parent()?;
    }
}

/// A source a committed layerup.toml names must stay inside `within`, that file's directory
/// (see [`inside`]): checked when the file is read, and again at every push, since a symlink
/// in the tree may change, and each platform's `{arch}` directory may be one.
pub fn confined(src: &Path, within: Option<&Path>) -> crate::error::Result<()> {
    let Some(dir) = within else {
        return Ok(());
    };
    inside(dir, src).map_err(|why| {
        Error::usage(format!(
            "source `{}` is outside `{}`, the directory of the layerup.toml that names it \
             ({why}): a committed layerup.toml names files only inside its own tree",
            src.display(),
            dir.display()
        ))
    })
}

/// One `SRC[:DEST]` as given, before the image's working directory is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMapping {
    pub src: PathBuf,
    /// Absolute, relative to the working directory, or ending in `/` (a file lands inside).
    pub dest: Option<String>,
}

impl RawMapping {
    /// Resolved against the working directory `workdir` (absolute).
    pub fn resolve(&self, workdir: &str) -> Mapping {
        Mapping {
            src: self.src.clone(),
            dest: clean_image_path(workdir, self.dest.as_deref().unwrap_or(".")),
            into_dir: self.dest.as_deref().is_none_or(|d| d.ends_with('/')),
        }
    }

    /// Whether where it lands is known without the base (an absolute DEST).
    pub fn is_absolute(&self) -> bool {
        self.dest.as_deref().is_some_and(|d| d.starts_with('/'))
    }

    /// Whether SRC names a placeholder ([`PLACEHOLDERS`]): its files differ per platform.
    pub fn per_platform(&self) -> bool {
        placeholder_in(&self.src.to_string_lossy()).is_some()
    }

    /// This mapping for one platform: the placeholders of SRC replaced by its parts (a missing
    /// variant by nothing).
    pub fn for_platform(&self, p: &Platform) -> RawMapping {
        let src = self
            .src
            .to_string_lossy()
            .replace("{os}", &p.os)
            .replace("{arch}", &p.architecture)
            .replace("{variant}", p.variant.as_deref().unwrap_or(""));
        RawMapping {
            src: src.into(),
            dest: self.dest.clone(),
        }
    }

    /// What SRC is whatever the platform: its path up to the first component with a
    /// placeholder — SRC itself when it names none. What must exist, and what `watch` watches.
    pub fn fixed_part(&self) -> PathBuf {
        let mut out = PathBuf::new();
        for c in self.src.components() {
            if placeholder_in(&c.as_os_str().to_string_lossy()).is_some() {
                break;
            }
            out.push(c);
        }
        if out.as_os_str().is_empty() {
            out.push(".");
        }
        out
    }
}

/// Whether `path` is an image path a layer may hold: relative, and no part empty, `.` or `..`.
/// Every path the builder makes is so; one that is not came from a damaged state file, and
/// writing it could reach outside the image on extraction.
pub fn is_clean(path: &str) -> bool {
    !path.is_empty()
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// What SRC may name to differ per platform: `./out/{os}-{arch}/app:/app`.
pub const PLACEHOLDERS: [&str; 3] = ["{os}", "{arch}", "{variant}"];

/// The first of [`PLACEHOLDERS`] that `text` names.
pub fn placeholder_in(text: &str) -> Option<&'static str> {
    PLACEHOLDERS.into_iter().find(|p| text.contains(p))
}

/// `Path::join` for image paths, then cleaned: `.` dropped, `..` applied, never above `/`.
pub fn clean_image_path(base: &str, rel: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    let joined = if rel.starts_with('/') {
        rel.to_string()
    } else {
        format!("{base}/{rel}")
    };
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// One `SRC[:DEST]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mapping {
    pub src: PathBuf,
    /// An absolute, cleaned path in the image.
    pub dest: String,
    /// A file source lands inside `dest` (DEST omitted, or ending in `/`) rather than at it.
    pub into_dir: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    /// The path in the layer: relative, `/`-separated, no `.` or `..` parts.
    pub path: String,
    pub kind: Kind,
    /// Permission bits (`0o7777`), as on disk.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    Dir,
    File {
        src: PathBuf,
        size: u64,
        /// What the walk saw, to recognise the file unchanged next time without reading it.
        stat: Stat,
    },
    Symlink {
        target: PathBuf,
    },
    /// A second name of a file stored earlier in the layer, at `target`.
    Hardlink {
        target: String,
    },
    /// An empty file named `.wh.<name>` (or `.wh..wh..opq`) that hides paths of lower layers
    /// (image-spec layer.md, "Whiteouts"). Only delta layers hold them.
    Whiteout,
}

/// The stat data that tells a file unchanged since it was last read (as git's index does).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stat {
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub dev: u64,
}

impl Kind {
    /// A regular file at `src`, and its (device, inode) when it has more than one name (for
    /// hardlinks).
    pub fn file(src: PathBuf, meta: &std::fs::Metadata) -> (Kind, Option<(u64, u64)>) {
        let kind = Kind::File {
            src,
            size: meta.len(),
            stat: Stat::of(meta),
        };
        (kind, (meta.nlink() > 1).then(|| (meta.dev(), meta.ino())))
    }
}

impl Stat {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        Stat {
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }
}

pub fn unsupported(path: &Path, t: std::fs::FileType) -> Error {
    let what = if t.is_socket() {
        "a socket"
    } else if t.is_fifo() {
        "a named pipe"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_char_device() {
        "a character device"
    } else {
        "of an unknown file type"
    };
    Error::input(format!(
        "`{}` is {what}; a layer holds only files, directories and symlinks (list it in {} to leave it out)",
        path.display(),
        crate::build::ignore::FILE_NAME
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[test]
    fn a_per_platform_source_is_filled_in_and_watched_above_its_placeholders() {
        let m = RawMapping {
            src: "out/{os}-{arch}{variant}/bin/app".into(),
            dest: Some("/app/app".into()),
        };
        assert!(m.per_platform());
        let arm: Platform = "linux/arm/v7".parse().unwrap();
        assert_eq!(
            m.for_platform(&arm).src,
            Path::new("out/linux-armv7/bin/app")
        );
        let amd: Platform = "linux/amd64".parse().unwrap();
        assert_eq!(
            m.for_platform(&amd).src,
            Path::new("out/linux-amd64/bin/app")
        );
        assert_eq!(m.for_platform(&amd).dest, m.dest);
        assert_eq!(m.fixed_part(), Path::new("out"));
        let top = RawMapping {
            src: "{arch}/app".into(),
            dest: None,
        };
        assert_eq!(top.fixed_part(), Path::new("."));
        let whole = RawMapping {
            src: "./src/app".into(),
            dest: None,
        };
        assert_eq!(whole.fixed_part(), Path::new("./src/app"));
        let plain = RawMapping {
            src: "src/{x}".into(),
            dest: None,
        };
        assert!(!plain.per_platform());
    }

    #[rstest]
    #[case("/app", "src", "/app/src")]
    #[case("/app", "/etc/x", "/etc/x")]
    #[case("/app", "../../../x", "/x")]
    #[case("/", "./a/./b/", "/a/b")]
    #[case("/app", "..", "/")]
    fn image_paths_are_cleaned_and_never_climb_above_root(
        #[case] base: &str,
        #[case] rel: &str,
        #[case] out: &str,
    ) {
        assert_eq!(clean_image_path(base, rel), out);
    }
}
