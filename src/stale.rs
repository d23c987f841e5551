//! Temporary files left by a run that was killed (SIGKILL ends it without cleaning up): found by
//! name and age, and deleted by a later run.

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
