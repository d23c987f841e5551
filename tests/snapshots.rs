//! Snapshots (insta) of what users and tools read: `--help`, `--json` documents, and error lines,
//! with unstable values (digests, ports, temporary paths, times) filtered. A change to any of
//! them shows up as a reviewed diff (`cargo insta review`, or INSTA_UPDATE=always).

mod common;

use common::*;

/// Filters for values that change from run to run.
fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.add_filter(r"sha256:[0-9a-f]{64}", "sha256:[digest]");
    s.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:[port]");
    s.add_filter(r"/tmp/\.tmp[A-Za-z0-9]+", "[tmp]");
    s.add_filter(r#""(base|layer|push|total)": \d+"#, "\"$1\": [ms]");
    s.add_filter(r#""(size|bytes_sent)": \d+"#, "\"$1\": [bytes]");
    s.add_filter(r"\d+\.\d+s\b", "[secs]");
    s.add_filter(r"\d{4}-\d\d-\d\dT[0-9:.]+Z", "[time]");
    // The test images' layers carry the time they were made: their sizes vary by a few bytes.
    s.add_filter(r"\b\d+(\.\d)? (B|KiB|MiB|GiB)\b", "[size]");
    s.set_prepend_module_to_snapshot(false);
    s
}

fn layerup(args: &[&str]) -> Run {
    Layerup::new().env("COLUMNS", "100").args(args).run()
}

#[test]
fn help() {
    let _guard = settings().bind_to_scope();
    for cmd in [
        &["--help"][..],
        &["push", "--help"],
        &["copy", "--help"],
        &["deploy", "--help"],
        &["rollback", "--help"],
        &["inspect", "--help"],
        &["watch", "--help"],
    ] {
        let out = layerup(cmd);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let name = format!("help_{}", cmd[0].trim_start_matches('-'));
        insta::assert_snapshot!(name, out.stdout);
    }
}

#[test]
fn push_json() {
    let _guard = settings().bind_to_scope();
    let dest = Registry::start();
    let tree = app_tree();
    let out = Layerup::new()
        .args(push_args(
            tree.path(),
            &prod().oci,
            &dest.reference("dev/app:dev"),
        ))
        .arg_json()
        .run();
    let doc: serde_json::Value = serde_json::from_str(out.ok()).unwrap();
    insta::assert_snapshot!(serde_json::to_string_pretty(&doc).unwrap());
}

#[test]
fn inspect_text_and_json() {
    let _guard = settings().bind_to_scope();
    let text = layerup(&["inspect", &prod().multi]);
    insta::assert_snapshot!("inspect_text", text.ok());
    let json = layerup(&["inspect", "--json", &prod().oci]);
    let mut doc: serde_json::Value = serde_json::from_str(json.ok()).unwrap();
    // umoci stamps the config with the time the test images were made.
    doc["image"]["config"]["created"] = "[time]".into();
    for h in doc["image"]["config"]["history"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        h["created"] = "[time]".into();
    }
    insta::assert_snapshot!("inspect_json", serde_json::to_string_pretty(&doc).unwrap());
}

#[test]
fn errors() {
    let _guard = settings().bind_to_scope();
    let tree = app_tree();
    let src = format!("{}:/app", tree.path().display());
    let dest = Registry::start();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let cases: Vec<(&str, Vec<String>)> = vec![
        (
            "bad_reference",
            vec![
                "push".into(),
                src.clone(),
                "--base".into(),
                "Prod/App".into(),
                "--to".into(),
                "localhost:5000/a".into(),
            ],
        ),
        (
            "missing_source",
            vec![
                "push".into(),
                "/nonexistent/src".into(),
                "--base".into(),
                "a/b".into(),
                "--to".into(),
                "localhost:5000/a".into(),
            ],
        ),
        (
            "unreachable_registry",
            vec![
                "push".into(),
                src.clone(),
                "--base".into(),
                format!("{closed}/prod/app:1"),
                "--to".into(),
                format!("{closed}/dev/app:1"),
                "--tries".into(),
                "1".into(),
            ],
        ),
        (
            "base_not_found",
            vec![
                "push".into(),
                src.clone(),
                "--base".into(),
                format!("{}:nope", prod().oci.rsplit_once(':').unwrap().0),
                "--to".into(),
                dest.reference("dev/app:1"),
            ],
        ),
        (
            "deploy_flag_without_deploy",
            vec![
                "push".into(),
                src.clone(),
                "--base".into(),
                "a/b".into(),
                "--to".into(),
                "localhost:5000/a".into(),
                "--container".into(),
                "app".into(),
            ],
        ),
        (
            "json_error",
            vec![
                "--json".into(),
                "copy".into(),
                "Bad Ref".into(),
                "localhost:5000/a".into(),
            ],
        ),
    ];
    for (name, args) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = layerup(&args);
        let shown = format!(
            "exit code: {}\n--- stdout\n{}--- stderr\n{}",
            out.code, out.stdout, out.stderr
        );
        insta::assert_snapshot!(name, shown);
    }
}

