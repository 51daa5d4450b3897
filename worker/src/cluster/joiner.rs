//! The joiner: a worker process's long-lived face to a remote coordinator. The coordinator finds it
//! in the [`JOINERS_GROUP`] process group, pings it (heartbeats), and for every generation of the
//! cluster assigns it a rank ([`JoinerMsg::Prepare`]), hands out the ring ([`JoinerMsg::Start`]),
//! and later retires that replica. The replica itself is a [`WorkerActor`] the joiner spawns, found
//! by the coordinator in [`workers_group`] of its generation; a replica starts from the run's
//! checkpoint, so a rank that joins late receives the parameters and optimizer state before its
//! first step.
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tch::Device;
use tokio::sync::mpsc;

use crate::collective::{
    nccl_available, Collective, NcclCollective, NcclUniqueId, RingBreaker, TcpRing, TcpRingOptions,
};
use crate::protocol::cookie::ClusterCookie;
use crate::protocol::{
    workers_group, Assignment, Finish, JoinerMsg, Port, Prepared, Remote, StartPlan, WorkerHello, WorkerMsg,
    JOINERS_GROUP,
};
use crate::replica::{startup_error, ReplicaHost, WorkerActor, WorkerArgs};
use crate::tls::TlsConfig;
use crate::Error;

/// What the worker process decided on its own: its device, data, and how it is known.
#[derive(Debug, Clone)]
pub struct JoinerOptions {
    pub device: Device,
    /// Overrides the config's `data.dir` (this host's copy of the datasets).
    pub data_dir: Option<PathBuf>,
    /// Where the ring listener binds (port 0: any free port).
    pub ring_bind: SocketAddr,
    pub hello: WorkerHello,
    /// libtorch threads of the replica (None: libtorch's default).
    pub threads: Option<usize>,
}

pub struct Joiner;

pub struct JoinerArgs {
    pub options: JoinerOptions,
    /// Authenticates the ring's connections (the same secret as the cluster's sessions).
    pub cookie: ClusterCookie,
    /// TLS under the ring's links (the same identity as the cluster session's).
    pub tls: Option<TlsConfig>,
    /// Where [`JoinerMsg::Finish`] goes: the process exits with it.
    pub finished: mpsc::UnboundedSender<Finish>,
}

pub struct JoinerState {
    options: JoinerOptions,
    cookie: ClusterCookie,
    tls: Option<TlsConfig>,
    finished: mpsc::UnboundedSender<Finish>,
    prepared: Option<(Assignment, TcpListener)>,
    /// Shared with the task that starts a replica: building one (loading data, joining the ring)
    /// takes seconds, and the joiner must keep answering heartbeats meanwhile.
    running: Arc<Mutex<Running>>,
}

/// The generation this process belongs to, and its replica and ring once started.
#[derive(Default)]
struct Running {
    generation: Option<u64>,
    replica: Option<ActorRef<WorkerMsg>>,
    breaker: Option<RingBreaker>,
}

fn lock(running: &Mutex<Running>) -> std::sync::MutexGuard<'_, Running> {
    running.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl JoinerState {
    /// Stops the replica, breaking its ring first so that a reduction it is blocked in returns;
    /// the stopped replica is returned, to be waited for when the process is about to exit.
    fn retire(&mut self, why: &str) -> Option<ActorRef<WorkerMsg>> {
        let mut running = lock(&self.running);
        if let Some(breaker) = running.breaker.take() {
            breaker.break_ring();
        }
        let generation = running.generation.take();
        let replica = running.replica.take()?;
        tracing::info!(generation, why, "retiring the replica");
        replica.stop(Some(why.to_string()));
        Some(replica)
    }

    fn prepare(&mut self, assignment: Assignment) -> Result<Prepared, Error> {
        self.retire("a new generation is forming");
        let listener = TcpListener::bind(self.options.ring_bind)
            .map_err(|e| Error::Protocol(format!("cannot listen for the ring on {}: {e}", self.options.ring_bind)))?;
        let ring_addr = listener.local_addr().map_err(|e| Error::Protocol(format!("ring listener: {e}")))?;
        let nccl_id = match self.options.device {
            Device::Cuda(_) if nccl_available() => Some(NcclUniqueId::new()?.0),
            _ => None,
        };
        let generation = assignment.generation;
        tracing::info!(generation, rank = assignment.replica.rank, world = assignment.replica.world, %ring_addr, "assigned");
        lock(&self.running).generation = Some(generation);
        self.prepared = Some((assignment, listener));
        Ok(Prepared { generation, ring_addr, nccl_id })
    }
}

