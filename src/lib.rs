//! layerup: append a layer of local files to a production image and push only what is new.
//!
//! The modules are layered so that each reads with only what is below it in mind (no module
//! imports from a layer above its own; docs/design.md keeps the tree):
//!
//! ```text
//! cli, output   command line, layerup.toml and environment → plans; text, --json, progress
//! commands      push, watch, copy, inspect, deploy: each owns its plan and result
//! cluster       the only Kubernetes: kubeconfig, guard, workloads, rollout
//! transfer      one blob transfer: present → mount → stream
//! build         walk → entries → tar → gzip; file index and state; base; image (no network)
//! store         registry (the only HTTP), OCI layout on disk, credentials
//! oci           references, digests, media types and descriptors, platforms, byte streams
//! error, units, retry, meter, stale   at the bottom: errors and exit codes, sizes and
//!               durations, backoff, transfer counters, files left by killed runs
//! ```

pub mod build;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod error;
pub mod meter;
pub mod oci;
pub mod output;
pub mod retry;
pub mod stale;
pub mod store;
pub mod transfer;
pub mod units;
