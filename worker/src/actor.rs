//! The worker actor: the control-plane face of one rank. It owns the engine handle and forwards
//! each request to the engine thread, replying when the engine does. The same messages reach it
//! from a coordinator in this process or, through ractor_cluster, from another host.
use d2nn_common::checkpoint::SavedTensors;
use d2nn_common::protocol::{Abort, Commit, Committed, Remote, StepOrder, StepReport};
use d2nn_common::train::Summary;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;

use crate::collective::Collective;
use crate::engine::{EngineHandle, EvalRequest, SaveRequest, WorkerSpec};
use crate::Error;

pub use crate::engine::WorkerInfo;

/// Replies carry a worker's errors as text: they cross process boundaries, and the coordinator
/// only reports them.
pub type WorkerReply<T> = Result<T, String>;

/// A reply port as the cluster needs it: the reply is encoded, and a peer's reply that does not
/// decode arrives as an error instead of a panic.
pub type Port<T> = RpcReplyPort<Remote<WorkerReply<T>>>;

/// One small enum, request/reply only. `Step` for every rank must be sent before any of them can
/// finish (they meet in the all-reduce), so the coordinator casts all orders first, then awaits.
#[derive(RactorClusterMessage)]
pub enum WorkerMsg {
    #[rpc]
    Info(RpcReplyPort<Remote<WorkerReply<WorkerInfo>>>),
    #[rpc]
    Step(Remote<StepOrder>, RpcReplyPort<Remote<WorkerReply<StepReport>>>),
    #[rpc]
    Commit(Remote<Commit>, RpcReplyPort<Remote<WorkerReply<Committed>>>),
    #[rpc]
    Abort(Remote<Abort>, RpcReplyPort<Remote<WorkerReply<Committed>>>),
    #[rpc]
    Evaluate(Remote<EvalRequest>, RpcReplyPort<Remote<WorkerReply<Summary>>>),
    /// Rank 0 writes its tensor files into the coordinator's staging directory (checkpoints).
    #[rpc]
    Save(Remote<SaveRequest>, RpcReplyPort<Remote<WorkerReply<SavedTensors>>>),
}

pub struct WorkerActor;

pub struct WorkerArgs {
    pub spec: WorkerSpec,
    pub collective: Box<dyn Collective>,
}

pub struct WorkerState {
    engine: EngineHandle,
    info: WorkerInfo,
}

/// An engine that is gone ends the actor, so its supervisor learns of it. Every other error, a
/// broken collective included, is only reported: the replica still holds the last committed
/// state, which the coordinator may want saved before it rebuilds the group.
fn reply<T>(port: Port<T>, result: Result<T, Error>) -> Result<(), ActorProcessingErr> {
    let fatal = matches!(&result, Err(Error::EngineGone { .. }));
    let text = result.as_ref().err().map(ToString::to_string);
    // The asker may have given up (timeout): not this actor's failure.
    let _ = port.send(Remote::new(result.map_err(|e| e.to_string())));
    match (fatal, text) {
        (true, Some(t)) => Err(t.into()),
        _ => Ok(()),
    }
}

/// Runs `request` on a decoded payload and replies with its result. A request whose bytes did
/// not decode is logged and answered with the decoding error (so the asker does not wait for
/// nothing); it never reaches the engine.
async fn serve<T, R, F>(
    port: Port<R>,
    what: &str,
    payload: Remote<T>,
    request: impl FnOnce(T) -> F,
) -> Result<(), ActorProcessingErr>
where
    F: std::future::Future<Output = Result<R, Error>>,
{
    let result = match payload.into_inner() {
        Ok(value) => request(value).await,
        Err(e) => {
            tracing::warn!(request = what, error = %e, "dropped a malformed request");
            Err(Error::Protocol(format!("malformed {what}: {e}")))
        }
    };
    reply(port, result)
}

impl Actor for WorkerActor {
    type Msg = WorkerMsg;
    type State = WorkerState;
    type Arguments = WorkerArgs;

    async fn pre_start(&self, _me: ActorRef<WorkerMsg>, args: WorkerArgs) -> Result<WorkerState, ActorProcessingErr> {
        let (engine, info) = EngineHandle::start(args.spec, args.collective).await?;
        Ok(WorkerState { engine, info })
    }

    async fn handle(
        &self,
        _me: ActorRef<WorkerMsg>,
        msg: WorkerMsg,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        let engine = &state.engine;
        match msg {
            WorkerMsg::Info(port) => reply(port, Ok(state.info.clone())),
            WorkerMsg::Step(order, port) => serve(port, "step order", order, |o| engine.step(o)).await,
            WorkerMsg::Commit(commit, port) => serve(port, "commit", commit, |c| engine.commit(c)).await,
            WorkerMsg::Abort(abort, port) => serve(port, "abort", abort, |a| engine.abort(a)).await,
            WorkerMsg::Evaluate(req, port) => serve(port, "evaluation request", req, |r| engine.evaluate(r)).await,
            WorkerMsg::Save(req, port) => serve(port, "save request", req, |r| engine.save(r)).await,
        }
    }
}
