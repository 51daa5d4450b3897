//! From a `GraphSpec` to a checked `Graph`: names, edges, the paper's two restrictions, acyclicity,
//! shapes, and that every combination of decisions leaves the output defined.
use std::collections::HashMap;

use super::size::check_layer;
use super::spec::{GraphSpec, Merge, NodeKind, INPUT};
use super::{Graph, Node};
use crate::{Error, Result};

/// Beyond this many decision combinations the exhaustive output check is refused.
const MAX_COMBINATIONS: usize = 1 << 16;

pub(super) fn build(spec: &GraphSpec, input_shape: &[i64], num_classes: i64, file: &str) -> Result<Graph> {
    let err = |node: &str, message: String| Error::Graph { file: file.to_string(), node: node.to_string(), message };

    let mut index: HashMap<&str, usize> = HashMap::from([(INPUT, 0)]);
    for (i, n) in spec.nodes.iter().enumerate() {
        if n.name == INPUT {
            return Err(err(&n.name, format!("`{INPUT}` is reserved for the graph's input")));
        }
        if n.name.is_empty() {
            return Err(err("", "a node has an empty name".into()));
        }
        if index.insert(n.name.as_str(), i + 1).is_some() {
            return Err(err(&n.name, "the name is declared twice".into()));
        }
    }
    let lookup = |owner: &str, what: &str, name: &str| {
        index.get(name).copied().ok_or_else(|| err(owner, format!("{what} `{name}` is not a node of the graph")))
    };

    let mut nodes = vec![Node {
        name: INPUT.into(),
        kind: NodeKind::Regular,
        inputs: vec![],
        defaults: vec![],
        merge: Merge::Concat,
        layers: vec![],
        in_shape: input_shape.to_vec(),
        out_shape: input_shape.to_vec(),
        layer_flops: vec![],
        flops: 0.0,
        enabled_by: vec![],
        actions: vec![],
        value: vec![],
        head: None,
    }];
    for n in &spec.nodes {
        let mut inputs = Vec::new();
        for name in &n.inputs {
            let p = lookup(&n.name, "input", name)?;
            if inputs.contains(&p) {
                return Err(err(&n.name, format!("input `{name}` is listed twice (no duplicated edges)")));
            }
            inputs.push(p);
        }
        for name in n.defaults.keys() {
            if !n.inputs.contains(name) {
                return Err(err(&n.name, format!("default given for `{name}`, which is not one of its inputs")));
            }
        }
        let defaults = n.inputs.iter().map(|name| n.defaults.get(name).copied()).collect();
        let mut actions = Vec::new();
        for targets in &n.actions {
            let mut t = Vec::new();
            for name in targets {
                t.push(lookup(&n.name, "action target", name)?);
            }
            actions.push(t);
        }
        nodes.push(Node {
            name: n.name.clone(),
            kind: n.kind,
            inputs,
            defaults,
            merge: n.merge,
            layers: n.layers.clone(),
            in_shape: vec![],
            out_shape: vec![],
            layer_flops: vec![],
            flops: 0.0,
            enabled_by: vec![],
            actions,
            value: n.value.clone(),
            head: n.head.clone(),
        });
    }
    let output = lookup("(graph)", "output", &spec.output)?;

    // Kinds and the paper's restrictions.
    for i in 1..nodes.len() {
        let n = &nodes[i];
        match n.kind {
            NodeKind::Control => {
                if n.actions.len() < 2 {
                    return Err(err(
                        &n.name,
                        format!("a control node needs at least 2 actions, has {}", n.actions.len()),
                    ));
                }
                if n.head.is_some() {
                    return Err(err(&n.name, "a control node cannot carry a `head` loss".into()));
                }
            }
            _ if !n.actions.is_empty() => {
                return Err(err(&n.name, "only control nodes have `actions`".into()));
            }
            NodeKind::Dummy => {
                if !n.inputs.is_empty() || !n.layers.is_empty() {
                    return Err(err(&n.name, "a dummy node has no inputs and no layers".into()));
                }
                if n.value.is_empty() {
                    return Err(err(&n.name, "a dummy node needs a non-empty `value`".into()));
                }
            }
            NodeKind::Output => {
                if !n.layers.is_empty() {
                    return Err(err(
                        &n.name,
                        "an output node only merges its inputs; put layers in a regular node".into(),
                    ));
                }
            }
            NodeKind::Regular => {}
        }
        if n.kind != NodeKind::Dummy && !n.value.is_empty() {
            return Err(err(&n.name, "only dummy nodes have a `value`".into()));
        }
        if n.kind != NodeKind::Dummy && n.inputs.is_empty() {
            return Err(err(&n.name, "the node has no inputs".into()));
        }
        if n.merge == Merge::Select && n.defaults.iter().any(Option::is_some) {
            return Err(err(&n.name, "a `select` merge ignores edge defaults; use `sum` with defaults instead".into()));
        }
        for &p in &n.inputs {
            if nodes[p].is_control() {
                return Err(err(
                    &n.name,
                    format!("`{}` is a control node: its outgoing edges are control edges, not data", nodes[p].name),
                ));
            }
        }
    }
    if nodes[output].kind != NodeKind::Output {
        return Err(err(&spec.output, "the graph's `output` must name a node of kind `output`".into()));
    }
    for c in 1..nodes.len() {
        for a in 0..nodes[c].actions.len() {
            for t in nodes[c].actions[a].clone() {
                if t == 0 || nodes[t].is_control() {
                    let name = nodes[c].name.clone();
                    return Err(err(
                        &name,
                        format!(
                            "action {a} enables `{}`: controllers never gate the input or other controllers directly",
                            nodes[t].name
                        ),
                    ));
                }
                if nodes[t].enabled_by.iter().any(|&(cc, _)| cc == c) {
                    let name = nodes[c].name.clone();
                    return Err(err(
                        &name,
                        format!("`{}` is enabled by two actions of the same controller", nodes[t].name),
                    ));
                }
                nodes[t].enabled_by.push((c, a));
            }
        }
    }

    let order =
        topological_order(&nodes).map_err(|name| err(&name, "the graph has a cycle through this node".into()))?;

    // Shapes and costs, in order.
    for &i in &order {
        let (in_shape, out_shape, layer_flops) = {
            let n = &nodes[i];
            let in_shapes: Vec<&Vec<i64>> = n.inputs.iter().map(|&p| &nodes[p].out_shape).collect();
            let in_shape = match (n.kind, n.merge) {
                (NodeKind::Dummy, _) => vec![n.value.len() as i64],
                (_, Merge::Concat) if in_shapes.len() > 1 => {
                    let tail = &in_shapes[0][1..];
                    if in_shapes.iter().any(|s| s.is_empty() || &s[1..] != tail) {
                        return Err(err(&n.name, format!("cannot concatenate inputs of shapes {in_shapes:?}")));
                    }
                    let mut s = in_shapes[0].clone();
                    s[0] = in_shapes.iter().map(|s| s[0]).sum();
                    s
                }
                _ => {
                    if in_shapes.iter().any(|s| *s != in_shapes[0]) {
                        return Err(err(
                            &n.name,
                            format!("inputs of a {:?} merge must share one shape, got {in_shapes:?}", n.merge)
                                .to_lowercase(),
                        ));
                    }
                    in_shapes[0].clone()
                }
            };
            let mut shape = in_shape.clone();
            let mut flops = Vec::new();
            for (li, layer) in n.layers.iter().enumerate() {
                let (s, f) =
                    layer.infer(&shape).map_err(|m| err(&n.name, format!("layer {li} ({}): {m}", layer.name())))?;
                check_layer(n, li, &shape, &s).map_err(|m| err(&n.name, m))?;
                shape = s;
                flops.push(f);
            }
            (in_shape, shape, flops)
        };
        let n = &mut nodes[i];
        n.flops = layer_flops.iter().sum::<f64>() + 0.0; // + 0.0: an empty sum is −0.0
        n.in_shape = in_shape;
        n.out_shape = out_shape;
        n.layer_flops = layer_flops;
        if n.is_control() && n.out_shape != vec![n.actions.len() as i64] {
            return Err(err(
                &n.name,
                format!(
                    "a control node must output one score per action ([{}]), its layers give {:?}",
                    n.actions.len(),
                    n.out_shape
                ),
            ));
        }
    }
    if nodes[output].out_shape != vec![num_classes] {
        return Err(err(
            &nodes[output].name,
            format!("the output must be {num_classes} logits, the graph gives {:?}", nodes[output].out_shape),
        ));
    }
    for n in &nodes[1..] {
        if n.head.is_some() && n.out_shape.len() != 1 {
            return Err(err(&n.name, format!("a `head` loss needs flat logits, the node gives {:?}", n.out_shape)));
        }
    }

    let controls: Vec<usize> = order.iter().copied().filter(|&i| nodes[i].is_control()).collect();
    check_every_decision(&nodes, &order, &controls, output).map_err(|(node, msg)| err(&node, msg))?;
    check_reaches_output(&nodes, output)
        .map_err(|name| err(&name, "the node neither feeds the output nor carries a `head` loss".into()))?;

    let full_flops = nodes.iter().filter(|n| n.kind != NodeKind::Dummy).map(|n| n.flops).sum();
    Ok(Graph { nodes, order, output, controls, full_flops, spec: spec.clone() })
}

