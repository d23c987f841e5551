//! One command for several images of a project: pushes run together in one session (shared
//! connections, tokens and `--jobs`), watches together in one watcher (which looks for the
//! project's services again as it runs), other commands one image after another. One image
//! failing — its file, its settings, its registry, its rollout — is its own: the others go on,
//! and each image's outcome is returned under its name.

use crate::commands::{push, run as run_one, watch, Done, Job, Outcome};
use crate::error::Result;

/// Runs each image's job (or carries why it has none); returns each image's outcome, in the
/// order given. A watch of the whole project that fails as a whole (its watcher) is one outcome
/// under the name `""`; its images' failures are told as they come, and watching goes on.
pub async fn run(
    all: Vec<(String, Result<Job>)>,
    told: watch::Report,
    discover: Option<watch::Discover>,
    stop: watch::Stop,
) -> Vec<(String, Outcome)> {
    let watching = all.iter().any(|(_, j)| matches!(j, Ok(Job::Watch(_))));
    if watching || (discover.is_some() && all.iter().all(|(_, j)| j.is_err())) {
        let plans: Vec<(String, Result<watch::WatchPlan>)> = all
            .into_iter()
            .filter_map(|(n, j)| match j {
                Ok(Job::Watch(w)) => Some((n, Ok(w))),
                Ok(_) => None,
                Err(e) => Some((n, Err(e))),
            })
            .collect();
        let watched = watch::run_many(plans, discover, stop, told).await;
        return vec![(String::new(), watched.map(|()| Done::Watched))];
    }
    let mut out: Vec<(String, Option<Outcome>)> = Vec::new();
    let mut pushes: Vec<(usize, String, push::PushPlan)> = Vec::new();
    let mut others: Vec<(usize, String, Job)> = Vec::new();
    for (i, (name, job)) in all.into_iter().enumerate() {
        match job {
            Ok(Job::Push(p)) => pushes.push((i, name.clone(), p)),
            Ok(j) => others.push((i, name.clone(), j)),
            Err(e) => {
                out.push((name, Some(Err(e))));
                continue;
            }
        }
        out.push((name, None));
    }
    if !pushes.is_empty() {
        let plans: Vec<(String, push::PushPlan)> = pushes
            .iter()
            .map(|(_, n, p)| (n.clone(), p.clone()))
            .collect();
        let started = std::time::Instant::now();
        let results = push::run_many(&plans, &|name, t| told(name, t)).await;
        for ((i, _, _), r) in pushes.iter().zip(results) {
            out[*i].1 = Some(r.map(|(pushed, deployed)| Done::Pushed {
                pushed,
                deployed,
                took: started.elapsed(),
            }));
        }
    }
    for (i, name, job) in others {
        let named = told.clone();
        let n = name.clone();
        let told: watch::Report = std::sync::Arc::new(move |_: &str, t| named(&n, t));
        out[i].1 = Some(Box::pin(run_one(job, told, stop.clone())).await);
    }
    out.into_iter()
        .map(|(n, o)| (n, o.expect("every image's job ran")))
        .collect()
}
