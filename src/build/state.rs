//! What layerup remembers per destination between pushes — the last image, its app layers and
//! the file index — in one file under the user's cache directory: a line of JSON, then the
//! index's lines. Deleting it is always safe: the next push is then a full one.

use std::io::Write;
use std::path::{Path, PathBuf};

use oci_spec::image::Digest;
use serde::{Deserialize, Serialize};

use crate::build::image::NewLayer;
use crate::build::index::Index;
use crate::error::{Error, Result};

/// Bumped whenever the file's meaning changes; an older file is then "unreadable" (a full push).
const VERSION: u32 = 2;

/// Everything besides the files that shapes the app layers' bytes: a delta is stacked only on
/// layers made with the same.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Settings {
    /// Each mapping as `SRC:DEST:into_dir`, SRC made absolute, so the same checkout pushed from
    /// another working directory still stacks.
    pub mappings: Vec<String>,
    /// `--chown`.
    pub owner: Option<(u32, u32)>,
    /// Every entry's mtime (`SOURCE_DATE_EPOCH`).
    pub mtime: u64,
    /// The layer format: gzip level and the partition's constants.
    pub format: String,
}

/// Which of the [`Settings`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    Mappings,
    Owner,
    Mtime,
    Format,
}

impl Settings {
    /// The first setting that differs from `old`'s.
    pub fn changed_from(&self, old: &Settings) -> Option<Setting> {
        if self.mappings != old.mappings {
            Some(Setting::Mappings)
        } else if self.owner != old.owner {
            Some(Setting::Owner)
        } else if self.mtime != old.mtime {
            Some(Setting::Mtime)
        } else if self.format != old.format {
            Some(Setting::Format)
        } else {
            None
        }
    }
}

/// One platform's layer of per-platform files, as last built: used again while the files'
/// [`crate::build::index::stamp`] is the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformLayer {
    /// `os/arch[/variant]`.
    pub platform: String,
    pub layer: NewLayer,
    pub stamp: String,
    /// When its files were read (ns since the epoch).
    pub built_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// Everything that shapes the app layers' bytes besides the files themselves: a delta is
    /// stacked only on layers made with the same.
    pub settings: Settings,
    /// The base's platform manifest the image was built on.
    pub base: Digest,
    /// The image last pushed to this destination.
    pub image: Digest,
    /// The full app layer's parts, bottom first.
    pub parts: Vec<NewLayer>,
    /// Deltas stacked on the parts since, bottom first.
    pub deltas: Vec<NewLayer>,
    /// Image paths a delta's whiteouts hid in the layers below the app's (the base's files
    /// included), as [`crate::build::index::hide`] keeps them: a full push of the same
    /// destination hides them again, so squashing or `--full` never brings a deleted file back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hidden: Vec<String>,
    /// The layer of the per-platform mappings in each platform's image, in the base's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platform_layers: Vec<PlatformLayer>,
    /// The `--ref-file` tags layerup wrote in this destination, oldest first, with the image
    /// each names: the newest are kept, older ones deleted (they would pile up, one a push).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ref_tags: Vec<(String, Digest)>,
    /// Kept as lines after the JSON (see [`Index::write_lines`]).
    #[serde(skip)]
    pub index: Index,
}

impl State {
    pub fn new(
        settings: Settings,
        base: Digest,
        image: Digest,
        parts: Vec<NewLayer>,
        index: Index,
    ) -> Self {
        State {
            version: VERSION,
            settings,
            base,
            image,
            parts,
            deltas: Vec::new(),
            hidden: Vec::new(),
            platform_layers: Vec::new(),
            ref_tags: Vec::new(),
            index,
        }
    }

    /// The app layers above the base, bottom first.
    pub fn layers(&self) -> Vec<NewLayer> {
        self.parts.iter().chain(&self.deltas).cloned().collect()
    }

    /// Compressed bytes of the full app layer's parts.
    pub fn full_size(&self) -> u64 {
        self.parts.iter().map(|l| l.size).sum()
    }

    /// Compressed bytes of the deltas.
    pub fn delta_size(&self) -> u64 {
        self.deltas.iter().map(|l| l.size).sum()
    }
}

