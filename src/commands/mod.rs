//! The commands, callable as a library with plain Rust values: each owns its plan and its
//! result, and tells what happens as it goes through a callback. None parses flags, prints or
//! exits; `cli` makes the plans and `output` words the results.

pub mod copy;
pub mod deploy;
pub mod inspect;
pub mod push;
pub mod sync;
pub mod watch;

use std::time::Duration;

use crate::error::Error;

/// What a push — one-shot or watched — tells as it goes.
pub enum Told<'a> {
    /// The image is in the registry (said before any rollout is awaited), and how long it took.
    Pushed(&'a push::Pushed, Duration),
    /// A watched push failed; watching goes on.
    PushFailed(&'a Error),
    /// With `--deploy`: the deploy step.
    Deploy(deploy::Event<'a>),
    /// A watched push's deploy step failed; watching goes on.
    DeployFailed(&'a Error),
    /// A watched image is watched no more: its layerup.toml went away.
    Stopped,
    /// `--sync`: the edit pushed as `reference` is in these containers.
    Synced(&'a sync::Synced, &'a str),
    /// `--sync`: this edit rolls out instead, and why.
    SyncFallback(&'a sync::Fallback),
    /// `--sync`: the templates take the newest image, and why now.
    Settling(&'a sync::CatchUp),
}
