//! The replica actor: the control-plane face of one rank. It owns the engine handle and forwards
//! each request to the engine thread, replying when the engine does. The same messages reach it
//! from a coordinator in this process or, through ractor_cluster, from another host.
use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::handle::EngineHandle;
use super::ReplicaHost;
use crate::collective::Collective;
use crate::protocol::{Port, Remote, ReplicaSpec, WorkerInfo, WorkerMsg};
use crate::Error;

pub struct WorkerActor;

/// How long a stopping replica waits for its engine thread to finish the request in flight (a
/// step's compute; a blocked reduction returns once its ring is broken or times out).
pub const ENGINE_EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

pub struct WorkerArgs {
    pub spec: ReplicaSpec,
    pub host: ReplicaHost,
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
        let (engine, info) = EngineHandle::start(args.spec, args.host, args.collective).await?;
        Ok(WorkerState { engine, info })
    }

    /// The replica is stopped only once its engine thread has returned (or the wait ran out):
    /// whoever waits for this actor to stop may then let the process exit.
    async fn post_stop(&self, _me: ActorRef<WorkerMsg>, state: &mut WorkerState) -> Result<(), ActorProcessingErr> {
        state.engine.close(ENGINE_EXIT_WAIT).await;
        Ok(())
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
