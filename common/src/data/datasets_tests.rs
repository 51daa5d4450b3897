//! Tests of `datasets.rs` against the real files under the data directory.

use std::sync::OnceLock;

use super::*;
use crate::data::CoarseGroups;
use crate::data::{info_table, test_data_dir};

/// The decoded Fashion-MNIST files, read once for all tests (decoding is the slow part).
fn raw() -> &'static FashionRaw {
    static RAW: OnceLock<FashionRaw> = OnceLock::new();
    RAW.get_or_init(|| {
        let dir = resolve_dir(&test_data_dir()).expect("data dir (run scripts/setup.sh)");
        read_fashion(&dir).expect("Fashion-MNIST files")
    })
}

fn fashion(task: Task) -> Dataset {
    fashion_dataset(raw(), &DataConfig { task, ..DataConfig::default() }).expect("fashion dataset")
}

fn lfw() -> Dataset {
    load(&DataConfig { task: Task::Lfw, dir: test_data_dir(), ..DataConfig::default() }).expect("lfw")
}

fn pixel_sum(split: &Split, i: usize) -> i64 {
    split.images().get(i as i64).to_kind(Kind::Int64).sum(Kind::Int64).int64_value(&[])
}

#[test]
fn fashion_counts_per_class_and_split() {
    let ds = fashion(Task::FashionMnist);
    assert_eq!((ds.train.len(), ds.val.len(), ds.test.len()), (55_000, 5_000, 10_000));
    assert_eq!((ds.num_classes, ds.num_coarse, ds.input_shape), (10, 10, [1, 28, 28]));
    let (tr, va, te) = (ds.train.class_counts(10), ds.val.class_counts(10), ds.test.class_counts(10));
    for c in 0..10 {
        assert_eq!(tr[c] + va[c], 6000, "class {c}");
        assert_eq!(te[c], 1000, "class {c}");
        // The validation tail is not one class: the file is shuffled.
        assert!((400..600).contains(&va[c]), "class {c}: {} in val", va[c]);
    }
    assert_eq!(ds.class_names[8], "Bag");
    assert_eq!(ds.train.coarse_labels(), ds.train.labels());
}

#[test]
fn fashion_golden_pixels() {
    // Golden values computed independently with Python 3: gzip.open(...).read(), then for image i
    // sum(data[16 + 784*i : 16 + 784*(i+1)]) and label bytes[8 + i]. File indices 0, 55000 (first of
    // val), 59999 (last of val); test file indices 0 and 9999.
    let ds = fashion(Task::FashionMnist);
    assert_eq!((pixel_sum(&ds.train, 0), ds.train.labels()[0]), (76_247, 9));
    assert_eq!((pixel_sum(&ds.train, 54_999), ds.train.labels()[54_999]), (103_694, 2));
    assert_eq!((pixel_sum(&ds.val, 0), ds.val.labels()[0]), (89_180, 0));
    assert_eq!((pixel_sum(&ds.val, 4_999), ds.val.labels()[4_999]), (16_684, 5));
    assert_eq!((pixel_sum(&ds.test, 0), ds.test.labels()[0]), (33_456, 9));
    assert_eq!((pixel_sum(&ds.test, 9_999), ds.test.labels()[9_999]), (24_390, 5));
    // Whole-file sums: train 3431114169 and test 573469082 (same route).
    let all = |s: &Split| s.images().sum(Kind::Int64).int64_value(&[]);
    assert_eq!(all(&ds.train) + all(&ds.val), 3_431_114_169);
    assert_eq!(all(&ds.test), 573_469_082);
}

#[test]
fn batch_shapes_dtypes_range_and_ids() {
    let ds = fashion(Task::FashionMnist);
    let idx = [3usize, 0, 54_999, 17];
    let b = ds.train.batch(&idx, Device::Cpu).expect("batch");
    assert_eq!(b.x.size(), [4, 1, 28, 28]);
    assert_eq!((b.x.kind(), b.y.kind(), b.coarse.kind()), (Kind::Float, Kind::Int64, Kind::Int64));
    assert_eq!((b.x.device(), b.y.device()), (Device::Cpu, Device::Cpu));
    assert_eq!((b.y.size(), b.coarse.size()), (vec![4], vec![4]));
    assert_eq!(b.ids, vec![3, 0, 54_999, 17]);
    assert_eq!(Vec::<i64>::try_from(&b.y).expect("labels"), idx.map(|i| ds.train.labels()[i]));
    let (lo, hi) = (b.x.min().double_value(&[]), b.x.max().double_value(&[]));
    assert!(lo >= 0.0 && hi <= 1.0 && hi > 0.99, "range [{lo}, {hi}]");
    // Row 2 of the batch is train image 54,999: its pixels sum to 103694 / 255.
    let s = b.x.get(2).sum(Kind::Double).double_value(&[]);
    assert!((s - 103_694.0 / 255.0).abs() < 1e-2, "{s}");
    let empty = ds.test.batch(&[], Device::Cpu).expect("empty batch");
    assert_eq!(empty.x.size(), [0, 1, 28, 28]);
    let msg = ds.val.batch(&[1, 5_000], Device::Cpu).expect_err("out of range").to_string();
    assert!(msg.contains("batch index 5000 out of range for a split of 5000"), "{msg}");
}

