//! `trawl report`: one self-contained HTML file (inline styles and SVG, a few lines of inline
//! script to sort tables; no network request) with a run's numbers and charts: per environment ×
//! scaffold × model, success and reward with intervals, pass@k and pass^k curves, reward and
//! turn distributions, exit statuses, a per-task table, the best and worst rollout of each
//! group, and with two runs the task-by-task comparison. The stats it shows are embedded as
//! `trawl stats --json` writes them (`<script id="trawl-stats" type="application/json">`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use trawl_core::stats::{GroupStats, RunStats};
use trawl_core::TrajectoryRecord;

/// Text made safe for HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `value` as JSON that is safe inside an HTML `<script>` element: `<`, `>` and `&` become
/// `\u003c`, `\u003e` and `\u0026` (and U+2028/U+2029 their escapes), so no text in it (a
/// model named `m<!--<script>`, a `</script>` in a task id) can end the element or put the HTML
/// tokenizer into a state that swallows the rest of the page. The JSON means the same.
pub fn script_json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    let json = serde_json::to_string(value).unwrap_or_else(|_| "null".into());
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

const W: f64 = 360.0;
const H: f64 = 200.0;
const PAD: f64 = 32.0;

/// A line chart of `series` (name, points with x ≥ 1 and y in 0..=1) as inline SVG, with a
/// legend naming each series in its colour.
pub fn line_chart(title: &str, series: &[(String, Vec<(f64, f64)>)]) -> String {
    let max_x = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(x, _)| *x))
        .fold(1.0f64, f64::max);
    let sx = |x: f64| PAD + (x - 1.0) / (max_x - 1.0).max(1.0) * (W - 2.0 * PAD);
    let sy = |y: f64| H - PAD - y.clamp(0.0, 1.0) * (H - 2.0 * PAD);
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\"><title>{}</title>",
        esc(title)
    );
    let _ = write!(
        svg,
        "<line x1=\"{PAD}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#888\"/><line x1=\"{PAD}\" y1=\"{PAD}\" x2=\"{PAD}\" y2=\"{b}\" stroke=\"#888\"/>\
         <text x=\"4\" y=\"{t}\" font-size=\"10\">1</text><text x=\"4\" y=\"{b}\" font-size=\"10\">0</text>\
         <text x=\"{r}\" y=\"{lb}\" font-size=\"10\" text-anchor=\"end\">k = {max_x}</text>",
        b = H - PAD,
        r = W - PAD,
        t = PAD + 4.0,
        lb = H - 8.0
    );
    for (i, (name, points)) in series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let path: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"><title>{}</title></polyline>",
            path.join(" "),
            esc(name)
        );
        for (x, y) in points {
            let _ = write!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"><title>{} k={x}: {y:.3}</title></circle>",
                sx(*x),
                sy(*y),
                esc(name)
            );
        }
    }
    svg.push_str("</svg><div class=\"legend\">");
    for (i, (name, _)) in series.iter().enumerate() {
        let _ = write!(
            svg,
            "<span><i style=\"background:{}\"></i>{}</span>",
            PALETTE[i % PALETTE.len()],
            esc(name)
        );
    }
    svg.push_str("</div>");
    svg
}

/// A histogram of `values` in `bins` equal bins over their range, as inline SVG.
pub fn histogram(title: &str, values: &[f64], bins: usize) -> String {
    let (lo, hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(*v), b.max(*v))
        });
    let mut counts = vec![0u64; bins.max(1)];
    if values.is_empty() {
        return format!("<p class=\"empty\">{}: no values</p>", esc(title));
    }
    let width = (hi - lo).max(1e-9);
    for v in values {
        let i = (((v - lo) / width) * bins as f64) as usize;
        counts[i.min(bins - 1)] += 1;
    }
    let max = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let bw = (W - 2.0 * PAD) / bins as f64;
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\"><title>{}</title>",
        esc(title)
    );
    for (i, c) in counts.iter().enumerate() {
        let h = *c as f64 / max * (H - 2.0 * PAD);
        let _ = write!(
            svg,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{}\"><title>{:.3}–{:.3}: {c}</title></rect>",
            PAD + i as f64 * bw,
            H - PAD - h,
            (bw - 1.0).max(1.0),
            PALETTE[0],
            lo + width * i as f64 / bins as f64,
            lo + width * (i + 1) as f64 / bins as f64,
        );
    }
    let _ = write!(
        svg,
        "<line x1=\"{PAD}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#888\"/>\
         <text x=\"{PAD}\" y=\"{lb}\" font-size=\"10\">{lo:.2}</text><text x=\"{r}\" y=\"{lb}\" font-size=\"10\" text-anchor=\"end\">{hi:.2}</text>",
        b = H - PAD,
        r = W - PAD,
        lb = H - 12.0
    );
    svg.push_str("</svg>");
    svg
}

