//! What the multi-process tests (tests/cluster.rs, tests/tls.rs) share: the `d2nn` binary with a
//! clean environment, free loopback ports and children that log to files.
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The repository root (configs and data are found from it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `d2nn` binary run from the root, with `cookie` as the cluster cookie and none of the
/// torchrun variables of the environment the test runs in.
pub fn d2nn_with_cookie(cookie: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_d2nn"));
    c.current_dir(root()).env_remove("RUST_LOG").env("D2NN_CLUSTER_COOKIE", cookie);
    for var in ["MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK"] {
        c.env_remove(var);
    }
    c
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child whose stdout and stderr go to files in `dir` (read while it runs, and after).
pub fn spawn_logged(mut cmd: Command, dir: &Path, name: &str) -> Child {
    let out = File::create(dir.join(format!("{name}.out"))).unwrap();
    let err = File::create(dir.join(format!("{name}.err"))).unwrap();
    cmd.stdout(Stdio::from(out)).stderr(Stdio::from(err)).spawn().unwrap()
}

/// A file a child wrote in `dir`, empty if it is not there (yet).
pub fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap_or_default()
}

/// The child's exit status; killed, and the test failed, if it runs past `limit`.
pub fn wait(child: &mut Child, limit: Duration) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("a process ran past {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
