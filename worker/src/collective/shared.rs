//! In-process all-reduce through shared memory: each rank publishes a pointer to its buffer, and
//! between two barriers rank r sums chunk r of every buffer (in rank order) and writes the sum back
//! into chunk r of every buffer. Each value is read once per rank and written once per rank; no
//! staging copy and no allocation per call.
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::{Collective, CollectiveError};

/// Elements summed per pass: a stack scratch block that stays in L1.
const BLOCK: usize = 1024;

#[derive(Debug, Default)]
struct BarrierState {
    arrived: usize,
    generation: u64,
    /// Ranks that dropped their handle; they count as arrived at every later barrier, so the
    /// others are released (with an error) instead of hanging.
    departed: usize,
    /// The first rank that departed, and the first barrier generation it was missing from: earlier
    /// barriers completed normally even if a waiter wakes up only after the departure.
    lost: Option<(usize, u64)>,
    /// Published (buffer address, length) per rank.
    slots: Vec<(usize, usize)>,
}

#[derive(Debug)]
struct Inner {
    world: usize,
    state: Mutex<BarrierState>,
    cv: Condvar,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, BarrierState> {
        // A panic while holding this lock cannot leave the counters half-updated (no code that can
        // panic runs under it), so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn release(&self, st: &mut BarrierState) {
        st.arrived = 0;
        st.generation = st.generation.wrapping_add(1);
        self.cv.notify_all();
    }

    fn wait(&self) -> Result<(), CollectiveError> {
        let mut st = self.lock();
        st.arrived += 1;
        let generation = st.generation;
        if st.arrived + st.departed >= self.world {
            self.release(&mut st);
        } else {
            while st.generation == generation {
                st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
            }
        }
        match st.lost {
            Some((rank, from)) if generation >= from => Err(CollectiveError::PeerLost { rank }),
            _ => Ok(()),
        }
    }

    fn depart(&self, rank: usize) {
        let mut st = self.lock();
        st.departed += 1;
        let generation = st.generation;
        st.lost.get_or_insert((rank, generation));
        if st.arrived > 0 && st.arrived + st.departed >= self.world {
            self.release(&mut st);
        }
    }
}

/// Creates the handles of an in-process group.
pub struct SharedGroup;

impl SharedGroup {
    /// One handle per rank, in rank order; hand each to the thread that runs that rank.
    pub fn handles(world: usize) -> Vec<SharedCollective> {
        let world = world.max(1);
        let inner = Arc::new(Inner {
            world,
            state: Mutex::new(BarrierState { slots: vec![(0, 0); world], ..Default::default() }),
            cv: Condvar::new(),
        });
        (0..world).map(|rank| SharedCollective { inner: inner.clone(), rank }).collect()
    }
}

/// One rank of a [`SharedGroup`].
#[derive(Debug)]
pub struct SharedCollective {
    inner: Arc<Inner>,
    rank: usize,
}

impl Drop for SharedCollective {
    fn drop(&mut self) {
        self.inner.depart(self.rank);
    }
}

/// Rank `rank`'s chunk of `len` elements split `world` ways (sizes differ by at most one).
fn chunk(rank: usize, world: usize, len: usize) -> (usize, usize) {
    (rank * len / world, (rank + 1) * len / world)
}

impl Collective for SharedCollective {
    fn world(&self) -> usize {
        self.inner.world
    }

    fn rank(&self) -> usize {
        self.rank
    }