const PALETTE: [&str; 6] = [
    "#3366cc", "#dc3912", "#109618", "#ff9900", "#990099", "#0099c6",
];

fn group_name(g: &GroupStats) -> String {
    g.group
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect::<Vec<_>>()
        .join(" ")
}

fn in_group(r: &TrajectoryRecord, g: &GroupStats) -> bool {
    g.group.iter().all(|(k, v)| {
        let value = match k.as_str() {
            "environment" => &r.key.environment,
            "scaffold" => &r.key.scaffold,
            "model" => &r.key.model,
            _ => return true,
        };
        v.as_str() == Some(value.as_str())
    })
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

/// A short, escaped rendering of one rollout for the examples.
fn example(r: &TrajectoryRecord) -> String {
    let mut out = format!(
        "<details><summary>{} — reward {:.3}, {}, {} turns</summary><div class=\"conv\">",
        esc(&r.key.to_string()),
        r.reward,
        r.outcome.exit_status,
        r.assistant_turns()
    );
    for m in &r.messages {
        let role = format!("{:?}", m.role).to_lowercase();
        let mut text = m.text().to_string();
        for c in &m.tool_calls {
            let _ = write!(
                text,
                "\n[call {}({})]",
                c.function.name, c.function.arguments
            );
        }
        let cut: String = text.chars().take(2000).collect();
        let more = if cut.len() < text.len() { " …" } else { "" };
        let _ = write!(
            out,
            "<div class=\"msg {role}\"><b>{role}</b><pre>{}{more}</pre></div>",
            esc(&cut)
        );
    }
    out.push_str("</div></details>");
    out
}

/// The HTML report of `runs` (name, records, stats).
pub fn render(runs: &[(String, Vec<TrajectoryRecord>, RunStats)]) -> String {
    let mut body = String::new();
    for (name, records, stats) in runs {
        let _ = write!(
            body,
            "<h2>{}</h2><p>{} records: {} finished, {} infrastructure errors, {} interrupted.</p>",
            esc(name),
            stats.records,
            stats.finished,
            stats.infra_errors,
            stats.interrupted
        );
        body.push_str("<table class=\"sortable groups\"><thead><tr><th>group</th><th>rollouts</th><th>tasks</th><th>success</th><th>95% CI</th><th>mean reward</th><th>95% CI</th><th>exit statuses</th><th>infra errors</th></tr></thead><tbody>");
        for g in &stats.groups {
            let (rate, rate_ci) = g
                .success
                .as_ref()
                .map(|r| (pct(r.rate), format!("{}–{}", pct(r.ci95.0), pct(r.ci95.1))))
                .unwrap_or_default();
            let (mean, mean_ci) = g
                .reward
                .as_ref()
                .map(|m| {
                    (
                        format!("{:.3}", m.mean),
                        format!("{:.3}–{:.3}", m.ci95.0, m.ci95.1),
                    )
                })
                .unwrap_or_default();
            let statuses: Vec<String> = g
                .exit_statuses
                .iter()
                .map(|(s, n)| format!("{s} {n}"))
                .collect();
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td data-successes=\"{}\">{rate}</td><td>{rate_ci}</td><td>{mean}</td><td>{mean_ci}</td><td>{}</td><td>{}</td></tr>",
                esc(&group_name(g)),
                g.rollouts,
                g.tasks,
                g.successes,
                esc(&statuses.join(", ")),
                g.infra_errors
            );
        }
        body.push_str("</tbody></table>");

        // Charts: pass curves of every group, and each group's distributions.
        let curves =
            |pick: fn(&GroupStats) -> &BTreeMap<u64, f64>| -> Vec<(String, Vec<(f64, f64)>)> {
                stats
                    .groups
                    .iter()
                    .map(|g| {
                        (
                            group_name(g),
                            pick(g).iter().map(|(k, v)| (*k as f64, *v)).collect(),
                        )
                    })
                    .collect()
            };
        body.push_str("<div class=\"charts\">");
        body.push_str(&format!(
            "<figure>{}<figcaption>pass@k</figcaption></figure>",
            line_chart("pass@k", &curves(|g| &g.pass_at_k))
        ));
        body.push_str(&format!(
            "<figure>{}<figcaption>pass^k</figcaption></figure>",
            line_chart("pass^k", &curves(|g| &g.pass_hat_k))
        ));
        for g in &stats.groups {
            let mine: Vec<&TrajectoryRecord> = records
                .iter()
                .filter(|r| r.is_final() && in_group(r, g))
                .collect();
            let rewards: Vec<f64> = mine
                .iter()
                .filter(|r| r.is_scored())
                .map(|r| r.reward)
                .collect();
            let turns: Vec<f64> = mine.iter().map(|r| r.assistant_turns() as f64).collect();
            let tokens: Vec<f64> = mine
                .iter()
                .map(|r| r.usage.completion_tokens as f64)
                .collect();
            let secs: Vec<f64> = mine
                .iter()
                .map(|r| r.timing.duration_ms as f64 / 1000.0)
                .collect();
            let gname = group_name(g);
            for (what, values) in [
                ("reward", &rewards),
                ("turns", &turns),
                ("completion tokens", &tokens),
                ("seconds", &secs),
            ] {
                let _ = write!(
                    body,
                    "<figure>{}<figcaption>{} — {what}</figcaption></figure>",
                    histogram(&format!("{gname} {what}"), values, 10),
                    esc(&gname)
                );
            }
        }
        body.push_str("</div>");

        // Per task.
        let mut per_task: BTreeMap<(String, String), (u64, u64, f64)> = BTreeMap::new();
        for r in records.iter().filter(|r| r.is_final() && r.is_scored()) {
            let e = per_task
                .entry((r.key.environment.clone(), r.key.task.clone()))
                .or_default();
            e.0 += 1;
            e.1 += u64::from(r.success);
            e.2 += r.reward;
        }
        body.push_str("<h3>Tasks</h3><table class=\"sortable tasks\"><thead><tr><th>environment</th><th>task</th><th>rollouts</th><th>successes</th><th>success rate</th><th>mean reward</th></tr></thead><tbody>");
        for ((env, task), (n, ok, sum)) in &per_task {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{n}</td><td>{ok}</td><td>{}</td><td>{:.3}</td></tr>",
                esc(env),
                esc(task),
                pct(*ok as f64 / *n as f64),
                sum / *n as f64
            );
        }
        body.push_str("</tbody></table>");

        // Best and worst of each group.
        body.push_str("<h3>Examples</h3>");
        for g in &stats.groups {
            let mut mine: Vec<&TrajectoryRecord> = records
                .iter()
                .filter(|r| r.is_final() && r.is_scored() && in_group(r, g))
                .collect();
            mine.sort_by(|a, b| b.reward.total_cmp(&a.reward));
            if let (Some(best), Some(worst)) = (mine.first(), mine.last()) {
                let _ = write!(
                    body,
                    "<h4>{}</h4><p>best</p>{}<p>worst</p>{}",
                    esc(&group_name(g)),
                    example(best),
                    example(worst)
                );
            }
        }
    }
    if let [(a, ra, _), (b, rb, _)] = runs {
        let left: Vec<&TrajectoryRecord> = ra.iter().collect();
        let right: Vec<&TrajectoryRecord> = rb.iter().collect();
        let by = trawl_core::compare::pairing_keys(&left, &right, &[]);
        let d = trawl_core::compare::diff((a, &left), (b, &right), &by);
        let _ = write!(
            body,
            "<h2>{} vs {}</h2><pre class=\"diff\">{}</pre>",
            esc(a),
            esc(b),
            esc(&d.render(false))
        );
    }
    let stats_json: Vec<&RunStats> = runs.iter().map(|(_, _, s)| s).collect();
    let json = script_json(&stats_json);
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>trawl report</title><style>{STYLE}</style></head>\
         <body><h1>trawl report</h1>{body}<script id=\"trawl-stats\" type=\"application/json\">{json}</script><script>{SCRIPT}</script></body></html>"
    )
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:1em 0}\
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}\
th{cursor:pointer;background:#f4f4f4}.charts{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0}\
figcaption{font-size:12px;text-align:center}pre{white-space:pre-wrap;margin:0}.msg{border-left:3px solid #ccc;padding-left:6px;margin:4px 0}\
.legend{font-size:12px;max-width:360px}.legend span{margin-right:10px;white-space:nowrap}\
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}.msg.assistant{border-color:#109618}.msg.user{border-color:#3366cc}.msg.tool{border-color:#ff9900}";

/// Sorting by a click on a column header: numbers as numbers, text as text.
const SCRIPT: &str = "document.querySelectorAll('table.sortable th').forEach(function(th,i){th.addEventListener('click',function(){\
var tb=th.closest('table').tBodies[0];var rows=Array.from(tb.rows);var asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';\
rows.sort(function(a,b){var x=a.cells[i].textContent,y=b.cells[i].textContent;var nx=parseFloat(x),ny=parseFloat(y);\
var c=(!isNaN(nx)&&!isNaN(ny))?nx-ny:x.localeCompare(y);return asc?c:-c});rows.forEach(function(r){tb.appendChild(r)})})});";
