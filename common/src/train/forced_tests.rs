//! The cascade's forced passes and `q_every_action`'s targets, against hand-computed losses.
use tch::{Device, Kind, Tensor};

use super::{config, small};
use crate::config::RunConfig;
use crate::exec::DecisionKey;
use crate::rl::{QContinuation, QTargets};
use crate::train::{build_model, forced, step, BranchPaths};

/// Σ over examples and decisions of (Q − target)² / B for the cascade on 64 training images, with
/// per-example rewards; `continue_target(i, r1, r2, greedy2)` is gate1's `continue` target from the
/// rewards of the two paths after it and gate2's greedy action on example i.
fn cascade_q_loss(cfg: &RunConfig, continue_target: impl Fn(f64, f64, i64) -> f64) -> (f64, f64) {
    let (dataset, model) = build_model(cfg, "cascade.toml", Device::Cpu).unwrap();
    let batch = dataset.train.batch(&(0..64).collect::<Vec<_>>(), Device::Cpu).unwrap();
    let key = DecisionKey { seed: 0, step: 0 };
    let paths = forced::forced_paths(&model, &batch.x, &batch.ids, key, true, BranchPaths::Every).unwrap();
    let actions: Vec<Vec<i64>> = paths.iter().map(|p| p.actions.clone()).collect();
    assert_eq!(actions, [vec![0, 0], vec![1, 0], vec![1, 1]]);
    assert_eq!(paths[0].fwd.decisions.len(), 1, "gate2 does not run after gate1 exits");

    let lambda = cfg.train.lambda;
    let full = model.graph.full_flops;
    let host = |t: &Tensor| Vec::<f64>::try_from(t.to_kind(Kind::Double)).unwrap();
    let reward = |p: usize| -> Vec<f64> {
        let fwd = &paths[p].fwd;
        let correct = host(&fwd.output.argmax(1, false).eq_tensor(&batch.y));
        let cost = host(&fwd.cost_fraction(full));
        correct.iter().zip(&cost).map(|(a, c)| lambda * a - (1.0 - lambda) * c).collect()
    };
    let r: Vec<Vec<f64>> = (0..3).map(reward).collect();
    let q = |p: usize, d: usize, a: i64| host(&paths[p].fwd.decisions[d].scores.select(1, a));
    let (q_exit1, q_cont_a, q_cont_b) = (q(0, 0, 0), q(1, 0, 1), q(2, 0, 1));
    let (q_exit2, q_stage3) = (q(1, 1, 0), q(2, 1, 1));
    // gate2's scores on the path that continues and exits at stage 2 (both continuing paths feed it
    // the same input).
    let gate2 = &paths[1].fwd.decisions[1].scores;
    let greedy2 = Vec::<i64>::try_from(gate2.argmax(1, false)).unwrap();
    let mut expected = 0.0;
    // `q_targets = "centered"`: each gate once per example, its two Q-values and two rewards
    // centered on their means.
    let centered = |qa: f64, qb: f64, ta: f64, tb: f64| {
        let (qm, tm) = ((qa + qb) / 2.0, (ta + tb) / 2.0);
        ((qa - qm) - (ta - tm)).powi(2) + ((qb - qm) - (tb - tm)).powi(2)
    };
    let after_continue: Vec<f64> = (0..64).map(|i| continue_target(r[1][i], r[2][i], greedy2[i])).collect();
    // Each gate's targets by action: exit / continue, exit at stage 2 / stage 3.
    let mut gate1 = [r[0].clone(), after_continue.clone()];
    let mut gate2 = [r[1].clone(), r[2].clone()];
    if let Some(floor) = cfg.train.rate_floor {
        floor_by_hand(&[q_exit1.clone(), q_cont_a.clone()], &mut gate1, floor.rate, floor.bonus);
        floor_by_hand(&[q_exit2.clone(), q_stage3.clone()], &mut gate2, floor.rate, floor.bonus);
    }
    for i in 0..64 {
        expected += match cfg.train.q_targets {
            QTargets::Raw => {
                (q_exit1[i] - r[0][i]).powi(2)
                    + (q_cont_a[i] - after_continue[i]).powi(2)
                    + (q_cont_b[i] - after_continue[i]).powi(2)
                    + (q_exit2[i] - r[1][i]).powi(2)
                    + (q_stage3[i] - r[2][i]).powi(2)
            }
            QTargets::Centered => {
                centered(q_exit1[i], q_cont_a[i], gate1[0][i], gate1[1][i])
                    + centered(q_exit2[i], q_stage3[i], gate2[0][i], gate2[1][i])
            }
        };
    }
    expected /= 64.0;
    let sampled = step::Outcome::of(&paths[0].fwd, &batch.y, full);
    let loss = forced::every_action_q_loss(&model, &paths, &sampled, &cfg.train, &batch.y, 64.0).unwrap();
    (loss.double_value(&[]), expected)
}

