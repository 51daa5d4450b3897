//! `d2nn config show`, and how every command reads a config and a device from its arguments.
use anyhow::bail;
use d2nn_common::config::RunConfig;
use d2nn_common::graph::Graph;
use tch::Device;

use super::commands::{ConfigArgs, ConfigCommand};

pub fn load_config(args: &ConfigArgs) -> anyhow::Result<RunConfig> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    Ok(RunConfig::load(&args.config, &env, &args.overrides)?)
}

pub fn parse_device(text: &str) -> anyhow::Result<Device> {
    let device = match text {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Device::Cuda(n),
            _ => bail!("--device `{text}`: expected cpu, cuda or cuda:N"),
        },
    };
    if let Device::Cuda(n) = device {
        if !tch::Cuda::is_available() {
            bail!("--device {text}: CUDA is not available (build with `scripts/setup.sh --cuda` on a GPU machine)");
        }
        if n as i64 >= tch::Cuda::device_count() {
            bail!("--device {text}: only {} CUDA devices", tch::Cuda::device_count());
        }
    }
    Ok(device)
}

pub fn config(cmd: ConfigCommand) -> anyhow::Result<()> {
    let ConfigCommand::Show(args) = cmd;
    let cfg = load_config(&args)?;
    print!("{}", cfg.to_toml()?);
    Ok(())
}

/// Input shape and class count of a config's task, without loading the data.
fn task_shape(cfg: &RunConfig) -> (Vec<i64>, i64) {
    use d2nn_common::data::Task;
    match cfg.data.task {
        Task::FashionMnist | Task::FashionHier => (vec![1, 28, 28], 10),
        Task::FashionBinary => (vec![1, 28, 28], 2),
        Task::Lfw => (vec![1, 25, 25], 2),
    }
}

pub fn build_graph(args: &ConfigArgs) -> anyhow::Result<(RunConfig, Graph)> {
    let cfg = load_config(args)?;
    let (shape, classes) = task_shape(&cfg);
    let graph = Graph::build(&cfg.model, &shape, classes, &args.config.display().to_string())?;
    Ok((cfg, graph))
}
