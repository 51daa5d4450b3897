//! What the coordinator writes, with rank 0's help: checkpoints (rank 0 writes the tensor files,
//! every replica being identical; the ledger adds the position and the baselines), the metrics
//! log with the progress bar, and the final evaluation.
use std::path::PathBuf;
use std::time::Instant;

use d2nn_common::checkpoint::{WriteSteps, MODEL_FILE};
use d2nn_common::train::{RunDir, Summary};
use d2nn_worker::protocol::{EvalRequest, SaveRequest, WorkerMsg};

use super::actor::CoordState;
use super::replicas::gather;
use super::RuntimeError;

impl CoordState {
    pub(super) async fn checkpoint_unless_saved(&mut self) -> Result<PathBuf, RuntimeError> {
        match self.ledger.saved_now() {
            Some(dir) => Ok(dir.to_path_buf()),
            None => self.checkpoint().await,
        }
    }

    pub(super) async fn checkpoint(&mut self) -> Result<PathBuf, RuntimeError> {
        let started = Instant::now();
        let mut writes = WriteSteps::unlimited();
        let staging = self.ledger.begin_checkpoint(&mut writes)?;
        let step = self.ledger.step;
        let keep_best = self.ledger.cfg.checkpoint.keep_best;
        let val_metric = keep_best && self.own_data.is_none();
        let req = SaveRequest { dir: staging.clone(), step, val_metric };
        let deadline = Some(self.run.options.save_timeout);
        let mut saved =
            gather(&self.workers[..1], deadline, self.guard(), |_, p| WorkerMsg::Save(req.clone().into(), p))
                .await?
                .remove(0);
        if let Some(own) = self.own_data.as_mut().filter(|_| keep_best) {
            saved.val_metric = own.validation(&self.run, &staging.join(MODEL_FILE))?;
        }
        let dir = self.ledger.commit_checkpoint(&staging, saved, self.workers.len(), &mut writes)?;
        tracing::info!(step, dir = %dir.display(), seconds = started.elapsed().as_secs_f64(), "checkpoint");
        Ok(dir)
    }

    /// Moves the progress bar; when a metrics line is due, writes it and shows it.
    pub(super) fn log(&mut self) -> Result<(), RuntimeError> {
        self.bar.set_position(self.ledger.step);
        let Some(line) = self.ledger.log_if_due()? else { return Ok(()) };
        self.bar.set_message(format!(
            "epoch {} loss {:.4} acc {:.3} cost {:.3} {:.0} ex/s",
            line.epoch + 1,
            line.loss,
            line.train_accuracy,
            line.mean_cost_fraction,
            line.examples_per_sec
        ));
        if let Some(on_log) = self.run.on_log.as_mut() {
            on_log(&line, self.ledger.last_step);
        }
        Ok(())
    }

    /// The end of a successful run: rank 0 saves its replica and evaluates it (or, when the
    /// workers hold no data, the coordinator evaluates the final checkpoint's parameters).
    pub(super) async fn finish(&mut self) -> Result<Summary, RuntimeError> {
        self.bar.finish_and_clear();
        if self.own_data.is_some() {
            let checkpoint = self.checkpoint_unless_saved().await?;
            let model_file = self.ledger.run_dir.file(RunDir::MODEL);
            std::fs::copy(checkpoint.join(MODEL_FILE), &model_file).map_err(|e| {
                RuntimeError::Coordinator(format!("copying the final parameters to {}: {e}", model_file.display()))
            })?;
            let l = &self.ledger;
            let run = (l.step, l.wall_seconds(), l.examples_per_sec(), self.workers.len());
            let own = self.own_data.as_mut().ok_or_else(|| RuntimeError::Coordinator("no data".into()))?;
            let summary = own.summarize(&self.run, &model_file, run)?;
            return Ok(self.ledger.finish(summary)?);
        }
        let req = EvalRequest {
            save_model: Some(self.ledger.run_dir.file(RunDir::MODEL)),
            steps: self.ledger.step,
            wall_seconds: self.ledger.wall_seconds(),
            examples_per_sec: self.ledger.examples_per_sec(),
            workers: self.workers.len(),
        };
        let deadline = Some(self.run.options.save_timeout);
        let summary =
            gather(&self.workers[..1], deadline, self.guard(), |_, p| WorkerMsg::Evaluate(req.clone().into(), p))
                .await?
                .remove(0);
        Ok(self.ledger.finish(summary)?)
    }
}