#[test]
fn fashion_binary_is_imbalanced_one_to_nine() {
    let ds = fashion(Task::FashionBinary);
    assert_eq!(ds.class_names, ["rest", "Bag"]);
    assert_eq!((ds.num_classes, ds.num_coarse), (2, 2));
    assert_eq!(ds.test.class_counts(2), [9000, 1000]);
    let (tr, va) = (ds.train.class_counts(2), ds.val.class_counts(2));
    assert_eq!([tr[0] + va[0], tr[1] + va[1]], [54_000, 6_000]);
    let cfg = DataConfig { task: Task::FashionBinary, positive_class: 3, ..DataConfig::default() };
    let dress = fashion_dataset(raw(), &cfg).expect("dress");
    assert_eq!(dress.class_names[1], "Dress");
    let b = dress.test.batch(&[0, 1, 2, 3], Device::Cpu).expect("batch");
    assert_eq!(b.y, b.coarse);
    let cfg = DataConfig { positive_class: 10, ..cfg };
    let msg = fashion_dataset(raw(), &cfg).expect_err("class 10").to_string();
    assert!(msg.contains("positive_class 10"), "{msg}");
}

#[test]
fn fashion_hier_coarse_groups() {
    let groups = CoarseGroups::default();
    let ds = fashion(Task::FashionHier);
    assert_eq!((ds.num_classes, ds.num_coarse), (10, 4));
    assert_eq!(ds.test.coarse_counts(4), [4000, 2000, 3000, 1000]);
    for (&y, &c) in ds.train.labels().iter().zip(ds.train.coarse_labels()) {
        assert_eq!(Some(c), groups.of(y as u8).map(i64::from));
    }
    let table = info_table(&ds);
    assert!(table.contains("coarse group") && table.contains("footwear"), "{table}");

    // Dresses with the tops, trousers alone: group 0 gets the test set's 5,000 images of five classes.
    let regrouped = vec![vec![0, 2, 3, 4, 6], vec![1], vec![5, 7, 9], vec![8]];
    let cfg = DataConfig { task: Task::FashionHier, coarse_groups: Some(regrouped), ..DataConfig::default() };
    let ds = fashion_dataset(raw(), &cfg).expect("regrouped");
    assert_eq!(ds.test.coarse_counts(4), [5000, 1000, 3000, 1000]);
    assert!(info_table(&ds).contains("T-shirt/top+Pullover+Dress+Coat+Shirt"));
    let cfg = DataConfig { task: Task::FashionMnist, ..cfg };
    let msg = fashion_dataset(raw(), &cfg).expect_err("not fashion-hier").to_string();
    assert!(msg.contains("data.coarse_groups") && msg.contains("fashion-mnist"), "{msg}");
}

#[test]
fn limits_take_prefixes() {
    let cfg = DataConfig { train_limit: Some(100), test_limit: Some(50), ..DataConfig::default() };
    let ds = fashion_dataset(raw(), &cfg).expect("limited");
    assert_eq!((ds.train.len(), ds.val.len(), ds.test.len()), (100, 50, 50));
    assert_eq!(pixel_sum(&ds.val, 0), 89_180, "val still starts at file index 55000");
    let big = DataConfig { train_limit: Some(1 << 30), ..DataConfig::default() };
    assert_eq!(fashion_dataset(raw(), &big).expect("clamped").train.len(), 55_000);
    let zero = DataConfig { dir: test_data_dir(), train_limit: Some(0), ..DataConfig::default() };
    assert!(load(&zero).expect_err("zero").to_string().contains("train_limit must be at least 1"));
}

