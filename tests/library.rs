//! The middle tier: push and copy driven through the library, with plain Rust values and no
//! binary, against the real registry — what an inner-loop tool embedding layerup would do. The
//! results are read back with skopeo and from the registry's own access log.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use layerup::build::image::Tweaks;
use layerup::build::stack::{FullReason, Mode, Squash};
use layerup::commands::copy::{self, CopyPlan};
use layerup::commands::push::{self, PushPlan};
use layerup::oci::platform::Platform;
use layerup::oci::reference::ImageRef;
use layerup::store::registry::Options;
use layerup::transfer::{Outcome, Role};

fn net() -> Options {
    Options {
        insecure: false,
        attempts: 3,
        stall: Duration::from_secs(30),
        chunk: 4 << 20,
        chunked: false,
    }
}

fn plan(tree: &Path, base: &str, to: &str, state: &Path) -> PushPlan {
    PushPlan {
        base: ImageRef::parse(base, "base").unwrap(),
        to: ImageRef::parse(to, "to").unwrap(),
        mappings: vec![layerup::build::entry::RawMapping {
            src: tree.to_path_buf(),
            dest: Some("/app".into()),
        }],
        platform: "linux/amd64".parse::<Platform>().unwrap(),
        platform_asked: false,
        platforms: None,
        tweaks: Tweaks::default(),
        owner: None,
        mtime: layerup::build::tar::DEFAULT_MTIME,
        net: net(),
        jobs: 4,
        full: false,
        journal: false,
        squash: Squash::default(),
        ignore: vec![],
        ref_file: None,
        tags: vec![],
        deploy: None,
        state_dir: Some(state.to_path_buf()),
        confined: None,
        build: None,
        compression: Default::default(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

#[test]
fn a_push_then_an_edit_report_each_blob_and_send_only_the_delta() {
    let dev = Registry::start();
    let tree = app_tree();
    let state = tempfile::tempdir().unwrap();
    let to = dev.reference("dev/app:lib");
    let plan = plan(tree.path(), &prod().oci, &to, state.path());
    let rt = runtime();

    let first = rt.block_on(push::run(&plan)).unwrap();
    assert!(matches!(first.mode, Mode::Full { reason: None, .. }));
    let layers: Vec<_> = first
        .blobs
        .iter()
        .filter(|b| b.role == Role::Layer)
        .collect();
    assert_eq!(layers.len(), prod().layers().len() + first.new_layers.len());
    for b in &layers {
        let want = if first.new_layers.iter().any(|l| l.digest == b.digest) {
            Outcome::Uploaded
        } else {
            Outcome::Copied
        };
        assert_eq!(b.outcome, want, "{b}");
    }
    assert_eq!(first.blobs.last().unwrap().role, Role::Config);
    assert_eq!(
        inspect(&to)["Digest"].as_str().unwrap(),
        first.digest.to_string(),
        "skopeo reads what the library says it pushed"
    );

    std::fs::write(tree.path().join("VERSION"), "2\n").unwrap();
    let before = dev.requests().len();
    let second = rt.block_on(push::run(&plan)).unwrap();
    assert!(
        matches!(second.mode, Mode::Delta { changed: 1, .. }),
        "{:?}",
        second.mode
    );
    let moved: Vec<_> = second
        .blobs
        .iter()
        .filter(|b| b.outcome.moved_bytes())
        .map(|b| (b.role, b.digest.clone()))
        .collect();
    assert_eq!(
        moved,
        [
            (Role::Layer, second.new_layers[0].digest.clone()),
            (Role::Config, second.blobs.last().unwrap().digest.clone())
        ],
        "the delta and the config, nothing else"
    );
    let heads = dev.requests()[before..]
        .iter()
        .filter(|(m, p, _)| m == "HEAD" && p.contains("/blobs/"))
        .count();
    assert_eq!(heads, 0, "a delta asks about no blob");
}

#[test]
fn full_is_a_typed_reason_with_a_stable_code() {
    let dev = Registry::start();
    let tree = app_tree();
    let state = tempfile::tempdir().unwrap();
    let mut plan = plan(
        tree.path(),
        &prod().oci,
        &dev.reference("dev/app:full"),
        state.path(),
    );
    let rt = runtime();
    rt.block_on(push::run(&plan)).unwrap();
    plan.owner = Some((1000, 1000));
    let again = rt.block_on(push::run(&plan)).unwrap();
    let reason = again.full_reason().expect("a full push, and why");
    assert_eq!(
        reason,
        &FullReason::SettingChanged(layerup::build::state::Setting::Owner)
    );
    assert_eq!(reason.code(), "chown_changed");
    assert_eq!(reason.to_string(), "--chown changed since the last push");
}

#[test]
fn a_copy_tells_what_will_move_before_it_moves_and_reports_each_blob() {
    let dev = Registry::start();
    let to = dev.reference("mirror/app:1");
    let copy_plan = CopyPlan {
        from: ImageRef::parse(&prod().oci, "from").unwrap(),
        to: ImageRef::parse(&to, "to").unwrap(),
        all: false,
        platform: "linux/amd64".parse().unwrap(),
        platform_asked: false,
        net: net(),
        jobs: 4,
        referrers: true,
    };
    let rt = runtime();
    let mut writes_when_told = None;
    let copied = rt
        .block_on(copy::run(&copy_plan, |p| {
            assert_eq!(p.moves.copy, prod().layers().len() + 1);
            assert_eq!(p.manifests, 1);
            writes_when_told = Some(dev.writes().len());
        }))
        .unwrap();
    assert_eq!(writes_when_told, Some(0), "told before any write");
    assert!(copied.blobs.iter().all(|b| b.outcome == Outcome::Copied));
    assert_eq!(
        copied.bytes_sent(),
        copied.blobs.iter().map(|b| b.size).sum::<u64>()
    );
    assert_eq!(
        inspect(&to)["Digest"].as_str().unwrap(),
        copied.digest.to_string()
    );

    let again = rt.block_on(copy::run(&copy_plan, |_| {})).unwrap();
    assert!(again.blobs.iter().all(|b| b.outcome == Outcome::Present));
    assert_eq!(again.planned.manifests, 0);
}

/// Errors keep their typed cause beside the line users read: a registry's status and error code,
/// a transport failure's kind, the API server's status — for a program to branch on, never by
/// reading the message.
#[test]
fn an_error_keeps_its_typed_cause() {
    use layerup::cluster::ApiStatus;
    use layerup::commands::deploy::{self, DeployImagePlan, DeployPlan};
    use layerup::store::registry::transport::Transport;
    use layerup::store::registry::RegistryError;

    let dev = Registry::start();
    let tree = app_tree();
    let state = tempfile::tempdir().unwrap();
    let rt = runtime();
    let missing = dev.reference("prod/nothing:1");
    let e = rt
        .block_on(push::run(&plan(
            tree.path(),
            &missing,
            &dev.reference("dev/a:1"),
            state.path(),
        )))
        .unwrap_err();
    assert_eq!(
        e.cause::<RegistryError>(),
        Some(&RegistryError {
            status: 404,
            code: Some("MANIFEST_UNKNOWN".into())
        }),
        "{e}"
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = format!("{}/prod/app:1", closed.local_addr().unwrap());
    drop(closed);
    let e = rt
        .block_on(push::run(&plan(
            tree.path(),
            &gone,
            &dev.reference("dev/a:1"),
            state.path(),
        )))
        .unwrap_err();
    assert_eq!(e.cause::<Transport>(), Some(&Transport::Refused), "{e}");

    let kube = common::kube::FakeKube::start();
    let dir = tempfile::tempdir().unwrap();
    let config = kube.kubeconfig(dir.path(), "kind-dev", "team-a", None, "dev-token");
    kube.deny("get", "deployments");
    std::env::set_var("KUBECONFIG", &config);
    let plan = DeployImagePlan {
        image: ImageRef::parse("registry.example.com/prod/app@sha256:0000000000000000000000000000000000000000000000000000000000000000", "IMAGE").unwrap(),
        cluster_registry: None,
        net: net(),
        deploy: DeployPlan {
            workload: Some(layerup::cluster::workload::WorkloadRef::parse("deployment/web").unwrap()),
            container: None,
            target: Default::default(),
            wait: None,
            dry_run: false,
            naming: "as the WORKLOAD argument",
        },
    };
    let e = rt
        .block_on(deploy::deploy_image(&plan, &mut |_| {}))
        .unwrap_err();
    let status = e
        .cause::<ApiStatus>()
        .unwrap_or_else(|| panic!("no status: {e}"));
    assert_eq!(
        (status.code, status.reason.as_str()),
        (403, "Forbidden"),
        "{e}"
    );
}
