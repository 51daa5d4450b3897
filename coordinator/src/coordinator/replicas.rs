//! The coordinator's view of its replicas: what each is built from, spawning them in this process,
//! asking all of them at once, and the check that they start identical.
use std::path::Path;
use std::time::Duration;

use d2nn_worker::collective::in_process_group;
use d2nn_worker::protocol::{Port, Remote, ReplicaSpec, WorkerInfo, WorkerMsg};
use d2nn_worker::replica::{startup_error, ReplicaHost, WorkerActor, WorkerArgs};
use ractor::{Actor, ActorRef};
use tch::Device;

use super::actor::CoordMsg;
use super::cluster::Liveness;
use super::{RuntimeError, TrainRun};

/// What rank `rank` of `world` is built from: the one spec for in-process and remote replicas.
/// `streamed`: the coordinator's training split size when it sends the examples.
pub(super) fn replica_spec(
    run: &TrainRun,
    (rank, world): (usize, usize),
    resume: Option<&Path>,
    streamed: Option<usize>,
) -> ReplicaSpec {
    ReplicaSpec {
        rank,
        world,
        cfg: run.cfg.clone(),
        config_file: run.config_file.clone(),
        resume: resume.map(Path::to_path_buf),
        bucket_bytes: run.options.bucket_bytes,
        collective_timeout: run.options.collective_timeout,
        streamed_train_examples: streamed,
    }
}

/// The arguments of `run.workers` replicas in this process, reducing through an in-process
/// collective. (Built before any await: the run's callbacks need not be `Sync`.)
pub(super) fn in_process_replicas(
    run: &TrainRun,
    resume: Option<&Path>,
    streamed: Option<usize>,
) -> Result<Vec<WorkerArgs>, RuntimeError> {
    let n = run.workers;
    let threads = run.threads_per_worker.unwrap_or_else(|| (super::default_workers() / n).max(1));
    let collectives = in_process_group(run.options.collective, n, run.device, run.options.collective_timeout)?;
    let args = collectives.into_iter().enumerate().map(|(rank, collective)| {
        let device = match run.device {
            Device::Cuda(first) => Device::Cuda(first + rank),
            d => d,
        };
        let faults = run.options.faults.clone().filter(|(r, _)| *r == rank).map(|(_, f)| f).unwrap_or_default();
        let host = ReplicaHost { device, threads: Some(threads), faults };
        WorkerArgs { spec: replica_spec(run, (rank, n), resume, streamed), host, collective }
    });
    Ok(args.collect())
}

/// Spawns the replicas linked to the coordinator, in rank order.
pub(super) async fn spawn_linked(
    myself: &ActorRef<CoordMsg>,
    replicas: Vec<WorkerArgs>,
) -> Result<Vec<ActorRef<WorkerMsg>>, RuntimeError> {
    let mut workers = Vec::with_capacity(replicas.len());
    for (rank, args) in replicas.into_iter().enumerate() {
        // Unnamed: ractor's name registry is global to the process, so two runs in one process (tests
        // in parallel, a program training twice) collided on "d2nn-worker-0" ("already registered"),
        // and nothing looks an in-process worker up by name.
        match Actor::spawn_linked(None, WorkerActor, args, myself.get_cell()).await {
            Ok((w, _)) => workers.push(w),
            Err(e) => {
                stop_all(&workers);
                return Err(RuntimeError::Spawn { rank, message: startup_error(&e) });
            }
        }
    }
    Ok(workers)
}

pub(super) fn stop_all(workers: &[ActorRef<WorkerMsg>]) {
    for w in workers {
        w.stop(Some("run over".into()));
    }
}

/// Sends one request to every worker, then awaits the replies in rank order. All requests go out
/// before any reply is awaited: the ranks' steps meet in the all-reduce. In a cluster, a worker
/// declared lost ends the wait at once (`guard`: the liveness and each rank's node).
pub(super) async fn gather<T>(
    workers: &[ActorRef<WorkerMsg>],
    timeout: Option<Duration>,
    guard: Option<(&Liveness, Vec<u64>)>,
    make: impl Fn(usize, Port<T>) -> WorkerMsg,
) -> Result<Vec<T>, RuntimeError>
where
    T: Send + 'static,
{
    let mut pending = Vec::with_capacity(workers.len());
    for (rank, w) in workers.iter().enumerate() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        w.cast(make(rank, tx.into())).map_err(|e| RuntimeError::WorkerDied { rank, reason: e.to_string() })?;
        pending.push(rx);
    }
    let lost = async {
        match &guard {
            Some((liveness, nodes)) => liveness.first_lost(nodes).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(lost);
    let mut out = Vec::with_capacity(workers.len());
    for (rank, rx) in pending.into_iter().enumerate() {
        let answer = async {
            match timeout {
                Some(t) => tokio::time::timeout(t, rx).await.map_err(|_| RuntimeError::Worker {
                    rank,
                    message: format!("no reply within {:.0} s", t.as_secs_f64()),
                }),
                None => Ok(rx.await),
            }
        };
        let reply = tokio::select! {
            reply = answer => reply?,
            (rank, reason) = &mut lost => return Err(RuntimeError::WorkerLost { rank, reason }),
        };
        match reply.map(Remote::flatten) {
            Ok(Ok(v)) => out.push(v),
            Ok(Err(message)) => return Err(RuntimeError::Worker { rank, message }),
            Err(_) => return Err(RuntimeError::WorkerDied { rank, reason: "stopped before replying".into() }),
        }
    }
    Ok(out)
}

/// Every replica must hold the same data and start from the same parameters.
pub(super) fn check_infos(infos: &[WorkerInfo]) -> Result<(), RuntimeError> {
    let first = &infos[0];
    for i in &infos[1..] {
        if i.train_examples != first.train_examples
            || i.num_actions != first.num_actions
            || i.digest.sha256 != first.digest.sha256
        {
            return Err(RuntimeError::Protocol(format!(
                "replicas differ before step 0: rank 0 {first:?}, rank {} {i:?}",
                i.rank
            )));
        }
    }
    Ok(())
}
