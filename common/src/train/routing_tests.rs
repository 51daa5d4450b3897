//! The routing report's arithmetic, by hand.
use super::*;

/// Six examples, hand-tallied: `low` (cost 0.2) gets 0, 1 and 4 right, `high` (cost 0.9) gets
/// 0, 2, 4 and 5 right, and the router sends 0, 3 and 5 to `high`.
#[test]
fn report_matches_a_hand_tally() {
    let outcomes = Outcomes {
        right: vec![vec![true, true, false, false, true, false], vec![true, false, true, false, true, true]],
        cost: vec![vec![0.2; 6], vec![0.9; 6]],
        chosen: vec![1, 0, 0, 1, 0, 1],
        path_probability: vec![0.5, 0.5],
        ..Outcomes::default()
    };
    let r = outcomes.report("router".into(), vec!["low".into(), "high".into()], false);
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    assert_eq!(r.examples, 6);
    assert_eq!(r.rates, [0.5, 0.5]);
    assert!(close(r.forced_accuracy[0], 3.0 / 6.0) && close(r.forced_accuracy[1], 4.0 / 6.0));
    assert!(close(r.forced_cost_fraction[0], 0.2) && close(r.forced_cost_fraction[1], 0.9));
    // Right on 0 (high), 1 (low), 4 (low), 5 (high); wrong on 2 (low) and 3 (high).
    assert!(close(r.routed_accuracy, 4.0 / 6.0));
    assert!(close(r.routed_cost_fraction, 3.3 / 6.0));
    assert!(close(r.random_accuracy, 0.5 * 0.5 + 0.5 * 4.0 / 6.0));
    // Both right on 0 and 4; only `low` on 1; only `high` on 2 and 5 (three places each).
    assert!(close(r.oracle_same_rates_accuracy.unwrap(), 5.0 / 6.0));
    // Cheapest right path: low, low, high, none (low), low, high.
    assert!(close(r.cheapest_right_accuracy, 5.0 / 6.0));
    assert!(close(r.cheapest_right_cost_fraction, 2.6 / 6.0));
    let groups: Vec<(Vec<usize>, usize, Vec<f64>)> =
        r.by_right_paths.iter().map(|g| (g.right.clone(), g.examples, g.rates.clone())).collect();
    assert_eq!(
        groups,
        [
            (vec![0, 1], 2, vec![0.5, 0.5]),
            (vec![0], 1, vec![1.0, 0.0]),
            (vec![1], 2, vec![0.5, 0.5]),
            (vec![], 1, vec![0.0, 1.0]),
        ]
    );
    let table = r.render();
    assert!(table.contains("controllers − random: +8.33 points"), "{table}");
}

/// An oracle at the router's rates cannot place more examples on a path than the router does.
#[test]
fn same_rates_oracle_respects_the_routers_shares() {
    let outcomes = Outcomes {
        right: vec![vec![false; 4], vec![true; 4]],
        cost: vec![vec![0.1; 4], vec![1.0; 4]],
        chosen: vec![0, 0, 0, 1],
        path_probability: vec![0.75, 0.25],
        ..Outcomes::default()
    };
    let r = outcomes.report("router".into(), vec!["low".into(), "high".into()], false);
    assert_eq!(r.oracle_same_rates_accuracy, Some(0.25));
    assert_eq!(r.cheapest_right_accuracy, 1.0);
    assert_eq!(r.routed_accuracy, 0.25);
    assert_eq!(r.random_accuracy, 0.25);
}