/// `train.rate_floor` computed on the host, the reference of the floor's tests: `q[a][i]` and
/// `t[a][i]` are action a's Q-value and target on row i. The runner-up is second by mean Q (a stable
/// order: the lower index first among equals); its share counts the rows where it is the greedy choice
/// (the first maximum); while that share is under `rate`, its targets gain
/// `bonus · (rate − share) / rate · spread`, spread the mean absolute centered target.
pub(super) fn floor_by_hand(q: &[Vec<f64>], t: &mut [Vec<f64>], rate: f64, bonus: f64) {
    let (k, n) = (q.len(), q[0].len());
    let mean_q: Vec<f64> = q.iter().map(|qa| qa.iter().sum::<f64>() / n as f64).collect();
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&a, &b| mean_q[b].total_cmp(&mean_q[a]));
    let runner_up = order[1];
    let greedy = |i: usize| (0..k).fold(0, |best, a| if q[a][i] > q[best][i] { a } else { best });
    let share = (0..n).filter(|&i| greedy(i) == runner_up).count() as f64 / n as f64;
    let row_mean = |i: usize| (0..k).map(|a| t[a][i]).sum::<f64>() / k as f64;
    let spread =
        (0..n).map(|i| (0..k).map(|a| (t[a][i] - row_mean(i)).abs()).sum::<f64>()).sum::<f64>() / (n * k) as f64;
    let add = bonus * ((rate - share).max(0.0) / rate) * spread;
    for v in t[runner_up].iter_mut() {
        *v += add;
    }
}

const PER_EXAMPLE: [&str; 4] =
    ["train.bag_size=1", "train.accuracy=per_example", "train.bag_credit=bag", "train.lambda=0.7"];

/// The cascade's two gates have 4 joint actions but 3 paths: after gate1 exits, gate2 does not run,
/// so (exit, continue) is (exit, exit) and is not run again. With `q_every_action`, gate2 regresses
/// onto its own path's reward and gate1's `continue` onto the better of the two paths after it.
#[test]
fn cascade_forced_paths_and_q_targets() {
    let cfg = small(config("cascade.toml", &PER_EXAMPLE), 256, 100);
    let (got, expected) = cascade_q_loss(&cfg, |r1, r2, _| r1.max(r2));
    assert!((got - expected).abs() < 1e-4 * expected.max(1.0), "control loss {got} against {expected}");
}

/// `q_continuation = "greedy_path"`: gate1's `continue` regresses onto the reward of the path gate2
/// picks by its own largest Q, not the better one. The untrained gate2 picks differently on part of
/// the batch, so the two targets give different losses and the test tells them apart.
#[test]
fn greedy_continuation_follows_the_later_gate() {
    let sets: Vec<&str> = PER_EXAMPLE.iter().copied().chain(["train.q_continuation=greedy_path"]).collect();
    let cfg = small(config("cascade.toml", &sets), 256, 100);
    assert_eq!(cfg.train.q_continuation, QContinuation::GreedyPath);
    let (got, expected) = cascade_q_loss(&cfg, |r1, r2, greedy2| if greedy2 == 0 { r1 } else { r2 });
    assert!((got - expected).abs() < 1e-4 * expected.max(1.0), "control loss {got} against {expected}");
    let (_, best) = cascade_q_loss(&cfg, |r1, r2, _| r1.max(r2));
    assert!((got - best).abs() > 1e-3 * best, "greedy {got} and best-path {best} targets gave the same loss");
}

/// `q_targets = "centered"`: each gate's two Q-values, centered, regress once per example onto its
/// two actions' rewards, centered; a loss apart from the raw regression's.
#[test]
fn centered_targets_regress_the_differences_between_actions() {
    let sets: Vec<&str> = PER_EXAMPLE.iter().copied().chain(["train.q_targets=centered"]).collect();
    let cfg = small(config("cascade.toml", &sets), 256, 100);
    assert_eq!(cfg.train.q_targets, QTargets::Centered);
    let (got, expected) = cascade_q_loss(&cfg, |r1, r2, _| r1.max(r2));
    assert!((got - expected).abs() < 1e-4 * expected.max(1.0), "control loss {got} against {expected}");
    let raw = small(config("cascade.toml", &PER_EXAMPLE), 256, 100);
    let (raw_loss, _) = cascade_q_loss(&raw, |r1, r2, _| r1.max(r2));
    assert!((got - raw_loss).abs() > 1e-3 * raw_loss, "centered {got} and raw {raw_loss} gave the same loss");
}

