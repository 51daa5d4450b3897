//! The actor's side of an engine thread: a channel of requests, each answered on a oneshot, so
//! neither libtorch nor the blocking collective ever runs on the async runtime's threads.
use std::sync::mpsc;

use d2nn_common::checkpoint::SavedTensors;
use d2nn_common::train::Summary;
use tokio::sync::oneshot;

use super::engine::Engine;
use super::ReplicaHost;
use crate::collective::Collective;
use crate::protocol::{
    Abort, Acknowledged, Commit, EvalRequest, ReplicaSpec, SaveRequest, StepOrder, StepReport, WorkerInfo,
};
use crate::Error;

type Reply<T> = oneshot::Sender<Result<T, Error>>;

enum Cmd {
    Step(StepOrder, Reply<StepReport>),
    Commit(Commit, Reply<Acknowledged>),
    Abort(Abort, Reply<Acknowledged>),
    Evaluate(EvalRequest, Reply<Summary>),
    Save(SaveRequest, Reply<SavedTensors>),
}

/// The actor's side of an engine thread. Dropping it (or [`EngineHandle::close`]) ends the thread
/// after its current request.
pub struct EngineHandle {
    rank: usize,
    /// None once closed.
    tx: Option<mpsc::Sender<Cmd>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EngineHandle {
    /// Starts the engine thread and waits until its replica is built.
    pub async fn start(
        spec: ReplicaSpec,
        host: ReplicaHost,
        collective: Box<dyn Collective>,
    ) -> Result<(EngineHandle, WorkerInfo), Error> {
        let rank = spec.rank;
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("d2nn-rank{rank}"))
            .spawn(move || engine_main(spec, host, collective, rx, ready_tx))
            .map_err(|e| Error::Protocol(format!("rank {rank}: cannot start the engine thread: {e}")))?;
        let info = ready_rx.await.map_err(|_| Error::EngineGone { rank })??;
        Ok((EngineHandle { rank, tx: Some(tx), thread: Some(thread) }, info))
    }

    /// Ends the engine thread: no request after the current one, then waits up to `wait` for it to
    /// return. A process must not exit while a replica thread is inside libtorch: libtorch's static
    /// destructors then race with it (workers died of SIGSEGV or SIGABRT on their way out). Returns
    /// whether the thread ended in time.
    pub async fn close(&mut self, wait: std::time::Duration) -> bool {
        self.tx = None;
        let Some(thread) = self.thread.take() else { return true };
        let deadline = std::time::Instant::now() + wait;
        while !thread.is_finished() {
            if std::time::Instant::now() >= deadline {
                tracing::warn!(rank = self.rank, "the engine thread is still busy; leaving it");
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let _ = thread.join();
        true
    }

    async fn request<T>(&self, make: impl FnOnce(Reply<T>) -> Cmd) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        let sender = self.tx.as_ref().ok_or(Error::EngineGone { rank: self.rank })?;
        sender.send(make(tx)).map_err(|_| Error::EngineGone { rank: self.rank })?;
        rx.await.map_err(|_| Error::EngineGone { rank: self.rank })?
    }

    pub async fn step(&self, order: StepOrder) -> Result<StepReport, Error> {
        self.request(|r| Cmd::Step(order, r)).await
    }

    pub async fn commit(&self, commit: Commit) -> Result<Acknowledged, Error> {
        self.request(|r| Cmd::Commit(commit, r)).await
    }

    pub async fn abort(&self, abort: Abort) -> Result<Acknowledged, Error> {
        self.request(|r| Cmd::Abort(abort, r)).await
    }

    pub async fn evaluate(&self, req: EvalRequest) -> Result<Summary, Error> {
        self.request(|r| Cmd::Evaluate(req, r)).await
    }

    pub async fn save(&self, req: SaveRequest) -> Result<SavedTensors, Error> {
        self.request(|r| Cmd::Save(req, r)).await
    }
}

fn engine_main(
    spec: ReplicaSpec,
    host: ReplicaHost,
    collective: Box<dyn Collective>,
    rx: mpsc::Receiver<Cmd>,
    ready: oneshot::Sender<Result<WorkerInfo, Error>>,
) {
    if let Some(n) = host.threads {
        // Per thread: libtorch's OpenMP thread count is a property of the calling thread.
        tch::set_num_threads(n.max(1) as i32);
    }
    let mut engine = match Engine::new(spec, host, collective).and_then(|e| e.info().map(|i| (e, i))) {
        Ok((engine, info)) => {
            let _ = ready.send(Ok(info));
            engine
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    // A dropped reply means the asker gave up (its actor stopped): nothing to tell it.
    while let Ok(cmd) = rx.recv() {
        match cmd {
            Cmd::Step(order, reply) => drop(reply.send(engine.step(order))),
            Cmd::Commit(commit, reply) => drop(reply.send(engine.commit(commit))),
            Cmd::Abort(abort, reply) => drop(reply.send(engine.abort(abort))),
            Cmd::Evaluate(req, reply) => drop(reply.send(engine.evaluate(req))),
            Cmd::Save(req, reply) => drop(reply.send(engine.save(req))),
        }
    }
}
