//! `push --journal`: a one-shot push told what changed by the sources' change journal (a watcher
//! the first such push starts) gives the same image as a push that walks the tree, after every
//! kind of edit; and when the journal cannot tell (its watcher gone), the push walks.

mod common;

use std::path::Path;

use common::*;

/// A tree with no hardlinks (a hardlink makes every push walk, journal or not).
fn tree() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    for (path, text) in [
        ("VERSION", "1\n"),
        ("pkg/mod.py", "x = 1\n"),
        ("pkg/sub/data.txt", "data\n"),
        ("old/gone.txt", "bye\n"),
    ] {
        let p = t.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    t
}

/// Stops the journal watchers a test's pushes started (their pid files), and says how many.
fn stop_watchers(state: &Path) -> usize {
    let mut stopped = 0;
    for dir in std::fs::read_dir(state.join("journal"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(pid) = std::fs::read_to_string(dir.path().join("pid")) {
            let pid: i32 = pid.trim().parse().unwrap();
            unsafe { libc::kill(pid, libc::SIGTERM) };
            stopped += 1;
        }
    }
    stopped
}

/// One edit of the tree.
type Edit<'a> = Box<dyn Fn() + 'a>;

/// A state directory whose journal watchers are stopped when it goes, whatever the test did.
struct JournalState(tempfile::TempDir);

impl Drop for JournalState {
    fn drop(&mut self) {
        stop_watchers(self.0.path());
    }
}

impl JournalState {
    fn path(&self) -> &Path {
        self.0.path()
    }
}

#[test]
fn the_journal_and_the_walk_give_the_same_image_after_every_kind_of_edit() {
    let dev = Registry::start();
    let t = tree();
    let journal_state = JournalState(tempfile::tempdir().unwrap());
    let walk_state = tempfile::tempdir().unwrap();
    let push = |journal: bool| {
        let (state, repo) = if journal {
            (journal_state.path(), "j")
        } else {
            (walk_state.path(), "w")
        };
        let mut l = Layerup::new()
            .env("LAYERUP_STATE_DIR", state)
            .env("LAYERUP_JOURNAL_IDLE", "120")
            .args(push_args(
                t.path(),
                &prod().oci,
                &dev.reference(&format!("dev/{repo}:dev")),
            ));
        if journal {
            l = l.args(["--journal", "-v"]);
        }
        let run = l.run();
        let pinned = run.ok().lines().last().unwrap().to_string();
        (run, pinned)
    };
    let p = |rel: &str| t.path().join(rel);
    let edits: Vec<(&str, Edit)> = vec![
        ("first push", Box::new(|| {})),
        ("second push, nothing changed", Box::new(|| {})),
        (
            "a file modified",
            Box::new(|| std::fs::write(p("pkg/mod.py"), "x = 2\n").unwrap()),
        ),
        (
            "a new directory with files",
            Box::new(|| {
                std::fs::create_dir_all(p("new/deep")).unwrap();
                std::fs::write(p("new/deep/a.txt"), "a\n").unwrap();
                std::fs::write(p("new/b.txt"), "b\n").unwrap();
            }),
        ),
        (
            "a file deleted",
            Box::new(|| std::fs::remove_file(p("VERSION")).unwrap()),
        ),
        (
            "a directory renamed",
            Box::new(|| std::fs::rename(p("pkg/sub"), p("pkg/moved")).unwrap()),
        ),
        (
            "a symlink added",
            Box::new(|| std::os::unix::fs::symlink("mod.py", p("pkg/link.py")).unwrap()),
        ),
        (
            "a directory deleted",
            Box::new(|| std::fs::remove_dir_all(p("old")).unwrap()),
        ),
        (
            "a file replaced by a directory",
            Box::new(|| {
                std::fs::remove_file(p("new/b.txt")).unwrap();
                std::fs::create_dir(p("new/b.txt")).unwrap();
                std::fs::write(p("new/b.txt/inner"), "in\n").unwrap();
            }),
        ),
        (
            "a mode changed",
            Box::new(|| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(p("pkg/mod.py"), std::fs::Permissions::from_mode(0o755))
                    .unwrap();
            }),
        ),
    ];
    for (step, (what, edit)) in edits.iter().enumerate() {
        edit();
        let (journaled, j) = push(true);
        let (_, w) = push(false);
        assert_eq!(unpacked_tree(&j), unpacked_tree(&w), "after {what}");
        // From the second push on, the journal told what changed: no walk.
        assert_eq!(
            journaled.stderr.contains("the change journal names"),
            step >= 1,
            "{what}: {}",
            journaled.stderr
        );
    }

    // The watcher gone (a restart, a reboot): the next push walks, and starts it again.
    assert_eq!(stop_watchers(journal_state.path()), 1);
    std::thread::sleep(std::time::Duration::from_millis(300));
    std::fs::write(p("pkg/mod.py"), "x = 3\n").unwrap();
    let (journaled, j) = push(true);
    let (_, w) = push(false);
    assert!(
        journaled.stderr.contains("no usable change journal"),
        "{}",
        journaled.stderr
    );
    assert_eq!(unpacked_tree(&j), unpacked_tree(&w));
    std::fs::write(p("pkg/mod.py"), "x = 4\n").unwrap();
    let (journaled, j) = push(true);
    let (_, w) = push(false);
    assert!(
        journaled.stderr.contains("the change journal names"),
        "{}",
        journaled.stderr
    );
    assert_eq!(unpacked_tree(&j), unpacked_tree(&w));
    assert_eq!(stop_watchers(journal_state.path()), 1);
}
