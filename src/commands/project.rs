//! One command for several images of a project: pushes run together in one session (shared
//! connections, tokens and `--jobs`), watches together in one watcher (which looks for the
//! project's services again as it runs), other commands one image after another. One image
//! failing is its own: the others go on, and each image's outcome is returned under its name.

use crate::commands::{push, run as run_one, watch, Done, Job, Outcome};

/// Runs each image's job; returns each image's outcome, in the order given. A watch of the
/// whole project that fails as a whole (its watcher) is one outcome under the name `""`.
pub async fn run(
    all: Vec<(String, Job)>,
    told: watch::Report,
    discover: Option<watch::Discover>,
    stop: watch::Stop,
) -> Vec<(String, Outcome)> {
    if all.iter().all(|(_, j)| matches!(j, Job::Push(_))) {
        let plans: Vec<(String, push::PushPlan)> = all
            .into_iter()
            .filter_map(|(n, j)| match j {
                Job::Push(p) => Some((n, p)),
                _ => None,
            })
            .collect();
        let started = std::time::Instant::now();
        let results = push::run_many(&plans, &|name, t| told(name, t)).await;
        return plans
            .into_iter()
            .zip(results)
            .map(|((name, _), r)| {
                let done = r.map(|(pushed, deployed)| Done::Pushed {
                    pushed,
                    deployed,
                    took: started.elapsed(),
                });
                (name, done)
            })
            .collect();
    }
    if all.iter().all(|(_, j)| matches!(j, Job::Watch(_))) {
        let plans: Vec<(String, watch::WatchPlan)> = all
            .into_iter()
            .filter_map(|(n, j)| match j {
                Job::Watch(w) => Some((n, w)),
                _ => None,
            })
            .collect();
        let watched = watch::run_many(plans, discover, stop, told).await;
        return vec![(String::new(), watched.map(|()| Done::Watched))];
    }
    let mut out = Vec::new();
    for (name, job) in all {
        let named = told.clone();
        let n = name.clone();
        let told: watch::Report = std::sync::Arc::new(move |_: &str, t| named(&n, t));
        out.push((name, Box::pin(run_one(job, told, stop.clone())).await));
    }
    out
}