/// `train.rate_floor` adds its bonus to the centered target of each gate's runner-up action, as
/// computed by hand; with a floor of one half, over the untrained gates' runner-up shares on these
/// 64 images, the loss differs from the one without it.
#[test]
fn rate_floor_moves_the_runner_ups_target() {
    let sets: Vec<&str> = PER_EXAMPLE
        .iter()
        .copied()
        .chain(["train.q_targets=centered", "train.rate_floor.rate=0.5", "train.rate_floor.bonus=3"])
        .collect();
    let cfg = small(config("cascade.toml", &sets), 256, 100);
    let (got, expected) = cascade_q_loss(&cfg, |r1, r2, _| r1.max(r2));
    assert!((got - expected).abs() < 1e-4 * expected.max(1.0), "control loss {got} against {expected}");
    let mut plain = cfg.clone();
    plain.train.rate_floor = None;
    let (without, _) = cascade_q_loss(&plain, |r1, r2, _| r1.max(r2));
    assert!((got - without).abs() > 1e-3 * without, "the floor changed nothing: {got} against {without}");
}

/// The config refuses `greedy_path` without forced passes or with the bag's shared reward.
#[test]
fn greedy_continuation_needs_forced_passes_and_per_example_rewards() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/cascade.toml");
    let load = |sets: &[&str]| {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        RunConfig::load(&path, &[], &sets).map(|_| ()).unwrap_err().to_string()
    };
    let e = load(&["train.q_continuation=greedy_path", "train.q_every_action=false", "train.bag_credit=bag"]);
    assert!(e.contains("train.q_continuation") && e.contains("q_every_action"), "{e}");
    let e = load(&["train.q_continuation=greedy_path", "train.bag_credit=bag"]);
    assert!(e.contains("train.q_continuation") && e.contains("per-example"), "{e}");
}

/// `branch_paths = "uniform"` on the cascade runs two of its three paths (both gates exit at once:
/// (0, 0); both continue: (1, 1)), so its branch loss is the every-path loss less the path that
/// exits at stage 2; on the chain it runs all-full, all-slim and all-skip, each cheaper than the last.
#[test]
fn uniform_paths_train_the_paths_where_every_controller_agrees() {
    let cfg = small(config("cascade.toml", &PER_EXAMPLE), 256, 100);
    let (dataset, model) = build_model(&cfg, "cascade.toml", Device::Cpu).unwrap();
    let batch = dataset.train.batch(&(0..64).collect::<Vec<_>>(), Device::Cpu).unwrap();
    let key = DecisionKey { seed: 0, step: 0 };
    let every = forced::forced_paths(&model, &batch.x, &batch.ids, key, false, BranchPaths::Every).unwrap();
    let uniform = forced::forced_paths(&model, &batch.x, &batch.ids, key, false, BranchPaths::Uniform).unwrap();
    let actions: Vec<Vec<i64>> = uniform.iter().map(|p| p.actions.clone()).collect();
    assert_eq!(actions, [vec![0, 0], vec![1, 1]]);
    let ce = |p: &forced::ForcedPath| {
        p.fwd.output.cross_entropy_loss::<Tensor>(&batch.y, None, tch::Reduction::Sum, -100, 0.0).double_value(&[])
    };
    let exit2 = every.iter().find(|p| p.actions == [1, 0]).map(ce).unwrap();
    let got = forced::branch_loss(&model, &uniform, &batch.y).double_value(&[]);
    let expected = forced::branch_loss(&model, &every, &batch.y).double_value(&[]) - exit2;
    assert!((got - expected).abs() < 1e-4 * expected, "uniform branch loss {got} against {expected}");

    let cfg = small(config("chain.toml", &["train.branch_loss_weight=1", "train.branch_paths=uniform"]), 256, 100);
    let (dataset, model) = build_model(&cfg, "chain.toml", Device::Cpu).unwrap();
    let batch = dataset.train.batch(&(0..64).collect::<Vec<_>>(), Device::Cpu).unwrap();
    let paths = forced::forced_paths(&model, &batch.x, &batch.ids, key, false, BranchPaths::Uniform).unwrap();
    let actions: Vec<Vec<i64>> = paths.iter().map(|p| p.actions.clone()).collect();
    assert_eq!(actions, [vec![0, 0, 0], vec![1, 1, 1], vec![2, 2, 2]]);
    let cost: Vec<f64> =
        paths.iter().map(|p| p.fwd.cost.to_kind(Kind::Double).mean(Kind::Double).double_value(&[])).collect();
    assert!(cost[0] > cost[1] && cost[1] > cost[2], "all-full, all-slim, all-skip costs {cost:?}");
}

