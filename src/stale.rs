//! Temporary files left by a run that was killed (SIGKILL ends it without cleaning up): found by
//! name and age, or by a lock no live run holds, and deleted by a later run.

use std::path::Path;
use std::time::Duration;

/// A temporary file unwritten for this long was left by a run that died: a live one writes its
/// files as it goes, and gives up after a stall of a minute (`--stall-timeout`).
pub const AGE: Duration = Duration::from_secs(600);

/// Deletes the files of `dir` whose name starts with `prefix` and ends with `suffix`, last
/// written more than [`AGE`] ago. Best effort: what cannot be read or deleted stays.
pub fn remove(dir: &Path, prefix: &str, suffix: &str) {
    let Ok(items) = std::fs::read_dir(dir) else {
        return;
    };
    for item in items.flatten() {
        let name = item.file_name();
        let name = name.to_string_lossy();
        let old = || {
            item.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > AGE))
        };
        if name.starts_with(prefix) && name.ends_with(suffix) && old() {
            tracing::info!(
                "deleting {}, left by a run that was killed",
                item.path().display()
            );
            let _ = std::fs::remove_file(item.path());
        }
    }
}

/// How runs name their temporary directories, in `TMPDIR`.
pub const TMP_PREFIX: &str = "layerup-";

/// This run's temporary directory for layer files, in `TMPDIR`, locked for as long as it lives.
/// Ctrl-C and SIGTERM delete it on the way out; a run killed outright (SIGKILL, OOM) cannot, so
/// each run first deletes those whose lock nobody holds: their process is gone (the kernel
/// releases a dead process's locks).
pub fn temp_dir() -> crate::error::Result<(tempfile::TempDir, std::fs::File)> {
    let root = std::env::temp_dir();
    sweep(&root);
    let failed =
        |e: std::io::Error| crate::error::Error::io("create a temporary directory in", &root, &e);
    let tmp = tempfile::Builder::new()
        .prefix(TMP_PREFIX)
        .tempdir()
        .map_err(failed)?;
    // Locked under another name, then renamed: `.lock` never exists unlocked while its run
    // lives, so a sweep cannot take a directory being set up for a dead one.
    let staging = tmp.path().join(".lock.new");
    let lock = std::fs::File::create(&staging).map_err(failed)?;
    lock.lock().map_err(failed)?;
    std::fs::rename(&staging, tmp.path().join(LOCK)).map_err(failed)?;
    Ok((tmp, lock))
}

const LOCK: &str = ".lock";

/// Deletes the `layerup-*` directories of `root` whose lock no live run holds.
fn sweep(root: &Path) {
    let Ok(items) = std::fs::read_dir(root) else {
        return;
    };
    for item in items.flatten() {
        if !item.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
            continue;
        }
        let Ok(lock) = std::fs::File::open(item.path().join(LOCK)) else {
            continue;
        };
        if lock.try_lock().is_ok() {
            tracing::info!(
                "deleting {}, left by a run that was killed",
                item.path().display()
            );
            let _ = std::fs::remove_dir_all(item.path());
        }
    }
}

/// Makes a file look left by a killed run: last written [`AGE`] and a second ago (tests).
#[cfg(test)]
pub fn age(path: &Path) {
    let old = std::time::SystemTime::now() - AGE - Duration::from_secs(1);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(old)
        .unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_old_files_of_the_name_go() {
        let t = tempfile::tempdir().unwrap();
        for name in [".x-old.tmp", ".x-new.tmp", ".y-old.tmp", ".x-old"] {
            std::fs::write(t.path().join(name), "half").unwrap();
        }
        for name in [".x-old.tmp", ".y-old.tmp", ".x-old"] {
            age(&t.path().join(name));
        }
        remove(t.path(), ".x-", ".tmp");
        let mut left: Vec<String> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".x-new.tmp", ".x-old", ".y-old.tmp"]);
    }
}
