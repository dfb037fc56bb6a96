//! The Grafana dashboard of `deploy/observability/` against running nodes.
//!
//! Every PromQL query the dashboard holds (each panel target's `expr`, and each
//! template variable's `label_values(…)`) is parsed with a real PromQL parser. From
//! its syntax tree come the metrics it selects and, per metric, every label it uses:
//! in a matcher, in `by (…)` / `without (…)`, in `on (…)` / `ignoring (…)`, in
//! `group_left (…)` / `group_right (…)`, or as `label_values`' label. Each metric must
//! be a sample name in some node's `/metrics`, and carry each of those labels (the
//! labels the scrape adds excepted, [`TARGET_LABELS`]); a matcher `label="value"`
//! must match a sample too. A dashboard naming a metric or a label that no node
//! exports fails here, not on someone's screen.
//!
//! The nodes: a standalone mesh of three clusters, each exporting a service (so
//! records propagate and the lag histogram fills), with a quorum lease held by `c0`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use promql_parser::label::{MatchOp, Matcher, Matchers};
use promql_parser::parser::{self, Expr, LabelModifier, VectorMatchCardinality, VectorSelector};
use serde_json::Value;
use shoal_tests::k8s::binaries::kubectl_program;
use shoal_tests::k8s::wait_for;
use shoal_tests::load::{service_yaml, write_atomically};
use shoal_tests::mesh::{Mesh, MeshConfig, repo_root};

/// The dashboard, from the repository's root.
const DASHBOARD: &str = "deploy/observability/grafana-dashboard.json";
/// The kustomization that ships it, and the PodMonitor.
const OBSERVABILITY: &str = "deploy/observability";
/// Labels Prometheus attaches to every series of a PodMonitor's targets (its
/// generated relabelings, and `instance`): the dashboard may use them, no node
/// exports them.
const TARGET_LABELS: [&str; 6] = [
    "namespace",
    "pod",
    "container",
    "endpoint",
    "job",
    "instance",
];
/// What the dashboard must show (issue 14): members and clusters by state, per-peer
/// SWIM ack time and RTT, propagation lag, withdrawals, rejects by reason, bytes per
/// peer, the lease's holder and token.
const REQUIRED_METRICS: [&str; 11] = [
    "shoal_members",
    "shoal_clusters",
    "shoal_swim_ack_seconds_bucket",
    "shoal_peer_rtt_seconds",
    "shoal_propagation_lag_seconds_bucket",
    "shoal_withdrawals_total",
    "shoal_rejects_total",
    "shoal_peer_sent_bytes_total",
    "shoal_peer_received_bytes_total",
    "shoal_lease_holder",
    "shoal_lease_token",
];
/// Grafana's interval variables, and the duration that stands in for them.
const GRAFANA_INTERVALS: [&str; 3] = ["$__rate_interval", "$__interval", "$__range"];
const INTERVAL_STAND_IN: &str = "5m";
/// What any other Grafana variable (`$pod`, `${namespace}`) stands in for: it only
/// appears inside label values.
const VARIABLE_STAND_IN: &str = "grafana_variable";
/// The quorum lease the test takes, so that the lease panels have samples.
const LEASE: &str = "dashboard";
/// How long the nodes may take to export everything the dashboard queries.
const METRICS_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the lease may take to be granted.
const LEASE_TIMEOUT: Duration = Duration::from_secs(30);

/// One PromQL query of the dashboard.
#[derive(Clone, Debug)]
struct Query {
    /// Where it is: the panel's title and the target's `refId`, or the variable.
    at: String,
    /// The query with Grafana's variables replaced, so that it is plain PromQL.
    promql: String,
    /// Labels the query uses outside the PromQL (`label_values`' label).
    labels: Vec<String>,
}

/// One metric a query selects, and what it asks of the metric's labels.
#[derive(Clone, Debug, Default)]
struct Selection {
    metric: String,
    labels: BTreeSet<String>,
    /// `label="value"` matchers with a literal value.
    values: BTreeSet<(String, String)>,
}

