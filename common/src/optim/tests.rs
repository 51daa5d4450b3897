//! Cross-cutting optimizer tests (config, resume, strict loading, convergence) and the helpers
//! the per-file tests share.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::*;

/// A 1-D f64 leaf parameter; f64 keeps hand-computed expectations exact to ~1e-15.
pub(super) fn param(values: &[f64]) -> Tensor {
    Tensor::from_slice(values).set_requires_grad(true)
}

/// Makes `p.grad()` exactly `g` through autograd, the way the training loop produces grads.
pub(super) fn set_grad(p: &Tensor, g: &[f64]) {
    p.shallow_clone().zero_grad();
    (p * Tensor::from_slice(g)).sum(Kind::Double).backward();
}

pub(super) fn assert_close(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "got {got:?}, want {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= 1e-12 * w.abs().max(1.0), "got {got:?}, want {want:?}");
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Wrapper {
    opt: OptimizerConfig,
    #[serde(default)]
    sched: LrSchedule,
}

#[test]
fn toml_fills_adam_defaults() {
    let w: Wrapper = toml::from_str(r#"opt = { kind = "adam", beta1 = 0.8 }"#).unwrap();
    let want = OptimizerConfig::Adam { beta1: 0.8, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled: false };
    assert_eq!(w.opt, want);
    assert_eq!(w.sched, LrSchedule::Constant);
    let w: Wrapper =
        toml::from_str("opt = { kind = \"sgd\", nesterov = true }\nsched = { kind = \"cosine\", warmup_steps = 5 }")
            .unwrap();
    let sgd = OptimizerConfig::Sgd { momentum: 0.9, nesterov: true, weight_decay: 0.0 };
    assert_eq!(w.opt, sgd);
    assert_eq!(w.sched, LrSchedule::Cosine { warmup_steps: 5, min_factor: 0.0 });
}

#[test]
fn toml_rejects_unknown_and_missing_fields_by_name() {
    let err = toml::from_str::<Wrapper>(r#"opt = { kind = "sgd", momentun = 0.9 }"#).unwrap_err();
    assert!(err.to_string().contains("momentun"), "{err}");
    let err = toml::from_str::<Wrapper>(r#"opt = { kind = "adam", lr = 0.1 }"#).unwrap_err();
    assert!(err.to_string().contains("`lr`"), "{err}");
    let err = toml::from_str::<Wrapper>("opt = { kind = \"sgd\" }\nsched = { kind = \"step\", every_steps = 5 }")
        .unwrap_err();
    assert!(err.to_string().contains("gamma"), "{err}");
}

#[test]
fn default_config_round_trips_and_validates() {
    let w = Wrapper { opt: OptimizerConfig::default(), sched: LrSchedule::default() };
    let back: Wrapper = toml::from_str(&toml::to_string(&w).unwrap()).unwrap();
    assert_eq!(back, w);
    let sgd = OptimizerConfig::Sgd { momentum: 0.9, nesterov: false, weight_decay: 5e-4 };
    assert_eq!(w.opt, sgd);
    assert!(w.opt.validate().is_ok());
}

#[test]
fn validate_names_bad_hyper_parameters() {
    let cases = [
        (OptimizerConfig::Sgd { momentum: 1.0, nesterov: false, weight_decay: 0.0 }, "momentum"),
        (OptimizerConfig::Sgd { momentum: 0.0, nesterov: true, weight_decay: 0.0 }, "nesterov"),
        (OptimizerConfig::Sgd { momentum: 0.9, nesterov: false, weight_decay: -1.0 }, "weight_decay"),
        (OptimizerConfig::Adam { beta1: 0.9, beta2: 1.0, eps: 1e-8, weight_decay: 0.0, decoupled: true }, "beta2"),
        (OptimizerConfig::Adam { beta1: 0.9, beta2: 0.99, eps: 0.0, weight_decay: 0.0, decoupled: true }, "eps"),
    ];
    for (cfg, field) in cases {
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains(field), "{cfg:?}: {err}");
        assert!(try_build(&cfg, &flat(&[param(&[1.0])])).is_err());
    }
}

#[test]
fn step_rejects_other_parameters_and_bad_lr() {
    let p = flat(&[param(&[1.0])]);
    let mut opt = build(&OptimizerConfig::default(), &p);
    let err = opt.step(&flat(&[param(&[1.0, 2.0])]), 0.1).unwrap_err().to_string();
    assert!(err.contains("built for 1 parameters (1 elements)"), "{err}");
    assert!(opt.step(&p, -0.1).is_err());
    assert!(opt.step(&p, f64::NAN).is_err());
    // A gradient that left the flat buffer would be missed by the update: refused.
    p.params()[0].grad().set_data(&Tensor::from_slice(&[1.0f64]));
    assert!(opt.step(&p, 0.1).unwrap_err().to_string().contains("replaced"));
    assert_eq!(opt.steps(), 0);
}

/// The flat buffers of `params` (no extra slots).
pub(super) fn flat(params: &[Tensor]) -> FlatParams {
    FlatParams::new(params, 0).unwrap()
}

fn adam_cfg() -> OptimizerConfig {
    OptimizerConfig::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, decoupled: true }
}

fn sgd_cfg() -> OptimizerConfig {
    OptimizerConfig::Sgd { momentum: 0.9, nesterov: true, weight_decay: 5e-4 }
}

fn make_params() -> Vec<Tensor> {
    let opts = (Kind::Float, Device::Cpu);
    crate::exec::seeded_draws(11, || {
        vec![Tensor::randn([2, 3], opts).set_requires_grad(true), Tensor::randn([4], opts).set_requires_grad(true)]
    })
}

/// A grad that depends on the parameter and the step, so any state difference shows up.
fn train(opt: &mut dyn Optimizer, flat: &FlatParams, steps: std::ops::Range<u64>) {
    let sched = LrSchedule::Cosine { warmup_steps: 2, min_factor: 0.1 };
    for step in steps {
        flat.zero_grad().unwrap();
        for p in flat.params() {
            let loss = (p * p * (1.0 + 0.1 * step as f64) + p.sin()).sum(Kind::Float);
            loss.backward();
        }
        opt.step(flat, sched.lr_at(0.05, step, 6)).unwrap();
    }
}

fn deep_copy(params: &FlatParams) -> FlatParams {
    flat(&params.params().iter().map(|p| p.detach().copy().set_requires_grad(true)).collect::<Vec<_>>())
}

#[test]
fn resume_from_state_tensors_is_bitwise_identical() {
    for cfg in [sgd_cfg(), adam_cfg()] {
        let a = flat(&make_params());
        let mut opt_a = build(&cfg, &a);
        train(opt_a.as_mut(), &a, 0..3);
        // What a checkpoint would hold: CPU copies, detached from the live state.
        let saved: Vec<(String, Tensor)> = opt_a.state_tensors().into_iter().map(|(n, t)| (n, t.copy())).collect();
        assert!(!saved.is_empty());

        let b = deep_copy(&a);
        let mut opt_b = build(&cfg, &b);
        opt_b.load_state(&saved, opt_a.steps()).unwrap();
        // Control: the same parameters without the optimizer state must diverge, or this test
        // could not tell a working resume from a broken one.
        let c = deep_copy(&a);
        let mut opt_c = build(&cfg, &c);

        train(opt_a.as_mut(), &a, 3..6);
        train(opt_b.as_mut(), &b, 3..6);
        train(opt_c.as_mut(), &c, 3..6);
        assert_eq!(opt_a.steps(), 6);
        assert_eq!(opt_b.steps(), 6);
        for (pa, pb) in a.params().iter().zip(b.params()) {
            assert!(pa.equal(pb), "{cfg:?}: parameters diverged after resume");
        }
        assert!(a.params().iter().zip(c.params()).any(|(pa, pc)| !pa.equal(pc)), "{cfg:?}: control did not diverge");
        for ((na, ta), (nb, tb)) in opt_a.state_tensors().iter().zip(&opt_b.state_tensors()) {
            assert_eq!(na, nb);
            assert!(ta.equal(tb), "{cfg:?}: state `{na}` diverged after resume");
        }
    }
}

fn load_err(cfg: &OptimizerConfig, edit: impl FnOnce(&mut Vec<(String, Tensor)>), steps: u64) -> String {
    let params = flat(&make_params());
    let mut opt = build(cfg, &params);
    let mut state = opt.state_tensors();
    edit(&mut state);
    opt.load_state(&state, steps).unwrap_err().to_string()
}

fn replace(state: &mut [(String, Tensor)], name: &str, t: Tensor) {
    state.iter_mut().find(|(n, _)| n == name).unwrap().1 = t;
}

#[test]
fn load_state_errors_name_the_tensor() {
    let (sgd, adam) = (sgd_cfg(), adam_cfg());
    let err = load_err(&adam, |s| s.retain(|(n, _)| n != "adam.v.1"), 0);
    assert!(err.contains("`adam.v.1`") && err.contains("missing"), "{err}");
    let err = load_err(&sgd, |s| replace(s, "sgd.momentum.0", Tensor::zeros([5], (Kind::Float, Device::Cpu))), 0);
    assert!(err.contains("`sgd.momentum.0`") && err.contains("[5]"), "{err}");
    let err = load_err(&adam, |s| replace(s, "adam.m.1", Tensor::zeros([4], (Kind::Double, Device::Cpu))), 0);
    assert!(err.contains("`adam.m.1`") && err.contains("Double"), "{err}");
    let err = load_err(&sgd, |s| s.push(("sgd.momentum.2".into(), Tensor::from(1.0f32))), 0);
    assert!(err.contains("`sgd.momentum.2`") && err.contains("unexpected"), "{err}");
    let err = load_err(&adam, |s| replace(s, "adam.step.0", Tensor::from(9i64)), 3);
    assert!(err.contains("`adam.step.0`"), "{err}");
}

#[test]
fn failed_load_changes_nothing() {
    let params = flat(&make_params());
    let mut donor = build(&adam_cfg(), &params);
    train(donor.as_mut(), &params, 0..2);
    let mut state: Vec<_> = donor.state_tensors().into_iter().map(|(n, t)| (n, t.copy())).collect();
    state.retain(|(n, _)| n != "adam.v.1");
    let mut opt = build(&adam_cfg(), &params);
    assert!(opt.load_state(&state, 2).is_err());
    assert_eq!(opt.steps(), 0);
    for (name, t) in opt.state_tensors() {
        assert_eq!(t.abs().sum(Kind::Double).double_value(&[]), 0.0, "`{name}` was partly loaded");
    }
}

/// f(x) = Σ s·(x - t)², minimised from x = 0; returns the final max |x - t|.
fn minimise_quadratic(cfg: &OptimizerConfig, base_lr: f64, sched: &LrSchedule, steps: u64) -> f64 {
    let target = Tensor::from_slice(&[1.0f32, -2.0, 3.0]);
    let scale = Tensor::from_slice(&[1.0f32, 0.5, 2.0]);
    let x = Tensor::zeros([3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let params = flat(&[x.shallow_clone()]);
    let mut opt = build(cfg, &params);
    for step in 0..steps {
        x.shallow_clone().zero_grad();
        let d = &x - &target;
        (&d * &d * &scale).sum(Kind::Float).backward();
        opt.step(&params, sched.lr_at(base_lr, step, steps)).unwrap();
    }
    (&x - &target).abs().max().double_value(&[])
}

#[test]
fn sgd_momentum_minimises_a_quadratic() {
    let cfg = OptimizerConfig::Sgd { momentum: 0.9, nesterov: false, weight_decay: 0.0 };
    let err = minimise_quadratic(&cfg, 0.05, &LrSchedule::Constant, 300);
    assert!(err < 1e-3, "SGD ended {err} from the optimum");
    let nesterov = OptimizerConfig::Sgd { momentum: 0.9, nesterov: true, weight_decay: 0.0 };
    let err = minimise_quadratic(&nesterov, 0.05, &LrSchedule::Constant, 300);
    assert!(err < 1e-3, "Nesterov SGD ended {err} from the optimum");
}

#[test]
fn adam_minimises_a_quadratic() {
    let cfg = OptimizerConfig::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled: false };
    let sched = LrSchedule::Cosine { warmup_steps: 10, min_factor: 0.0 };
    let err = minimise_quadratic(&cfg, 0.1, &sched, 500);
    assert!(err < 1e-2, "Adam ended {err} from the optimum");
}

/// Every undefined gradient becomes zeros of its parameter's shape; a defined one is left alone.
#[test]
fn missing_grads_are_defined_as_zeros_and_present_ones_kept() {
    let ran = param(&[1.0, 2.0]);
    let idle = Tensor::from_slice(&[3.0f64, 4.0, 5.0, 6.0]).view([2, 2]).set_requires_grad(true);
    let also_idle = param(&[7.0]);
    set_grad(&ran, &[0.5, -1.0]);
    let params = [ran.shallow_clone(), idle.shallow_clone(), also_idle.shallow_clone()];
    define_missing_grads(&params).unwrap();
    assert_eq!(Vec::<f64>::try_from(ran.grad()).unwrap(), vec![0.5, -1.0]);
    assert_eq!(idle.grad().size(), vec![2, 2]);
    assert_eq!(Vec::<f64>::try_from(idle.grad().flatten(0, -1)).unwrap(), vec![0.0; 4]);
    assert_eq!(Vec::<f64>::try_from(also_idle.grad()).unwrap(), vec![0.0]);
    // Nothing left to define: no backward at all.
    define_missing_grads(&params).unwrap();
    assert_eq!(Vec::<f64>::try_from(ran.grad()).unwrap(), vec![0.5, -1.0]);
}
