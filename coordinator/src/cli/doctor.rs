//! `d2nn doctor`: what this machine offers d2nn — libtorch, threads, GPUs, NCCL — and, per GPU, a
//! one-rank NCCL all-reduce whose result only NCCL can have written. Like PyTorch's collect_env,
//! the first thing to paste into a bug report.
use std::time::{Duration, Instant};

use anyhow::bail;
use d2nn_worker::collective::{nccl_available, nccl_version, Collective, NcclCollective, NcclUniqueId};
use tch::{Device, Kind, Tensor};

use super::commands::DoctorArgs;

/// Elements of the check's buffer: 64 MiB of f32, large enough to time.
const CHECK_ELEMS: i64 = 16 << 20;

fn check_gpu(ordinal: usize) -> anyhow::Result<f64> {
    let device = Device::Cuda(ordinal);
    let id = NcclUniqueId::new()?;
    let mut nccl = NcclCollective::start(&id, 0, 1, ordinal, Duration::from_secs(60))?;
    // Written by a libtorch kernel just before the reduction: NCCL must see it (same stream).
    let send = Tensor::f_arange(CHECK_ELEMS, (Kind::Float, device))?.f_remainder(1000)?;
    let mut receive = Tensor::f_zeros([CHECK_ELEMS], (Kind::Float, device))?;
    nccl.all_reduce_sum_into(&send, &mut receive)?; // warm-up and correctness
    if !receive.f_equal(&send)? {
        bail!("cuda:{ordinal}: the NCCL all-reduce result differs from its input");
    }
    let reps = 10;
    let started = Instant::now();
    for _ in 0..reps {
        nccl.all_reduce_sum_into(&send, &mut receive)?;
    }
    nccl.barrier()?;
    Ok(started.elapsed().as_secs_f64() / f64::from(reps))
}

pub fn doctor(args: DoctorArgs) -> anyhow::Result<()> {
    println!("d2nn               {}", env!("CARGO_PKG_VERSION"));
    println!("libtorch threads   {}", tch::get_num_threads());
    let cuda = tch::Cuda::is_available();
    let gpus = if cuda { tch::Cuda::device_count() as usize } else { 0 };
    println!("CUDA               {}", if cuda { format!("yes, {gpus} device(s)") } else { "no".into() });
    if cuda {
        println!("cuDNN              {}", if tch::Cuda::cudnn_is_available() { "yes" } else { "no" });
    }
    let nccl = nccl_available();
    match nccl_version() {
        Some(v) => println!("NCCL               {v}"),
        None => println!("NCCL               not loadable (scripts/setup.sh --cuda links it beside libtorch)"),
    }
    let mut failed = false;
    if nccl && cuda {
        for ordinal in 0..gpus {
            match check_gpu(ordinal) {
                Ok(seconds) => {
                    let bytes = CHECK_ELEMS as f64 * 4.0;
                    println!(
                        "cuda:{ordinal}             NCCL one-rank all-reduce of {} MiB: correct, {:.3} ms ({:.0} GB/s)",
                        (CHECK_ELEMS * 4) >> 20,
                        seconds * 1e3,
                        bytes / seconds / 1e9
                    );
                }
                Err(e) => {
                    failed = true;
                    println!("cuda:{ordinal}             NCCL check FAILED: {e:#}");
                }
            }
        }
    }
    if failed {
        bail!("an NCCL check failed");
    }
    if args.require_gpu && !(cuda && nccl && gpus > 0) {
        bail!("--require-gpu: this process sees no usable GPU with NCCL");
    }
    Ok(())
}
