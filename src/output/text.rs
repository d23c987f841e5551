//! The text lines layerup prints, each a pure function of a result or an event.

use std::time::Duration;

use serde_json::Value;

use crate::build::stack::Mode;
use crate::commands::build_step;
use crate::commands::copy::{Copied, Planned};
use crate::commands::deploy::{Change, Event};
use crate::commands::inspect::Inspected;
use crate::commands::push::Pushed;
use crate::commands::Told;
use crate::error::escape;
use crate::transfer::{count, Moved, Outcome, Role};
use crate::units::human;

/// Lines joined, each escaped: what came from a registry or an API server cannot add a line
/// or drive the terminal.
fn lines(out: Vec<String>) -> String {
    out.iter()
        .map(|l| escape(l).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The older `--ref-file` tags a push deleted, if it deleted any.
pub fn tags_deleted(p: &Pushed) -> Option<String> {
    if p.tags_deleted.is_empty() {
        return None;
    }
    Some(format!(
        "deleted {} ({}); kept the newest {}",
        counted(
            p.tags_deleted.len(),
            "older layerup tag",
            "older layerup tags"
        ),
        p.tags_deleted.join(", "),
        crate::commands::push::KEEP_REF_TAGS
    ))
}

/// `1 entry`, `2 entries`.
fn counted(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// One line on what a push did: its kind, what moved, and where the time went.
pub fn summary(p: &Pushed) -> String {
    let new: Vec<_> = p.new_layers.iter().map(|l| &l.digest).collect();
    let per_platform: Vec<_> = p.platform_layers.iter().map(|l| &l.digest).collect();
    let (mine, layers): (Vec<&Moved>, Vec<&Moved>) = p
        .blobs
        .iter()
        .filter(|b| b.role == Role::Layer)
        .partition(|b| per_platform.contains(&&b.digest));
    let (app, base): (Vec<&Moved>, Vec<&Moved>) =
        layers.into_iter().partition(|b| new.contains(&&b.digest));
    let n = |of: &[&Moved], o: Outcome| of.iter().filter(|b| b.outcome == o).count();
    let built: u64 = p.new_layers.iter().map(|l| l.size).sum();
    let t = &p.timings;
    let what = match &p.mode {
        Mode::Full { parts, .. } => {
            let uploaded = n(&app, Outcome::Uploaded);
            format!(
                "full: {} in {parts} layer{} ({}), {uploaded} uploaded, {} already there",
                counted(p.entries, "entry", "entries"),
                if *parts == 1 { "" } else { "s" },
                human(built),
                parts - uploaded
            )
        }
        Mode::Delta {
            changed,
            deleted,
            depth,
        } => format!(
            "delta {depth}: {changed} changed, {deleted} deleted ({} layer)",
            human(built)
        ),
        Mode::Unchanged if p.platform_files_changed => "no changes but per platform".to_string(),
        Mode::Unchanged => "no changes".to_string(),
    };
    let what = if per_platform.is_empty() {
        what
    } else {
        format!(
            "{what}; per platform: {} layer{}, {} uploaded",
            per_platform.len(),
            if per_platform.len() == 1 { "" } else { "s" },
            n(&mine, Outcome::Uploaded)
        )
    };
    let platforms = if p.platforms.is_empty() {
        String::new()
    } else {
        let names: Vec<String> = p.platforms.iter().map(|(pl, _)| pl.to_string()).collect();
        format!("; an index of {}", names.join(", "))
    };
    format!(
        "{what}; other layers: {} present, {} mounted, {} copied; {} sent{platforms}; \
         base {:.2}s, layer {:.2}s, push {:.2}s",
        n(&base, Outcome::Present) + n(&base, Outcome::Referenced),
        n(&base, Outcome::Mounted),
        n(&base, Outcome::Copied),
        human(p.bytes_sent()),
        t.base.as_secs_f64(),
        t.layer.as_secs_f64(),
        t.push.as_secs_f64(),
    )
}

/// Why a push was full when a delta was expected, if it was.
pub fn full_reason(p: &Pushed) -> Option<String> {
    p.full_reason().map(|why| format!("full push: {why}"))
}

/// One watch cycle's status line.
pub fn cycle(p: &Pushed, took: Duration) -> String {
    let (kind, files) = match &p.mode {
        Mode::Full { .. } => ("full", counted(p.entries, "entry", "entries")),
        Mode::Delta {
            changed, deleted, ..
        } => ("delta", format!("{changed} changed, {deleted} deleted")),
        Mode::Unchanged if p.platform_files_changed => {
            ("platform", "per-platform files changed".to_string())
        }
        Mode::Unchanged => ("same", "no changes".to_string()),
    };
    format!(
        "{kind}: {files}, {} sent in {:.2}s → {}",
        human(p.bytes_sent()),
        took.as_secs_f64(),
        p.reference
    )
}

/// An image's line on a watch's board: its last change, what was sent, the digest, the time;
/// then its rollout. `None` for what does not change the line.
pub fn board_line(t: &Told) -> Option<String> {
    Some(match t {
        Told::Pushed(p, took) => {
            let what = match &p.mode {
                Mode::Full { .. } => format!("full, {}", counted(p.entries, "entry", "entries")),
                Mode::Delta {
                    changed, deleted, ..
                } => format!("{changed} changed, {deleted} deleted"),
                Mode::Unchanged => "no changes".to_string(),
            };
            let hex = p.digest.digest();
            format!(
                "{what}; {} sent in {:.2}s; {}",
                human(p.bytes_sent()),
                took.as_secs_f64(),
                &hex[..12.min(hex.len())]
            )
        }
        Told::PushFailed(e) => format!("error: {e}"),
        Told::Building(build_step::Event::Started(_, Some(p))) => format!("building for {p}"),
        Told::Building(build_step::Event::Started(_, None)) => "building".to_string(),
        Told::Building(build_step::Event::Failed(_)) => "build failed".to_string(),
        Told::Building(_) => return None,
        Told::DeployFailed(e) => format!("rollout failed: {e}"),
        Told::Deploy(Event::Waiting(_, what)) => format!("rolling out: {what}"),
        Told::Deploy(Event::Ready(_, took)) => {
            format!("rolled out in {:.1}s", took.as_secs_f64())
        }
        Told::Stopped => "stopped: its layerup.toml is gone".to_string(),
        Told::Synced(s, _) => synced(s),
        Told::SyncFallback(why) => format!("rolling out: {why}"),
        Told::Settling(why) => format!("updating the template: {why}"),
        Told::Deploy(_) | Told::Deploying(_) | Told::Planned(_) => return None,
    })
}

/// An edit applied to the running containers: `synced to app-1a2b3-0, app-1a2b3-1 in 0.12s`.
pub fn synced(s: &crate::commands::sync::Synced) -> String {
    let mut line = if s.pods.is_empty() {
        format!("synced (nothing to apply) in {:.2}s", s.took.as_secs_f64())
    } else {
        format!(
            "synced to {} in {:.2}s",
            s.pods.join(", "),
            s.took.as_secs_f64()
        )
    };
    for (pod, why) in &s.then_failed {
        line += &format!("; --then failed in {pod}: {why}");
    }
    line
}

/// What a copy is about to move, before it moves it.
pub fn planned(p: &Planned) -> String {
    let m = &p.moves;
    if m.copy + m.upload + m.mount == 0 && p.manifests == 0 {
        return format!(
            "nothing to copy: the destination holds all {} blobs",
            m.present
        );
    }
    let blobs = m.copy + m.upload;
    format!(
        "to copy: {blobs} blob{} ({}), {} to mount, {} already there, then {} manifest{}",
        if blobs == 1 { "" } else { "s" },
        human(m.bytes),
        m.mount,
        m.present,
        p.manifests,
        if p.manifests == 1 { "" } else { "s" },
    )
}

/// What a copy did, in one line.
pub fn copied(c: &Copied) -> String {
    let n = |o: Outcome| count(&c.blobs, o);
    let referrers = match c.referrers {
        0 => String::new(),
        r => format!(" and {}", counted(r, "referrer", "referrers")),
    };
    format!(
        "copied {} ({}), mounted {}, {} present; {}{referrers} written in {:.2}s",
        counted(n(Outcome::Copied), "blob", "blobs"),
        human(c.bytes_sent()),
        n(Outcome::Mounted),
        n(Outcome::Present),
        counted(c.planned.manifests, "manifest", "manifests"),
        c.took.as_secs_f64()
    )
}

/// A container set: `deployment/app app localhost:5000/app@sha256:…`.
pub fn change(c: &Change) -> String {
    escape(&format!("{} {} {}", c.workload, c.container, c.to)).into_owned()
}

/// A deploy step's line; `None` for events quiet leaves out. A dry run's patch is several lines.
pub fn event(e: &Event) -> String {
    match e {
        Event::WouldPatch {
            changes,
            place,
            patch,
        } => {
            let mut out = vec![format!("would patch {place}:")];
            for c in changes.iter() {
                out.push(format!(
                    "  container {}: {} -> {}",
                    c.container, c.from, c.to
                ));
            }
            out.push("with this strategic-merge patch:".to_string());
            let body = serde_json::to_string_pretty(patch).unwrap_or_default();
            out.extend(body.lines().map(str::to_string));
            lines(out)
        }
        Event::Patched(c) => format!(
            "{}: container {} set to {} (was {})",
            c.workload, c.container, c.to, c.from
        ),
        Event::Unchanged(c) => format!(
            "{}: container {} already runs {}",
            c.workload, c.container, c.to
        ),
        Event::Waiting(id, what) => format!("{id}: waiting: {what}"),
        Event::Ready(id, took) => format!("{id}: rolled out in {:.1}s", took.as_secs_f64()),
        Event::NotWaited(id, why) => format!("{id}: not waiting for the rollout: {why}"),
    }
}

/// `inspect`: a few lines.
pub fn inspected(i: &Inspected) -> String {
    let mut out = vec![format!("{}  {}", i.reference, i.media_type)];
    for c in i.children.iter().flatten() {
        out.push(format!(
            "  {:<16} {}  {}",
            c.platform,
            c.digest,
            human(c.size)
        ));
    }
    let img = &i.image;
    let cfg = &img.config["config"];
    if i.children.is_some() {
        out.push(format!("{}  {}", img.digest, i.image_media_type));
    }
    let platform = format!(
        "{}/{}",
        img.config["os"].as_str().unwrap_or("?"),
        img.config["architecture"].as_str().unwrap_or("?")
    );
    out.push(format!(
        "platform {platform}, created {}",
        img.config["created"].as_str().unwrap_or("-")
    ));
    let show = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) if s.is_empty() => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    for (name, key) in [
        ("entrypoint", "Entrypoint"),
        ("cmd", "Cmd"),
        ("workdir", "WorkingDir"),
        ("user", "User"),
    ] {
        out.push(format!("  {name:<10} {}", show(&cfg[key])));
    }
    for e in cfg["Env"].as_array().into_iter().flatten() {
        out.push(format!("  env        {}", show(e)));
    }
    for (k, v) in cfg["Labels"].as_object().into_iter().flatten() {
        out.push(format!("  label      {k}={}", show(v)));
    }
    let total: u64 = img.layers.iter().map(|l| l.size).sum();
    out.push(format!("layers: {}, {}", img.layers.len(), human(total)));
    let history: Vec<&Value> = img.config["history"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|h| h["empty_layer"] != true)
        .collect();
    for (n, l) in img.layers.iter().enumerate() {
        let by = history
            .get(n)
            .and_then(|h| h["created_by"].as_str())
            .map(|c| format!("  {}", c.chars().take(60).collect::<String>()))
            .unwrap_or_default();
        out.push(format!("  {}  {:>10}{by}", l.digest, human(l.size)));
    }
    lines(out)
}
