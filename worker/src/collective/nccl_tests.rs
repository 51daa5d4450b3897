//! The NCCL collective's tests: the unique id and the errors on any machine, a one-rank all-reduce
//! where a GPU and NCCL are present (skipped, and saying so, elsewhere).
use super::*;

#[test]
fn a_unique_id_of_the_wrong_size_is_an_error() {
    let err = NcclUniqueId(vec![1, 2, 3]).to_sys().unwrap_err();
    assert!(err.to_string().contains("128 bytes"), "{err}");
}

#[test]
fn the_unique_id_survives_a_bincode_round_trip() {
    if !nccl_available() {
        eprintln!("skipped: libnccl.so is not loadable here (CPU setup); run `scripts/setup.sh --cuda`");
        return;
    }
    let id = NcclUniqueId::new().expect("ncclGetUniqueId");
    assert_eq!(id.0.len(), NCCL_ID_BYTES);
    assert!(id.0.iter().any(|&b| b != 0), "an all-zero id");
    let cfg = bincode::config::standard();
    let bytes = bincode::serde::encode_to_vec(&id, cfg).unwrap();
    let (back, _): (NcclUniqueId, usize) = bincode::serde::decode_from_slice(&bytes, cfg).unwrap();
    assert_eq!(back, id);
    back.to_sys().expect("a valid id");
}

#[test]
fn without_nccl_start_is_an_error_not_a_panic() {
    if nccl_available() && tch::Cuda::is_available() {
        eprintln!("skipped: this machine has NCCL and a GPU (covered by the GPU tests and `d2nn doctor`)");
        return;
    }
    let id = NcclUniqueId(vec![0; NCCL_ID_BYTES]);
    let err = NcclCollective::start(&id, 0, 1, 0, Duration::from_secs(1)).err().expect("an error");
    assert!(matches!(err, CollectiveError::Nccl(_)), "{err}");
}

/// One GPU allows one rank per communicator (NCCL rejects two ranks on one device), so this
/// checks the plumbing: device pointers, stream order, staging, barrier.
#[test]
fn one_rank_all_reduce_on_a_gpu() {
    if !(nccl_available() && tch::Cuda::is_available()) {
        eprintln!("skipped: needs a GPU and NCCL (`scripts/setup.sh --cuda` on a GPU machine)");
        return;
    }
    let id = NcclUniqueId::new().unwrap();
    let mut c = NcclCollective::start(&id, 0, 1, 0, Duration::from_secs(60)).unwrap();
    // Written by a libtorch kernel just before: NCCL must see it (same stream).
    let src = Tensor::arange(1_000_000, (Kind::Float, Device::Cuda(0))) * 0.5;
    let mut dst = Tensor::zeros([1_000_000], (Kind::Float, Device::Cuda(0)));
    c.all_reduce_sum_into(&src, &mut dst).unwrap();
    let host: Vec<f32> = Vec::try_from(dst.to_device(Device::Cpu)).unwrap();
    assert!(host.iter().enumerate().all(|(i, &v)| v == i as f32 * 0.5));
    let mut t = src.copy();
    c.all_reduce_sum_tensor(&mut t).unwrap();
    assert!(t.equal(&src));
    let mut buf = vec![3.0f32; 4097];
    c.all_reduce_sum(&mut buf).unwrap();
    assert!(buf.iter().all(|&v| v == 3.0));
    c.barrier().unwrap();
}
