//! Counter-based randomness. Every random choice d2nn makes is a pure function of
//! (seed, stream, counter...), so a resumed run or a different worker count draws the same numbers
//! without saving any generator state.

/// SplitMix64 finalizer: a fast, well-mixed 64-bit hash.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hash of several words, order-sensitive.
pub fn hash_words(words: &[u64]) -> u64 {
    words.iter().fold(0x6A09_E667_F3BC_C908, |h, &w| mix64(h ^ mix64(w)))
}

/// A uniform draw in [0, 1) keyed by `words`.
pub fn uniform(words: &[u64]) -> f64 {
    (hash_words(words) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A small sequential generator (SplitMix64 stream) for shuffles; seeded, cheap, reproducible.
#[derive(Debug, Clone)]
pub struct SplitMix {
    state: u64,
}

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform integer in [0, bound) by Lemire's multiply-shift (bias below 2^-32 for our sizes).
    pub fn below(&mut self, bound: u64) -> u64 {
        ((self.next_u64() as u128 * bound as u128) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_is_in_range_and_roughly_uniform() {
        let n = 100_000u64;
        let mut buckets = [0u32; 10];
        for i in 0..n {
            let u = uniform(&[7, i]);
            assert!((0.0..1.0).contains(&u));
            buckets[(u * 10.0) as usize] += 1;
        }
        for b in buckets {
            assert!((9_500..10_500).contains(&b), "bucket count {b} far from 10000");
        }
    }

    #[test]
    fn keys_are_order_sensitive_and_deterministic() {
        assert_eq!(hash_words(&[1, 2, 3]), hash_words(&[1, 2, 3]));
        assert_ne!(hash_words(&[1, 2, 3]), hash_words(&[3, 2, 1]));
        assert_ne!(hash_words(&[1, 2]), hash_words(&[1, 2, 0]));
    }

    #[test]
    fn below_stays_below_bound() {
        let mut r = SplitMix::new(42);
        for b in 1..200u64 {
            assert!(r.below(b) < b);
        }
    }
}
