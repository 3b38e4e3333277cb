//! A role's tasks under one supervisor.
//!
//! A role is a handful of long-running tasks (a consumer, a server, a
//! heartbeat). Each is registered with what its end means:
//!
//! - [`Supervisor::critical`]: runs until shutdown. Ending before that, with
//!   an error or without one, is a failure: the supervisor starts the
//!   shutdown of the others and [`Supervisor::wait`] returns the reason, so
//!   the process exits non-zero instead of idling with a dead part.
//! - [`Supervisor::main`]: the role's work (a replay to publish). When every
//!   main task has ended without error the role shuts down in order.
//! - [`Supervisor::task`]: may end on its own; only an error is a failure.
//!
//! Values given to [`Supervisor::hold`] (a child process) are dropped after
//! the tasks have stopped, so what the tasks need is stopped last.
//!
//! After the shutdown token is cancelled the tasks get `grace` to finish;
//! what is still running then is named in the log and abandoned, and so is
//! everything when `force` is cancelled (a second Ctrl-C).

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use anyhow::anyhow;
use tokio::task::{Id, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// What the end of a task means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Critical,
    Main,
    Task,
}

/// Named tasks of one role, stopped together.
pub struct Supervisor {
    shutdown: CancellationToken,
    tasks: JoinSet<anyhow::Result<()>>,
    names: HashMap<Id, (String, Kind)>,
    mains: usize,
    held: Vec<Box<dyn std::any::Any + Send>>,
}

/// How the tasks ended.
#[derive(Debug)]
pub struct Ended {
    /// The first failure: a critical task that ended early, or any task that
    /// failed or panicked.
    pub failure: Option<anyhow::Error>,
    /// Tasks still running when the grace period ran out or `force` came,
    /// abandoned.
    pub abandoned: Vec<String>,
}

