//! A project of several images: `[images.NAME]` tables and layerup.toml files below the current
//! directory, pushed together against the real registry, each image checked by running it.

mod common;

use std::path::Path;

use common::*;

/// A directory with `files` written into it (path, text).
fn project(files: &[(&str, String)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir
}

/// `layerup ARGS` run in `dir`, remembering pushes in it (a hidden directory: no service).
fn layerup_in(dir: &Path, args: &[&str]) -> Run {
    let mut l = Layerup::new()
        .env("LAYERUP_STATE_DIR", dir.join(".state"))
        .args(args);
    l.command().current_dir(dir);
    l.run()
}

/// `name reference` lines of stdout, by name.
fn results(run: &Run) -> std::collections::BTreeMap<String, String> {
    run.stdout
        .lines()
        .map(|l| {
            let (n, r) = l
                .split_once(' ')
                .unwrap_or_else(|| panic!("not `NAME REF`: {l}"));
            (n.to_string(), r.to_string())
        })
        .collect()
}

/// Three services of one shop, in one layerup.toml.
fn shop(dev: &Registry) -> tempfile::TempDir {
    let toml = format!(
        "base = \"{}\"\nenv = {{ SHOP = \"dev\" }}\n\
         [images.api]\nto = \"{}\"\nmappings = [\"./api:/app\"]\n\
         [images.web]\nto = \"{}\"\nmappings = [\"./web:/app\"]\n\
         [images.cart]\nto = \"{}\"\nmappings = [\"./cart:/app\"]\nenv = {{ CART = \"1\" }}\n",
        prod().oci,
        dev.reference("shop/api:dev"),
        dev.reference("shop/web:dev"),
        dev.reference("shop/cart:dev"),
    );
    project(&[
        ("layerup.toml", toml),
        ("api/NAME", "api\n".into()),
        ("web/NAME", "web\n".into()),
        ("cart/NAME", "cart\n".into()),
    ])
}

#[test]
fn every_image_of_a_project_is_pushed_at_once_and_runs() {
    let dev = Registry::start();
    let dir = shop(&dev);
    let run = layerup_in(dir.path(), &["push"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let pushed = results(&run);
    assert_eq!(pushed.keys().collect::<Vec<_>>(), ["api", "cart", "web"]);
    for (name, reference) in &pushed {
        assert!(reference.starts_with(&dev.reference(&format!("shop/{name}@sha256:"))));
        let seen = run_in(reference, "cat /app/NAME; echo \"$SHOP:$CART\"");
        let cart = if name == "cart" { "1" } else { "" };
        assert_eq!(seen, format!("{name}\ndev:{cart}\n"));
    }
    for name in ["api", "web", "cart"] {
        assert!(
            run.stderr
                .lines()
                .any(|l| l.starts_with(&format!("{name}: full:"))),
            "{}",
            run.stderr
        );
    }

    // By name, one of them; with --json, one object per image, named.
    std::fs::write(dir.path().join("web/NAME"), "web 2\n").unwrap();
    let run = layerup_in(
        dir.path(),
        &["push", "web", "--json", "--squash-at", "100000%"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let docs: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0]["image"], "web");
    assert_eq!(docs[0]["mode"], "delta", "{}", run.stdout);
}

#[test]
fn services_below_are_found_and_named_by_their_path() {
    let dev = Registry::start();
    let service = |name: &str| {
        format!(
            "base = \"{}\"\nto = \"{}\"\nmappings = [\"./src:/app\"]\n",
            prod().oci,
            dev.reference(&format!("svc/{name}:dev"))
        )
    };
    let dir = project(&[
        ("services/a/layerup.toml", service("a")),
        ("services/a/src/NAME", "a\n".into()),
        ("services/b/layerup.toml", service("b")),
        ("services/b/src/NAME", "b\n".into()),
        // Hidden and git-ignored directories are not looked into.
        (".cache/c/layerup.toml", service("c")),
        ("vendor/d/layerup.toml", service("d")),
        (".gitignore", "vendor/\n".into()),
    ]);
    let run = layerup_in(dir.path(), &["push"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let pushed = results(&run);
    assert_eq!(
        pushed.keys().collect::<Vec<_>>(),
        ["services/a", "services/b"]
    );
    assert_eq!(run_in(&pushed["services/b"], "cat /app/NAME"), "b\n");
    let config = layerup_in(dir.path(), &["config", "services/a"]);
    assert!(
        config.stdout.contains("# image: services/a"),
        "{}",
        config.stdout
    );
}

#[test]
fn two_images_with_one_destination_are_an_error_naming_both_files() {
    let dev = Registry::start();
    let same = dev.reference("svc/same:dev");
    let service = || {
        format!(
            "base = \"{}\"\nto = \"{same}\"\nmappings = [\"./src:/app\"]\n",
            prod().oci
        )
    };
    let dir = project(&[
        ("a/layerup.toml", service()),
        ("a/src/x", "a".into()),
        ("b/layerup.toml", service()),
        ("b/src/x", "b".into()),
    ]);
    let run = layerup_in(dir.path(), &["push"]);
    run.fails(
        2,
        &[
            "images `a`",
            "and `b`",
            "a/layerup.toml",
            "b/layerup.toml",
            "both push to",
        ],
    );
    assert!(dev.writes().is_empty());
}

#[test]
fn one_image_failing_leaves_the_others_pushed_and_the_exit_code_says_so() {
    let dev = Registry::start();
    let gone = Registry::start();
    let down = gone.reference("shop/down:dev");
    drop(gone);
    let toml = format!(
        "base = \"{}\"\n[images.up]\nto = \"{}\"\nmappings = [\"./up:/app\"]\n\
         [images.down]\nto = \"{down}\"\nmappings = [\"./down:/app\"]\n",
        prod().oci,
        dev.reference("shop/up:dev"),
    );
    let dir = project(&[
        ("layerup.toml", toml),
        ("up/NAME", "up\n".into()),
        ("down/NAME", "down\n".into()),
    ]);
    let run = layerup_in(dir.path(), &["push"]);
    assert_eq!(run.code, 4, "{}", run.stderr);
    let pushed = results(&run);
    assert_eq!(pushed.keys().collect::<Vec<_>>(), ["up"]);
    assert_eq!(run_in(&pushed["up"], "cat /app/NAME"), "up\n");
    assert!(
        run.stderr
            .lines()
            .any(|l| l.starts_with("error: down: ") && l.contains("cannot reach registry")),
        "{}",
        run.stderr
    );
}

/// A mistyped image name is told as one, with the names there are — not as a missing source or
/// a missing base.
#[test]
fn a_mistyped_image_name_lists_the_images() {
    let dev = Registry::start();
    let dir = shop(&dev);
    for cmd in ["push", "watch"] {
        let run = layerup_in(dir.path(), &[cmd, "wbe"]);
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert_eq!(
            run.stderr,
            "error: no image named `wbe`, nor a source of that name: the project's images are \
             api, cart, web\n"
        );
    }
    // Written as paths, they are sources, whatever the project names.
    for word in ["./wbe", "out/{arch}/server"] {
        let run = layerup_in(dir.path(), &["push", word]);
        assert!(
            run.code != 0 && !run.stderr.contains("no image named"),
            "{}",
            run.stderr
        );
    }
    assert!(dev.uploaded().is_empty());
}

/// A service of `name` pushing `./src` to `svc/NAME:dev`.
fn service(dev: &Registry, name: &str) -> String {
    format!(
        "base = \"{}\"\nto = \"{}\"\nmappings = [\"./src:/app\"]\n",
        prod().oci,
        dev.reference(&format!("svc/{name}:dev"))
    )
}

/// Issue 21: one service with a missing SRC, or an invalid layerup.toml, stopped every image.
#[test]
fn a_bad_service_is_reported_on_its_line_and_the_others_are_pushed() {
    let dev = Registry::start();
    let dir = project(&[
        ("good/layerup.toml", service(&dev, "good")),
        ("good/src/NAME", "good\n".into()),
        // Its SRC is not there.
        ("nosrc/layerup.toml", service(&dev, "nosrc")),
        // Not TOML at all.
        ("invalid/layerup.toml", "base = \n".into()),
        ("invalid/src/NAME", "x\n".into()),
    ]);
    let run = layerup_in(dir.path(), &["push"]);
    let pushed = results(&run);
    assert_eq!(
        pushed.keys().collect::<Vec<_>>(),
        ["good"],
        "{}",
        run.stderr
    );
    assert_eq!(run_in(&pushed["good"], "cat /app/NAME"), "good\n");
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 2, "{}", run.stderr);
    assert!(
        errors
            .iter()
            .any(|l| l.starts_with("error: nosrc: ") && l.contains("does not exist")),
        "{}",
        run.stderr
    );
    assert!(
        errors
            .iter()
            .any(|l| l.starts_with("error: invalid: ") && l.contains("invalid/layerup.toml:1")),
        "{}",
        run.stderr
    );
    // The first failure's code: `nosrc` comes before the unreadable file.
    assert_eq!(run.code, 3, "{}", run.stderr);
}

/// Issue 21: with exactly one layerup.toml below and none at the root, `push` said `no base
/// image`.
#[test]
fn a_lone_service_below_is_pushed_under_its_name() {
    let dev = Registry::start();
    let dir = project(&[
        ("services/only/layerup.toml", service(&dev, "only")),
        ("services/only/src/NAME", "only\n".into()),
    ]);
    let run = layerup_in(dir.path(), &["push"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let pushed = results(&run);
    assert_eq!(pushed.keys().collect::<Vec<_>>(), ["services/only"]);
    assert_eq!(run_in(&pushed["services/only"], "cat /app/NAME"), "only\n");
}

/// Issue 21: while one service's file is invalid, a watch of the project still picks up a new
/// service (and says the bad one's error once, not every time it looks).
#[test]
fn a_watch_starts_new_services_while_another_file_is_invalid() {
    let dev = Registry::start();
    let dir = project(&[
        ("a/layerup.toml", service(&dev, "a")),
        ("a/src/NAME", "a\n".into()),
        ("bad/layerup.toml", "mappings = 3\n".into()),
    ]);
    let mut layerup = Layerup::new()
        .env("LAYERUP_STATE_DIR", dir.path().join(".state"))
        .args(["watch", "-v"]);
    layerup.command().current_dir(dir.path());
    let w = common::watching::Watching::of(layerup, tempfile::tempdir().unwrap());
    w.wait_for("a pushed", |w| {
        w.pushes().iter().any(|l| l.starts_with("a "))
    });
    std::fs::create_dir_all(dir.path().join("c/src")).unwrap();
    std::fs::write(dir.path().join("c/src/NAME"), "c\n").unwrap();
    std::fs::write(dir.path().join("c/layerup.toml"), service(&dev, "c")).unwrap();
    w.wait_for("c pushed", |w| {
        w.pushes().iter().any(|l| l.starts_with("c "))
    });
    let log = w.stop();
    let said = log
        .lines()
        .filter(|l| l.starts_with("error: bad: ") && l.contains("bad/layerup.toml:1"))
        .count();
    assert_eq!(said, 1, "{log}");
}

/// Issue 21: an image named after a directory holding an escape sequence or a newline printed
/// it raw, on stdout too: it drove the terminal and split the result line.
#[test]
fn names_from_directories_are_escaped_wherever_printed() {
    let dev = Registry::start();
    let dir = project(&[
        ("esc\u{1b}[2J/layerup.toml", service(&dev, "esc")),
        ("esc\u{1b}[2J/src/NAME", "esc\n".into()),
        ("new\nline/layerup.toml", service(&dev, "nl")),
        ("new\nline/src/NAME", "nl\n".into()),
    ]);
    for args in [&["push"][..], &["push", "--json"]] {
        let run = layerup_in(dir.path(), args);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(run.stdout.lines().count(), 2, "{}", run.stdout);
        for text in [&run.stdout, &run.stderr] {
            assert!(
                !text.chars().any(|c| c.is_control() && c != '\n'),
                "{text:?}"
            );
        }
        let mut names: Vec<String> = run
            .stdout
            .lines()
            .map(|l| match serde_json::from_str::<serde_json::Value>(l) {
                Ok(doc) => doc["image"].as_str().unwrap().to_string(),
                Err(_) => l.split_once(' ').unwrap().0.to_string(),
            })
            .collect();
        names.sort();
        assert_eq!(names, ["esc\\u{1b}[2J", "new\\nline"], "{}", run.stdout);
    }
}

/// Each service's build runs in its own directory, at the same time as the others' (each
/// waits to see the other start: run one after the other, both would fail), its lines under
/// the service's name; a failing build is its own image's failure.
#[test]
fn services_build_at_once_each_in_its_directory_and_a_failure_is_its_own() {
    let dev = Registry::start();
    let service = |name: &str, build: &str| {
        format!(
            "base = \"{}\"\nto = \"{}\"\nbuild = '{build}'\nmappings = [\"./out:/app\"]\n",
            prod().oci,
            dev.reference(&format!("svc/{name}:dev"))
        )
    };
    let meet = |me: &str, other: &str| {
        format!(
            "touch ../started-{me}; for i in $(seq 200); do [ -e ../started-{other} ] && break; \
             sleep 0.05; done; [ -e ../started-{other} ] && mkdir -p out && \
             echo \"built in $(basename $PWD)\" | tee out/NAME"
        )
    };
    let dir = project(&[
        ("services/a/layerup.toml", service("a", &meet("a", "b"))),
        ("services/b/layerup.toml", service("b", &meet("b", "a"))),
        (
            "services/c/layerup.toml",
            service("c", "echo cannot build c >&2; exit 4"),
        ),
    ]);
    let run = layerup_in(dir.path(), &["push"]);
    assert_eq!(run.code, 11, "{}", run.stderr);
    let pushed = results(&run);
    assert_eq!(
        pushed.keys().collect::<Vec<_>>(),
        ["services/a", "services/b"]
    );
    assert_eq!(
        run_in(&pushed["services/a"], "cat /app/NAME"),
        "built in a\n"
    );
    for line in [
        "services/a: building: touch ../started-a",
        "services/b: built in a\n",
        "services/c: cannot build c",
        "error: services/c: the build `echo cannot build c >&2; exit 4` failed (exit code 4): cannot build c; nothing was pushed",
    ] {
        let line = line.replace("b: built in a", "b: built in b");
        assert!(run.stderr.contains(&line), "{line:?} not in:\n{}", run.stderr);
    }
}

/// The base crosses once per registry: a project's images on one base, pushed at once to three
/// repositories, send each base layer once and mount it into the other two (the images wait
/// for the one receiving it); a later one-shot push to a fourth repository mounts them all from
/// where the state saw them, and sends none.
#[test]
fn a_projects_images_on_one_base_send_the_base_once() {
    let dev = Registry::start();
    let dir = shop(&dev);
    let run = layerup_in(dir.path(), &["push"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let base = prod().layers();
    let (uploaded, mounted) = (dev.uploaded(), dev.mounted());
    for layer in &base {
        let sent = uploaded.iter().filter(|d| *d == layer).count();
        let linked = mounted.iter().filter(|d| *d == layer).count();
        assert_eq!((sent, linked), (1, 2), "{layer}: {:?}", dev.requests());
    }
    for reference in results(&run).values() {
        assert_eq!(run_in(reference, "cat /app/NAME").lines().count(), 1);
    }

    let extra = project(&[("NAME", "extra\n".into())]);
    let to = dev.reference("shop/extra:dev");
    let before = dev.uploaded().len();
    let run = Layerup::new()
        .env("LAYERUP_STATE_DIR", dir.path().join(".state"))
        .args(push_args(extra.path(), &prod().oci, &to))
        .run();
    let pinned = run.ok().lines().last().unwrap().to_string();
    let sent = &dev.uploaded()[before..];
    assert!(base.iter().all(|l| !sent.contains(l)), "{sent:?}");
    let mounted = dev.mounted();
    for layer in &base {
        assert_eq!(mounted.iter().filter(|d| *d == layer).count(), 3);
    }
    assert_eq!(run_in(&pinned, "cat /app/NAME"), "extra\n");
}
