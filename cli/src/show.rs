//! `trawl show`: trajectories as a person reads them in a terminal: who said what, the tools
//! called and what came back (long results folded, with their size), how the episode ended and
//! what each evaluator said. Colour only on a terminal (`anstream` strips it otherwise).

use std::io::Write;

use anstyle::{AnsiColor, Style};
use trawl_core::{Message, MessageRole, TrajectoryRecord};

/// How much of a long text is shown.
#[derive(Debug, Clone, Copy)]
pub struct Fold {
    /// Lines kept at the head of a long message or tool result (0: never fold).
    pub lines: usize,
}

const BOLD: Style = Style::new().bold();
const DIM: Style = Style::new().dimmed();

fn colour(c: AnsiColor) -> Style {
    Style::new().fg_color(Some(c.into()))
}

/// `text` cut to its first `fold.lines` lines, with what was left out said.
fn folded(text: &str, fold: Fold) -> String {
    let lines: Vec<&str> = text.lines().collect();
    if fold.lines == 0 || lines.len() <= fold.lines + 2 {
        return text.to_string();
    }
    let kept = lines[..fold.lines].join("\n");
    let rest = &lines[fold.lines..];
    let rest_bytes: usize = rest.iter().map(|l| l.len() + 1).sum();
    format!(
        "{kept}\n… {} more lines, {} bytes folded (--full shows everything)",
        rest.len(),
        rest_bytes
    )
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn role_style(m: &Message) -> (Style, &'static str) {
    match m.role {
        MessageRole::System => (DIM, "system"),
        MessageRole::User => (colour(AnsiColor::Cyan).bold(), "user"),
        MessageRole::Assistant => (colour(AnsiColor::Green).bold(), "assistant"),
        MessageRole::Tool => (colour(AnsiColor::Yellow).bold(), "tool"),
    }
}

/// Writes one record.
pub fn render(out: &mut dyn Write, r: &TrajectoryRecord, fold: Fold) -> std::io::Result<()> {
    let verdict = if !r.is_final() {
        colour(AnsiColor::Magenta).bold()
    } else if r.success {
        colour(AnsiColor::Green).bold()
    } else {
        colour(AnsiColor::Red).bold()
    };
    let label = if !r.is_final() {
        "not final"
    } else if !r.is_scored() {
        "unscored"
    } else if r.success {
        "success"
    } else {
        "failure"
    };
    writeln!(out, "{BOLD}══ {}{BOLD:#}", r.key)?;
    writeln!(
        out,
        "{verdict}{label}{verdict:#}  reward {:.3}  exit {}  turns {}  tokens {} prompt + {} completion  {} model calls  {:.1} s (model {:.1} s)",
        r.reward,
        r.outcome.exit_status,
        r.assistant_turns(),
        r.usage.prompt_tokens,
        r.usage.completion_tokens,
        r.usage.model_calls,
        r.timing.duration_ms as f64 / 1000.0,
        r.timing.model_ms as f64 / 1000.0,
    )?;
    if let Some(e) = &r.outcome.error {
        writeln!(
            out,
            "{}error {}: {}{:#}",
            colour(AnsiColor::Magenta),
            e.kind,
            e.message,
            colour(AnsiColor::Magenta)
        )?;
    }
    if !r.tools.is_empty() {
        let names: Vec<&str> = r.tools.iter().map(|t| t.name()).collect();
        writeln!(out, "{DIM}tools: {}{DIM:#}", names.join(", "))?;
    }
    for (i, m) in r.messages.iter().enumerate() {
        let (style, role) = role_style(m);
        let agent = m
            .agent
            .as_deref()
            .map(|a| format!(" ({a})"))
            .unwrap_or_default();
        let extra = match (&m.role, &m.tool_call_id) {
            (MessageRole::Tool, Some(id)) => format!(" → {id}, {} bytes", m.text().len()),
            _ => String::new(),
        };
        writeln!(
            out,
            "{style}[{i}] {role}{agent}{style:#}{DIM}{extra}{DIM:#}"
        )?;
        if let Some(reasoning) = m.reasoning_content.as_deref().filter(|t| !t.is_empty()) {
            writeln!(out, "{DIM}{}{DIM:#}", indent(&folded(reasoning, fold)))?;
        }
        if !m.text().is_empty() {
            let text = if m.role == MessageRole::System || m.role == MessageRole::Tool {
                folded(m.text(), fold)
            } else {
                folded(
                    m.text(),
                    Fold {
                        lines: fold.lines * 4,
                    },
                )
            };
            writeln!(out, "{}", indent(&text))?;
        }
        for c in &m.tool_calls {
            let args = serde_json::from_str::<serde_json::Value>(&c.function.arguments)
                .map(|v| v.to_string())
                .unwrap_or_else(|_| c.function.arguments.clone());
            writeln!(
                out,
                "    {}call {}{:#} {}{DIM}  ({}){DIM:#}",
                colour(AnsiColor::Blue).bold(),
                c.function.name,
                colour(AnsiColor::Blue).bold(),
                folded(&args, fold),
                c.id
            )?;
        }
    }
    if let Some(sub) = r.outcome.submission.as_deref().filter(|s| !s.is_empty()) {
        writeln!(out, "{BOLD}submission{BOLD:#}")?;
        writeln!(out, "{}", indent(&folded(sub, fold)))?;
    }
    for e in &r.evaluations {
        let style = if e.success {
            colour(AnsiColor::Green)
        } else {
            colour(AnsiColor::Red)
        };
        let components: Vec<String> = e
            .components
            .iter()
            .map(|(k, v)| format!("{k} {v:.3}"))
            .collect();
        writeln!(
            out,
            "{BOLD}evaluator {}{BOLD:#}: {style}{}{style:#}  reward {:.3}{}",
            e.evaluator,
            if e.success { "success" } else { "failure" },
            e.reward,
            if components.is_empty() {
                String::new()
            } else {
                format!("  ({})", components.join(", "))
            }
        )?;
    }
    writeln!(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_fold_with_their_size_and_short_ones_do_not() {
        let long: String = (0..50).map(|i| format!("line {i}\n")).collect();
        let f = folded(&long, Fold { lines: 5 });
        assert!(f.starts_with("line 0\nline 1"));
        assert!(f.contains("… 45 more lines"), "{f}");
        assert_eq!(folded("a\nb", Fold { lines: 5 }), "a\nb");
        assert_eq!(folded(&long, Fold { lines: 0 }), long);
    }
}