/// Where states live, from the environment `env` gives: `$LAYERUP_STATE_DIR`, else
/// `$XDG_CACHE_HOME/layerup`, else `~/.cache/layerup` (the XDG base directory defaults; the
/// cache is the right place for data that only saves work and can be rebuilt).
pub fn dir(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let var = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("LAYERUP_STATE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("layerup")))
        .or_else(|| var("HOME").map(|h| h.join(".cache/layerup")))
}

/// The state file of one destination (as [`crate::oci::reference::ImageRef`] prints it).
pub fn path(dir: &Path, destination: &str) -> PathBuf {
    let key = crate::oci::digest::sha256(destination.as_bytes());
    dir.join(format!("{}.json", &key.digest()[..32]))
}

/// What was found where a state should be.
#[derive(Debug)]
pub enum Loaded {
    /// No file: this destination was never pushed from here.
    Missing,
    /// A file that cannot be used, and why.
    Unreadable(String),
    Found(Box<State>),
}

pub fn load(path: &Path) -> Loaded {
    let text = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Loaded::Missing,
        Err(e) => return Loaded::Unreadable(crate::error::os_reason(&e)),
    };
    let Ok(text) = String::from_utf8(text) else {
        return Loaded::Unreadable("it is not text".into());
    };
    let (head, lines) = text.split_once('\n').unwrap_or((&text, ""));
    let version = serde_json::from_str::<serde_json::Value>(head)
        .ok()
        .and_then(|v| v.get("version").and_then(serde_json::Value::as_u64));
    if version.is_some_and(|v| v != VERSION as u64) {
        return Loaded::Unreadable(format!(
            "it was written by another layerup (format {})",
            version.unwrap_or_default()
        ));
    }
    let mut state = match serde_json::from_str::<State>(head) {
        Ok(s) => s,
        Err(e) => return Loaded::Unreadable(format!("it is not valid ({e})")),
    };
    match Index::parse_lines(lines) {
        Some(index) => state.index = index,
        None => return Loaded::Unreadable("its file index is not valid".into()),
    }
    if !state
        .hidden
        .iter()
        .all(|p| crate::build::entry::is_clean(p))
    {
        return Loaded::Unreadable("its hidden paths are not valid".into());
    }
    Loaded::Found(Box::new(state))
}

/// A state written next to its file, not yet in its place: [`Staged::commit`] puts it there
/// once the push it describes succeeded; dropped instead, it is deleted and the old state stays.
pub struct Staged {
    tmp: tempfile::NamedTempFile,
    path: PathBuf,
}

/// Writes `state` (a line of JSON, then the index's lines) to a temporary file beside `path`,
/// while the push runs: only the rename is left for after it.
pub fn stage(path: &Path, state: &State) -> Result<Staged> {
    let dir = path.parent().expect("state paths have a directory");
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create the state directory", dir, &e))?;
    let prefix = format!(
        "{}.",
        path.file_name().unwrap_or_default().to_string_lossy()
    );
    // One left by a run that died mid-push (Ctrl-C does not wait for its threads).
    crate::stale::remove(dir, &prefix, ".tmp");
    let tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| Error::io("write the state to", dir, &e))?;
    let failed = |e: std::io::Error| Error::io("write the state to", tmp.path(), &e);
    let mut out = std::io::BufWriter::with_capacity(256 << 10, tmp.as_file());
    serde_json::to_writer(&mut out, state).map_err(|e| failed(e.into()))?;
    out.write_all(b"\n").map_err(failed)?;
    state.index.write_lines(&mut out).map_err(failed)?;
    out.flush().map_err(failed)?;
    drop(out);
    Ok(Staged {
        tmp,
        path: path.to_path_buf(),
    })
}

impl Staged {
    /// Renames the staged state over the old one: a crash or a concurrent push leaves either
    /// the old state or the new one, never half of either.
    pub fn commit(self) -> Result<()> {
        let path = self.path;
        self.tmp
            .persist(&path)
            .map_err(|e| Error::io("write the state to", &path, &e.error))?;
        Ok(())
    }
}

