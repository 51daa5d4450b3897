//! The coordinator actor: its state and lifecycle. It starts the replicas (in this process or in
//! a cluster's worker processes), then advances the run one message per step, so supervision
//! events are handled between steps, and ends it with a checkpoint and an evaluation on rank 0.
//! The step itself is in `step.rs`, what rank 0 writes in `outputs.rs`, membership changes in
//! `elastic.rs`.
use std::sync::atomic::Ordering;

use d2nn_common::train::{RunLedger, Summary};
use d2nn_worker::protocol::WorkerMsg;
use indicatif::{ProgressBar, ProgressStyle};
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::oneshot;

use super::balance::Balancer;
use super::cluster::{Cluster, Liveness};
use super::own_data::OwnData;
use super::replicas::{check_infos, gather, in_process_replicas, replica_spec, spawn_linked, stop_all};
use super::{RuntimeError, TrainRun};
use d2nn_common::train::Opened;

pub(super) struct Coordinator;

type Done = oneshot::Sender<Result<Summary, RuntimeError>>;

pub(super) struct CoordArgs {
    pub run: TrainRun,
    /// The worker processes of a multi-process run; None: spawn the workers in this process.
    pub cluster: Option<Cluster>,
    pub done: Done,
}

/// Its own tick: one step per message, so supervision events are handled between steps.
pub(super) enum CoordMsg {
    NextStep,
}

impl ractor::Message for CoordMsg {}

pub(super) struct CoordState {
    pub(super) run: TrainRun,
    done: Option<Done>,
    pub(super) workers: Vec<ActorRef<WorkerMsg>>,
    /// Run directory, step horizon, baselines, metrics window, checkpoints, summary.
    pub(super) ledger: RunLedger,
    pub(super) bar: ProgressBar,
    pub(super) cluster: Option<Cluster>,
    /// The step whose commit is being sent: if a worker is lost now, the survivors have applied it.
    pub(super) committing: Option<u64>,
    /// The ranks' shares of each global batch.
    pub(super) balance: Balancer,
    /// The data, when the coordinator sends the examples (`data.source = "coordinator"`).
    pub(super) own_data: Option<OwnData>,
}

impl CoordState {
    /// Builds the state; a failure stops whatever workers were started and tells the worker
    /// processes of a cluster why.
    async fn start(
        myself: &ActorRef<CoordMsg>,
        run: TrainRun,
        mut cluster: Option<Cluster>,
        done: Done,
    ) -> Result<CoordState, (RuntimeError, Done)> {
        let mut workers = Vec::new();
        match Self::try_start(myself, run, &mut cluster, &mut workers).await {
            Ok(mut state) => {
                state.done = Some(done);
                state.cluster = cluster;
                Ok(state)
            }
            Err(e) => {
                stop_all(&workers);
                if let Some(c) = &cluster {
                    c.finish(false, &e.to_string()).await;
                }
                Err((e, done))
            }
        }
    }