/// Kahn's algorithm over data and control edges; on a cycle returns a node on it.
fn topological_order(nodes: &[Node]) -> std::result::Result<Vec<usize>, String> {
    let n = nodes.len();
    let mut parents: Vec<Vec<usize>> = nodes.iter().map(|v| v.inputs.clone()).collect();
    for (i, v) in nodes.iter().enumerate() {
        parents[i].extend(v.enabled_by.iter().map(|&(c, _)| c));
    }
    let mut children = vec![Vec::new(); n];
    let mut pending: Vec<usize> = parents.iter().map(Vec::len).collect();
    for (i, ps) in parents.iter().enumerate() {
        for &p in ps {
            children[p].push(i);
        }
    }
    let mut ready: Vec<usize> = (0..n).filter(|&i| pending[i] == 0).collect();
    ready.sort_unstable_by(|a, b| b.cmp(a));
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop() {
        order.push(i);
        for &c in &children[i] {
            pending[c] -= 1;
            if pending[c] == 0 {
                ready.push(c);
                ready.sort_unstable_by(|a, b| b.cmp(a));
            }
        }
    }
    if order.len() < n {
        let stuck = (0..n).find(|&i| pending[i] > 0).unwrap_or(0);
        return Err(nodes[stuck].name.clone());
    }
    order.retain(|&i| i != 0);
    Ok(order)
}

