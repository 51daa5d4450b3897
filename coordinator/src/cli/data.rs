use anyhow::Context;
use d2nn_common::data::{self, DataConfig, Task};

use super::commands::DataCommand;

pub fn run(cmd: DataCommand) -> anyhow::Result<()> {
    match cmd {
        DataCommand::Fetch { data_dir, python } => {
            let report = data::fetch(&data_dir, &python)
                .with_context(|| format!("fetching data into {}", data_dir.display()))?;
            print!("{report}");
            println!("data ready in {}", data_dir.display());
        }
        DataCommand::Info { data_dir } => {
            for task in Task::ALL {
                let cfg = DataConfig { task, dir: data_dir.clone(), ..Default::default() };
                let ds = data::load(&cfg).with_context(|| format!("loading {task}"))?;
                println!("== {task} ({} classes, input {:?})", ds.num_classes, ds.input_shape);
                println!("{}", data::info_table(&ds));
            }
        }
    }
    Ok(())
}
