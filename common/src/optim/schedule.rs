//! Learning-rate schedules: pure functions of the step, so a resumed run needs no schedule state.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LrSchedule {
    #[default]
    Constant,
    /// `base · gamma^⌊step / every_steps⌋`.
    Step { every_steps: u64, gamma: f64 },
    /// Linear warm-up over `warmup_steps`, then a half cosine from `base` down to
    /// `min_factor · base` at `total_steps`.
    Cosine {
        warmup_steps: u64,
        #[serde(default)]
        min_factor: f64,
    },
}

impl LrSchedule {
    /// The learning rate for the update with 0-based index `step` out of `total_steps`.
    /// Warm-up uses `(step + 1) / warmup_steps`, so the first update already moves (a zero lr
    /// would waste a step) and the last warm-up step reaches `base`. Steps past `total_steps`
    /// stay at the minimum; with `total_steps <= warmup_steps` the cosine part is the minimum.
    pub fn lr_at(&self, base_lr: f64, step: u64, total_steps: u64) -> f64 {
        match *self {
            LrSchedule::Constant => base_lr,
            LrSchedule::Step { every_steps, gamma } => {
                // every_steps = 0 is rejected by `validate`; treat it as "never decay" here.
                let k = step.checked_div(every_steps).unwrap_or(0);
                base_lr * gamma.powf(k as f64)
            }
            LrSchedule::Cosine { warmup_steps, min_factor } => {
                if step < warmup_steps {
                    return base_lr * (step + 1) as f64 / warmup_steps as f64;
                }
                let span = total_steps.saturating_sub(warmup_steps);
                let progress = if span == 0 { 1.0 } else { ((step - warmup_steps) as f64 / span as f64).min(1.0) };
                let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                base_lr * (min_factor + (1.0 - min_factor) * cosine)
            }
        }
    }

    pub fn validate(&self) -> Result<()> {
        match *self {
            LrSchedule::Constant => Ok(()),
            LrSchedule::Step { every_steps, gamma } => {
                if every_steps == 0 {
                    return Err(Error::Invalid("lr schedule: every_steps must be > 0".into()));
                }
                if !(gamma > 0.0 && gamma.is_finite()) {
                    let msg = format!("lr schedule: gamma = {gamma} must be finite and > 0");
                    return Err(Error::Invalid(msg));
                }
                Ok(())
            }
            LrSchedule::Cosine { min_factor, .. } => {
                if !(0.0..=1.0).contains(&min_factor) {
                    let msg = format!("lr schedule: min_factor = {min_factor} must be in [0, 1]");
                    return Err(Error::Invalid(msg));
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_is_constant() {
        for step in [0, 1, 999, 10_000] {
            assert_eq!(LrSchedule::Constant.lr_at(0.1, step, 1000), 0.1);
        }
    }

    #[test]
    fn step_decay_changes_exactly_at_boundaries() {
        let s = LrSchedule::Step { every_steps: 10, gamma: 0.5 };
        let lr = |step| s.lr_at(0.1, step, 100);
        assert_eq!(lr(0), 0.1);
        assert_eq!(lr(9), 0.1);
        assert_eq!(lr(10), 0.05);
        assert_eq!(lr(19), 0.05);
        assert_eq!(lr(20), 0.025);
        assert!((lr(35) - 0.0125).abs() < 1e-15);
    }

    #[test]
    fn cosine_warms_up_then_decays_to_min_at_total() {
        let s = LrSchedule::Cosine { warmup_steps: 10, min_factor: 0.1 };
        let lr = |step| s.lr_at(2.0, step, 100);
        assert!(lr(0) > 0.0 && lr(0) <= 2.0 / 10.0 + 1e-12, "first warm-up lr {}", lr(0));
        for step in 0..9 {
            assert!(lr(step + 1) > lr(step), "warm-up not increasing at {step}");
        }
        assert_eq!(lr(9), 2.0);
        assert_eq!(lr(10), 2.0);
        for step in 10..100 {
            assert!(lr(step + 1) < lr(step), "cosine not decreasing at {step}");
        }
        // Halfway through the cosine: min + (1 - min)/2 of base.
        assert!((lr(55) - 2.0 * 0.55).abs() < 1e-12, "{}", lr(55));
        assert!((lr(100) - 0.2).abs() < 1e-12, "{}", lr(100));
        assert!((lr(500) - 0.2).abs() < 1e-12);
    }

    #[test]
    fn validate_rejects_degenerate_schedules() {
        assert!(LrSchedule::Step { every_steps: 0, gamma: 0.5 }.validate().is_err());
        assert!(LrSchedule::Cosine { warmup_steps: 0, min_factor: 1.5 }.validate().is_err());
        assert!(LrSchedule::Cosine { warmup_steps: 5, min_factor: 0.0 }.validate().is_ok());
    }
}
