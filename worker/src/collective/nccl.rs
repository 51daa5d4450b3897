//! All-reduce between GPUs with NCCL, loaded at run time through cudarc: the crate builds and links
//! on machines without CUDA, and reports a clear error (never a panic) when NCCL or the driver is
//! missing at run time.
//!
//! The communicator lives on a dedicated OS thread: a `ncclComm_t` must not be used by two threads
//! at once and `ncclCommInitRank` blocks until every rank has joined, so the worker talks to it
//! through a channel and bounds every wait with a timeout instead of hanging on a lost peer.
//!
//! Ordering with libtorch: NCCL's kernels are enqueued on the device's legacy default stream, the
//! stream libtorch uses unless told otherwise, so they run after the kernels that wrote the
//! gradients and before the ones that read the sums, with no host synchronisation in between.
//!
//! One concern, the communicator thread and its FFI calls, kept together because every call must run
//! on that thread (tests in nccl_tests.rs); issue #21 (deadlines, ncclCommAbort) reworks it and splits
//! the thread from the FFI wrapper then.
use std::ffi::c_char;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use cudarc::nccl::sys as nccl_sys;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::{Collective, CollectiveError};

/// Bytes in NCCL's unique id.
pub const NCCL_ID_BYTES: usize = 128;

/// The id every rank of one NCCL communicator must share: made by one process (the coordinator),
/// handed to the ranks in an actor message. It holds the creator's address, so it is only valid
/// while that process runs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NcclUniqueId(pub Vec<u8>);

impl std::fmt::Debug for NcclUniqueId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NcclUniqueId({} bytes)", self.0.len())
    }
}

impl NcclUniqueId {
    /// `ncclGetUniqueId`: needs libnccl, but neither a GPU nor the CUDA driver.
    pub fn new() -> Result<NcclUniqueId, CollectiveError> {
        require_nccl()?;
        let id = cudarc::nccl::result::get_uniqueid().map_err(|e| nccl_error("ncclGetUniqueId", e))?;
        Ok(NcclUniqueId(id.internal.iter().map(|&c| c as u8).collect()))
    }

    fn to_sys(&self) -> Result<nccl_sys::ncclUniqueId, CollectiveError> {
        if self.0.len() != NCCL_ID_BYTES {
            return Err(CollectiveError::Nccl(format!(
                "a unique id has {NCCL_ID_BYTES} bytes, this one {} (a corrupt or foreign message)",
                self.0.len()
            )));
        }
        let mut internal = [0 as c_char; NCCL_ID_BYTES];
        for (dst, &src) in internal.iter_mut().zip(&self.0) {
            *dst = src as c_char;
        }
        Ok(nccl_sys::ncclUniqueId { internal })
    }
}

/// Whether this process can load libnccl (the pip wheel's `libnccl.so.2`, which `scripts/setup.sh
/// --cuda` links as `libnccl.so` beside libtorch, on the binaries' RUNPATH).
pub fn nccl_available() -> bool {
    // SAFETY: only tries to dlopen the library by its candidate names.
    unsafe { nccl_sys::is_culib_present() }
}

/// NCCL's version, e.g. "2.28.9", when libnccl loads.
pub fn nccl_version() -> Option<String> {
    if !nccl_available() {
        return None;
    }
    let v = cudarc::nccl::result::get_nccl_version().ok()?;
    // NCCL ≥ 2.9 encodes major·10000 + minor·100 + patch.
    Some(format!("{}.{}.{}", v / 10000, (v % 10000) / 100, v % 100))
}

fn require_nccl() -> Result<(), CollectiveError> {
    if nccl_available() {
        Ok(())
    } else {
        Err(CollectiveError::Nccl(
            "libnccl.so cannot be loaded: install the CUDA build with `scripts/setup.sh --cuda`, which links the \
             nvidia-nccl wheel's libnccl.so.2 beside libtorch"
                .into(),
        ))
    }
}

fn require_driver() -> Result<(), CollectiveError> {
    // SAFETY: only tries to dlopen the library by its candidate names.
    if unsafe { cudarc::driver::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(CollectiveError::Nccl("the CUDA driver (libcuda.so) cannot be loaded: no GPU on this machine?".into()))
    }
}

fn nccl_error(what: &str, e: cudarc::nccl::result::NcclError) -> CollectiveError {
    CollectiveError::Nccl(format!("{what}: {e:?}"))
}

/// A device buffer to reduce in place. Plain addresses: the memory is owned by a tensor that the
/// requesting thread keeps alive until the reply arrives.
struct Job {
    send: usize,
    receive: usize,
    count: usize,
    /// Also wait for the device to finish (a barrier must not return before the peers arrived).
    synchronize: bool,
    reply: mpsc::Sender<Result<(), CollectiveError>>,
}

