use super::*;

pub(crate) fn configs_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
}

/// The `[model]` table of a config file, and the input shape and class count of its task.
pub(crate) fn spec_of(file: &str) -> (GraphSpec, Vec<i64>, i64) {
    let text = std::fs::read_to_string(configs_dir().join(file)).unwrap();
    let value: toml::Value = toml::from_str(&text).unwrap();
    let task = value["data"]["task"].as_str().unwrap().to_string();
    let spec: GraphSpec = value["model"].clone().try_into().unwrap();
    let classes = if task == "fashion-binary" { 2 } else { 10 };
    (spec, vec![1, 28, 28], classes)
}

pub(crate) fn graph_of(file: &str) -> Graph {
    let (spec, shape, classes) = spec_of(file);
    Graph::build(&spec, &shape, classes, file).unwrap_or_else(|e| panic!("{file}: {e}"))
}

pub(crate) fn all_configs() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(configs_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".toml"))
        .collect();
    files.sort();
    files
}

fn build_err(spec_toml: &str) -> String {
    let spec: GraphSpec = toml::from_str(spec_toml).unwrap();
    Graph::build(&spec, &[1, 28, 28], 10, "t.toml").unwrap_err().to_string()
}

const HEAD: &str = r#"
output = "out"
[[nodes]]
name = "stem"
inputs = ["input"]
layers = [{ type = "conv2d", out = 4, kernel = 3, padding = 1 }, { type = "relu" }, { type = "max_pool", kernel = 2 }]
"#;

#[test]
fn every_shipped_config_validates() {
    let files = all_configs();
    assert!(files.len() >= 13, "{files:?}");
    for f in files {
        let g = graph_of(&f);
        assert!(g.full_flops > 0.0, "{f}");
    }
}

#[test]
fn high_low_shapes_and_flops_match_hand_count() {
    let g = graph_of("high_low.toml");
    let shape = |n: &str| g.nodes[g.index_of(n).unwrap()].out_shape.clone();
    assert_eq!(shape("stem"), vec![16, 14, 14]);
    assert_eq!(shape("router"), vec![2]);
    assert_eq!(shape("low"), vec![10]);
    assert_eq!(shape("high"), vec![10]);
    let flops = |n: &str| g.nodes[g.index_of(n).unwrap()].flops;
    // stem: conv 1→16 on 28x28 (2·16·784·9), relu 16·784, maxpool 4 per output (4·16·196)
    assert_eq!(flops("stem"), (2 * 16 * 784 * 9 + 16 * 784 + 4 * 16 * 196) as f64);
    // router: conv 16→8 stride 2 to 7x7 (2·16·9·8·49), relu 392, linear 392→2 (2·392·2)
    assert_eq!(flops("router"), (2 * 16 * 9 * 8 * 49 + 392 + 2 * 392 * 2) as f64);
    // high: conv 16→64 (2·16·9·64·196), relu, conv 64→64, relu, pool to 7x7, linear 3136→256, relu, linear 256→10
    let high = 2 * 16 * 9 * 64 * 196
        + 64 * 196
        + 2 * 64 * 9 * 64 * 196
        + 64 * 196
        + 4 * 64 * 49
        + 2 * 3136 * 256
        + 256
        + 2 * 256 * 10;
    assert_eq!(flops("high"), high as f64);
    assert_eq!(g.full_flops, flops("stem") + flops("router") + flops("low") + flops("high"));
    assert_eq!(g.controls, vec![g.index_of("router").unwrap()]);
}

