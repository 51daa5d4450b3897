//! `q_alternatives = "one_at_a_time"` against a loss computed by hand from passes that force each
//! controller's every action directly (the code observes them as shifts of the sampled actions).
use tch::{Device, Kind, Tensor};

use super::forced_tests::floor_by_hand;
use super::{config, small};
use crate::config::RunConfig;
use crate::exec::{DecisionKey, Policy};
use crate::rl::QTargets;
use crate::train::{build_model, counterfactual, step, QAlternatives};

const ONE_AT_A_TIME: [&str; 6] = [
    "train.algorithm=q_learning",
    "train.q_every_action=true",
    "train.q_alternatives=one_at_a_time",
    "train.branch_loss_weight=1",
    "train.branch_paths=uniform",
    "train.lambda=0.8",
];

/// The chain's three controllers on 64 training images, decisions drawn at random: each controller's
/// Q-values regress onto the rewards of its three actions, each action observed with the other two
/// controllers keeping their drawn actions.
/// With `floor = Some((rate, bonus))` (centered targets only), `train.rate_floor` computed by hand.
fn chain_loss(targets: QTargets, floor: Option<(f64, f64)>) -> (f64, f64) {
    let mut sets: Vec<String> = ONE_AT_A_TIME.iter().map(|s| s.to_string()).collect();
    sets.push(format!("train.q_targets={}", if targets == QTargets::Raw { "raw" } else { "centered" }));
    if let Some((rate, bonus)) = floor {
        sets.extend([format!("train.rate_floor.rate={rate}"), format!("train.rate_floor.bonus={bonus}")]);
    }
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let cfg = small(config("chain.toml", &sets), 256, 100);
    assert_eq!(cfg.train.q_alternatives, QAlternatives::OneAtATime);
    let (dataset, model) = build_model(&cfg, "chain.toml", Device::Cpu).unwrap();
    let batch = dataset.train.batch(&(0..64).collect::<Vec<_>>(), Device::Cpu).unwrap();
    let key = DecisionKey { seed: 3, step: 7 };
    let random = Policy::Random(vec![vec![1.0 / 3.0; 3]; 3]);
    let sampled = model.forward(&batch.x, &batch.ids, &random, key, true).unwrap();
    let sampled_reward =
        step::Outcome::of(&sampled, &batch.y, model.graph.full_flops).bag_rewards(&cfg.train, &batch.y).unwrap();
    let got = counterfactual::one_at_a_time_q_loss(
        &model,
        &batch.x,
        &batch.ids,
        key,
        &sampled,
        &sampled_reward,
        &cfg.train,
        &batch.y,
        64.0,
    )
    .unwrap()
    .double_value(&[]);

    let host_f = |t: &Tensor| Vec::<f64>::try_from(t.to_kind(Kind::Double)).unwrap();
    let host_i = |t: &Tensor| Vec::<i64>::try_from(t).unwrap();
    let drawn: Vec<Vec<i64>> = sampled.decisions.iter().map(|d| host_i(&d.chosen)).collect();
    assert!(drawn.iter().all(|c| c.iter().all(|&a| a >= 0)), "every chain controller decides on every image");
    assert!(drawn.iter().all(|c| (0..3).all(|a| c.contains(&a))), "the draw takes every action somewhere");
    let lambda = cfg.train.lambda;
    let mut expected = 0.0;
    for (j, d) in sampled.decisions.iter().enumerate() {
        let q: Vec<Vec<f64>> = (0..3).map(|a| host_f(&d.scores.select(1, a))).collect();
        // reward[a][i]: controller j forced to a on every image, the others as drawn.
        let mut reward: Vec<Vec<f64>> = (0..3)
            .map(|a| {
                let forced: Vec<Tensor> = (0..3)
                    .map(|c| {
                        if c == j {
                            Tensor::full([64], a, (Kind::Int64, Device::Cpu))
                        } else {
                            Tensor::from_slice(&drawn[c])
                        }
                    })
                    .collect();
                let fwd = model.forward(&batch.x, &batch.ids, &Policy::Forced(forced), key, true).unwrap();
                let correct = host_f(&fwd.output.argmax(1, false).eq_tensor(&batch.y));
                let cost = host_f(&fwd.cost_fraction(model.graph.full_flops));
                correct.iter().zip(&cost).map(|(c, e)| lambda * c - (1.0 - lambda) * e).collect()
            })
            .collect();
        if let Some((rate, bonus)) = floor {
            floor_by_hand(&q, &mut reward, rate, bonus);
        }
        for i in 0..64 {
            let (qm, rm) =
                ((0..3).map(|a| q[a][i]).sum::<f64>() / 3.0, (0..3).map(|a| reward[a][i]).sum::<f64>() / 3.0);
            for a in 0..3 {
                expected += match targets {
                    QTargets::Raw => (q[a][i] - reward[a][i]).powi(2),
                    QTargets::Centered => ((q[a][i] - qm) - (reward[a][i] - rm)).powi(2),
                };
            }
        }
    }
    (got, expected / 64.0)
}

#[test]
fn one_at_a_time_regresses_each_controllers_actions_with_the_others_fixed() {
    for targets in [QTargets::Raw, QTargets::Centered] {
        let (got, expected) = chain_loss(targets, None);
        assert!(expected > 0.0);
        assert!((got - expected).abs() < 1e-4 * expected.max(1e-3), "{targets:?}: loss {got} against {expected}");
    }
}

/// `train.rate_floor` on the one-at-a-time targets: each controller's runner-up gains the bonus
/// computed by hand, and the loss moves away from the one without it.
#[test]
fn rate_floor_moves_each_controllers_runner_up() {
    let (got, expected) = chain_loss(QTargets::Centered, Some((0.5, 3.0)));
    assert!((got - expected).abs() < 1e-4 * expected.max(1e-3), "loss {got} against {expected}");
    let (without, _) = chain_loss(QTargets::Centered, None);
    assert!((got - without).abs() > 1e-3 * without, "the floor changed nothing: {got} against {without}");
}

/// The config refuses one-at-a-time passes without `q_every_action`, with mini-bags, or with a
/// continuation it has no use for; with them the chain's 27 joint actions are no obstacle.
#[test]
fn one_at_a_time_is_checked_against_the_config() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/chain.toml");
    let load = |extra: &[&str]| {
        let sets: Vec<String> = ONE_AT_A_TIME.iter().chain(extra).map(|s| s.to_string()).collect();
        RunConfig::load(&path, &[], &sets).map(|_| ())
    };
    load(&[]).unwrap();
    let e = load(&["train.q_every_action=false"]).unwrap_err().to_string();
    assert!(e.contains("train.q_alternatives") && e.contains("q_every_action"), "{e}");
    let e = load(&["train.bag_size=32"]).unwrap_err().to_string();
    assert!(e.contains("train.q_alternatives") && e.contains("bag_size = 1"), "{e}");
    let e = load(&["train.q_continuation=greedy_path"]).unwrap_err().to_string();
    assert!(e.contains("train.q_alternatives") && e.contains("q_continuation"), "{e}");
    let e = load(&["train.q_alternatives=joint_paths"]).unwrap_err().to_string();
    assert!(e.contains("train.q_every_action") && e.contains("27"), "{e}");
}