    async fn try_start(
        myself: &ActorRef<CoordMsg>,
        run: TrainRun,
        cluster: &mut Option<Cluster>,
        workers: &mut Vec<ActorRef<WorkerMsg>>,
    ) -> Result<CoordState, RuntimeError> {
        let opened =
            Opened::open(&run.cfg, &run.config_file, &run.run_dir, run.resume.as_deref(), run.allow_config_change)?;
        let resume = opened.resume_dir();
        let own_data = OwnData::load(&run)?;
        let streamed = own_data.as_ref().map(OwnData::train_examples);
        *workers = match cluster.as_mut() {
            Some(c) => {
                let template = replica_spec(&run, (0, 0), resume, streamed);
                c.form(&template).await?
            }
            None => {
                let replicas = in_process_replicas(&run, resume, streamed)?;
                spawn_linked(myself, replicas).await?
            }
        };
        let guard = cluster.as_ref().map(|c| (&c.liveness, c.member_nodes()));
        let infos = gather(workers, run.options.step_timeout, guard, |_, p| WorkerMsg::Info(p)).await?;
        check_infos(&infos)?;
        let ledger = opened.begin(infos[0].train_examples, &infos[0].num_actions, run.max_steps)?;
        let bar = if run.progress { ProgressBar::new(ledger.last_step) } else { ProgressBar::hidden() };
        if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} steps {elapsed_precise} {msg}") {
            bar.set_style(style);
        }
        bar.set_position(ledger.step);
        let balance = Balancer::new(run.cfg.train.balance, workers.len());
        Ok(CoordState {
            run,
            done: None,
            workers: workers.clone(),
            ledger,
            bar,
            cluster: None,
            committing: None,
            balance,
            own_data,
        })
    }

    /// The liveness of the current generation's members, when the workers are remote.
    pub(super) fn guard(&self) -> Option<(&Liveness, Vec<u64>)> {
        self.cluster.as_ref().map(|c| (&c.liveness, c.member_nodes()))
    }

    /// One turn of the run: a stop request ends it with a checkpoint; the last step with a checkpoint
    /// and the evaluation; otherwise the next step runs (and a periodic checkpoint when one is due).
    async fn advance(&mut self) -> Result<Option<Summary>, RuntimeError> {
        if self.run.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
            self.bar.finish_and_clear();
            let checkpoint = self.checkpoint_unless_saved().await?;
            return Err(RuntimeError::Stopped { step: self.ledger.step, checkpoint });
        }
        if self.ledger.done() {
            self.checkpoint_unless_saved().await?;
            return self.finish().await.map(Some);
        }
        if self.cluster.as_ref().is_some_and(Cluster::has_newcomer) {
            let step = self.ledger.step;
            self.bar.suspend(|| tracing::info!(step, "a worker joined; re-forming the cluster"));
            self.reform().await?;
        }
        self.run_step().await?;
        if self.ledger.checkpoint_due() {
            self.checkpoint().await?;
        }
        Ok(None)
    }

    fn end(&mut self, myself: &ActorRef<CoordMsg>, result: Result<Summary, RuntimeError>) {
        self.bar.finish_and_clear();
        if let Some(done) = self.done.take() {
            let _ = done.send(result);
        }
        stop_all(&self.workers);
        myself.stop(None);
    }
}

impl Actor for Coordinator {
    type Msg = CoordMsg;
    type State = CoordState;
    type Arguments = CoordArgs;

    async fn pre_start(&self, myself: ActorRef<CoordMsg>, args: CoordArgs) -> Result<CoordState, ActorProcessingErr> {
        match CoordState::start(&myself, args.run, args.cluster, args.done).await {
            Ok(state) => Ok(state),
            Err((e, done)) => {
                let text = e.to_string();
                let _ = done.send(Err(e));
                Err(text.into())
            }
        }
    }

    async fn post_start(&self, myself: ActorRef<CoordMsg>, _state: &mut CoordState) -> Result<(), ActorProcessingErr> {
        Ok(myself.cast(CoordMsg::NextStep)?)
    }

    async fn handle(
        &self,
        myself: ActorRef<CoordMsg>,
        msg: CoordMsg,
        state: &mut CoordState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CoordMsg::NextStep => {
                if state.done.is_none() {
                    return Ok(());
                }
                let outcome = match state.advance().await {
                    Err(e) if state.cluster.is_some() => state.recover(e).await.map(|()| None),
                    other => other,
                };
                match outcome {
                    Ok(None) => myself.cast(CoordMsg::NextStep)?,
                    Ok(Some(summary)) => {
                        state.close_cluster(true, "training finished").await;
                        state.end(&myself, Ok(summary))
                    }
                    Err(e) => {
                        // Also a stop on request: the run is not finished, so a restarted job must
                        // find its workers failed, not complete.
                        state.close_cluster(false, &e.to_string()).await;
                        state.end(&myself, Err(e))
                    }
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<CoordMsg>,
        event: SupervisionEvent,
        state: &mut CoordState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason) = match event {
            SupervisionEvent::ActorFailed(cell, e) => (cell, e.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "no reason given".into()))
            }
            _ => return Ok(()),
        };
        if state.done.is_some() {
            let rank = state.workers.iter().position(|w| w.get_id() == cell.get_id());
            let err = match rank {
                Some(rank) => RuntimeError::WorkerDied { rank, reason },
                None => RuntimeError::Coordinator(format!("an unknown child stopped: {reason}")),
            };
            state.end(&myself, Err(err));
        }
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<CoordMsg>, state: &mut CoordState) -> Result<(), ActorProcessingErr> {
        stop_all(&state.workers);
        Ok(())
    }
}