    fn barrier(&mut self) -> Result<(), CollectiveError> {
        self.inner.wait()
    }

    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<(), CollectiveError> {
        let world = self.inner.world;
        if world == 1 {
            // The sum over one rank is the buffer itself, bit for bit.
            return Ok(());
        }
        let len = buf.len();
        let own = buf.as_mut_ptr();
        self.inner.lock().slots[self.rank] = (own as usize, len);
        // Barrier 1: every rank has published. Slots are read only between the two barriers and
        // written only before the first, so a fast rank's next publish cannot race a slow reader.
        self.inner.wait()?;
        let slots = self.inner.lock().slots.clone();
        if slots.iter().any(|&(_, l)| l != len) {
            // Every rank sees the same slots and takes this branch; nobody writes.
            self.inner.wait()?;
            return Err(CollectiveError::LengthMismatch { lengths: slots.iter().map(|s| s.1).collect() });
        }
        let ptrs: Vec<*mut f32> = slots.iter().map(|&(p, _)| p as *mut f32).collect();
        let (lo, hi) = chunk(self.rank, world, len);
        let mut acc = [0f32; BLOCK];
        let mut start = lo;
        while start < hi {
            let n = BLOCK.min(hi - start);
            let acc = &mut acc[..n];
            // SAFETY: every published buffer has `len` elements and stays borrowed by its rank
            // until that rank passes barrier 2, which needs this rank to arrive there first. Between
            // the barriers, elements [lo, hi) of every buffer are touched by this rank only (chunks
            // are disjoint), and no rank uses its `&mut` buffer — only the published pointers.
            // Nothing between the barriers can panic (all ranges are checked above), so no rank
            // unwinds and frees its buffer while others still write into it.
            unsafe {
                acc.copy_from_slice(std::slice::from_raw_parts(ptrs[0].add(start), n));
                // Rank order: every rank's chunk sum is ((b0 + b1) + b2) + …, the same on all ranks.
                for p in &ptrs[1..] {
                    let src = std::slice::from_raw_parts(p.add(start), n);
                    for (a, s) in acc.iter_mut().zip(src) {
                        *a += *s;
                    }
                }
                for p in &ptrs {
                    std::ptr::copy_nonoverlapping(acc.as_ptr(), p.add(start), n);
                }
            }
            start += n;
        }
        // Barrier 2: every chunk of every buffer holds its sum.
        self.inner.wait()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value that makes float sums order-sensitive.
    fn value(rank: usize, i: usize) -> f32 {
        ((rank * 7919 + i * 104_729) % 1000) as f32 * 0.001 + 1e-7 * i as f32 + (rank as f32).powi(3) * 1e3
    }

    fn run(world: usize, len: usize) -> Vec<Vec<f32>> {
        let handles = SharedGroup::handles(world);
        let threads: Vec<_> = handles
            .into_iter()
            .map(|mut c| {
                std::thread::spawn(move || {
                    let mut out = Vec::new();
                    // Several calls in a row reuse the slots and barriers.
                    for round in 0..3 {
                        let mut buf: Vec<f32> = (0..len).map(|i| value(c.rank(), i) + round as f32).collect();
                        c.all_reduce_sum(&mut buf).unwrap();
                        out = buf;
                    }
                    out
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    }

    #[test]
    fn sums_in_rank_order_and_every_rank_gets_the_same_bits() {
        for world in 1..=4 {
            // Lengths below, at and above the world size and the block size (uneven chunks).
            for len in [0, 1, 3, 5, 1023, 1025, 4099] {
                let results = run(world, len);
                for (i, got) in results[0].iter().enumerate() {
                    let mut want = value(0, i) + 2.0;
                    for r in 1..world {
                        want += value(r, i) + 2.0;
                    }
                    assert_eq!(got.to_bits(), want.to_bits(), "world {world} len {len} i {i}");
                }
                assert_eq!(results[0].len(), len);
                for r in 1..world {
                    assert!(
                        results[r].iter().zip(&results[0]).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "rank {r} differs from rank 0 (world {world} len {len})"
                    );
                }
            }
        }
    }

    #[test]
    fn a_departed_rank_releases_the_others_with_an_error() {
        let mut handles = SharedGroup::handles(3);
        let gone = handles.pop().unwrap();
        let threads: Vec<_> =
            handles.into_iter().map(|mut c| std::thread::spawn(move || c.all_reduce_sum(&mut [1.0, 2.0]))).collect();
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(gone);
        for t in threads {
            assert_eq!(t.join().unwrap(), Err(CollectiveError::PeerLost { rank: 2 }));
        }
    }

    #[test]
    fn different_lengths_are_an_error_on_every_rank() {
        let threads: Vec<_> = SharedGroup::handles(2)
            .into_iter()
            .map(|mut c| {
                std::thread::spawn(move || {
                    let mut buf = vec![1.0; 3 + c.rank()];
                    let r = c.all_reduce_sum(&mut buf);
                    (r, buf)
                })
            })
            .collect();
        for t in threads {
            let (r, buf) = t.join().unwrap();
            assert_eq!(r, Err(CollectiveError::LengthMismatch { lengths: vec![3, 4] }));
            assert!(buf.iter().all(|&v| v == 1.0), "buffers untouched");
        }
    }
}