/// Why the dashboard does not fit the nodes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, thiserror::Error)]
enum Problem {
    #[error("{at}: does not parse: {error}")]
    Unparsable { at: String, error: String },
    #[error("{at}: a selector without a metric name cannot be checked")]
    NoMetricName { at: String },
    #[error("{at}: no node exports {metric}")]
    MissingMetric { at: String, metric: String },
    #[error("{at}: {metric} has no label {label}")]
    MissingLabel {
        at: String,
        metric: String,
        label: String,
    },
    #[error("{at}: no {metric} sample has {label}=\"{value}\"")]
    MissingValue {
        at: String,
        metric: String,
        label: String,
        value: String,
    },
}

/// Every sample of one or more `/metrics` texts, by name: each one's labels.
#[derive(Debug, Default)]
struct Exposition {
    series: BTreeMap<String, Vec<BTreeMap<String, String>>>,
}

impl Exposition {
    /// Adds the samples of Prometheus text. A sample's name and labels have the syntax
    /// of a PromQL selector (the same escapes in label values), so the PromQL parser
    /// reads them.
    fn add(&mut self, text: &str) -> Result<(), String> {
        for line in text.lines() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (sample, _value) = line
                .rsplit_once(' ')
                .ok_or_else(|| format!("a sample without a value: {line}"))?;
            let Ok(Expr::VectorSelector(selector)) = parser::parse(sample) else {
                return Err(format!("not a sample: {line}"));
            };
            let name = metric_name(&selector).ok_or_else(|| format!("no name: {line}"))?;
            let labels = (selector.matchers.matchers.iter())
                .filter(|m| m.name != promql_parser::label::METRIC_NAME)
                .map(|m| (m.name.clone(), m.value.clone()))
                .collect();
            self.series.entry(name).or_default().push(labels);
        }
        Ok(())
    }
}

/// Every query of a Grafana dashboard: each `expr` anywhere in its panels (rows nest
/// panels), and each query variable's `label_values(selector, label)`.
fn dashboard_queries(dashboard: &Value) -> Vec<Query> {
    let mut queries = Vec::new();
    collect_exprs(&dashboard["panels"], "", &mut queries);
    let variables = dashboard["templating"]["list"].as_array();
    for variable in variables.into_iter().flatten() {
        if variable["type"] != "query" {
            continue;
        }
        let query = &variable["query"];
        let text = query["query"].as_str().or(query.as_str()).unwrap_or("");
        let at = format!("variable {}", variable["name"].as_str().unwrap_or("?"));
        queries.push(label_values_query(at, text));
    }
    queries
}

fn collect_exprs(value: &Value, panel: &str, out: &mut Vec<Query>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, panel, out)),
        Value::Object(fields) => {
            let title = fields.get("title").and_then(Value::as_str).unwrap_or(panel);
            if let Some(Value::String(expr)) = fields.get("expr") {
                let ref_id = fields.get("refId").and_then(Value::as_str).unwrap_or("?");
                out.push(Query {
                    at: format!("panel {title:?} {ref_id}"),
                    promql: substitute_variables(expr),
                    labels: Vec::new(),
                });
            }
            fields.values().for_each(|v| collect_exprs(v, title, out));
        }
        _ => {}
    }
}

/// Grafana's `label_values(selector, label)` (or `label_values(label)`) as the selector
/// and the label it reads. Anything else is taken as PromQL.
fn label_values_query(at: String, text: &str) -> Query {
    let text = substitute_variables(text.trim());
    let Some(inner) = (text.strip_prefix("label_values(")).and_then(|t| t.strip_suffix(')')) else {
        return Query {
            at,
            promql: text,
            labels: Vec::new(),
        };
    };
    let (selector, label) = inner.rsplit_once(',').unwrap_or(("", inner));
    Query {
        at,
        promql: selector.trim().to_owned(),
        labels: vec![label.trim().to_owned()],
    }
}

