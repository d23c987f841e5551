//! The commands, callable as a library with plain Rust values: each owns its plan and its
//! result, and tells what happens as it goes through a callback. None parses flags, prints or
//! exits; `cli` makes the plans and `output` words the results. [`run`] runs one command;
//! `project::run` runs one command for several images of a project.

pub mod build_step;
pub mod copy;
pub mod deploy;
pub mod inspect;
pub mod journal;
pub mod login;
pub mod project;
pub mod push;
pub mod referrers;
pub mod sync;
pub mod watch;

use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// What a command — a push, a watch, a copy, a deploy — tells as it goes.
pub enum Told<'a> {
    /// The image's build command: started, a line of its output, failed, done.
    Building(build_step::Event<'a>),
    /// The image is in the registry (said before any rollout is awaited), and how long it took.
    Pushed(&'a push::Pushed, Duration),
    /// A watched push failed; watching goes on.
    PushFailed(&'a Error),
    /// With `--deploy`: the deploy step of a push or a watch.
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
    /// `copy`: what will move, before anything does.
    Planned(&'a copy::Planned),
    /// `deploy` and `rollback`: their steps (a dry run's patch is their result).
    Deploying(deploy::Event<'a>),
}

/// A command with its validated plan.
#[derive(Debug)]
pub enum Job {
    Push(push::PushPlan),
    Watch(watch::WatchPlan),
    Copy(copy::CopyPlan),
    Deploy(deploy::DeployImagePlan),
    Rollback(deploy::RollbackPlan),
    Inspect(inspect::InspectPlan),
    Login(login::LoginPlan),
    /// `logout REGISTRY`.
    Logout(String),
}

impl Job {
    /// Whether blobs move, so a progress bar means something.
    pub fn moves_blobs(&self) -> bool {
        matches!(self, Job::Push(_) | Job::Copy(_))
    }

    /// The watch it is, if it is one.
    pub fn watch(&self) -> Option<&watch::WatchPlan> {
        match self {
            Job::Watch(w) => Some(w),
            _ => None,
        }
    }
}

/// What a command came to.
pub enum Done {
    /// The push, and with `--deploy` its deploy step's outcome (which does not undo the push).
    Pushed {
        pushed: push::Pushed,
        deployed: Option<Result<Vec<deploy::Change>>>,
        took: Duration,
    },
    /// A watch ended (Ctrl-C).
    Watched,
    Copied(copy::Copied),
    /// `deploy`, `rollback`: the containers set (or, with `dry_run`, that would be).
    Changes {
        changes: Vec<deploy::Change>,
        dry_run: bool,
    },
    Inspected(inspect::Inspected),
    LoggedIn(login::LoggedIn),
    /// Where the credentials were forgotten.
    LoggedOut(Vec<String>),
}

pub type Outcome = Result<Done>;

/// Runs one command, telling `told` (under the name `""`) what happens as it goes.
pub async fn run(job: Job, told: watch::Report, stop: watch::Stop) -> Outcome {
    let tell = |t: Told| told("", t);
    match job {
        Job::Push(plan) => {
            let started = Instant::now();
            let (pushed, deployed) = push::run_and_deploy(&plan, &tell).await?;
            Ok(Done::Pushed {
                pushed,
                deployed,
                took: started.elapsed(),
            })
        }
        Job::Watch(plan) => {
            let told = told.clone();
            watch::run(&plan, stop, move |t| told("", t)).await?;
            Ok(Done::Watched)
        }
        Job::Copy(plan) => Ok(Done::Copied(
            copy::run(&plan, |p| tell(Told::Planned(p))).await?,
        )),
        Job::Deploy(plan) => Ok(Done::Changes {
            changes: deploy::deploy_image(&plan, &mut |e| tell(Told::Deploying(e))).await?,
            dry_run: plan.deploy.dry_run,
        }),
        Job::Rollback(plan) => Ok(Done::Changes {
            changes: deploy::rollback(&plan, &mut |e| tell(Told::Deploying(e))).await?,
            dry_run: plan.deploy.dry_run,
        }),
        Job::Inspect(plan) => Ok(Done::Inspected(inspect::run(&plan).await?)),
        Job::Login(plan) => Ok(Done::LoggedIn(login::login(&plan).await?)),
        Job::Logout(registry) => Ok(Done::LoggedOut(login::logout(&registry).await?)),
    }
}
