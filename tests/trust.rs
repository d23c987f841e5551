//! A cloned repository cannot act for the user (issue 21): a committed layerup.toml names files
//! only inside its own tree, and cannot widen what layerup may touch. Tried as a hostile or
//! careless teammate's repository would, against the real registry; what was pushed is read back
//! from the registry itself.

mod common;

use common::*;

/// A home directory with a secret, beside a repository holding `files` (path, text).
struct Repo {
    root: tempfile::TempDir,
}

impl Repo {
    fn new(files: &[(&str, String)]) -> Repo {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("home/.ssh")).unwrap();
        std::fs::write(root.path().join("home/.ssh/id_rsa"), "PRIVATE KEY\n").unwrap();
        for (path, text) in files {
            let p = root.path().join("repo").join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        Repo { root }
    }

    fn repo(&self) -> std::path::PathBuf {
        self.root.path().join("repo")
    }

    fn home(&self) -> std::path::PathBuf {
        self.root.path().join("home")
    }

    /// `layerup ARGS` in the repository, as the user (their home, their config directory).
    fn layerup(&self, args: &[&str]) -> Run {
        let mut l = Layerup::new()
            .env("LAYERUP_STATE_DIR", self.root.path().join("state"))
            .env("HOME", self.home())
            .env("XDG_CONFIG_HOME", self.home().join(".config"))
            .args(args);
        l.command().current_dir(self.repo());
        l.run()
    }
}

fn service(dev: &Registry, name: &str, mappings: &str) -> String {
    format!(
        "base = \"{}\"\nto = \"{}\"\nmappings = [{mappings}]\n",
        prod().oci,
        dev.reference(&format!("svc/{name}:dev"))
    )
}

/// Every blob the registry holds, whatever its repository (layers unpacked with `gzip -dc`, a
/// tool no one here wrote): the secret is in none of them.
fn assert_no_secret_sent(dev: &Registry) {
    for f in walkdir(&dev.data_dir()).iter().filter(|f| f.is_file()) {
        let bytes = std::fs::read(f).unwrap();
        let hay = if bytes.starts_with(&[0x1f, 0x8b]) {
            std::process::Command::new("gzip")
                .arg("-dc")
                .arg(f)
                .output()
                .unwrap()
                .stdout
        } else {
            bytes
        };
        assert!(
            !hay.windows(11).any(|w| w == b"PRIVATE KEY"),
            "the secret reached the registry in {}",
            f.display()
        );
    }
}

