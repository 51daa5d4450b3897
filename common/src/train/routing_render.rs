//! The routing report as a table for a terminal (`d2nn eval --routing`).
use super::RoutingReport;

impl RoutingReport {
    pub fn render(&self) -> String {
        let pct = |x: f64| format!("{:.2}", 100.0 * x);
        let f1 = |x: Option<f64>| x.map_or(String::new(), |v| format!("{:>8}", pct(v)));
        let f1_head = if self.routed_f1.is_some() { format!("{:>8}", "F1") } else { String::new() };
        let width = self.actions.iter().map(|a| a.chars().count() + 24).chain([34]).max().unwrap_or(34);
        let mut out = format!("routing report: controller `{}`, {} test examples\n", self.controller, self.examples);
        out += &format!("{:<width$}{:>10}{:>8}{f1_head}\n", "", "accuracy", "cost");
        for (a, name) in self.actions.iter().enumerate() {
            out += &format!(
                "{:<width$}{:>10}{:>8.3}{}\n",
                format!("every example on `{name}`"),
                pct(self.forced_accuracy[a]),
                self.forced_cost_fraction[a],
                f1(self.forced_f1.as_ref().map(|f| f[a]))
            );
        }
        // With many paths, only those the controllers take.
        let many = self.actions.len() > 8;
        let rates = self
            .actions
            .iter()
            .zip(&self.rates)
            .filter(|(_, &r)| !many || r > 0.0)
            .map(|(name, r)| format!("{name} {:.1} %", 100.0 * r))
            .collect::<Vec<_>>()
            .join(", ");
        out += &format!(
            "{:<width$}{:>10}{:>8.3}{}   ({rates})\n",
            "the controllers",
            pct(self.routed_accuracy),
            self.routed_cost_fraction,
            f1(self.routed_f1)
        );
        let mut versus =
            format!("controllers − random: {:+.2} points", 100.0 * (self.routed_accuracy - self.random_accuracy));
        if let (Some(routed), Some(random)) = (self.routed_f1, self.random_f1) {
            versus += &format!(", F1 {:+.2}", 100.0 * (routed - random));
        }
        out += &format!(
            "{:<width$}{:>10}{:>8}{}   ({versus})\n",
            "random routing at the same rates",
            pct(self.random_accuracy),
            "",
            f1(self.random_f1)
        );
        if let Some(oracle) = self.oracle_same_rates_accuracy {
            out += &format!("{:<width$}{:>10}\n", "oracle at the same rates", pct(oracle));
        }
        out += &format!(
            "{:<width$}{:>10}{:>8.3}\n",
            "oracle: cheapest right path",
            pct(self.cheapest_right_accuracy),
            self.cheapest_right_cost_fraction
        );
        if self.by_right_paths.is_empty() {
            out += "(controllers' rates by which paths are right: left out for more than 8 paths)\n";
            return out;
        }
        out += "controllers' rates by which paths are right:\n";
        for g in &self.by_right_paths {
            let right = match g.right.as_slice() {
                [] => "none".to_string(),
                r => r.iter().map(|&a| self.actions[a].as_str()).collect::<Vec<_>>().join(", "),
            };
            let rates = self
                .actions
                .iter()
                .zip(&g.rates)
                .map(|(name, r)| format!("{name} {:.1} %", 100.0 * r))
                .collect::<Vec<_>>();
            out += &format!("  right on {right:<24}{:>6} examples   {}\n", g.examples, rates.join(", "));
        }
        out
    }
}
