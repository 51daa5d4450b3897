use super::*;

/// Runs `sampler` to its end; `abort(step)` says which steps abort. Returns every step's batch.
fn drive(sampler: &mut Sampler, abort: impl Fn(u64) -> bool) -> Vec<Vec<u32>> {
    let mut batches = Vec::new();
    let mut step = 0;
    while let Some(ids) = sampler.next_batch() {
        batches.push(ids.to_vec());
        if abort(step) {
            sampler.abort().expect("in flight");
        } else {
            sampler.commit().expect("in flight");
        }
        step += 1;
        assert!(step < 10_000, "the sampler does not end");
    }
    batches
}

#[test]
fn without_aborts_the_batches_are_the_epoch_orders_cut_in_order() {
    // The order every run had before the coordinator owned it: bitwise results stay the same.
    let (n, gb, epochs) = (103, 10, 3);
    let mut s = Sampler::new(7, n, gb, epochs).unwrap();
    let batches = drive(&mut s, |_| false);
    assert_eq!(batches.len(), 30);
    for (k, b) in batches.iter().enumerate() {
        let (epoch, i) = ((k / 10) as u64, k % 10);
        let want: Vec<u32> = epoch_order(7, epoch, n)[i * gb..(i + 1) * gb].iter().map(|&x| x as u32).collect();
        assert_eq!(b, &want, "step {k}");
    }
    assert_eq!(s.coverage().len(), 3);
    assert!(s.coverage().iter().all(|c| c.exactly_once() && c.examples_in_epoch == 100), "{:?}", s.coverage());
    assert!(s.finished() && s.next_batch().is_none());
}

#[test]
fn aborted_batches_are_handed_out_again_and_every_epoch_is_exactly_once() {
    let (n, gb) = (64, 8);
    let mut s = Sampler::new(1, n, gb, 2).unwrap();
    let aborted = [0u64, 3, 4, 9];
    let batches = drive(&mut s, |step| aborted.contains(&step));
    assert_eq!(batches.len(), 16 + aborted.len());
    // Steps 3 and 4 abort the same batch (step 4 retries step 3's); step 5 hands it out a third
    // time, which MAX_ATTEMPTS = 3 still allows, and commits it.
    assert_eq!(batches[1], batches[0], "an aborted batch comes back at once");
    assert_eq!(batches[4], batches[3]);
    assert_eq!(batches[5], batches[3]);
    for c in s.coverage() {
        assert!(c.exactly_once(), "{c:?}");
    }
    let retried: u64 = s.coverage().iter().map(|c| c.examples_retried).sum();
    assert_eq!(retried, 4 * 8);
    // Each epoch's committed examples are a permutation of its full batches.
    assert!(batches.iter().all(|b| b.len() == gb));
}

#[test]
fn a_batch_aborted_too_often_is_skipped_and_recorded() {
    let mut s = Sampler::new(2, 32, 8, 1).unwrap();
    let batches = drive(&mut s, |step| (1..1 + MAX_ATTEMPTS as u64).contains(&step));
    assert_eq!(batches.len(), 4 + MAX_ATTEMPTS as usize - 1);
    let c = &s.coverage()[0];
    assert_eq!((c.examples_committed, c.examples_skipped, c.duplicates), (24, 8, 0), "{c:?}");
    assert_eq!(c.examples_retried, 8 * (MAX_ATTEMPTS as u64 - 1));
    assert!(!c.exactly_once());
}

#[test]
fn a_batch_in_flight_is_handed_out_again_unchanged() {
    let mut s = Sampler::new(3, 40, 8, 1).unwrap();
    let first = s.next_batch().unwrap().to_vec();
    assert_eq!(s.next_batch().unwrap(), first.as_slice(), "no commit or abort: the same batch again");
    s.commit().unwrap();
    assert_eq!((s.coverage()[0].examples_retried, s.coverage()[0].examples_committed), (8, 8));
    assert_ne!(s.next_batch().unwrap(), first.as_slice());
    assert!(Sampler::new(3, 40, 8, 1).unwrap().commit().is_err(), "commit with nothing in flight");
}