/// Joins the collective of `plan` and starts the replica, off the joiner's message loop.
async fn start_replica(
    joiner: ActorRef<JoinerMsg>,
    (options, cookie, tls): (JoinerOptions, ClusterCookie, Option<TlsConfig>),
    prepared: Option<(Assignment, TcpListener)>,
    plan: StartPlan,
    running: Arc<Mutex<Running>>,
) -> Result<(), Error> {
    let Some((assignment, listener)) = prepared else {
        return Err(Error::Protocol(format!("start of generation {} before any assignment", plan.generation)));
    };
    let mut spec = *assignment.replica;
    if assignment.generation != plan.generation || spec.rank != plan.ring.rank || spec.world != plan.ring.world {
        return Err(Error::Protocol(format!(
            "start of generation {} as rank {} of {}, but the assignment was generation {} rank {} of {}",
            plan.generation, plan.ring.rank, plan.ring.world, assignment.generation, spec.rank, spec.world
        )));
    }
    if let Some(dir) = &options.data_dir {
        spec.cfg.data.dir = dir.clone();
    }
    let timeout = spec.collective_timeout.max(Duration::from_millis(100));
    let device = options.device;
    let mut breaker = None;
    let collective: Box<dyn Collective> = match (&plan.nccl_id, device) {
        (Some(id), Device::Cuda(gpu)) => {
            let id = NcclUniqueId(id.clone());
            let (rank, world) = (plan.ring.rank, plan.ring.world);
            Box::new(
                tokio::task::spawn_blocking(move || NcclCollective::start(&id, rank, world, gpu, timeout))
                    .await
                    .map_err(|e| Error::Protocol(format!("NCCL start: {e}")))??,
            )
        }
        _ => {
            let ring_plan = plan.ring.clone();
            let on_tls = tls.is_some();
            let ring_options = TcpRingOptions { io_timeout: timeout, tls, ..TcpRingOptions::default() };
            let secret = cookie.secret().as_bytes().to_vec();
            let ring =
                tokio::task::spawn_blocking(move || TcpRing::connect(&listener, &ring_plan, ring_options, &secret))
                    .await
                    .map_err(|e| Error::Protocol(format!("ring connect: {e}")))??;
            tracing::info!(generation = plan.generation, tls = on_tls, "joined the gradient ring");
            breaker = Some(ring.breaker()?);
            Box::new(ring)
        }
    };
    let host = ReplicaHost { device, threads: options.threads, faults: Default::default() };
    let name = format!("d2nn-replica-g{}-r{}", plan.generation, spec.rank);
    let (replica, _) =
        Actor::spawn_linked(Some(name), WorkerActor, WorkerArgs { spec, host, collective }, joiner.get_cell())
            .await
            .map_err(|e| Error::Protocol(format!("the replica failed to start: {}", startup_error(&e))))?;
    let mut running = lock(&running);
    if running.generation != Some(plan.generation) {
        // Retired (or re-assigned) while it was starting: it must not take part.
        replica.stop(Some("retired while starting".into()));
        return Err(Error::Protocol(format!("generation {} was retired while its replica started", plan.generation)));
    }
    ractor::pg::join(workers_group(plan.generation), vec![replica.get_cell()]);
    running.replica = Some(replica);
    running.breaker = breaker;
    Ok(())
}