#[test]
fn lfw_split_counts_values_and_golden_order() {
    let ds = lfw();
    assert_eq!((ds.train.len(), ds.val.len(), ds.test.len()), (140, 0, 60));
    assert!(ds.val.is_empty());
    assert_eq!((ds.train.class_counts(2), ds.test.class_counts(2)), (vec![70, 70], vec![30, 30]));
    assert_eq!(ds.input_shape, [1, 25, 25]);
    assert_eq!(ds.train.images().kind(), Kind::Float);
    let (train, test) = lfw_split_indices();
    // Golden prefixes from a Python re-implementation of SplitMix64 and the Fisher-Yates loop.
    assert_eq!(train[..6], [63, 167, 68, 134, 17, 190]);
    assert_eq!(test[..4], [7, 194, 29, 141]);
    let mut all = [train.clone(), test].concat();
    all.sort_unstable();
    assert_eq!(all, (0..200).collect::<Vec<_>>());
    let b = ds.train.batch(&(0..140).collect::<Vec<_>>(), Device::Cpu).expect("batch");
    assert_eq!(b.x.size(), [140, 1, 25, 25]);
    let (lo, hi) = (b.x.min().double_value(&[]), b.x.max().double_value(&[]));
    assert!(lo >= 0.0 && hi <= 1.0 && lo < hi, "range [{lo}, {hi}]");
    // Python: sum(struct.unpack('<125000d', data[80:])[:625]) = 258.2379094772041 for file image 0,
    // a face; stored as f32, so the sum agrees to about 1e-5.
    let i = train.iter().position(|&j| j == 0).expect("image 0 is in train");
    assert_eq!(ds.train.labels()[i], 1);
    let s = b.x.get(i as i64).sum(Kind::Double).double_value(&[]);
    assert!((s - 258.237_909_477_204_1).abs() < 1e-4, "{s}");
    let limited =
        load(&DataConfig { task: Task::Lfw, dir: test_data_dir(), train_limit: Some(10), ..Default::default() });
    assert_eq!(limited.expect("limited").train.class_counts(2), [5, 5], "prefixes stay balanced");
}

#[test]
fn missing_data_is_an_error_naming_the_path() {
    let cfg = DataConfig { dir: "/nonexistent/d2nn-data".into(), ..DataConfig::default() };
    let msg = load(&cfg).expect_err("missing dir").to_string();
    assert!(msg.contains("/nonexistent/d2nn-data") && msg.contains("d2nn data fetch"), "{msg}");
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = DataConfig { task: Task::Lfw, dir: tmp.path().into(), ..DataConfig::default() };
    let msg = load(&cfg).expect_err("missing file").to_string();
    assert!(msg.contains("lfw/lfw_subset.npy") && msg.contains("scripts/setup.sh"), "{msg}");
}

#[test]
fn load_is_fast_and_info_table_totals() {
    let t = std::time::Instant::now();
    let ds = load(&DataConfig { dir: test_data_dir(), ..DataConfig::default() }).expect("load");
    let secs = t.elapsed().as_secs_f64();
    eprintln!("Fashion-MNIST load: {secs:.3} s");
    // Loose bound: dev builds optimise dependencies (flate2) but not this crate. Release is far faster.
    assert!(secs < 5.0, "{secs} s");
    let table = info_table(&ds);
    eprintln!("{table}");
    assert!(table.contains("Ankle boot"), "{table}");
    let total = table.lines().find(|l| l.starts_with("total")).expect("total row");
    let nums: Vec<&str> = total.split('|').skip(1).map(str::trim).collect();
    assert_eq!(nums, ["55000", "5000", "10000"]);
}

#[test]
fn config_serde_defaults_and_names() {
    let cfg: DataConfig = serde_json::from_str(r#"{"task": "fashion-hier"}"#).expect("json");
    assert_eq!(cfg, DataConfig { task: Task::FashionHier, ..DataConfig::default() });
    assert_eq!((cfg.dir.to_str(), cfg.positive_class), (Some("data"), 8));
    assert!(serde_json::from_str::<DataConfig>(r#"{"tsak": "lfw"}"#).is_err());
    for t in Task::ALL {
        assert_eq!(t.name().parse::<Task>().expect("round trip"), t);
        assert_eq!(serde_json::to_string(&t).expect("json"), format!("\"{t}\""));
    }
    assert!("cifar".parse::<Task>().expect_err("unknown").to_string().contains("fashion-binary"));
}
