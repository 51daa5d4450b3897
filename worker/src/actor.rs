//! The worker actor: the control-plane face of one rank. It owns the engine handle and forwards
//! each request to the engine thread, replying when the engine does.
use d2nn_common::checkpoint::SavedTensors;
use d2nn_common::protocol::{Abort, Commit, Committed, StepOrder, StepReport};
use d2nn_common::train::Summary;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::collective::Collective;
use crate::engine::{EngineHandle, EvalRequest, SaveRequest, WorkerSpec};
use crate::Error;

pub use crate::engine::WorkerInfo;

/// Replies carry a worker's errors as text: they will cross process boundaries, and the
/// coordinator only reports them.
pub type WorkerReply<T> = Result<T, String>;

/// One small enum, request/reply only. `Step` for every rank must be sent before any of them can
/// finish (they meet in the all-reduce), so the coordinator casts all orders first, then awaits.
pub enum WorkerMsg {
    Info(RpcReplyPort<WorkerReply<WorkerInfo>>),
    Step(StepOrder, RpcReplyPort<WorkerReply<StepReport>>),
    Commit(Commit, RpcReplyPort<WorkerReply<Committed>>),
    Abort(Abort, RpcReplyPort<WorkerReply<Committed>>),
    Evaluate(EvalRequest, RpcReplyPort<WorkerReply<Summary>>),
    /// Rank 0 writes its tensor files into the coordinator's staging directory (checkpoints).
    Save(SaveRequest, RpcReplyPort<WorkerReply<SavedTensors>>),
}

// Local only for now: with ractor's `cluster` feature the blanket impl is off. The multi-node
// runtime derives the serialized form (every payload is serde already).
impl ractor::Message for WorkerMsg {}

pub struct WorkerActor;

pub struct WorkerArgs {
    pub spec: WorkerSpec,
    pub collective: Box<dyn Collective>,
}

pub struct WorkerState {
    engine: EngineHandle,
    info: WorkerInfo,
}

/// Errors that mean the engine is unusable end the actor, so its supervisor learns of it; a
/// protocol error is only reported back.
fn reply<T>(port: RpcReplyPort<WorkerReply<T>>, result: Result<T, Error>) -> Result<(), ActorProcessingErr> {
    let fatal = matches!(&result, Err(Error::EngineGone { .. }) | Err(Error::Collective(_)));
    let text = result.as_ref().err().map(ToString::to_string);
    // The asker may have given up (timeout): not this actor's failure.
    let _ = port.send(result.map_err(|e| e.to_string()));
    match (fatal, text) {
        (true, Some(t)) => Err(t.into()),
        _ => Ok(()),
    }
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
        match msg {
            WorkerMsg::Info(port) => {
                let _ = port.send(Ok(state.info.clone()));
                Ok(())
            }
            WorkerMsg::Step(order, port) => reply(port, state.engine.step(order).await),
            WorkerMsg::Commit(commit, port) => reply(port, state.engine.commit(commit).await),
            WorkerMsg::Abort(abort, port) => reply(port, state.engine.abort(abort).await),
            WorkerMsg::Evaluate(req, port) => reply(port, state.engine.evaluate(req).await),
            WorkerMsg::Save(req, port) => reply(port, state.engine.save(req).await),
        }
    }
}
