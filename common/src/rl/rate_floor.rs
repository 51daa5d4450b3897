//! `train.rate_floor` (not the paper's): a term against a controller's collapse onto one action.
//!
//! With a single λ for the whole network, at most one controller sits near the point where its
//! actions' rewards cross; the others take one action for every input, and their decisions stop
//! depending on the input. The floor adds a bonus to the regression target of a controller's
//! runner-up action (the one with the second-highest mean Q over the rows it decided) while the share
//! of those rows on which that action is the greedy choice is under `rate`:
//! `bonus · (rate − share) / rate · spread`, on every row alike, where `spread` is the mean absolute
//! centered target of those rows (how far, on average, an action's reward lies from the mean of the
//! row's): the bonus is in units of the controller's own reward differences, so one setting suits
//! rewards of any scale (a chain's per-example reward, a cascade's mini-bag marginal credit). A bonus
//! that is the same for every row moves the threshold between the two actions, not their order: the
//! rows the runner-up takes are still the ones on which the controller's own reward differences rank
//! it highest. The bonus fades as the share reaches the floor; where the share settles depends on how
//! hard the reward pulls the other way (docs/RESULTS.md, stop 34: the cascade's gates at 18-64 % with
//! a floor of 0.2, one gate at 5 % with 0.15).
//!
//! Computed on the device from the step's Q-values: no host read. With several workers each judges the
//! share on its own rows (the gradients are then all-reduced as usual), so a run's result depends on
//! the worker count as its batches' split already does.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// `train.rate_floor = { rate = 0.2, bonus = 1.0 }` (configs/cascade_rate_floor.toml).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateFloor {
    /// The share of a controller's decisions under which its runner-up action earns the bonus.
    pub rate: f64,
    /// The bonus at a share of zero, in units of the mean absolute centered target.
    pub bonus: f64,
}

impl RateFloor {
    pub fn validate(&self) -> Result<()> {
        if !(self.rate > 0.0 && self.rate <= 0.5) {
            return Err(Error::Invalid(format!("rate_floor.rate must be in (0, 0.5], got {}", self.rate)));
        }
        if !(self.bonus > 0.0 && self.bonus.is_finite()) {
            return Err(Error::Invalid(format!("rate_floor.bonus must be positive, got {}", self.bonus)));
        }
        Ok(())
    }

    /// `targets [n, k]` (every action's reward per row) with the bonus added to the runner-up's
    /// column, judged by the controller's Q-values `scores [n, k]` on the same rows.
    pub fn apply(&self, scores: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let (n, k) = super::check_action_targets("rate_floor", scores, targets)?;
        if n == 0 || k < 2 {
            return Ok(targets.shallow_clone());
        }
        let scores = scores.detach();
        let device = scores.device();
        // The runner-up by mean Q; a stable sort keeps the lower index first among equals.
        let (_, order) = scores.f_mean_dim(0, false, Kind::Float)?.f_sort_stable(true, 0, true)?;
        let runner_up = order.f_narrow(0, 1, 1)?;
        let greedy = scores.f_argmax(1, false)?;
        let share = greedy.f_eq_tensor(&runner_up)?.f_to_kind(Kind::Float)?.f_mean(Kind::Float)?;
        let deficit = share.f_neg()?.f_add_scalar(self.rate)?.f_clamp_min(0.0)?.f_div_scalar(self.rate)?;
        let column = Tensor::f_zeros([k], (Kind::Float, device))?.f_index_fill(0, &runner_up, 1.0)?;
        let t = targets.detach().f_to_kind(Kind::Float)?;
        let spread = t.f_sub(&t.f_mean_dim(1, true, Kind::Float)?)?.f_abs()?.f_mean(Kind::Float)?;
        let bonus = column.f_mul(&deficit.f_mul(&spread)?)?.f_mul_scalar(self.bonus)?.f_to_kind(targets.kind())?;
        Ok(targets.f_add(&bonus.f_unsqueeze(0)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rl::test_util::*;

    fn floor() -> RateFloor {
        RateFloor { rate: 0.5, bonus: 0.5 }
    }

    #[test]
    fn the_runner_up_under_the_floor_earns_the_bonus() {
        // Four rows, three actions. Mean Q: [0.75, 0.25, −1]: action 0 leads, action 1 is the
        // runner-up; it is the greedy choice on one row of four (share 1/4, floor 1/2). Every row of
        // targets is a permutation of (+0.3, 0, −0.3) about its mean: spread 0.2. The bonus is
        // 0.5 · (0.5 − 0.25) / 0.5 · 0.2 = 0.05 on column 1 of every row.
        let scores =
            Tensor::from_slice(&[1.0f32, 0.0, -1.0, 1.0, 0.0, -1.0, 1.0, 0.0, -1.0, 0.0, 1.0, -1.0]).view([4, 3]);
        let targets =
            Tensor::from_slice(&[1.3f32, 1.0, 0.7, 0.0, 0.3, -0.3, 0.3, -0.3, 0.0, 2.0, 2.3, 1.7]).view([4, 3]);
        let out = floor().apply(&scores, &targets).unwrap();
        let expected = [1.3, 1.05, 0.7, 0.0, 0.35, -0.3, 0.3, -0.25, 0.0, 2.0, 2.35, 1.7];
        assert_close(&vals(&out), &expected, 1e-6);
    }

    #[test]
    fn no_bonus_at_or_over_the_floor() {
        // Each action is greedy on two rows of four: the runner-up's share 1/2 is the floor.
        let scores = Tensor::from_slice(&[1.0f32, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.5]).view([4, 2]);
        let targets = Tensor::from_slice(&[0.1f32, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]).view([4, 2]);
        assert_close(&vals(&floor().apply(&scores, &targets).unwrap()), &vals(&targets), 1e-7);
    }

    #[test]
    fn a_collapsed_controller_gets_the_whole_bonus_and_ties_go_to_the_lower_index() {
        // Action 2 greedy everywhere; actions 0 and 1 tie for the runner-up: action 0 takes it.
        // Spread 0.1, share 0: the bonus is 0.5 · 1 · 0.1 = 0.05.
        let scores = Tensor::from_slice(&[0.0f32, 0.0, 1.0, 0.0, 0.0, 2.0]).view([2, 3]);
        let targets = Tensor::from_slice(&[0.15f32, -0.15, 0.0, 0.0, 0.15, -0.15]).view([2, 3]);
        let expected = [0.2, -0.15, 0.0, 0.05, 0.15, -0.15];
        assert_close(&vals(&floor().apply(&scores, &targets).unwrap()), &expected, 1e-6);
    }

    #[test]
    fn empty_rows_and_bad_settings() {
        let empty = Tensor::zeros([0, 3], (Kind::Float, tch::Device::Cpu));
        assert_eq!(floor().apply(&empty, &empty).unwrap().size(), [0, 3]);
        let scores = Tensor::zeros([2, 3], (Kind::Float, tch::Device::Cpu));
        assert!(floor().apply(&scores, &scores.narrow(1, 0, 2)).is_err(), "targets of another shape");
        assert!(RateFloor { rate: 0.0, bonus: 0.1 }.validate().is_err());
        assert!(RateFloor { rate: 0.6, bonus: 0.1 }.validate().is_err());
        assert!(RateFloor { rate: 0.1, bonus: 0.0 }.validate().is_err());
        assert!(RateFloor { rate: 0.1, bonus: f64::NAN }.validate().is_err());
        assert!(floor().validate().is_ok());
    }
}
