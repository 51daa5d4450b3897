//! The cluster half of the coordinator: what happens when the membership changes. A lost worker
//! ends its generation at the survivors' committed state, which is checkpointed and becomes the
//! starting point of the next generation; a newcomer is taken in the same way.
use d2nn_common::train::StepEnd;
use d2nn_worker::protocol::{ReplicaSpec, WorkerMsg};

use super::actor::CoordState;
use super::replicas::{check_infos, gather, replica_spec};
use super::RuntimeError;

/// Tries at forming one generation before the run gives up (a worker may be lost meanwhile).
const FORM_ATTEMPTS: usize = 3;

impl CoordState {
    /// A failed step in a cluster: if workers were lost, checkpoint the survivors' committed state
    /// and continue with a new generation formed from it. Any other failure ends the run.
    pub(super) async fn recover(&mut self, cause: RuntimeError) -> Result<(), RuntimeError> {
        let Some(cluster) = self.cluster.as_ref() else { return Err(cause) };
        if !matches!(
            cause,
            RuntimeError::WorkerLost { .. } | RuntimeError::Worker { .. } | RuntimeError::WorkerDied { .. }
        ) {
            return Err(cause);
        }
        // A broken ring is often noticed before the heartbeats have declared its culprit lost.
        let nodes = cluster.member_nodes();
        let patience = cluster.options.heartbeat_timeout + cluster.options.heartbeat_interval * 2;
        if tokio::time::timeout(patience, cluster.liveness.first_lost(&nodes)).await.is_err() {
            return Err(cause);
        }
        let mut survivors = Vec::new();
        for (rank, node) in nodes.iter().enumerate() {
            match cluster.liveness.lost_reason(*node) {
                Some(why) => tracing::warn!(worker = %cluster.label(rank), reason = %why, "worker lost"),
                None => survivors.push(rank),
            }
        }
        if survivors.is_empty() {
            return Err(RuntimeError::Cluster(format!(
                "every worker was lost ({cause}); continue with `d2nn coordinator --resume {}`",
                self.ledger.run_dir.path.display()
            )));
        }
        let step = self.ledger.step;
        self.bar
            .suspend(|| tracing::warn!(step, survivors = survivors.len(), cause = %cause, "re-forming the cluster"));
        if self.committing.take().is_some() {
            // The commit was sent to every replica before the loss: the survivors applied it.
            self.ledger.record(StepEnd::CommittedUnseen, 0.0, None)?;
        }
        self.workers = survivors.iter().map(|&r| self.workers[r].clone()).collect();
        cluster.abandon();
        if let Some(c) = self.cluster.as_mut() {
            c.members = survivors.iter().map(|&r| c.members[r].clone()).collect();
        }
        self.reform().await
    }

    /// Ends the current generation at a checkpoint of the current step and forms the next one
    /// from it: every replica, old or new, loads the same files.
    pub(super) async fn reform(&mut self) -> Result<(), RuntimeError> {
        let dir = self.checkpoint_unless_saved().await?;
        let streamed = self.own_data.as_ref().map(|d| d.train_examples());
        let plan = replica_spec(&self.run, (0, 0), Some(&dir), streamed);
        let mut attempt = 1;
        loop {
            match self.form_from(&plan).await {
                Ok(()) => break,
                // A worker lost while the generation forms: try again without it.
                Err(e) if attempt < FORM_ATTEMPTS => {
                    tracing::warn!(attempt, error = %e, "forming the generation failed; trying again");
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
        let world = self.workers.len();
        self.balance.reset(world);
        let step = self.ledger.step;
        self.bar.suspend(|| tracing::info!(step, world, "cluster re-formed; training continues"));
        Ok(())
    }

    async fn form_from(&mut self, plan: &ReplicaSpec) -> Result<(), RuntimeError> {
        let Some(cluster) = self.cluster.as_mut() else {
            return Err(RuntimeError::Coordinator("re-forming needs a cluster".into()));
        };
        cluster.retire();
        self.workers = cluster.form(plan).await?;
        let infos =
            gather(&self.workers, self.run.options.step_timeout, self.guard(), |_, p| WorkerMsg::Info(p)).await?;
        check_infos(&infos)
    }

    /// Tells a cluster's worker processes that the run is over.
    pub(super) async fn close_cluster(&mut self, ok: bool, message: &str) {
        if let Some(c) = self.cluster.take() {
            c.finish(ok, message).await;
        }
    }
}