impl Ended {
    /// The failure as an error; abandoned tasks are not one (they were
    /// logged).
    pub fn into_result(self) -> anyhow::Result<()> {
        self.failure.map_or(Ok(()), Err)
    }
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("tasks", &self.still_running())
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// Tasks that stop when `shutdown` is cancelled (they are given the
    /// token, or a child of it, by the caller).
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            shutdown,
            tasks: JoinSet::new(),
            names: HashMap::new(),
            mains: 0,
            held: Vec::new(),
        }
    }

    /// The token whose cancellation stops the tasks.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// A task that must run until shutdown.
    pub fn critical<F>(&mut self, name: &str, task: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.spawn(name, Kind::Critical, task);
    }

    /// The role's work: when every main task is done, the role stops.
    pub fn main<F>(&mut self, name: &str, task: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.mains += 1;
        self.spawn(name, Kind::Main, task);
    }

    /// A task that may end on its own (a replay of one file).
    pub fn task<F>(&mut self, name: &str, task: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.spawn(name, Kind::Task, task);
    }

    /// Keeps `value` until the tasks have stopped, then drops it.
    pub fn hold<T: Send + 'static>(&mut self, value: T) {
        self.held.push(Box::new(value));
    }

    fn spawn<F>(&mut self, name: &str, kind: Kind, task: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let handle = self.tasks.spawn(task);
        self.names.insert(handle.id(), (name.to_owned(), kind));
    }

    /// Runs until shutdown (a signal, the main tasks done, or a failure),
    /// then gives the tasks `grace` to finish, less if `force` comes.
    pub async fn wait(mut self, grace: Duration, force: &CancellationToken) -> Ended {
        let mut failure: Option<anyhow::Error> = None;
        while !self.tasks.is_empty() && !self.shutdown.is_cancelled() {
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => {}
                Some(joined) = self.tasks.join_next_with_id() => {
                    let (name, kind, outcome) = self.outcome(joined);
                    match (kind, outcome) {
                        (Kind::Main, Ok(())) => {
                            self.mains -= 1;
                            info!(task = %name, "done");
                            if self.mains == 0 {
                                self.shutdown.cancel();
                            }
                        }
                        (Kind::Critical, Ok(())) => {
                            failure = Some(anyhow!("{name} stopped before shutdown"));
                        }
                        (Kind::Task, Ok(())) => info!(task = %name, "done"),
                        (_, Err(e)) => failure = Some(e.context(format!("{name} failed"))),
                    }
                    if let Some(f) = &failure {
                        error!(error = format!("{f:#}"), "a task of this role ended; stopping the others");
                        self.shutdown.cancel();
                    }
                }
            }
        }
        self.shutdown.cancel();
        let deadline = tokio::time::Instant::now() + grace;
        let mut abandoned = Vec::new();
        while !self.tasks.is_empty() {
            tokio::select! {
                biased;
                Some(joined) = self.tasks.join_next_with_id() => {
                    let (name, _, outcome) = self.outcome(joined);
                    if let Err(e) = outcome {
                        let e = e.context(format!("{name} failed while stopping"));
                        error!(error = format!("{e:#}"), "stopping");
                        failure.get_or_insert(e);
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    abandoned = self.still_running();
                    warn!(tasks = ?abandoned, ?grace, "tasks did not stop in time; abandoned");
                    break;
                }
                () = force.cancelled() => {
                    abandoned = self.still_running();
                    warn!(tasks = ?abandoned, "second signal: abandoning the tasks still stopping");
                    break;
                }
            }
        }
        self.tasks.abort_all();
        // Last, what the tasks needed (a nats-server child).
        self.held.clear();
        Ended { failure, abandoned }
    }

    fn outcome(
        &mut self,
        joined: Result<(Id, anyhow::Result<()>), tokio::task::JoinError>,
    ) -> (String, Kind, anyhow::Result<()>) {
        let (id, outcome) = match joined {
            Ok((id, r)) => (id, r),
            Err(e) => {
                let why = if e.is_panic() {
                    "panicked"
                } else {
                    "was cancelled"
                };
                (e.id(), Err(anyhow!("{why}")))
            }
        };
        let (name, kind) = self
            .names
            .remove(&id)
            .unwrap_or_else(|| ("a task".to_owned(), Kind::Critical));
        (name, kind, outcome)
    }

    fn still_running(&self) -> Vec<String> {
        let mut v: Vec<String> = self.names.values().map(|(n, _)| n.clone()).collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(10);

    fn until(stop: &CancellationToken) -> impl Future<Output = anyhow::Result<()>> + use<> {
        let stop = stop.clone();
        async move {
            stop.cancelled().await;
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_critical_task_that_fails_stops_the_others_and_is_the_result() {
        let stop = CancellationToken::new();
        let mut s = Supervisor::new(stop.clone());
        s.critical("server", until(&stop));
        s.critical("follower", async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Err(anyhow!("subscription closed"))
        });
        let ended = s.wait(GRACE, &CancellationToken::new()).await;
        assert!(stop.is_cancelled());
        assert!(ended.abandoned.is_empty());
        let msg = format!("{:#}", ended.failure.unwrap());
        assert_eq!(msg, "follower failed: subscription closed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_critical_task_that_ends_quietly_is_a_failure_too() {
        let stop = CancellationToken::new();
        let mut s = Supervisor::new(stop.clone());
        s.critical("server", until(&stop));
        s.critical("writer", async { Ok(()) });
        let ended = s.wait(GRACE, &CancellationToken::new()).await;
        let msg = format!("{:#}", ended.failure.unwrap());
        assert_eq!(msg, "writer stopped before shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn a_panic_is_a_failure_not_a_hang() {
        let stop = CancellationToken::new();
        let mut s = Supervisor::new(stop.clone());
        s.critical("server", until(&stop));
        s.critical("detector", async {
            let v: Vec<u8> = Vec::new();
            let _ = v[usize::from(v.is_empty())];
            Ok(())
        });
        let ended = s.wait(GRACE, &CancellationToken::new()).await;
        assert_eq!(
            format!("{:#}", ended.failure.unwrap()),
            "detector failed: panicked"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn main_tasks_done_stop_the_role_cleanly() {
        let stop = CancellationToken::new();
        let mut s = Supervisor::new(stop.clone());
        s.critical("server", until(&stop));
        s.main("replay a", async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok(())
        });
        s.main("replay b", async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Ok(())
        });
        let t0 = tokio::time::Instant::now();
        let ended = s.wait(GRACE, &CancellationToken::new()).await;
        assert!(ended.failure.is_none());
        assert!(stop.is_cancelled());
        // The role stopped when the later replay ended, not before.
        assert_eq!(t0.elapsed().as_secs(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_ignores_shutdown_is_abandoned_after_the_grace_period() {
        let stop = CancellationToken::new();
        let mut s = Supervisor::new(stop.clone());
        s.critical("server", until(&stop));
        s.critical("stuck stream", std::future::pending());
        stop.cancel();
        let t0 = tokio::time::Instant::now();
        let ended = s.wait(GRACE, &CancellationToken::new()).await;
        assert_eq!(t0.elapsed(), GRACE);
        assert_eq!(ended.abandoned, vec!["stuck stream".to_owned()]);
        assert!(ended.failure.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn force_abandons_at_once() {
        let stop = CancellationToken::new();
        let force = CancellationToken::new();
        let mut s = Supervisor::new(stop.clone());
        s.critical("stuck stream", std::future::pending());
        stop.cancel();
        let f = force.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            f.cancel();
        });
        let t0 = tokio::time::Instant::now();
        let ended = s.wait(GRACE, &force).await;
        assert_eq!(t0.elapsed(), Duration::from_millis(300));
        assert_eq!(ended.abandoned, vec!["stuck stream".to_owned()]);
    }

    #[tokio::test(start_paused = true)]
    async fn held_values_outlive_the_tasks_and_tasks_may_end() {
        struct Child(std::sync::Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Child {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = CancellationToken::new();
        let mut s = Supervisor::new(stop.clone());
        s.hold(Child(dropped.clone()));
        s.task("replay", async { Ok(()) });
        let (st, d) = (stop.clone(), dropped.clone());
        s.critical("detector", async move {
            st.cancelled().await;
            // Still there while the detector hands over.
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert!(!d.load(std::sync::atomic::Ordering::SeqCst));
            Ok(())
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.cancel();
        let ended = s.wait(GRACE, &CancellationToken::new()).await;
        assert!(ended.failure.is_none(), "{:?}", ended.failure);
        assert!(dropped.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_while_stopping_is_reported() {
        let stop = CancellationToken::new();
        let mut s = Supervisor::new(stop.clone());
        let st = stop.clone();
        s.critical("detector", async move {
            st.cancelled().await;
            Err(anyhow!("hand-over of shard 3 timed out"))
        });
        stop.cancel();
        let ended = s.wait(GRACE, &CancellationToken::new()).await;
        assert_eq!(
            format!("{:#}", ended.failure.unwrap()),
            "detector failed while stopping: hand-over of shard 3 timed out"
        );
    }
}