/// Replaces Grafana's variables: the interval ones by a duration, the others (which
/// stand in label values) by [`VARIABLE_STAND_IN`].
fn substitute_variables(query: &str) -> String {
    let mut query = query.to_owned();
    for interval in GRAFANA_INTERVALS {
        query = query.replace(interval, INTERVAL_STAND_IN);
        let braced = format!("${{{}}}", &interval[1..]);
        query = query.replace(&braced, INTERVAL_STAND_IN);
    }
    let mut out = String::with_capacity(query.len());
    let mut rest = query.as_str();
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let len = match after.strip_prefix('{') {
            Some(braced) => braced.find('}').map_or(after.len(), |end| end + 2),
            None => after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len()),
        };
        out.push_str(VARIABLE_STAND_IN);
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

/// The metrics `expr` selects, each with the labels the expression uses on it.
fn selections(expr: &Expr) -> Vec<Selection> {
    let mut out = Vec::new();
    select(expr, &BTreeSet::new(), &mut out);
    out
}

/// Walks `expr`; `inherited` holds the labels the enclosing expressions group or
/// match on, which every selector below must carry.
fn select(expr: &Expr, inherited: &BTreeSet<String>, out: &mut Vec<Selection>) {
    match expr {
        Expr::Aggregate(aggregate) => {
            let mut labels = inherited.clone();
            if let Some(modifier) = &aggregate.modifier {
                labels.extend(modifier_labels(modifier));
            }
            select(&aggregate.expr, &labels, out);
            if let Some(param) = &aggregate.param {
                select(param, inherited, out);
            }
        }
        Expr::Binary(binary) => {
            let (mut lhs, mut rhs) = (inherited.clone(), inherited.clone());
            if let Some(modifier) = &binary.modifier {
                if let Some(matching) = &modifier.matching {
                    lhs.extend(modifier_labels(matching));
                    rhs.extend(modifier_labels(matching));
                }
                // group_left(x) copies x from the right-hand side, group_right from the left.
                match &modifier.card {
                    VectorMatchCardinality::ManyToOne(l) => rhs.extend(l.labels.iter().cloned()),
                    VectorMatchCardinality::OneToMany(l) => lhs.extend(l.labels.iter().cloned()),
                    VectorMatchCardinality::OneToOne | VectorMatchCardinality::ManyToMany => {}
                }
            }
            select(&binary.lhs, &lhs, out);
            select(&binary.rhs, &rhs, out);
        }
        Expr::Unary(unary) => select(&unary.expr, inherited, out),
        Expr::Paren(paren) => select(&paren.expr, inherited, out),
        Expr::Subquery(subquery) => select(&subquery.expr, inherited, out),
        Expr::Call(call) => (call.args.args.iter()).for_each(|arg| select(arg, inherited, out)),
        Expr::VectorSelector(selector) => out.push(selection(selector, inherited)),
        Expr::MatrixSelector(matrix) => out.push(selection(&matrix.vs, inherited)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

fn modifier_labels(modifier: &LabelModifier) -> impl Iterator<Item = String> + '_ {
    modifier.labels().labels.iter().cloned()
}

fn selection(selector: &VectorSelector, inherited: &BTreeSet<String>) -> Selection {
    let mut selection = Selection {
        metric: metric_name(selector).unwrap_or_default(),
        labels: inherited.clone(),
        values: BTreeSet::new(),
    };
    for matcher in all_matchers(&selector.matchers) {
        if matcher.name == promql_parser::label::METRIC_NAME {
            continue;
        }
        selection.labels.insert(matcher.name.clone());
        let literal = !matcher.value.contains(VARIABLE_STAND_IN);
        if matches!(matcher.op, MatchOp::Equal) && literal && !matcher.value.is_empty() {
            let pair = (matcher.name.clone(), matcher.value.clone());
            selection.values.insert(pair);
        }
    }
    selection
}

fn all_matchers(matchers: &Matchers) -> impl Iterator<Item = &Matcher> {
    (matchers.matchers.iter()).chain(matchers.or_matchers.iter().flatten())
}

/// The selector's metric name: its name, or a `__name__="…"` matcher.
fn metric_name(selector: &VectorSelector) -> Option<String> {
    selector.name.clone().or_else(|| {
        all_matchers(&selector.matchers)
            .find(|m| m.name == promql_parser::label::METRIC_NAME && m.op == MatchOp::Equal)
            .map(|m| m.value.clone())
    })
}

/// Everything in `queries` that `exposition` does not have, sorted.
fn check(queries: &[Query], exposition: &Exposition) -> Vec<Problem> {
    let mut problems = Vec::new();
    for query in queries {
        let expr = match parser::parse(&query.promql) {
            Ok(expr) => expr,
            Err(error) => {
                let at = query.at.clone();
                problems.push(Problem::Unparsable { at, error });
                continue;
            }
        };
        for mut selection in selections(&expr) {
            selection.labels.extend(query.labels.iter().cloned());
            check_selection(&query.at, &selection, exposition, &mut problems);
        }
    }
    problems.sort();
    problems.dedup();
    problems
}

fn check_selection(
    at: &str,
    selection: &Selection,
    exposition: &Exposition,
    problems: &mut Vec<Problem>,
) {
    let at = at.to_owned();
    let metric = selection.metric.clone();
    if metric.is_empty() {
        problems.push(Problem::NoMetricName { at });
        return;
    }
    let Some(series) = exposition.series.get(&metric) else {
        problems.push(Problem::MissingMetric { at, metric });
        return;
    };
    for label in &selection.labels {
        if TARGET_LABELS.contains(&label.as_str()) || series.iter().any(|s| s.contains_key(label)) {
            continue;
        }
        let (at, metric, label) = (at.clone(), metric.clone(), label.clone());
        problems.push(Problem::MissingLabel { at, metric, label });
    }
    for (label, value) in &selection.values {
        if TARGET_LABELS.contains(&label.as_str())
            || series.iter().any(|s| s.get(label) == Some(value))
        {
            continue;
        }
        let (at, metric) = (at.clone(), metric.clone());
        let (label, value) = (label.clone(), value.clone());
        problems.push(Problem::MissingValue {
            at,
            metric,
            label,
            value,
        });
    }
}

fn dashboard_path() -> PathBuf {
    repo_root().join(DASHBOARD)
}

fn dashboard_text() -> String {
    fs::read_to_string(dashboard_path()).expect("the dashboard is readable")
}

fn parse_dashboard(text: &str) -> Value {
    serde_json::from_str(text).expect("the dashboard is JSON")
}

fn listing(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("\n  {p}")).collect()
}

#[test]
fn every_dashboard_query_selects_metrics_and_labels_a_running_node_exports() {
    let queries = dashboard_queries(&parse_dashboard(&dashboard_text()));
    let mesh = Mesh::start(&MeshConfig::standalone(3)).expect("a standalone mesh starts");
    for node in &mesh.nodes {
        let standalone = node.standalone_dir.as_ref().expect("a standalone node");
        let in_dir = standalone.join("in");
        fs::create_dir_all(&in_dir).expect("in/ exists");
        let mut yaml = String::new();
        service_yaml(&mut yaml, node.cluster);
        write_atomically(&in_dir, "dashboard.yaml", &yaml).expect("write an export");
    }
    let holder = &mesh.nodes[0];
    let sample = format!("shoal_lease_holder{{lease=\"{LEASE}\",cluster=\"c0\"}}");
    assert_eq!(holder.metric(&sample), Ok(0), "no holder before any asks");
    // Acquiring keeps renewing; the first answers may come before a majority granted.
    wait_for("c0 holds the lease", LEASE_TIMEOUT, || {
        let view: Value = serde_json::from_str(&holder.post(&format!("/v1/leases/{LEASE}"))?)
            .map_err(|e| e.to_string())?;
        match view["write_ready"].as_bool() {
            Some(true) => Ok(()),
            _ => Err(view.to_string()),
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", mesh.log_tails(30)));
    // The holder metric moved: `c0` holds it, as `c0` sees it.
    wait_for(
        "shoal_lease_holder names c0",
        LEASE_TIMEOUT,
        || match holder.metric(&sample)? {
            1 => Ok(()),
            n => Err(format!("{sample} = {n}")),
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", holder.metrics().unwrap_or_default()));

    let mut last_text = String::new();
    let exposition = wait_for(
        "every metric the dashboard queries",
        METRICS_TIMEOUT,
        || {
            let mut exposition = Exposition::default();
            last_text.clear();
            for node in &mesh.nodes {
                let text = node.metrics()?;
                exposition.add(&text)?;
                last_text.push_str(&format!("--- {}\n{text}", node.identity));
            }
            let problems = check(&queries, &exposition);
            match problems.is_empty() {
                true => Ok(exposition),
                false => Err(listing(&problems)),
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n/metrics of every node:\n{last_text}"));

    // The same check fails for a dashboard that names a metric, or a label, that no
    // node exports: a copy of the real one with one of each renamed.
    let mutated = dashboard_text()
        .replace("shoal_peer_rtt_seconds{", "shoal_peer_rtt_secs{")
        .replace("by (reason)", "by (cause)");
    let problems = check(&dashboard_queries(&parse_dashboard(&mutated)), &exposition);
    let missing = |p: &Problem, want: &str| match p {
        Problem::MissingMetric { metric, .. } => metric == want,
        Problem::MissingLabel { label, .. } => label == want,
        _ => false,
    };
    assert!(
        problems.iter().any(|p| missing(p, "shoal_peer_rtt_secs")),
        "a renamed metric is found:{}",
        listing(&problems)
    );
    assert!(
        problems.iter().any(|p| missing(p, "cause")),
        "a renamed label is found:{}",
        listing(&problems)
    );
}

#[test]
fn the_dashboard_parses_and_shows_what_issue_14_asks() {
    let dashboard = parse_dashboard(&dashboard_text());
    let queries = dashboard_queries(&dashboard);
    let mut metrics = BTreeSet::new();
    for query in &queries {
        let expr = parser::parse(&query.promql)
            .unwrap_or_else(|e| panic!("{}: {e}: {}", query.at, query.promql));
        let selected = selections(&expr);
        assert!(!selected.is_empty(), "{} selects no metric", query.at);
        metrics.extend(selected.into_iter().map(|s| s.metric));
    }
    let missing: Vec<&str> = (REQUIRED_METRICS.iter().copied())
        .filter(|m| !metrics.contains(*m))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard does not show {missing:?}"
    );
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    assert!(
        variables.iter().any(|v| v["name"] == "pod"),
        "a pod variable"
    );
    assert_eq!(dashboard["uid"], "shoal-overview", "a stable uid");
}

/// A small exposition of the shapes the nodes print.
const EXPOSITION: &str = "# TYPE shoal_members gauge\n\
    shoal_members{state=\"alive\"} 2\n\
    shoal_members{state=\"down\"} 0\n\
    shoal_rejects_total{reason=\"record_forged\"} 0\n\
    shoal_swim_ack_seconds_bucket{cluster=\"c1\",replica=\"0\",le=\"0.001\"} 3\n\
    shoal_swim_ack_seconds_bucket{cluster=\"c1\",replica=\"0\",le=\"+Inf\"} 4\n\
    shoal_lease_held{lease=\"a \\\"quoted\\\" name\"} 1\n\
    shoal_isolated 0\n";

fn problems_of(promql: &str) -> Vec<Problem> {
    let mut exposition = Exposition::default();
    exposition.add(EXPOSITION).expect("the exposition parses");
    let query = Query {
        at: "test".to_owned(),
        promql: substitute_variables(promql),
        labels: Vec::new(),
    };
    check(&[query], &exposition)
}

#[test]
fn a_query_of_exported_metrics_and_labels_passes() {
    let queries = [
        "sum by (state) (shoal_members{state=\"alive\"})",
        "histogram_quantile(0.99, sum by (le, cluster, replica) \
         (rate(shoal_swim_ack_seconds_bucket{pod=~\"$pod\"}[$__rate_interval])))",
        "sum by (reason) (rate(shoal_rejects_total{namespace=\"${namespace}\"}[5m])) > 0",
        "shoal_isolated * on (pod) group_left (state) shoal_members",
        "max by (lease) (shoal_lease_held)",
    ];
    for promql in queries {
        assert_eq!(problems_of(promql), [], "{promql}");
    }
}

#[test]
fn a_metric_no_node_exports_fails() {
    let problems = problems_of("sum(rate(shoal_memberz_total[5m]))");
    assert!(
        matches!(&problems[..], [Problem::MissingMetric { metric, .. }] if metric == "shoal_memberz_total"),
        "{problems:?}"
    );
}

#[test]
fn a_label_no_sample_carries_fails_wherever_the_query_uses_it() {
    let queries = [
        "shoal_members{phase=\"alive\"}",
        "sum by (phase) (shoal_members)",
        "sum without (phase) (shoal_members)",
        "shoal_members * on (phase) shoal_isolated",
        "shoal_members * ignoring (phase) shoal_isolated",
        "shoal_members * on (pod) group_left (phase) shoal_isolated",
    ];
    for promql in queries {
        let problems = problems_of(promql);
        assert!(
            problems
                .iter()
                .any(|p| matches!(p, Problem::MissingLabel { label, .. } if label == "phase")),
            "{promql}: {problems:?}"
        );
    }
}

#[test]
fn a_label_value_no_sample_has_fails() {
    let problems = problems_of("shoal_members{state=\"suspect\"}");
    assert!(
        matches!(&problems[..], [Problem::MissingValue { value, .. }] if value == "suspect"),
        "{problems:?}"
    );
    // Variables and regular expressions are not literal values.
    assert_eq!(problems_of("shoal_members{state=~\"susp.*\"}"), []);
    assert_eq!(problems_of("shoal_members{state=\"$state\"}"), []);
}

#[test]
fn label_values_variables_are_checked_too() {
    let mut exposition = Exposition::default();
    exposition.add(EXPOSITION).expect("the exposition parses");
    let good = label_values_query("v".to_owned(), "label_values(shoal_members, state)");
    let bad = label_values_query(
        "v".to_owned(),
        "label_values(shoal_members{x=\"$y\"}, phase)",
    );
    assert_eq!(check(&[good], &exposition), []);
    let problems = check(&[bad], &exposition);
    let labels: Vec<&str> = (problems.iter())
        .filter_map(|p| match p {
            Problem::MissingLabel { label, .. } => Some(label.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(labels, ["phase", "x"], "{problems:?}");
}

#[test]
fn a_query_that_does_not_parse_or_names_no_metric_fails() {
    assert!(matches!(
        &problems_of("sum by (state (shoal_members)")[..],
        [Problem::Unparsable { .. }]
    ));
    assert!(matches!(
        &problems_of("{state=\"alive\"}")[..],
        [Problem::NoMetricName { .. }]
    ));
}

#[test]
fn grafana_variables_become_plain_promql() {
    assert_eq!(
        substitute_variables("rate(x{pod=~\"$pod\",ns=\"${namespace}\"}[$__rate_interval])"),
        "rate(x{pod=~\"grafana_variable\",ns=\"grafana_variable\"}[5m])"
    );
    assert_eq!(substitute_variables("y[${__range}]"), "y[5m]");
}

#[test]
fn the_kustomization_renders_the_podmonitor_and_the_labelled_dashboard() {
    let dir = repo_root().join(OBSERVABILITY);
    let output = Command::new(kubectl_program())
        .arg("kustomize")
        .arg(&dir)
        .output()
        .expect("kubectl runs (install it or set KUBECTL)");
    let rendered = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "kubectl kustomize: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    for want in [
        "apiVersion: monitoring.coreos.com/v1\nkind: PodMonitor\n",
        "kind: ConfigMap\n",
        "    grafana_dashboard: \"1\"\n",
        "  name: shoal-grafana-dashboard\n  namespace: shoal-system\n",
        "  shoal.json: |\n",
        "\"uid\": \"shoal-overview\"",
        "    path: /metrics\n    port: http\n",
        "  selector:\n    matchLabels:\n      app.kubernetes.io/name: shoal\n",
    ] {
        assert!(rendered.contains(want), "no {want:?} in\n{rendered}");
    }
}