/// A cascade's three paths on eight examples (labels 1 1 1 0 0 0 0 0), hand-tallied. Path 0 (exit 1,
/// cost 0.1) predicts positive on 0, 3; path 1 (exit 2, cost 0.2) on 0, 1; path 2 (all stages, cost 1)
/// on 0, 1, 2. Gate 1 exits on examples 3–7 and continues on 0–2; gate 2 exits on 1 and continues on
/// 0 and 2: paths 2, 1, 2, 0, 0, 0, 0, 0. So gate 1's rates are 5/8 exit, 3/8 continue, gate 2's 1/3,
/// 2/3, and random routing takes the paths with probability 5/8, 1/8, 2/8.
#[test]
fn a_cascades_random_routing_is_exact_in_accuracy_and_in_f1() {
    let labels = [true, true, true, false, false, false, false, false];
    let predicted = |pos: &[usize]| (0..8).map(|i| pos.contains(&i)).collect::<Vec<bool>>();
    let predicted_positive = vec![predicted(&[0, 3]), predicted(&[0, 1]), predicted(&[0, 1, 2])];
    let right = predicted_positive.iter().map(|p| p.iter().zip(&labels).map(|(a, b)| a == b).collect()).collect();
    let outcomes = Outcomes {
        right,
        predicted_positive,
        cost: vec![vec![0.1; 8], vec![0.2; 8], vec![1.0; 8]],
        actual_positive: labels.to_vec(),
        chosen: vec![2, 1, 2, 0, 0, 0, 0, 0],
        controller_rates: vec![vec![5.0 / 8.0, 3.0 / 8.0], vec![1.0 / 3.0, 2.0 / 3.0]],
        path_probability: vec![5.0 / 8.0, 3.0 / 8.0 * 1.0 / 3.0, 3.0 / 8.0 * 2.0 / 3.0],
    };
    let names = vec!["exit1".into(), "stage2 → exit2".into(), "stage2 → stage3".into()];
    let r = outcomes.report("gate1, gate2".into(), names, true);
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    assert_eq!(r.rates, [5.0 / 8.0, 1.0 / 8.0, 2.0 / 8.0]);
    // Right: path 0 on 0 and 4–7 (5 of 8); path 1 on 0, 1 and 3–7 (7); path 2 on all 8.
    assert!(close(r.forced_accuracy[0], 5.0 / 8.0) && close(r.forced_accuracy[1], 7.0 / 8.0));
    assert!(close(r.forced_accuracy[2], 1.0));
    // Routed: 0 (path 2, right), 1 (path 1, right), 2 (path 2, right), 3 (path 0, wrong), 4–7 right.
    assert!(close(r.routed_accuracy, 7.0 / 8.0));
    assert!(close(r.random_accuracy, 5.0 / 8.0 * 5.0 / 8.0 + 1.0 / 8.0 * 7.0 / 8.0 + 2.0 / 8.0));
    // F1: path 0 tp 1 fp 1 fn 2 → 2/5; path 1 tp 2 fn 1 → 4/5; path 2 → 1. Routed: tp 3 (0, 1, 2),
    // fp 1 (3) → 6/7.
    let forced = r.forced_f1.clone().unwrap();
    assert!(close(forced[0], 0.4) && close(forced[1], 0.8) && close(forced[2], 1.0), "{forced:?}");
    assert!(close(r.routed_f1.unwrap(), 6.0 / 7.0));
    // Expected counts: tp = 5/8·1 + 1/8·2 + 2/8·3 = 13/8, fp = 5/8·1 = 5/8, fn = 5/8·2 + 1/8·1 = 11/8;
    // F1 = 2·13/8 / (2·13/8 + 5/8 + 11/8) = 26/42.
    assert!(close(r.random_f1.unwrap(), 26.0 / 42.0), "{:?}", r.random_f1);
    assert_eq!(r.oracle_same_rates_accuracy, None);
    let table = r.render();
    assert!(table.contains("every example on `stage2 → exit2`") && table.contains("F1 +23.81"), "{table}");
}