/// Forgets a destination's state (`--full` does not need this; a failed save does).
pub fn remove(path: &Path) {
    let _ = std::fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        State::new(
            Settings {
                mappings: vec!["/src:/app:false".into()],
                owner: None,
                mtime: 0,
                format: "f".into(),
            },
            crate::oci::digest::sha256(b"base"),
            crate::oci::digest::sha256(b"image"),
            vec![NewLayer {
                digest: crate::oci::digest::sha256(b"l"),
                diff_id: crate::oci::digest::sha256(b"t"),
                size: 3,
                created_by: "layerup push to /app".into(),
                codec: Default::default(),
            }],
            Index::default(),
        )
    }

    #[test]
    fn a_saved_state_loads_back() {
        let t = tempfile::tempdir().unwrap();
        let p = path(t.path(), "localhost:5000/dev/app:dev");
        let mut state = sample();
        let entry = crate::build::entry::Entry {
            path: "app".into(),
            kind: crate::build::entry::Kind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
        };
        state.index = crate::build::index::index_of(&[entry], 7);
        stage(&p, &state).unwrap().commit().unwrap();
        match load(&p) {
            Loaded::Found(s) => {
                assert_eq!(s.image, state.image);
                assert_eq!(s.index, state.index);
            }
            other => panic!("{other:?}"),
        }
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, text.replace("d 755", "d x")).unwrap();
        assert!(matches!(load(&p), Loaded::Unreadable(why) if why.contains("file index")));
        // A path that would climb out of the image, in the index or among the hidden ones:
        // the state is damaged, and the push a full one.
        std::fs::write(&p, text.replace(" app\n", " app/../../etc\n")).unwrap();
        assert!(matches!(load(&p), Loaded::Unreadable(why) if why.contains("file index")));
        let mut hiding = state.clone();
        hiding.hidden = vec!["app/../../etc/passwd".into()];
        stage(&p, &hiding).unwrap().commit().unwrap();
        assert!(matches!(load(&p), Loaded::Unreadable(why) if why.contains("hidden")));
    }

    #[test]
    fn a_state_staged_for_a_push_that_failed_leaves_the_old_one_and_no_file() {
        let t = tempfile::tempdir().unwrap();
        let p = path(t.path(), "localhost:5000/dev/app:dev");
        stage(&p, &sample()).unwrap().commit().unwrap();
        let mut newer = sample();
        newer.image = crate::oci::digest::sha256(b"newer");
        let staged = stage(&p, &newer).unwrap();
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 2);
        drop(staged);
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1);
        let Loaded::Found(s) = load(&p) else {
            panic!("the old state is gone")
        };
        assert_eq!(s.image, sample().image);
        stage(&p, &newer).unwrap().commit().unwrap();
        let Loaded::Found(s) = load(&p) else {
            panic!("no state")
        };
        assert_eq!(s.image, newer.image);

        // One left by a process that died mid-push goes once it is stale; a fresh one (another
        // push running now) stays.
        let left = t.path().join(format!(
            "{}.dead.tmp",
            p.file_name().unwrap().to_string_lossy()
        ));
        std::fs::write(&left, "half").unwrap();
        stage(&p, &newer).unwrap().commit().unwrap();
        assert!(left.exists());
        crate::stale::age(&left);
        stage(&p, &newer).unwrap().commit().unwrap();
        assert!(!left.exists());
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1);
    }

    #[test]
    fn missing_garbage_and_foreign_versions_are_told_apart() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("x.json");
        assert!(matches!(load(&p), Loaded::Missing));
        std::fs::write(&p, "{ not json").unwrap();
        assert!(matches!(load(&p), Loaded::Unreadable(why) if why.starts_with("it is not valid")));
        std::fs::write(&p, "{\"version\": 99}\n").unwrap();
        assert!(matches!(load(&p), Loaded::Unreadable(why) if why.contains("another layerup")));
    }

    #[test]
    fn destinations_get_distinct_files() {
        let d = Path::new("/c");
        assert_ne!(path(d, "r/a:dev"), path(d, "r/a:dev2"));
    }
}