#[test]
fn a_restored_state_continues_exactly_as_the_original() {
    let (n, gb, epochs) = (50, 5, 3);
    let aborted = |step: u64| step % 7 == 2;
    let mut whole = Sampler::new(4, n, gb, epochs).unwrap();
    let all = drive(&mut whole, aborted);
    for cut in 0..all.len() {
        let mut s = Sampler::new(4, n, gb, epochs).unwrap();
        let mut head = Vec::new();
        for step in 0..cut as u64 {
            head.push(s.next_batch().unwrap().to_vec());
            if aborted(step) {
                s.abort().unwrap()
            } else {
                s.commit().unwrap()
            }
        }
        let state = s.state();
        let json = serde_json::to_string(&state).unwrap();
        let back: SamplerState = serde_json::from_str(&json).unwrap();
        let mut r = Sampler::restore(4, n, gb, epochs, &back).unwrap();
        assert_eq!(r.place(), s.place(), "cut {cut}");
        let shifted = |step: u64| aborted(step + cut as u64);
        head.extend(drive(&mut r, shifted));
        assert_eq!(head, all, "cut {cut}");
        assert_eq!(r.coverage(), whole.coverage(), "cut {cut}");
    }
}

#[test]
fn a_checkpoint_of_the_previous_version_resumes_at_its_step() {
    let (n, gb) = (30, 5);
    for step in 0..=12u64 {
        let mut run = Sampler::new(9, n, gb, 2).unwrap();
        for _ in 0..step {
            run.next_batch().unwrap();
            run.commit().unwrap();
        }
        let (derived, live) = (Sampler::from_step(9, n, gb, 2, step).unwrap().state(), run.state());
        assert_eq!((derived.epoch, derived.cursor), (live.epoch, live.cursor), "step {step}");
        // Earlier epochs' coverage is not in such a checkpoint, and is not invented.
        assert_eq!(derived.coverage.len(), 1);
        assert_eq!(derived.coverage.last(), live.coverage.last(), "step {step}");
    }
}

#[test]
fn an_inconsistent_state_is_refused_with_what_is_wrong() {
    let mut s = Sampler::new(5, 40, 8, 2).unwrap();
    for _ in 0..2 {
        s.next_batch().unwrap();
        s.commit().unwrap();
    }
    let good = s.state();
    let e = |state: &SamplerState| Sampler::restore(5, 40, 8, 2, state).unwrap_err().to_string();
    assert!(e(&SamplerState { cursor: 12, ..good.clone() }).contains("cursor 12"));
    assert!(e(&SamplerState { cursor: 48, ..good.clone() }).contains("cursor 48"));
    let mut lies = good.clone();
    lies.coverage[0].examples_committed = 40;
    assert!(e(&lies).contains("says 40 of 40 committed"), "{}", e(&lies));
    let foreign = s.next_batch().unwrap().to_vec();
    let mut retry_unseen = good.clone();
    retry_unseen.retry.push(RetryBatch { ids: foreign, attempts: 1 });
    assert!(e(&retry_unseen).contains("not handed out this epoch"), "{}", e(&retry_unseen));
    assert!(e(&SamplerState { coverage: vec![], ..good }).contains("does not end with epoch 0"));
    assert!(Sampler::new(0, 7, 8, 1).unwrap_err().to_string().contains("global batch of 8"));
}

#[test]
fn shares_are_whole_bags_in_proportion_to_speed() {
    assert_eq!(shares(128, 1, 2, None).unwrap(), vec![64, 64]);
    assert_eq!(shares(96, 16, 3, None).unwrap(), vec![32, 32, 32]);
    // Twice as fast, twice the examples (128 = 8 bags of 16: one each, then 6 split 4:2).
    assert_eq!(shares(128, 16, 2, Some(&[2.0, 1.0])).unwrap(), vec![80, 48]);
    // A very slow rank still gets one bag.
    assert_eq!(shares(64, 8, 2, Some(&[1000.0, 1.0])).unwrap(), vec![56, 8]);
    // Largest remainders: 10 units over 3 equal weights (after one each: 7 → 2.33 each).
    assert_eq!(shares(10, 1, 3, None).unwrap(), vec![4, 3, 3]);
    // Unusable weights fall back to equal shares.
    assert_eq!(shares(8, 1, 2, Some(&[f64::NAN, 1.0])).unwrap(), vec![4, 4]);
    for (gb, unit, world) in [(8, 16, 1), (32, 16, 3), (10, 3, 1), (8, 1, 0)] {
        let e = shares(gb, unit, world, None).unwrap_err().to_string();
        assert!(e.contains(&format!("global batch of {gb}")), "{e}");
    }
    let ids: Vec<u32> = (0..10).collect();
    assert_eq!(split(&ids, &[4, 3, 3]), vec![&ids[..4], &ids[4..7], &ids[7..]]);
}