trait Json {
    fn arg_json(self) -> Self;
}

impl Json for Layerup {
    fn arg_json(self) -> Self {
        self.args(["--json"])
    }
}

#[test]
fn the_bash_completion_loads_and_completes_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("layerup.bash");
    std::fs::write(&script, layerup(&["completions", "bash"]).ok()).unwrap();
    // bash itself loads the script and asks it for completions of `layerup de`.
    let words = run(std::process::Command::new("bash").arg("-c").arg(format!(
        "source {}; COMP_WORDS=(layerup de); COMP_CWORD=1; COMP_LINE='layerup de'; COMP_POINT=10; \
         _layerup layerup de layerup; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display()
    )));
    assert_eq!(words.trim(), "deploy");
}

#[test]
fn the_man_page_renders_with_every_subcommand() {
    require("groff", "groff-base");
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("layerup.1");
    std::fs::write(&page, layerup(&["man"]).ok()).unwrap();
    let out = std::process::Command::new("groff")
        .args(["-k", "-man", "-Tutf8", "-ww", "-z"])
        .arg(&page)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "groff: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = run(std::process::Command::new("groff")
        .args(["-k", "-man", "-Tutf8", "-P-cbou"])
        .arg(&page));
    for sub in [
        "push", "watch", "copy", "deploy", "rollback", "inspect", "config",
    ] {
        assert!(text.contains(sub), "{sub} missing from the man page");
    }
}

/// Issue 26: layerup(1) names layerup-push(1) and the others, which were not generated. Each
/// command's page renders, and `man --dir` writes them all.
#[test]
fn every_commands_man_page_is_generated_and_renders() {
    require("groff", "groff-base");
    let dir = tempfile::tempdir().unwrap();
    let listed = layerup(&["man", "--dir", &dir.path().display().to_string()]);
    let written: Vec<String> = listed.ok().lines().map(String::from).collect();
    for sub in [
        "push", "watch", "copy", "deploy", "rollback", "inspect", "config",
    ] {
        let page = dir.path().join(format!("layerup-{sub}.1"));
        assert!(written.contains(&page.display().to_string()), "{written:?}");
        let out = std::process::Command::new("groff")
            .args(["-k", "-man", "-Tutf8", "-ww", "-z"])
            .arg(&page)
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{sub}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let one = layerup(&["man", sub]);
        assert!(one.ok().contains(&format!(".TH layerup-{sub} 1")), "{sub}");
    }
    let nope = layerup(&["man", "nope"]);
    nope.fails(2, &["no command `nope`: the commands are push, watch"]);
}

/// Issue 26: `deploy` and `inspect` offered `--jobs` and `--chunk-size`, which move nothing for
/// them; and the global options stood amid each command's own.
#[test]
fn each_command_offers_only_its_own_options_and_the_global_ones_last() {
    for sub in ["deploy", "inspect"] {
        let help = layerup(&[sub, "--help"]);
        let text = help.ok();
        assert!(
            !text.contains("--jobs") && !text.contains("--chunk-size"),
            "{sub}: {text}"
        );
        let global = text.find("Global options:").expect("a global section");
        assert!(text.find("--verbose").unwrap() > global, "{sub}: {text}");
    }
}
