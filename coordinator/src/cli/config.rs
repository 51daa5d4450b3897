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

pub fn build_graph(args: &ConfigArgs) -> anyhow::Result<(RunConfig, Graph)> {
    let cfg = load_config(args)?;
    let (shape, classes) = cfg.data.task.shape();
    let graph = Graph::build(&cfg.model, &shape, classes, &args.config.display().to_string())?;
    Ok((cfg, graph))
}