/// One rank's NCCL communicator, owned by its own thread.
pub struct NcclCollective {
    rank: usize,
    world: usize,
    ordinal: usize,
    timeout: Duration,
    jobs: Option<mpsc::Sender<Job>>,
    /// The result of `ncclCommInitRank`, read by the first call.
    init: Option<mpsc::Receiver<Result<(), CollectiveError>>>,
    thread: Option<JoinHandle<()>>,
    /// The communicator thread answered every request so far: it can be joined on drop. A thread
    /// stuck in a collective that never completes (a lost peer) cannot be interrupted, so after a
    /// timeout it is left behind instead of hanging the drop.
    responsive: bool,
    /// Device staging buffer for `all_reduce_sum` on host slices.
    staging: Option<Tensor>,
}

impl NcclCollective {
    /// Starts rank `rank` of `world` on GPU `ordinal`. Returns at once: the communicator is built on
    /// its thread (it blocks until every rank joins), and the first collective call waits for it,
    /// so one process can start all its ranks one after another.
    pub fn start(
        id: &NcclUniqueId,
        rank: usize,
        world: usize,
        ordinal: usize,
        timeout: Duration,
    ) -> Result<NcclCollective, CollectiveError> {
        require_nccl()?;
        require_driver()?;
        if rank >= world {
            return Err(CollectiveError::Nccl(format!("rank {rank} is outside a world of {world}")));
        }
        let id = id.to_sys()?;
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let (init_tx, init_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("nccl-rank-{rank}"))
            .spawn(move || communicator_main(id, rank, world, ordinal, init_tx, jobs_rx))
            .map_err(|e| CollectiveError::Nccl(format!("spawning the NCCL thread: {e}")))?;
        Ok(NcclCollective {
            rank,
            world,
            ordinal,
            timeout,
            jobs: Some(jobs_tx),
            init: Some(init_rx),
            thread: Some(thread),
            responsive: true,
            staging: None,
        })
    }

    pub fn device(&self) -> Device {
        Device::Cuda(self.ordinal)
    }

    fn wait_init(&mut self) -> Result<(), CollectiveError> {
        if let Some(rx) = self.init.take() {
            let result = rx.recv_timeout(self.timeout).map_err(|_| {
                self.responsive = false;
                CollectiveError::Nccl(format!(
                    "rank {}: ncclCommInitRank did not complete within {:.0} s (not every rank joined)",
                    self.rank,
                    self.timeout.as_secs_f64()
                ))
            })?;
            result?;
        }
        Ok(())
    }

    fn submit(&mut self, send: usize, receive: usize, count: usize, synchronize: bool) -> Result<(), CollectiveError> {
        self.wait_init()?;
        let jobs = self.jobs.as_ref().ok_or(CollectiveError::PeerLost { rank: self.rank })?;
        let (reply, rx) = mpsc::channel();
        jobs.send(Job { send, receive, count, synchronize, reply })
            .map_err(|_| CollectiveError::PeerLost { rank: self.rank })?;
        rx.recv_timeout(self.timeout).map_err(|_| {
            self.responsive = false;
            CollectiveError::Nccl(format!(
                "rank {}: an all-reduce did not complete within {:.0} s",
                self.rank,
                self.timeout.as_secs_f64()
            ))
        })?
    }

    /// Out of place: `receive = Σ send`. With one rank this is a copy that only NCCL can have made,
    /// which is what the single-GPU test checks.
    pub fn all_reduce_sum_into(&mut self, send: &Tensor, receive: &mut Tensor) -> Result<(), CollectiveError> {
        self.check_tensor(send)?;
        self.check_tensor(receive)?;
        if send.numel() != receive.numel() {
            return Err(CollectiveError::LengthMismatch { lengths: vec![send.numel(), receive.numel()] });
        }
        self.submit(send.data_ptr() as usize, receive.data_ptr() as usize, send.numel(), false)
    }

    fn check_tensor(&self, t: &Tensor) -> Result<(), CollectiveError> {
        if t.device() != self.device() || t.kind() != Kind::Float || !t.is_contiguous() {
            return Err(CollectiveError::Nccl(format!(
                "NCCL reduces contiguous f32 tensors on {:?}; got {:?} {:?}{}",
                self.device(),
                t.kind(),
                t.device(),
                if t.is_contiguous() { "" } else { " (not contiguous)" }
            )));
        }
        Ok(())
    }
}