/// The chain's 27 joint actions are refused for every-path training and accepted with the uniform
/// paths (with or without the random pass), which in turn cannot serve `q_every_action`.
#[test]
fn branch_paths_are_checked_against_the_graph() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/chain.toml");
    let load = |sets: &[&str]| {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        RunConfig::load(&path, &[], &sets).map(|_| ())
    };
    let e = load(&["train.branch_loss_weight=1"]).unwrap_err().to_string();
    assert!(e.contains("train.branch_loss_weight") && e.contains("27") && e.contains("branch_paths"), "{e}");
    load(&["train.branch_loss_weight=1", "train.branch_paths=uniform"]).unwrap();
    let cascade = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/cascade.toml");
    for which in ["uniform", "uniform_and_random"] {
        let e = RunConfig::load(&cascade, &[], &[format!("train.branch_paths={which}")]).unwrap_err().to_string();
        assert!(e.contains("train.branch_paths") && e.contains("q_every_action"), "{e}");
    }
    load(&["train.branch_loss_weight=1", "train.branch_paths=uniform_and_random"]).unwrap();
}

/// `branch_paths = "uniform_and_random"` on the chain: the three uniform passes, then one on which
/// each example's action at each controller is a uniform draw: over 256 images every action's share
/// is near 1/3 (3 sampling deviations is 0.09), the draws are independent of the controllers'
/// scores (a model with other weights draws the same actions) and of warm-up's random routing under
/// the same key, and each example's cost is that of the uniform passes' blocks it ran.
#[test]
fn uniform_and_random_adds_a_pass_of_random_joint_actions() {
    let sets = ["train.branch_loss_weight=1", "train.branch_paths=uniform_and_random"];
    let cfg = small(config("chain.toml", &sets), 256, 100);
    let (dataset, model) = build_model(&cfg, "chain.toml", Device::Cpu).unwrap();
    let batch = dataset.train.batch(&(0..256).collect::<Vec<_>>(), Device::Cpu).unwrap();
    let key = DecisionKey { seed: 3, step: 7 };
    let which = BranchPaths::UniformAndRandom;
    let paths = forced::forced_paths(&model, &batch.x, &batch.ids, key, false, which).unwrap();
    let actions: Vec<Vec<i64>> = paths.iter().map(|p| p.actions.clone()).collect();
    assert_eq!(actions, [vec![0, 0, 0], vec![1, 1, 1], vec![2, 2, 2], vec![]]);
    let random = &paths[3].fwd;
    let chosen: Vec<Vec<i64>> = random.decisions.iter().map(|d| Vec::<i64>::try_from(&d.chosen).unwrap()).collect();
    assert_eq!(chosen.len(), 3);
    for (c, a) in chosen.iter().enumerate() {
        for action in 0..3 {
            let share = a.iter().filter(|&&x| x == action).count() as f64 / a.len() as f64;
            assert!((share - 1.0 / 3.0).abs() < 0.09, "controller {c} action {action}: share {share}");
        }
    }
    let other_cfg = small(config("chain.toml", &[&sets[..], &["seed=5"]].concat()), 256, 100);
    let (_, other) = build_model(&other_cfg, "chain.toml", Device::Cpu).unwrap();
    let again = forced::forced_paths(&other, &batch.x, &batch.ids, key, false, which).unwrap();
    let chosen_again: Vec<Vec<i64>> =
        again[3].fwd.decisions.iter().map(|d| Vec::<i64>::try_from(&d.chosen).unwrap()).collect();
    assert_eq!(chosen, chosen_again, "the draws depend on the key and the ids only");
    // Not the draws of warm-up's uniformly random sampled pass under the same key (2/3 differ).
    let warm_up = step::policy_for_step(&cfg.train, &[3, 3, 3], 0);
    let sampled = model.forward(&batch.x, &batch.ids, &warm_up, key, false).unwrap();
    let differ = sampled.decisions.iter().zip(&chosen).map(|(d, a)| {
        let s = Vec::<i64>::try_from(&d.chosen).unwrap();
        s.iter().zip(a).filter(|(x, y)| x != y).count()
    });
    let differ = differ.sum::<usize>() as f64 / (3.0 * 256.0);
    assert!((differ - 2.0 / 3.0).abs() < 0.09, "{differ} of the random pass's draws differ from warm-up's");
    // Block cost per stage and action, from the uniform passes: all-skip runs only the stem,
    // classifier and controllers; each stage's block adds its own cost on top.
    let cost = |p: &forced::ForcedPath| Vec::<f64>::try_from(p.fwd.cost.to_kind(Kind::Double)).unwrap();
    let (full, slim, skip) = (cost(&paths[0])[0], cost(&paths[1])[0], cost(&paths[2])[0]);
    let random_cost = cost(&paths[3]);
    for (i, got) in random_cost.iter().enumerate() {
        let expected: f64 =
            skip + (0..3).map(|c| [(full - skip) / 3.0, (slim - skip) / 3.0, 0.0][chosen[c][i] as usize]).sum::<f64>();
        assert!((got - expected).abs() < 1e-6 * full, "example {i}: cost {got}, its blocks {expected}");
    }
}
