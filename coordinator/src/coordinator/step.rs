//! One step of the protocol, as the coordinator drives it: orders → reports → commit (with the
//! updated baselines) or abort → acknowledgements; then the step is booked in the run ledger.
use std::time::Instant;

use d2nn_common::data::split;
use d2nn_common::rl::BaselineStore;
use d2nn_common::train::{StepEnd, StepSplit, StepStats};
use d2nn_worker::protocol::{Abort, Acknowledged, Commit, StepOrder, StepOutcome, StepReport, WorkerMsg};

use super::actor::CoordState;
use super::replicas::gather;
use super::{describe, OnWorkerError, RuntimeError, StepRecord};

/// The reports' failures, after checking that every rank answered this step as itself.
fn failures_of(reports: &[StepReport], step: u64) -> Result<Vec<(usize, String)>, RuntimeError> {
    let mut failures = Vec::new();
    for (rank, r) in reports.iter().enumerate() {
        if r.rank != rank || r.step != step {
            return Err(RuntimeError::Protocol(format!(
                "rank {rank} answered step {step} as rank {} step {}",
                r.rank, r.step
            )));
        }
        if let StepOutcome::Failed(e) = &r.outcome {
            failures.push((rank, e.clone()));
        }
    }
    let verdicts: Vec<bool> = reports.iter().map(|r| r.all_ranks_ok).collect();
    if failures.is_empty() && verdicts.iter().any(|&ok| !ok) {
        failures.push((0, format!("the all-reduced status contradicts the reports: {verdicts:?}")));
    }
    Ok(failures)
}

/// The ranks' mean compute, all-reduce and barrier wait; the rest of `wall` is coordination.
fn split_of(reports: &[StepReport], acks: &[Acknowledged], wall: f64) -> StepSplit {
    let n = reports.len() as f64;
    let mean = |f: &dyn Fn(&StepReport) -> f64| reports.iter().map(f).sum::<f64>() / n;
    let compute = mean(&|r| r.compute_seconds) + acks.iter().map(|a| a.update_seconds).sum::<f64>() / n;
    let allreduce = mean(&|r| r.allreduce_seconds);
    let wait = mean(&|r| r.wait_seconds);
    StepSplit { compute, allreduce, wait, coordination: (wall - compute - allreduce - wait).max(0.0) }
}

impl CoordState {
    /// Runs the ledger's next step on every replica and books it.
    pub(super) async fn run_step(&mut self) -> Result<(), RuntimeError> {
        // From before the orders are made: cutting shares and reading examples out (with
        // `data.source = "coordinator"`) is the coordinator's part of the step.
        let started = Instant::now();
        let place = self.ledger.place()?;
        let step = place.step;
        let timeout = self.run.options.step_timeout;
        let baselines_used = self.ledger.baseline.node_values();
        let t = &self.ledger.cfg.train;
        let shares = self.balance.shares(t.batch_size, t.bag_size)?;
        let mut orders = Vec::with_capacity(shares.len());
        for examples in split(&place.examples, &shares) {
            let data = self.own_data.as_ref().map(|d| d.examples(examples)).transpose()?;
            orders.push(StepOrder {
                step,
                epoch: place.epoch,
                step_in_epoch: place.step_in_epoch,
                examples: examples.to_vec(),
                data,
                lr: place.lr,
                baselines: baselines_used.clone(),
            });
        }
        let reports: Vec<StepReport> =
            gather(&self.workers, timeout, self.guard(), |rank, p| WorkerMsg::Step(orders[rank].clone().into(), p))
                .await?;
        let failures = failures_of(&reports, step)?;
        self.balance.observe(&reports, &shares);
        let mut pooled = None;
        let acks: Vec<Acknowledged> = if failures.is_empty() {
            let mut stats = StepStats::default();
            for r in &reports {
                if let StepOutcome::Ok(s) = &r.outcome {
                    stats.merge(s)?;
                }
            }
            let shape: Vec<usize> = self.ledger.baseline.values.iter().map(Vec::len).collect();
            if stats.rewards.actions_per_node() != shape {
                return Err(RuntimeError::Protocol(format!(
                    "step {step}: reward statistics of shape {:?} for a graph with {shape:?} actions",
                    stats.rewards.actions_per_node()
                )));
            }
            self.ledger.baseline.update(&stats.rewards);
            let want_digest = self.run.options.digest_every.is_some_and(|k| (step + 1).is_multiple_of(k.max(1)));
            let commit = Commit { step, baselines: self.ledger.baseline.node_values(), want_digest };
            self.committing = Some(step);
            let acks = gather(&self.workers, timeout, self.guard(), |_, p| WorkerMsg::Commit(commit.clone().into(), p))
                .await?;
            self.committing = None;
            pooled = Some(stats);
            acks
        } else {
            let abort = Abort { step, reason: describe(&failures) };
            gather(&self.workers, timeout, self.guard(), |_, p| WorkerMsg::Abort(abort.clone().into(), p)).await?
        };
        let wall = started.elapsed().as_secs_f64();
        let end = pooled.as_ref().map_or(StepEnd::Aborted, StepEnd::Committed);
        self.ledger.record(end, wall, Some(split_of(&reports, &acks, wall)))?;
        let record = StepRecord {
            step,
            examples: orders.into_iter().map(|o| o.examples).collect(),
            committed: failures.is_empty(),
            pooled,
            baselines_used,
            baselines_after: self.ledger.baseline.node_values(),
            digests: acks.iter().filter_map(|a| a.digest.clone()).collect(),
            failures,
            wall_seconds: wall,
        };
        if let Some(on_step) = self.run.on_step.as_mut() {
            on_step(&record);
        }
        if record.digests.iter().any(|d| d.sha256 != record.digests[0].sha256) {
            return Err(RuntimeError::Diverged { step, digests: record.digests });
        }
        if !record.failures.is_empty() {
            match self.run.options.on_worker_error {
                OnWorkerError::Stop => return Err(RuntimeError::StepFailed { step, failures: record.failures }),
                OnWorkerError::SkipBatch => {
                    tracing::warn!(step, failures = %describe(&record.failures), "step aborted; its batch is retried")
                }
            }
        }
        self.log()
    }
}