impl Collective for NcclCollective {
    fn world(&self) -> usize {
        self.world
    }

    fn rank(&self) -> usize {
        self.rank
    }

    fn reduce_device(&self) -> Option<Device> {
        Some(self.device())
    }

    fn all_reduce_sum_tensor(&mut self, t: &mut Tensor) -> Result<(), CollectiveError> {
        self.check_tensor(t)?;
        let ptr = t.data_ptr() as usize;
        // The caller's tensor outlives the call: `submit` returns only after the job was enqueued.
        self.submit(ptr, ptr, t.numel(), false)
    }

    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<(), CollectiveError> {
        let staging = match self.staging.take() {
            Some(s) if s.numel() >= buf.len() => s,
            _ => Tensor::f_zeros([buf.len().max(1) as i64], (Kind::Float, self.device())).map_err(tch_error)?,
        };
        let result = (|| {
            let mut view = staging.f_narrow(0, 0, buf.len() as i64).map_err(tch_error)?;
            view.f_copy_(&Tensor::from_slice(buf)).map_err(tch_error)?;
            self.all_reduce_sum_tensor(&mut view)?;
            // Copying back to the host waits for the reduction on the stream.
            view.f_copy_data(buf, buf.len()).map_err(tch_error)
        })();
        self.staging = Some(staging);
        result
    }

    fn barrier(&mut self) -> Result<(), CollectiveError> {
        let one = Tensor::f_ones([1], (Kind::Float, self.device())).map_err(tch_error)?;
        let ptr = one.data_ptr() as usize;
        self.submit(ptr, ptr, 1, true)?;
        let arrived = one.f_double_value(&[0]).map_err(tch_error)?;
        if arrived as usize == self.world {
            Ok(())
        } else {
            Err(CollectiveError::Nccl(format!("barrier counted {arrived} of {} ranks", self.world)))
        }
    }
}

impl Drop for NcclCollective {
    fn drop(&mut self) {
        // Closing the channel ends the thread, which destroys the communicator.
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            if self.responsive {
                let _ = t.join();
            }
        }
    }
}

fn tch_error(e: tch::TchError) -> CollectiveError {
    CollectiveError::Nccl(format!("libtorch: {e}"))
}

/// The communicator's thread: init, then one job at a time until the channel closes.
fn communicator_main(
    id: nccl_sys::ncclUniqueId,
    rank: usize,
    world: usize,
    ordinal: usize,
    init: mpsc::Sender<Result<(), CollectiveError>>,
    jobs: mpsc::Receiver<Job>,
) {
    // Make the device's primary context (the one libtorch uses) current on this thread: NCCL
    // takes its device from the current context.
    let context = match cudarc::driver::CudaContext::new(ordinal) {
        Ok(c) => c,
        Err(e) => {
            let _ = init.send(Err(CollectiveError::Nccl(format!("CUDA device {ordinal}: {e:?}"))));
            return;
        }
    };
    let mut comm: nccl_sys::ncclComm_t = std::ptr::null_mut();
    // SAFETY: `comm` is a valid out-pointer; rank < world was checked by the caller.
    let created = unsafe { cudarc::nccl::result::comm_init_rank(&mut comm, world as i32, id, rank as i32) };
    if let Err(e) = created {
        let _ = init.send(Err(nccl_error("ncclCommInitRank", e)));
        return;
    }
    let _ = init.send(Ok(()));
    while let Ok(job) = jobs.recv() {
        let legacy_default_stream: nccl_sys::cudaStream_t = std::ptr::null_mut();
        // SAFETY: the requester keeps the contiguous f32 device buffers of `count` elements alive
        // until it has our reply; in-place reduction (send == receive buffer) is allowed by NCCL.
        let mut result = unsafe {
            cudarc::nccl::result::all_reduce(
                job.send as *const std::ffi::c_void,
                job.receive as *mut std::ffi::c_void,
                job.count,
                nccl_sys::ncclDataType_t::ncclFloat32,
                nccl_sys::ncclRedOp_t::ncclSum,
                comm,
                legacy_default_stream,
            )
        }
        .map(|_| ())
        .map_err(|e| nccl_error("ncclAllReduce", e));
        if result.is_ok() && job.synchronize {
            result = context.synchronize().map_err(|e| CollectiveError::Nccl(format!("synchronize: {e:?}")));
        }
        let _ = job.reply.send(result);
    }
    // SAFETY: created above and no longer used.
    unsafe {
        let _ = cudarc::nccl::result::comm_destroy(comm);
    }
}

#[cfg(test)]
#[path = "nccl_tests.rs"]
mod tests;
