//! The `d2nn` binary on a corpus of broken inputs (configs, overrides, data files, checkpoints,
//! arguments): every one ends with a non-zero exit, exactly one `error:` line that names the
//! culprit, and no panic anywhere in the output.
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs the binary and checks the three promises; returns the error line.
fn refused(args: &[&str], culprit: &str) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_d2nn"))
        .args(args)
        .current_dir(root())
        .env_remove("RUST_LOG")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(!o.status.success(), "{args:?} succeeded:\n{out}\n{err}");
    assert!(!out.contains("panicked") && !err.contains("panicked"), "{args:?} panicked:\n{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{args:?}: not one error line:\n{err}");
    assert!(errors[0].contains(culprit), "{args:?}: the error does not name `{culprit}`:\n{err}");
    errors[0].to_string()
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()).read_to_end(&mut out).unwrap();
    out
}

fn gzip(path: &Path, bytes: &[u8]) {
    let mut enc = flate2::write::GzEncoder::new(std::fs::File::create(path).unwrap(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap();
}

/// A copy of the Fashion-MNIST files in which `damage` changes one of them.
fn damaged_data(dir: &Path, name: &str, damage: impl FnOnce(&Path)) -> PathBuf {
    let data = dir.join(format!("data-{name}"));
    let fashion = data.join("fashion-mnist");
    std::fs::create_dir_all(&fashion).unwrap();
    for entry in std::fs::read_dir(root().join("data/fashion-mnist")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), fashion.join(entry.file_name())).unwrap();
    }
    damage(&fashion);
    data
}

#[test]
fn broken_configs_overrides_and_arguments_are_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let run = run.to_str().unwrap();
    // A size no machine holds: named by node, layer and bytes, before libtorch sees it.
    let huge = dir.path().join("huge.toml");
    let text = std::fs::read_to_string(root().join("configs/static_low.toml")).unwrap();
    let spec = text.replacen("out = 10 }", "out = 100000000000 }, { type = \"linear\", out = 10 }", 1);
    assert_ne!(spec, text, "static_low.toml no longer ends in a linear layer of 10");
    std::fs::write(&huge, spec).unwrap();
    let huge = huge.to_str().unwrap();
    let e = refused(&["train", "--config", huge, "--max-steps", "1", "--run-dir", run], "bytes");
    assert!(e.contains("huge.toml") && e.contains("linear"), "{e}");
    refused(&["inspect", "--config", huge], "GiB");
    refused(&["train", "--config", "configs/high_low.toml", "--set", "train.lr=fast"], "train.lr");
    let epochs = ["--set", "train.epochs=18446744073709551615", "--set", "data.train_limit=960", "--run-dir", run];
    refused(&[&["train", "--config", "configs/high_low.toml", "--workers", "1"][..], &epochs].concat(), "train.epochs");
    // Fits the file, but not a step count (epochs × steps per epoch).
    let epochs = ["--set", "train.epochs=9223372036854775807", "--set", "data.train_limit=960", "--run-dir", run];
    refused(&[&["train", "--config", "configs/high_low.toml", "--workers", "1"][..], &epochs].concat(), "train.epochs");
    let padding = ["--config", huge.replace("huge.toml", "padding.toml").as_str()].map(str::to_string);
    let text = std::fs::read_to_string(root().join("configs/static_low.toml")).unwrap();
    std::fs::write(&padding[1], text.replacen("padding = 1", "padding = 9223372036854775807", 1)).unwrap();
    refused(&["inspect", &padding[0], &padding[1]], "conv2d");
    let momentum = ["--set", "train.optimizer.kind=sgd", "--set", "train.optimizer.momentum=2"];
    refused(&[&["config", "show", "--config", "configs/high_low.toml"][..], &momentum].concat(), "train.optimizer");
    // Mini-bags of 32 over 8 workers of a 128-example batch: refused once, up front.
    let e = refused(
        &["train", "--config", "configs/cascade.toml", "--workers", "8", "--max-steps", "1", "--run-dir", run],
        "train.bag_size",
    );
    assert!(e.contains("cascade.toml"), "{e}");
    refused(&["train", "--config", "configs/high_low.toml", "--workers", "0", "--run-dir", run], "--workers");
    refused(&["eval", "--checkpoint", dir.path().join("no-checkpoint").to_str().unwrap()], "no-checkpoint");
    let fake = dir.path().join("fake-checkpoint");
    std::fs::create_dir_all(&fake).unwrap();
    std::fs::write(fake.join("meta.json"), "{ not json").unwrap();
    refused(&["eval", "--checkpoint", fake.to_str().unwrap()], "meta.json");
}

#[test]
fn broken_data_files_are_one_clear_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let train = |data: &Path, culprit: &str| {
        let set = format!("data.dir={}", data.display());
        let args = ["train", "--config", "configs/high_low.toml", "--set", &set, "--max-steps", "1"];
        refused(&[&args[..], &["--run-dir", run.to_str().unwrap()]].concat(), culprit)
    };
    train(&dir.path().join("no-such-data"), "no-such-data");
    let truncated = damaged_data(dir.path(), "truncated", |d| {
        let path = d.join("train-images-idx3-ubyte.gz");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    });
    train(&truncated, "train-images-idx3-ubyte.gz");
    let not_gzip = damaged_data(dir.path(), "not-gzip", |d| {
        std::fs::write(d.join("t10k-labels-idx1-ubyte.gz"), "these are not labels").unwrap();
    });
    train(&not_gzip, "t10k-labels-idx1-ubyte.gz");
    let bad_label = damaged_data(dir.path(), "bad-label", |d| {
        let path = d.join("train-labels-idx1-ubyte.gz");
        let mut bytes = gunzip(&path);
        bytes[8 + 123] = 200;
        gzip(&path, &bytes);
    });
    let e = train(&bad_label, "train-labels-idx1-ubyte.gz");
    assert!(e.contains("200") && e.contains("123"), "{e}");
    let miscounted = damaged_data(dir.path(), "miscounted", |d| {
        let path = d.join("t10k-images-idx3-ubyte.gz");
        let mut bytes = gunzip(&path);
        bytes[4..8].copy_from_slice(&10_001u32.to_be_bytes());
        gzip(&path, &bytes);
    });
    train(&miscounted, "t10k-images-idx3-ubyte.gz");
}