#[test]
fn rejects_cycles() {
    let e = build_err(&format!(
        "{HEAD}
[[nodes]]
name = \"a\"
inputs = [\"stem\", \"b\"]
[[nodes]]
name = \"b\"
inputs = [\"a\"]
[[nodes]]
name = \"out\"
kind = \"output\"
inputs = [\"b\"]"
    ));
    assert!(e.contains("cycle") && e.contains("t.toml"), "{e}");
}

#[test]
fn rejects_unknown_names() {
    let e = build_err(&format!("{HEAD}\n[[nodes]]\nname = \"out\"\nkind = \"output\"\ninputs = [\"stme\"]"));
    assert!(e.contains("`out`") && e.contains("`stme` is not a node"), "{e}");
    let e = build_err(&format!(
        "{HEAD}\n[[nodes]]\nname = \"c\"\nkind = \"control\"\ninputs = [\"stem\"]\nlayers = [{{ type = \"flatten\" }}, {{ type = \"linear\", out = 2 }}]\nactions = [[\"x\"], [\"y\"]]\n[[nodes]]\nname = \"out\"\nkind = \"output\"\ninputs = [\"stem\"]"
    ));
    assert!(e.contains("`c`") && e.contains("action target `x`"), "{e}");
}

#[test]
fn rejects_shape_mismatch_naming_node_and_layer() {
    let e = build_err(&format!(
        "{HEAD}\n[[nodes]]\nname = \"fc\"\ninputs = [\"stem\"]\nlayers = [{{ type = \"linear\", out = 10 }}]\n[[nodes]]\nname = \"out\"\nkind = \"output\"\ninputs = [\"fc\"]"
    ));
    assert!(e.contains("node `fc`") && e.contains("layer 0 (linear)") && e.contains("flatten"), "{e}");
    let e = build_err(&format!(
        "{HEAD}\n[[nodes]]\nname = \"fc\"\ninputs = [\"stem\"]\nlayers = [{{ type = \"flatten\" }}, {{ type = \"linear\", out = 7 }}]\n[[nodes]]\nname = \"out\"\nkind = \"output\"\ninputs = [\"fc\"]"
    ));
    assert!(e.contains("node `out`") && e.contains("10 logits"), "{e}");
}

const BRANCHES: &str = r#"
[[nodes]]
name = "a"
inputs = ["stem"]
layers = [{ type = "flatten" }, { type = "linear", out = 10 }]
[[nodes]]
name = "b"
inputs = ["stem"]
layers = [{ type = "flatten" }, { type = "linear", out = 10 }]
"#;

#[test]
fn rejects_control_node_with_one_action() {
    let e = build_err(&format!(
        "{HEAD}{BRANCHES}\n[[nodes]]\nname = \"c\"\nkind = \"control\"\ninputs = [\"stem\"]\nlayers = [{{ type = \"flatten\" }}, {{ type = \"linear\", out = 1 }}]\nactions = [[\"a\"]]\n[[nodes]]\nname = \"out\"\nkind = \"output\"\nmerge = \"select\"\ninputs = [\"a\", \"b\"]"
    ));
    assert!(e.contains("`c`") && e.contains("at least 2 actions"), "{e}");
}

#[test]
fn rejects_output_left_empty_by_some_decision() {
    // Action 1 enables nothing that reaches the output: `a` is skipped and the output is empty.
    let e = build_err(&format!(
        "{HEAD}{BRANCHES}\n[[nodes]]\nname = \"c\"\nkind = \"control\"\ninputs = [\"stem\"]\nlayers = [{{ type = \"flatten\" }}, {{ type = \"linear\", out = 2 }}]\nactions = [[\"a\"], [\"b\"]]\n[[nodes]]\nname = \"out\"\nkind = \"output\"\ninputs = [\"a\"]\n"
    ));
    assert!(e.contains("node `out`") && e.contains("empty when c=1"), "{e}");
}

#[test]
fn rejects_select_with_two_present_inputs() {
    let e = build_err(&format!(
        "{HEAD}{BRANCHES}\n[[nodes]]\nname = \"out\"\nkind = \"output\"\nmerge = \"select\"\ninputs = [\"a\", \"b\"]\n"
    ));
    assert!(e.contains("exactly one present input"), "{e}");
}

#[test]
fn rejects_controller_output_used_as_data() {
    let e = build_err(&format!(
        "{HEAD}{BRANCHES}\n[[nodes]]\nname = \"c\"\nkind = \"control\"\ninputs = [\"stem\"]\nlayers = [{{ type = \"flatten\" }}, {{ type = \"linear\", out = 2 }}]\nactions = [[\"a\"], [\"b\"]]\n[[nodes]]\nname = \"d\"\ninputs = [\"c\"]\n[[nodes]]\nname = \"out\"\nkind = \"output\"\nmerge = \"select\"\ninputs = [\"a\", \"b\"]\n"
    ));
    assert!(e.contains("`c` is a control node"), "{e}");
}

#[test]
fn rejects_wrong_score_count_reserved_and_duplicate_names() {
    let e = build_err(&format!(
        "{HEAD}{BRANCHES}\n[[nodes]]\nname = \"c\"\nkind = \"control\"\ninputs = [\"stem\"]\nlayers = [{{ type = \"flatten\" }}, {{ type = \"linear\", out = 3 }}]\nactions = [[\"a\"], [\"b\"]]\n[[nodes]]\nname = \"out\"\nkind = \"output\"\nmerge = \"select\"\ninputs = [\"a\", \"b\"]\n"
    ));
    assert!(e.contains("one score per action"), "{e}");
    let e = build_err(&format!("{HEAD}\n[[nodes]]\nname = \"input\"\ninputs = [\"stem\"]\n"));
    assert!(e.contains("reserved"), "{e}");
    let e = build_err(&format!("{HEAD}\n[[nodes]]\nname = \"stem\"\ninputs = [\"input\"]\n"));
    assert!(e.contains("declared twice"), "{e}");
}

#[test]
fn rejects_unknown_keys_in_nodes_and_layers() {
    let r: Result<GraphSpec, _> = toml::from_str("output = \"o\"\n[[nodes]]\nname = \"o\"\ninputz = [\"input\"]\n");
    assert!(r.unwrap_err().to_string().contains("inputz"));
    let r: Result<GraphSpec, _> = toml::from_str(
        "output = \"o\"\n[[nodes]]\nname = \"o\"\nlayers = [{ type = \"conv2d\", out = 1, kernel = 3, pad = 1 }]\n",
    );
    assert!(r.unwrap_err().to_string().contains("pad"));
}

#[test]
fn edge_defaults_keep_a_sum_output_defined() {
    // The hierarchical design: one branch runs, the others deliver their default, the output is a sum.
    let g = graph_of("hierarchical.toml");
    let out = &g.nodes[g.output];
    assert_eq!(out.merge, Merge::Sum);
    assert!(out.defaults.iter().all(|d| *d == Some(0.0)));
    assert_eq!(g.controls.len(), 1);
}

/// A size no machine holds is an error naming the node, the layer and the bytes, found before any
/// tensor exists (it used to reach libtorch, which panicked allocating the weight).
#[test]
fn sizes_over_the_cap_are_errors_naming_node_layer_and_bytes() {
    let huge_linear = format!(
        "{HEAD}{}",
        r#"
[[nodes]]
name = "fc"
inputs = ["stem"]
layers = [{ type = "flatten" }, { type = "linear", out = 100000000000 }, { type = "linear", out = 10 }]
[[nodes]]
name = "out"
kind = "output"
inputs = ["fc"]
"#
    );
    let e = build_err(&huge_linear);
    assert!(e.contains("`fc`") && e.contains("layer 1 (linear)") && e.contains("bytes") && e.contains("GiB"), "{e}");
    // Wide enough that one example's output is over the cap: the overflow-prone product is f64.
    let huge_conv = HEAD.replace("out = 4, kernel = 3", "out = 9223372036854775807, kernel = 3");
    let e = build_err(&format!("{huge_conv}[[nodes]]\nname = \"out\"\nkind = \"output\"\ninputs = [\"stem\"]\n"));
    assert!(e.contains("`stem`") && e.contains("layer 0 (conv2d)") && e.contains("bytes"), "{e}");
    // Fine per example, over the cap for a batch: refused when the batch is known.
    let g = graph_of("high_low.toml");
    assert!(g.check_batch(256, "train.batch_size", "high_low.toml").is_ok());
    let e = g.check_batch(10_000_000, "train.batch_size", "high_low.toml").unwrap_err().to_string();
    assert!(e.contains("`train.batch_size`") && e.contains("layer 0 (conv2d)") && e.contains("`stem`"), "{e}");
}

/// The 7x7 chain's statics (written with it by scripts/chain_7x7_configs.py) are its paths: each
/// static's every node is the D2NN's node of that name with the same layers and shape (the residual
/// block `slim2` reads `block1` in the D2NN and `slim1` in a static: the same tensor on that path),
/// and the static costs what those nodes cost in the D2NN.
#[test]
fn the_7x7_chains_statics_are_its_paths() {
    let d2nn = graph_of("chain_7x7.toml");
    let statics: Vec<String> = all_configs().into_iter().filter(|f| f.starts_with("static_chain_7x7_")).collect();
    assert_eq!(statics.len(), 7, "{statics:?}");
    for file in statics {
        let g = graph_of(&file);
        let mut flops = 0.0;
        for node in g.nodes.iter().filter(|n| n.name != "input") {
            let same = d2nn.index_of(&node.name).map(|i| &d2nn.nodes[i]);
            let same = same.unwrap_or_else(|| panic!("{file}: {} is not a node of chain_7x7.toml", node.name));
            assert_eq!((&node.layers, &node.out_shape), (&same.layers, &same.out_shape), "{file}: {}", node.name);
            flops += same.flops;
        }
        assert!((g.full_flops - flops).abs() < 1e-6 * flops, "{file}: {} FLOPs, its nodes {flops}", g.full_flops);
    }
}
