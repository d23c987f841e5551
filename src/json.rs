//! The `--json` documents: one object per result on stdout, with field names that stay stable
//! (documented in docs/json.md); byte counts in bytes, times in milliseconds.

use serde_json::{json, Value};

use crate::copy::Copied;
use crate::deploy::Change;
use crate::error::Error;
use crate::push::{BlobReport, Outcome};
use crate::stack::Mode;
use crate::Pushed;

fn outcome(o: Outcome) -> &'static str {
    match o {
        Outcome::Present => "present",
        Outcome::Mounted => "mounted",
        Outcome::Copied => "copied",
        Outcome::Uploaded => "uploaded",
        Outcome::Referenced => "referenced",
    }
}

fn blob(b: &BlobReport, kind: &str) -> Value {
    let moved = matches!(b.outcome, Outcome::Copied | Outcome::Uploaded);
    json!({
        "digest": b.digest.to_string(),
        "kind": kind,
        "size": b.size,
        "outcome": outcome(b.outcome),
        "bytes_sent": if moved { b.size } else { 0 },
    })
}

fn ms(d: std::time::Duration) -> u64 {
    d.as_millis() as u64
}

/// `push` (and each `watch` cycle).
pub fn pushed(p: &Pushed, total: std::time::Duration) -> Value {
    let r = &p.report;
    let mut blobs: Vec<Value> = r.layers.iter().map(|b| blob(b, "layer")).collect();
    blobs.push(blob(&r.config, "config"));
    let (mode, reason, changed, deleted) = match &p.mode {
        Mode::Full { reason, .. } => ("full", reason.clone(), None, None),
        Mode::Delta {
            changed, deleted, ..
        } => ("delta", None, Some(*changed), Some(*deleted)),
        Mode::Unchanged => ("unchanged", None, Some(0), Some(0)),
    };
    json!({
        "reference": p.reference,
        "digest": p.digest.to_string(),
        "mode": mode,
        "full_reason": reason,
        "changed": changed,
        "deleted": deleted,
        "entries": p.entries,
        "new_layers": p.new_layers.iter().map(|l| l.digest.to_string()).collect::<Vec<_>>(),
        "blobs": blobs,
        "bytes_sent": r.bytes_moved(),
        "timings_ms": {
            "base": ms(p.timings.base),
            "layer": ms(p.timings.layer),
            "push": ms(p.timings.push),
            "total": ms(total),
        },
    })
}

pub fn copied(c: &Copied) -> Value {
    let blobs: Vec<Value> = c.blobs.iter().map(|b| blob(b, "blob")).collect();
    json!({
        "reference": c.reference,
        "digest": c.digest.to_string(),
        "manifests": c.moves.manifests,
        "blobs": blobs,
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

/// A failure, on stdout with `--json`, so a caller reading stdout sees why.
pub fn error(e: &Error) -> Value {
    json!({"error": {"message": e.to_string(), "exit_code": e.code() as u8}})
}
