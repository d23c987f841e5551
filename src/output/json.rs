//! The `--json` documents: one object per result on stdout, with field names that stay stable
//! (documented in docs/json.md); byte counts in bytes, times in milliseconds.

use serde_json::{json, Value};

use crate::build::stack::Mode;
use crate::commands::copy::Copied;
use crate::commands::deploy::Change;
use crate::commands::inspect::Inspected;
use crate::commands::push::Pushed;
use crate::error::{escape, Error};
use crate::transfer::{Moved, Role};

fn blob(b: &Moved) -> Value {
    let kind = match b.role {
        Role::Layer => "layer",
        Role::Config => "config",
        Role::Blob => "blob",
    };
    json!({
        "digest": b.digest.to_string(),
        "kind": kind,
        "size": b.size,
        "outcome": b.outcome.word(),
        "bytes_sent": b.bytes_sent(),
    })
}

fn ms(d: std::time::Duration) -> u64 {
    d.as_millis() as u64
}

/// `push` (and each `watch` cycle).
pub fn pushed(p: &Pushed, total: std::time::Duration) -> Value {
    let (mode, changed, deleted) = match &p.mode {
        Mode::Full { .. } => ("full", None, None),
        Mode::Delta {
            changed, deleted, ..
        } => ("delta", Some(*changed), Some(*deleted)),
        Mode::Unchanged => ("unchanged", Some(0), Some(0)),
    };
    let reason = p.full_reason();
    json!({
        "reference": p.reference,
        "digest": p.digest.to_string(),
        "mode": mode,
        "full_reason": reason.map(ToString::to_string),
        "full_code": reason.map(|r| r.code()),
        "changed": changed,
        "deleted": deleted,
        "entries": p.entries,
        "new_layers": p.new_layers.iter().map(|l| l.digest.to_string()).collect::<Vec<_>>(),
        "platform_layers": p.platform_layers.iter().map(|l| l.digest.to_string()).collect::<Vec<_>>(),
        "blobs": p.blobs.iter().map(blob).collect::<Vec<_>>(),
        "bytes_sent": p.bytes_sent(),
        "platforms": p.platforms.iter().map(|(pl, d)| json!({"platform": pl.to_string(), "digest": d.to_string()})).collect::<Vec<_>>(),
        "tags_deleted": p.tags_deleted,
        "requests": p.requests,
        "timings_ms": {
            "base": ms(p.timings.base),
            "build": ms(p.timings.build),
            "layer": ms(p.timings.layer),
            "push": ms(p.timings.push),
            "total": ms(total),
        },
    })
}

pub fn copied(c: &Copied) -> Value {
    json!({
        "reference": c.reference,
        "digest": c.digest.to_string(),
        "manifests": c.planned.manifests,
        "referrers": c.referrers,
        "blobs": c.blobs.iter().map(blob).collect::<Vec<_>>(),
        "bytes_sent": c.bytes_sent(),
        "timings_ms": {"total": ms(c.took)},
    })
}

/// `deploy`, `rollback`, and the `deployed` field of `push --deploy`.
pub fn changes(changes: &[Change]) -> Value {
    Value::Array(
        changes
            .iter()
            .map(|c| {
                json!({
                    "workload": c.workload.to_string(),
                    "container": c.container,
                    "from": c.from,
                    "to": c.to,
                    "changed": c.from != c.to,
                })
            })
            .collect(),
    )
}

/// `watch --sync`: an edit applied to the running containers.
pub fn synced(s: &crate::commands::sync::Synced, reference: &str) -> Value {
    json!({"synced": {
        "reference": reference,
        "pods": s.pods,
        "then_failed": s.then_failed.iter().map(|(pod, why)| json!({"pod": pod, "message": why})).collect::<Vec<_>>(),
        "timings_ms": {"total": ms(s.took)},
    }})
}

/// `watch --sync`: an edit rolled out instead of synced, and why.
pub fn sync_fallback(why: &crate::commands::sync::Fallback) -> Value {
    json!({"sync_fallback": {"code": why.code(), "reason": escape(&why.to_string())}})
}

/// `watch --sync`: the workloads' template takes the newest image synced, and why now.
pub fn settling(why: &crate::commands::sync::CatchUp) -> Value {
    json!({"settling": {"code": why.code(), "reason": escape(&why.to_string())}})
}

/// A watched push's deploy step failed (watching goes on).
pub fn deploy_error(e: &Error) -> Value {
    json!({"deploy_error": error(e)["error"].clone()})
}

/// A failure, on stdout with `--json`, so a caller reading stdout sees why.
pub fn error(e: &Error) -> Value {
    json!({"error": {"message": e.to_string(), "exit_code": e.code() as u8}})
}

/// `inspect`.
pub fn inspected(i: &Inspected) -> Value {
    let children = i.children.as_ref().map(|c| {
        c.iter()
            .map(|c| json!({"platform": c.platform, "digest": c.digest, "media_type": c.media_type, "size": c.size}))
            .collect::<Vec<_>>()
    });
    json!({
        "reference": i.reference,
        "media_type": i.media_type,
        "manifests": children,
        "image": {
            "digest": i.image.digest.to_string(),
            "media_type": i.image_media_type,
            "config": i.image.config,
            "layers": i.image.layers.iter().map(|l| json!({
                "digest": l.digest.to_string(), "size": l.size, "media_type": l.media_type,
            })).collect::<Vec<_>>(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::sync::{CatchUp, Fallback};
    use crate::error::ExitCode;

    #[test]
    fn live_update_decisions_are_documents_with_stable_codes() {
        let why = Fallback::NotReady {
            pod: "app-1\u{1b}[2J".into(),
            container: "app".into(),
        };
        assert_eq!(
            sync_fallback(&why),
            json!({"sync_fallback": {"code": "not_ready", "reason": "container app of pod app-1\\u{1b}[2J is not ready"}})
        );
        assert_eq!(
            settling(&CatchUp::Settled(std::time::Duration::from_secs(30))),
            json!({"settling": {"code": "settled", "reason": "no edit for 30s"}})
        );
        let e = Error::new(ExitCode::Rollout, "deployment/app: rollout failed");
        assert_eq!(
            deploy_error(&e),
            json!({"deploy_error": {"message": "deployment/app: rollout failed", "exit_code": 10}})
        );
    }
}
