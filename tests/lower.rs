//! What the base holds, known rather than guessed (issue 21): a DEST placed through the base's
//! symlinks as Docker's COPY places it, the directories above a DEST written as the base has
//! them, and the base's layers read once — checked by running the images with podman.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;

/// A Debian-shaped base: busybox in `/usr/bin` with `/bin -> usr/bin`, `/var/run -> /run`, and
/// `/tmp` 1777 — made with umoci, pushed with skopeo to `reg` as `base/deb:1`.
fn debian_shaped(reg: &Registry) -> String {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rootfs");
    let usr = root.join("usr");
    std::fs::create_dir_all(&usr).unwrap();
    busybox_rootfs(&usr);
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("var")).unwrap();
    std::fs::create_dir_all(root.join("run")).unwrap();
    std::os::unix::fs::symlink("/run", root.join("var/run")).unwrap();
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let layout = dir.path().join("layout");
    let img = format!("{}:1", layout.display());
    run(std::process::Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout));
    run(std::process::Command::new("umoci").args(["new", "--image", &img]));
    run(std::process::Command::new("umoci")
        .args(["insert", "--image", &img])
        .arg(&root)
        .arg("/"));
    run(std::process::Command::new("umoci").args([
        "config",
        "--image",
        &img,
        "--config.env",
        "PATH=/bin",
    ]));
    let base = reg.reference("base/deb:1");
    skopeo(&[
        "copy",
        "-q",
        &format!("oci:{img}"),
        &format!("docker://{base}"),
    ]);
    base
}

/// A directory with `files` (path, text) in it.
fn files(list: &[(&str, &str)]) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    for (p, text) in list {
        let p = t.path().join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    t
}

#[test]
fn a_dest_through_a_base_symlink_lands_where_it_leads_and_parents_keep_their_modes() {
    let reg = Registry::start();
    let base = debian_shaped(&reg);
    let tools = files(&[("tool", "#!/bin/sh\necho tool\n")]);
    let pid = files(&[("pidfile", "42\n")]);
    let cfg = files(&[("app.conf", "k=v\n")]);
    let state = tempfile::tempdir().unwrap();
    let push = || {
        Layerup::new()
            .env("LAYERUP_STATE_DIR", state.path())
            .args([
                "push",
                &format!("{}:/bin", tools.path().display()),
                &format!("{}:/var/run/app", pid.path().display()),
                &format!("{}:/tmp/cfg", cfg.path().display()),
                "--base",
                &base,
                "--to",
                &reg.reference("dev/deb:1"),
            ])
            .run()
    };
    let pinned = push().ok().to_string();
    // The layer itself: files where the links lead, no `bin/` or `var/run/` of its own, and
    // every directory above a DEST as the base has it (podman here copes either way; Docker's
    // and CRI-O's appliers make a missing parent 0755 in the new layer).
    let listed: std::collections::BTreeMap<String, String> =
        layers_above(&pinned, 1).into_iter().collect();
    for p in ["bin", "bin/tool", "var/run", "var/run/app"] {
        assert!(!listed.contains_key(p), "{p} in the layer: {listed:?}");
    }
    assert_eq!(listed["tmp"], "drwxrwxrwt 0/0", "{listed:?}");
    assert!(listed.contains_key("usr/bin/tool"), "{listed:?}");
    assert!(listed.contains_key("run/app/pidfile"), "{listed:?}");
    // /bin and /var/run are still the base's links; what went "there" is where they lead.
    let seen = run_in(
        &pinned,
        "readlink /bin; readlink /var/run; /bin/tool; test -x /bin/sh && echo sh; \
         cat /run/app/pidfile; stat -c '%a' /tmp; cat /tmp/cfg/app.conf",
    );
    assert_eq!(seen, "usr/bin\n/run\ntool\nsh\n42\n1777\nk=v\n");
    // /tmp is still writable by anyone, as the base made it.
    let nobody = run(podman_run().args([
        "--user",
        "65534:65534",
        &pinned,
        "sh",
        "-c",
        "touch /tmp/anyone && echo written",
    ]));
    assert_eq!(nobody, "written\n");
    // The base's layers were read once: a second push reads none of them again.
    let layers: Vec<String> = inspect_raw(&base)["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    let blob_reads = || {
        reg.requests()
            .into_iter()
            .filter(|(m, p, _)| m == "GET" && layers.iter().any(|l| p.ends_with(l.as_str())))
            .count()
    };
    let before = blob_reads();
    assert!(before >= 1);
    push().ok();
    assert_eq!(blob_reads(), before, "the base's record is kept");
}

#[test]
fn a_directory_that_would_replace_a_base_symlink_is_refused_and_nothing_is_pushed() {
    let reg = Registry::start();
    let base = debian_shaped(&reg);
    let root = files(&[("bin/tool", "#!/bin/sh\n"), ("etc/x", "y\n")]);
    let run = push(&[
        &format!("{}:/", root.path().display()),
        "--base",
        &base,
        "--to",
        &reg.reference("dev/deb:2"),
    ]);
    run.fails(
        3,
        &[
            "`/bin` is a symlink in the base image (to `usr/bin`)",
            "would replace it",
        ],
    );
    assert!(reg
        .writes()
        .iter()
        .all(|(_, p, _)| !p.contains("/dev/deb/")));
}
