//! ε-greedy exploration schedule (paper §3.1: ε starts at 1 and decreases; the digest's default
//! shape is linear, then held).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EpsilonSchedule {
    pub start: f64,
    pub end: f64,
    pub decay_steps: u64,
}

impl Default for EpsilonSchedule {
    fn default() -> Self {
        Self { start: 1.0, end: 0.1, decay_steps: 1000 }
    }
}

impl EpsilonSchedule {
    /// ε at `step`: linear from `start` to `end` over `decay_steps`, then held at `end`.
    pub fn at(&self, step: u64) -> f64 {
        if step >= self.decay_steps {
            return self.end;
        }
        let t = step as f64 / self.decay_steps as f64;
        self.start + (self.end - self.start) * t
    }

    /// Both ends must be probabilities.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [("start", self.start), ("end", self.end)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(Error::Invalid(format!("epsilon.{name} must be in [0, 1], got {v}")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_then_held() {
        let s = EpsilonSchedule::default();
        assert_eq!(s.at(0), 1.0);
        assert!((s.at(500) - 0.55).abs() < 1e-12);
        assert!((s.at(250) - 0.775).abs() < 1e-12);
        assert!((s.at(1000) - 0.1).abs() < 1e-12);
        assert_eq!(s.at(1_000_000), 0.1);
        assert!(s.at(999) > s.at(1000));
    }

    #[test]
    fn no_decay_steps_means_end_at_once() {
        let s = EpsilonSchedule { start: 1.0, end: 0.05, decay_steps: 0 };
        assert_eq!(s.at(0), 0.05);
    }

    #[test]
    fn config_defaults_and_unknown_fields() {
        let s: EpsilonSchedule = toml::from_str("end = 0.05").unwrap();
        assert_eq!(s, EpsilonSchedule { end: 0.05, ..Default::default() });
        assert!(toml::from_str::<EpsilonSchedule>("ends = 0.05").is_err());
        assert!(s.validate().is_ok());
        assert!(EpsilonSchedule { start: 1.5, ..Default::default() }.validate().is_err());
    }
}