#[test]
fn a_discovered_service_cannot_package_files_from_outside_the_repository() {
    let dev = Registry::start();
    let repo = Repo::new(&[
        ("good/layerup.toml", service(&dev, "good", "\"./src:/app\"")),
        ("good/src/NAME", "good\n".into()),
        (
            "dotdot/layerup.toml",
            service(&dev, "dotdot", "\"../../home/.ssh:/app/x\""),
        ),
        (
            "absolute/layerup.toml",
            String::new(), // written below: it names the home by its absolute path
        ),
        (
            "linked/layerup.toml",
            service(&dev, "linked", "\"./keys:/app/x\""),
        ),
    ]);
    std::fs::write(
        repo.repo().join("absolute/layerup.toml"),
        service(
            &dev,
            "absolute",
            &format!("\"{}:/app/x\"", repo.home().join(".ssh").display()),
        ),
    )
    .unwrap();
    std::os::unix::fs::symlink(repo.home().join(".ssh"), repo.repo().join("linked/keys")).unwrap();
    let run = repo.layerup(&["push"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let pushed: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(pushed.len(), 1, "{}", run.stdout);
    assert!(pushed[0].starts_with("good "), "{}", run.stdout);
    for (name, why) in [
        ("dotdot", "a `..` or absolute path leads out"),
        ("absolute", "a `..` or absolute path leads out"),
        ("linked", "a symlink leads to"),
    ] {
        let line = run
            .stderr
            .lines()
            .find(|l| l.starts_with(&format!("error: {name}: ")))
            .unwrap_or_else(|| panic!("no error for {name}:\n{}", run.stderr));
        assert!(
            line.contains(&format!("{name}/layerup.toml:3"))
                && line.contains("outside the directory this file governs")
                && line.contains(why),
            "{line}"
        );
    }
    assert_no_secret_sent(&dev);
    // The command line stays free to name any path.
    let home_keys = format!("{}:/app/x", repo.home().join(".ssh").display());
    let run = repo.layerup(&[
        "push",
        &home_keys,
        "--base",
        &prod().oci,
        "--to",
        &dev.reference("svc/mine:dev"),
    ]);
    let pinned = run.ok().to_string();
    assert_eq!(run_in(&pinned, "cat /app/x/id_rsa"), "PRIVATE KEY\n");
}

/// A symlink that appears after the file was read (a checkout), or a platform's directory that
/// is one, is caught when the push reads the tree.
#[test]
fn a_source_that_turns_into_a_link_out_is_refused_at_the_push() {
    let dev = Registry::start();
    let repo = Repo::new(&[(
        "layerup.toml",
        service(&dev, "app", "\"./out/{arch}/bin:/app/bin\""),
    )]);
    std::fs::create_dir_all(repo.repo().join("out")).unwrap();
    std::os::unix::fs::symlink(repo.home(), repo.repo().join("out/amd64")).unwrap();
    std::os::unix::fs::symlink(repo.home(), repo.repo().join("out/arm64")).unwrap();
    std::fs::create_dir_all(repo.home().join("bin")).unwrap();
    std::fs::write(repo.home().join("bin/id"), "PRIVATE KEY\n").unwrap();
    let run = repo.layerup(&["push", "--platform", "linux/amd64"]);
    run.fails(
        2,
        &[
            "outside",
            "the directory of the layerup.toml that names it",
            "a symlink leads to",
        ],
    );
    assert!(dev.uploaded().is_empty());
}

#[test]
fn a_committed_layout_destination_is_the_files_own_and_stays_in_its_tree() {
    let dev = Registry::start();
    let to_layout = |to: &str| {
        format!(
            "base = \"{}\"\nto = \"{to}\"\nmappings = [\"./src:/app\"]\n",
            prod().oci
        )
    };
    let repo = Repo::new(&[
        ("inside/layerup.toml", to_layout("oci:lay:dev")),
        ("inside/src/NAME", "in\n".into()),
        ("outside/layerup.toml", to_layout("oci:../../victim:dev")),
        ("outside/src/NAME", "out\n".into()),
    ]);
    let run = repo.layerup(&["push"]);
    let line = run
        .stderr
        .lines()
        .find(|l| l.starts_with("error: outside: "))
        .unwrap_or_else(|| panic!("{}", run.stderr));
    assert!(line.contains("outside/layerup.toml:2"), "{line}");
    assert!(!repo.root.path().join("victim").exists());
    // Relative to the file, not to where layerup ran.
    assert!(
        repo.repo().join("inside/lay/oci-layout").is_file(),
        "{}",
        run.stderr
    );
    assert!(!repo.repo().join("lay").exists());
    drop(dev);
}

#[test]
fn a_directory_that_is_not_a_layout_is_never_written_into() {
    let someone = tempfile::tempdir().unwrap();
    std::fs::write(someone.path().join("notes.txt"), "mine\n").unwrap();
    let tree = app_tree();
    let run = Layerup::new()
        .args(push_args(
            tree.path(),
            &prod().oci,
            &format!("oci:{}:dev", someone.path().display()),
        ))
        .run();
    run.fails(2, &["holds files and is not an OCI layout"]);
    let left: Vec<_> = std::fs::read_dir(someone.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "layerup wrote into it");
}

#[test]
fn a_committed_file_cannot_widen_what_layerup_may_touch() {
    let dev = Registry::start();
    for (key, value) in [("allow-contexts", "[\"prod-eks\"]"), ("insecure", "true")] {
        let toml = format!(
            "{}context = \"prod-eks\"\n{key} = {value}\n",
            service(&dev, "app", "\"./src:/app\"")
        );
        let repo = Repo::new(&[("layerup.toml", toml), ("src/NAME", "x\n".into())]);
        let run = repo.layerup(&["push"]);
        run.fails(
            2,
            &[
                "layerup.toml:5",
                &format!("`{key}` widens what layerup may touch"),
                "layerup.local.toml",
            ],
        );
        // The user's own files may say it.
        std::fs::write(
            repo.repo().join("layerup.local.toml"),
            format!("{key} = {value}\n"),
        )
        .unwrap();
        std::fs::write(
            repo.repo().join("layerup.toml"),
            service(&dev, "app", "\"./src:/app\""),
        )
        .unwrap();
        let config = repo.layerup(&["config"]);
        assert!(
            config.stdout.contains(&format!("{key} = ")),
            "{}",
            config.stdout
        );
        let user = repo.home().join(".config/layerup");
        std::fs::create_dir_all(&user).unwrap();
        std::fs::remove_file(repo.repo().join("layerup.local.toml")).unwrap();
        std::fs::write(user.join("config.toml"), format!("{key} = {value}\n")).unwrap();
        let config = repo.layerup(&["config"]);
        assert!(
            config.stdout.contains(&format!("{key} = ")) && config.stdout.contains("config.toml:1"),
            "{}",
            config.stdout
        );
        std::fs::remove_file(user.join("config.toml")).unwrap();
    }
    assert!(dev.writes().is_empty());
}
