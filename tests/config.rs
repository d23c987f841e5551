//! layerup.toml against real registries: aliases, profiles, the local override, the environment
//! and flags, each winning over the one before — read from where the image actually landed.

mod common;

use std::path::Path;

use common::*;

/// A project: the app tree under `src/`, layerup.toml at its root, commands run from `src/pkg`
/// (a subdirectory, as a developer would).
struct Project {
    dir: tempfile::TempDir,
    _tree: tempfile::TempDir,
}

impl Project {
    fn new(toml: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        let tree = app_tree();
        run(std::process::Command::new("cp")
            .arg("-a")
            .arg(tree.path())
            .arg(dir.path().join("src")));
        std::fs::write(dir.path().join("layerup.toml"), toml).unwrap();
        Project { dir, _tree: tree }
    }

    fn local(&self, toml: &str) {
        std::fs::write(self.dir.path().join("layerup.local.toml"), toml).unwrap();
    }

    fn layerup(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut l = Layerup::new().args(args);
        for (k, v) in env {
            l = l.env(k, v);
        }
        l.command().current_dir(self.dir.path().join("src/pkg"));
        l.run()
    }
}

/// The repository part of a pushed `host/repo@sha256:…`.
fn landed(pushed: &str) -> &str {
    pushed.split('@').next().unwrap()
}

fn project(dev: &Registry, mine: &Registry) -> Project {
    let prod_host = prod().oci.split('/').next().unwrap().to_string();
    Project::new(&format!(
        r#"# the team's file
base = "prod/app:oci"
to = "dev/app:dev"
mappings = ["./src:/app"]

[registries]
prod = "{prod_host}/prod"
dev = "{dev}/team"

[profile.mine.registries]
dev = "{mine}/me"
"#,
        dev = dev.host,
        mine = mine.host,
    ))
}

#[test]
fn each_layer_of_settings_wins_over_the_one_before() {
    let (dev, mine) = (Registry::start(), Registry::start());
    let p = project(&dev, &mine);
    let push = |args: &[&str], env: &[(&str, &str)]| {
        let mut all = vec!["push"];
        all.extend(args);
        landed(p.layerup(&all, env).ok()).to_string()
    };
    // The file alone: aliases expanded, SRC relative to the file, found from a subdirectory.
    assert_eq!(push(&[], &[]), format!("{}/team/app", dev.host));
    // A profile, by flag or by environment.
    assert_eq!(
        push(&["--profile", "mine"], &[]),
        format!("{}/me/app", mine.host)
    );
    assert_eq!(
        push(&[], &[("LAYERUP_PROFILE", "mine")]),
        format!("{}/me/app", mine.host)
    );
    // The uncommitted file beats the committed one, and its profile section beats both.
    p.local("to = \"dev/local:x\"\n[profile.mine]\nto = \"dev/local-mine:x\"\n");
    assert_eq!(push(&[], &[]), format!("{}/team/local", dev.host));
    assert_eq!(
        push(&["--profile", "mine"], &[]),
        format!("{}/me/local-mine", mine.host)
    );
    // The environment (Tilt's EXPECTED_REF) beats the files; a flag beats everything.
    let tilt = format!("{}/tilt/app:tilt-1", dev.host);
    assert_eq!(
        push(&[], &[("EXPECTED_REF", &tilt)]),
        format!("{}/tilt/app", dev.host)
    );
    assert_eq!(
        push(&["--to", "dev/flag:1"], &[("EXPECTED_REF", &tilt)]),
        format!("{}/team/flag", dev.host),
        "a flag's reference is alias-expanded too"
    );
}

#[test]
fn config_prints_the_merged_settings_and_where_each_came_from() {
    let (dev, mine) = (Registry::start(), Registry::start());
    let p = project(&dev, &mine);
    p.local("jobs = 2\n");
    let out = p.layerup(&["config", "--profile", "mine"], &[]);
    let text = out.ok();
    let line = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("no {key} in:\n{text}"))
            .to_string()
    };
    assert!(text.starts_with("# profile: mine (--profile)"), "{text}");
    assert!(line("base").ends_with("# layerup.toml:2"), "{text}");
    assert!(line("jobs").ends_with("# layerup.local.toml:1"), "{text}");
    assert!(
        line("registries.dev").contains(&format!("\"{}/me\"", mine.host))
            && line("registries.dev").ends_with("# layerup.toml:11 [profile.mine]"),
        "{text}"
    );
    let from_env = p.layerup(&["config"], &[("LAYERUP_PROFILE", "mine")]);
    assert!(from_env
        .ok()
        .starts_with("# profile: mine (LAYERUP_PROFILE)"));
}

#[test]
fn an_unknown_key_is_an_error_with_file_and_line_and_nothing_is_pushed() {
    let (dev, mine) = (Registry::start(), Registry::start());
    let p = project(&dev, &mine);
    p.local("base = \"prod/app:oci\"\n\nregistires = { x = \"y\" }\n");
    let out = p.layerup(&["push"], &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let path = p.dir.path().join("layerup.local.toml");
    assert!(
        out.stderr.starts_with(&format!(
            "error: {}:3: unknown key `registires`",
            path.display()
        )),
        "{}",
        out.stderr
    );
    assert!(dev.writes().is_empty() && mine.writes().is_empty());
    std::fs::remove_file(&path).unwrap();
    let undefined = p.layerup(&["push", "--profile", "ci"], &[]);
    assert_eq!(undefined.code, 2);
    assert!(
        undefined.stderr.contains("profile `ci` is not defined")
            // One profile is one (issue 26): "mine is".
            && undefined.stderr.contains("(mine is)"),
        "{}",
        undefined.stderr
    );
}

#[test]
fn ignore_patterns_from_the_file_leave_paths_out() {
    let (dev, mine) = (Registry::start(), Registry::start());
    let p = project(&dev, &mine);
    p.local("ignore = [\"secret.key\", \"**/*.txt\"]\n");
    let pushed = p.layerup(&["push"], &[]).ok().to_string();
    let listing = run_in(&pushed, "find /app | sort");
    assert!(
        !listing.contains("secret.key") && !listing.contains(".txt"),
        "{listing}"
    );
    assert!(listing.contains("/app/pkg/mod.py"), "{listing}");
}

#[test]
fn no_settings_anywhere_names_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = Layerup::new().args(["push", "."]);
    l.command().current_dir(dir.path());
    let out = l.run();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(
        out.stderr.trim(),
        "error: no base image: give --base REF (or `base` in layerup.toml)"
    );
    assert!(Path::new(dir.path()).read_dir().unwrap().next().is_none());
}

#[test]
fn a_bare_deploy_typed_last_leaves_the_files_sources_alone() {
    let (dev, mine) = (Registry::start(), Registry::start());
    let p = project(&dev, &mine);
    let missing = p.dir.path().join("no-kubeconfig").display().to_string();
    // Only the SRCs come from the file: nothing else stands between `--deploy` and them.
    let out = p.layerup(
        &[
            "push",
            "--base",
            "prod/app:oci",
            "--to",
            "dev/app:dev",
            "--deploy",
        ],
        &[("KUBECONFIG", &missing)],
    );
    // `--deploy` took no SRC as its workload (that would be "invalid workload", or "no files"):
    // the plan was whole, and its cluster check, before any push, found no kubeconfig.
    out.fails(2, &["cannot read the kubeconfig"]);
    assert!(dev.writes().is_empty(), "nothing pushed before the check");
}