fn check_reaches_output(nodes: &[Node], output: usize) -> std::result::Result<(), String> {
    let mut useful = vec![false; nodes.len()];
    useful[output] = true;
    // Repeated sweeps until nothing changes: graphs are small.
    loop {
        let mut changed = false;
        for i in 0..nodes.len() {
            if !useful[i] {
                continue;
            }
            let n = &nodes[i];
            for p in n.inputs.iter().chain(n.enabled_by.iter().map(|(c, _)| c)) {
                if !useful[*p] {
                    useful[*p] = true;
                    changed = true;
                }
            }
        }
        for (i, n) in nodes.iter().enumerate() {
            if n.head.is_some() && !useful[i] {
                useful[i] = true;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    match (1..nodes.len()).find(|&i| !useful[i]) {
        Some(i) => Err(nodes[i].name.clone()),
        None => Ok(()),
    }
}

/// Which nodes run under one joint decision (one action per controller), as the executor would decide.
pub(crate) fn presence(nodes: &[Node], order: &[usize], chosen: &dyn Fn(usize) -> usize) -> Vec<bool> {
    let mut present = vec![false; nodes.len()];
    present[0] = true;
    for &i in order {
        let n = &nodes[i];
        let active = n.enabled_by.is_empty() || n.enabled_by.iter().any(|&(c, a)| present[c] && chosen(c) == a);
        let available = |k: usize| present[n.inputs[k]] || n.defaults[k].is_some();
        let ready = match n.merge {
            Merge::Select => n.inputs.iter().any(|&p| present[p]),
            _ => (0..n.inputs.len()).all(available),
        };
        present[i] = active && ready;
    }
    present
}

fn check_every_decision(
    nodes: &[Node],
    order: &[usize],
    controls: &[usize],
    output: usize,
) -> std::result::Result<(), (String, String)> {
    let combos = controls.iter().try_fold(1usize, |acc, &c| acc.checked_mul(nodes[c].actions.len()));
    let combos = match combos {
        Some(n) if n <= MAX_COMBINATIONS => n,
        _ => {
            return Err((
                nodes[output].name.clone(),
                format!("more than {MAX_COMBINATIONS} decision combinations to check"),
            ))
        }
    };
    for combo in 0..combos {
        let mut rest = combo;
        let mut choice = vec![0usize; nodes.len()];
        for &c in controls {
            let k = nodes[c].actions.len();
            choice[c] = rest % k;
            rest /= k;
        }
        let present = presence(nodes, order, &|c| choice[c]);
        let describe = || {
            let parts: Vec<String> =
                controls.iter().filter(|&&c| present[c]).map(|&c| format!("{}={}", nodes[c].name, choice[c])).collect();
            parts.join(", ")
        };
        let out = &nodes[output];
        if !present[output] {
            return Err((out.name.clone(), format!("the output is empty when {}", describe())));
        }
        if out.merge == Merge::Select {
            let live: Vec<&str> = out.inputs.iter().filter(|&&p| present[p]).map(|&p| nodes[p].name.as_str()).collect();
            if live.len() != 1 {
                return Err((
                    out.name.clone(),
                    format!(
                        "a select output needs exactly one present input, but {live:?} are present when {}",
                        describe()
                    ),
                ));
            }
        }
        for &i in order {
            let n = &nodes[i];
            if n.merge == Merge::Select && present[i] {
                let live = n.inputs.iter().filter(|&&p| present[p]).count();
                if live != 1 {
                    return Err((
                        n.name.clone(),
                        format!(
                            "a select merge needs exactly one present input, {live} are present when {}",
                            describe()
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}