/// A shipped config's untrained network on `test` test images, the parameters of the controllers
/// (named `prefix`…) scaled up so their argmax depends on the image.
fn decisive_network(file: &str, prefix: &str, test: usize) -> (crate::data::Dataset, crate::exec::D2nn) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cfg = crate::config::RunConfig::load(&root.join("configs").join(file), &[], &[]).unwrap();
    cfg.data.dir = std::env::var_os("D2NN_DATA_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| root.join("data"));
    cfg.data.train_limit = Some(64);
    cfg.data.test_limit = Some(test);
    let (dataset, model) = super::super::build_model(&cfg, file, tch::Device::Cpu).unwrap();
    for (name, p) in model.parameters() {
        if name.starts_with(prefix) {
            tch::no_grad(|| p.shallow_clone().f_mul_(&tch::Tensor::from(50.0)).map(|_| ()).unwrap());
        }
    }
    (dataset, model)
}

/// On the cascade's real network (gates scaled up so their argmax depends on the image), the report's
/// routed figures are `evaluate`'s, its three paths are named by the nodes they enable, and random
/// routing at the gates' own rates takes each path as often as the gates do (a tree of decisions).
#[test]
fn a_cascades_report_matches_evaluate() {
    let (dataset, model) = decisive_network("cascade.toml", "gate", 300);
    let key = DecisionKey { seed: 0, step: u64::MAX };
    let r = routing_report(&model, &dataset.test, 64, key, true).unwrap();
    let eval = super::super::evaluate(&model, &dataset.test, 64, &Policy::Argmax, key, true).unwrap();
    assert_eq!(r.controller, "gate1, gate2");
    assert_eq!(r.actions, ["exit1", "stage2 → exit2", "stage2 → stage3"]);
    assert_eq!(r.routed_accuracy, eval.accuracy);
    assert_eq!(r.routed_f1, eval.f1);
    assert!((r.routed_cost_fraction - eval.mean_cost_fraction).abs() < 1e-9);
    assert!((r.rates.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    for (p, rate) in r.random_path_probability.iter().zip(&r.rates) {
        assert!((p - rate).abs() < 1e-12, "{:?} against {:?}", r.random_path_probability, r.rates);
    }
    eprintln!("{}", r.render());
}

/// The chain's 27 paths fit the report: routed figures are `evaluate`'s, random routing takes each
/// path with the product of its controllers' rates, and the grouping by right paths is left out.
#[test]
fn a_chains_report_covers_its_27_paths() {
    let (dataset, model) = decisive_network("chain.toml", "pick", 200);
    let key = DecisionKey { seed: 0, step: u64::MAX };
    let r = routing_report(&model, &dataset.test, 64, key, false).unwrap();
    let eval = super::super::evaluate(&model, &dataset.test, 64, &Policy::Argmax, key, false).unwrap();
    assert_eq!(r.actions.len(), 27);
    assert_eq!(r.actions[0], "full1a → full2a → full3a");
    assert_eq!(r.routed_accuracy, eval.accuracy);
    assert!((r.routed_cost_fraction - eval.mean_cost_fraction).abs() < 1e-9);
    let rates = &r.controller_rates;
    for (p, prob) in r.random_path_probability.iter().enumerate() {
        let (a, b, c) = (p / 9, p / 3 % 3, p % 3);
        assert!((prob - rates[0][a] * rates[1][b] * rates[2][c]).abs() < 1e-12, "path {p}");
    }
    let lo = r.forced_accuracy.iter().copied().fold(1.0, f64::min);
    let hi = r.forced_accuracy.iter().copied().fold(0.0, f64::max);
    assert!((lo..=hi).contains(&r.random_accuracy), "{} outside [{lo}, {hi}]", r.random_accuracy);
    assert!(r.by_right_paths.is_empty());
    let table = r.render();
    assert!(table.contains("left out for more than 8 paths"), "{table}");
    let routed_line = table.lines().find(|l| l.starts_with("the controllers")).unwrap();
    let taken = r.rates.iter().filter(|&&x| x > 0.0).count();
    assert_eq!(routed_line.matches(" %").count(), taken, "only the paths taken are listed: {routed_line}");
}