fn answer<T>(port: Port<T>, result: Result<T, Error>) {
    if let Err(e) = &result {
        tracing::warn!(error = %e, "request failed");
    }
    let _ = port.send(Remote::new(result.map_err(|e| e.to_string())));
}

impl Actor for Joiner {
    type Msg = JoinerMsg;
    type State = JoinerState;
    type Arguments = JoinerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<JoinerMsg>,
        args: JoinerArgs,
    ) -> Result<JoinerState, ActorProcessingErr> {
        ractor::pg::join(JOINERS_GROUP.to_string(), vec![myself.get_cell()]);
        Ok(JoinerState {
            options: args.options,
            cookie: args.cookie,
            tls: args.tls,
            finished: args.finished,
            prepared: None,
            running: Default::default(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<JoinerMsg>,
        msg: JoinerMsg,
        state: &mut JoinerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            JoinerMsg::Hello(port) => {
                let _ = port.send(Remote::new(state.options.hello.clone()));
            }
            JoinerMsg::Ping(n, port) => {
                let _ = port.send(n);
            }
            JoinerMsg::Prepare(assignment, port) => match assignment.into_inner() {
                Ok(a) => answer(port, state.prepare(a)),
                Err(e) => answer(port, Err(Error::Protocol(format!("malformed assignment: {e}")))),
            },
            JoinerMsg::Start(plan, port) => match plan.into_inner() {
                Ok(plan) => {
                    let options = (state.options.clone(), state.cookie.clone(), state.tls.clone());
                    let (prepared, running) = (state.prepared.take(), state.running.clone());
                    tokio::spawn(async move {
                        answer(port, start_replica(myself, options, prepared, plan, running).await);
                    });
                }
                Err(e) => answer(port, Err(Error::Protocol(format!("malformed start plan: {e}")))),
            },
            JoinerMsg::Retire(generation) => {
                let Ok(generation) = generation.into_inner() else { return Ok(()) };
                if lock(&state.running).generation == Some(generation) {
                    state.retire("retired by the coordinator");
                }
            }
            JoinerMsg::Abandon(generation) => {
                let Ok(generation) = generation.into_inner() else { return Ok(()) };
                let running = lock(&state.running);
                if let Some(breaker) = running.breaker.as_ref().filter(|_| running.generation == Some(generation)) {
                    tracing::warn!(generation, "a peer was lost: breaking the ring");
                    breaker.break_ring();
                }
            }
            JoinerMsg::Finish(finish) => {
                state.retire("the run is over");
                let finish = finish.into_inner().unwrap_or_else(|e| Finish {
                    ok: false,
                    message: format!("the coordinator ended the run with a malformed message: {e}"),
                });
                let _ = state.finished.send(finish);
            }
        }
        Ok(())
    }

    /// A replica that fails is dropped; the coordinator notices at its next request and forms a
    /// new generation. The joiner itself stays up.
    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<JoinerMsg>,
        event: SupervisionEvent,
        state: &mut JoinerState,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(cell, e) = event {
            tracing::error!(replica = ?cell.get_name(), error = %e, "the replica failed");
            let mut running = lock(&state.running);
            if running.replica.as_ref().is_some_and(|r| r.get_id() == cell.get_id()) {
                running.replica = None;
            }
        }
        Ok(())
    }

    /// The process exits after this: wait for the replica (and its engine thread) to end.
    async fn post_stop(&self, _myself: ActorRef<JoinerMsg>, state: &mut JoinerState) -> Result<(), ActorProcessingErr> {
        if let Some(replica) = state.retire("the worker process is stopping") {
            let wait = crate::replica::actor::ENGINE_EXIT_WAIT + std::time::Duration::from_secs(1);
            let _ = replica.stop_and_wait(None, Some(wait)).await;
        }
        Ok(())
    }
}
