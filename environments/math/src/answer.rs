//! Final-answer extraction and comparison for math tasks.
//!
//! Extraction looks, in order, for the last `\boxed{...}`, a `#### ` line, a phrase such as
//! "the answer is", and finally the last number in the text. Comparison is numeric when both
//! sides read as numbers (integers, decimals, fractions, `\frac`, thousands separators, signs,
//! currency and percent signs), and a normalised string comparison otherwise.

/// The content of the last `\boxed{...}` (or `\fbox{...}`), braces matched.
pub fn last_boxed(text: &str) -> Option<String> {
    let mut found = None;
    for marker in ["\\boxed", "\\fbox"] {
        let mut from = 0;
        while let Some(pos) = text[from..].find(marker) {
            let start = from + pos;
            from = start + marker.len();
            let rest = text[from..].trim_start();
            if let Some(inner) = rest.strip_prefix('{').and_then(matched_braces) {
                if found.as_ref().is_none_or(|(at, _)| start > *at) {
                    found = Some((start, inner.to_string()));
                }
            } else if let Some(word) = rest
                .split_whitespace()
                .next()
                .filter(|_| text[from..].starts_with(' '))
            {
                // `\boxed 5` is valid LaTeX too.
                if found.as_ref().is_none_or(|(at, _)| start > *at) {
                    found = Some((start, word.trim_end_matches(['$', '.']).to_string()));
                }
            }
        }
    }
    found.map(|(_, s)| s)
}

/// Given the text just after an opening brace, the text up to its matching close brace.
fn matched_braces(after_open: &str) -> Option<&str> {
    let mut depth = 1usize;
    for (i, c) in after_open.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&after_open[..i]);
                }
            }
            _ => {}
        }
    }
    None
}

const ANSWER_PHRASES: [&str; 5] = [
    "final answer is",
    "final answer:",
    "the answer is",
    "answer:",
    "answer is",
];

/// Extracts the final answer a model gave, or `None` if the text holds none.
pub fn extract_answer(text: &str) -> Option<String> {
    if let Some(b) = last_boxed(text) {
        return Some(b.trim().to_string());
    }
    if let Some(pos) = text.rfind("####") {
        let line = text[pos + 4..].lines().next().unwrap_or("").trim();
        if !line.is_empty() {
            return Some(line.to_string());
        }
    }
    let lower = text.to_lowercase();
    let phrase_hit = ANSWER_PHRASES
        .iter()
        .filter_map(|p| lower.rfind(p).map(|i| (i, i + p.len())))
        .max_by_key(|(start, _)| *start);
    if let Some((_, end)) = phrase_hit {
        // `lower` and `text` have the same byte offsets only for ASCII; map back via char count.
        let chars_before = lower[..end].chars().count();
        let tail: String = text.chars().skip(chars_before).collect();
        let tail = tail.trim_start_matches([' ', ':', '*']).trim();
        if let Some(n) = last_number(first_sentence(tail)).or_else(|| first_number(tail)) {
            return Some(n);
        }
    }
    last_number(text)
}

/// The text up to the first sentence end (a period followed by space or end, or a newline).
fn first_sentence(s: &str) -> &str {
    let mut end = s.len();
    if let Some(i) = s.find('\n') {
        end = end.min(i);
    }
    let b = s.as_bytes();
    for i in 0..b.len() {
        if b[i] == b'.' && (i + 1 == b.len() || b[i + 1].is_ascii_whitespace()) {
            end = end.min(i);
            break;
        }
    }
    &s[..end]
}

/// Spans of number-like tokens: an optional sign, digits with optional thousands separators,
/// an optional decimal part, an optional `/denominator`.
fn number_tokens(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let starts_digit = chars[i].is_ascii_digit();
        let starts_dot = chars[i] == '.' && chars.get(i + 1).is_some_and(|c| c.is_ascii_digit());
        if !(starts_digit || starts_dot) {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < chars.len()
            && (chars[j].is_ascii_digit()
                || (chars[j] == ',' && chars.get(j + 1).is_some_and(|c| c.is_ascii_digit()))
                || (chars[j] == '.' && chars.get(j + 1).is_some_and(|c| c.is_ascii_digit()))
                || (chars[j] == '/' && chars.get(j + 1).is_some_and(|c| c.is_ascii_digit())))
        {
            j += 1;
        }
        let negative = i > 0 && chars[i - 1] == '-' && (i < 2 || !chars[i - 2].is_alphanumeric());
        let mut tok: String = chars[i..j].iter().collect();
        if negative {
            tok.insert(0, '-');
        }
        out.push(tok);
        i = j;
    }
    out
}

fn last_number(text: &str) -> Option<String> {
    number_tokens(text)
        .into_iter()
        .rev()
        .find(|t| parse_number(t).is_some())
}

fn first_number(text: &str) -> Option<String> {
    number_tokens(text)
        .into_iter()
        .find(|t| parse_number(t).is_some())
}

/// Reads `s` as a number: `-1,234.5`, `3/4`, `\frac{3}{4}`, `$12`, `25%`, `1e3`. `None` when it
/// is not one number.
pub fn parse_number(s: &str) -> Option<f64> {
    let mut t = s.trim().to_string();
    for junk in [
        "\\$", "$", "\\%", "%", "\\!", "\\,", "\\ ", "{,}", "€", "£", "¥",
    ] {
        t = t.replace(junk, "");
    }
    let t = t.trim().trim_end_matches('.').trim();
    let t = strip_wrapping(t, "\\text{", "}");
    let t = strip_wrapping(t, "\\mathrm{", "}");
    let t = t.trim();
    if t.is_empty() {
        return None;
    }
    let (sign, body) = match t.strip_prefix('-') {
        Some(rest) => (-1.0, rest.trim()),
        None => (1.0, t.strip_prefix('+').unwrap_or(t).trim()),
    };
    for frac in ["\\frac", "\\dfrac", "\\tfrac"] {
        if let Some(rest) = body.strip_prefix(frac) {
            let rest = rest.trim_start().strip_prefix('{')?;
            let num = matched_braces(rest)?;
            let rest = rest[num.len() + 1..].trim_start().strip_prefix('{')?;
            let den = matched_braces(rest)?;
            if !rest[den.len() + 1..].trim().is_empty() {
                return None;
            }
            let (n, d) = (parse_number(num)?, parse_number(den)?);
            return (d != 0.0).then(|| sign * n / d);
        }
    }
    if let Some((n, d)) = body.split_once('/') {
        let (n, d) = (parse_plain(n.trim())?, parse_plain(d.trim())?);
        return (d != 0.0).then(|| sign * n / d);
    }
    parse_plain(body).map(|v| sign * v)
}

fn strip_wrapping<'a>(s: &'a str, open: &str, close: &str) -> &'a str {
    s.strip_prefix(open)
        .and_then(|r| r.strip_suffix(close))
        .unwrap_or(s)
}

/// A plain decimal, with thousands separators only in groups of three.
fn parse_plain(s: &str) -> Option<f64> {
    if s.is_empty() || s.starts_with(['-', '+']) {
        return None;
    }
    let (int_part, rest) = match s.find(['.', 'e', 'E']) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    };
    if int_part.contains(',') {
        let groups: Vec<&str> = int_part.split(',').collect();
        let ok = !groups[0].is_empty()
            && groups[0].len() <= 3
            && groups[1..].iter().all(|g| g.len() == 3)
            && groups.iter().all(|g| g.chars().all(|c| c.is_ascii_digit()));
        if !ok {
            return None;
        }
    } else if !int_part.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let cleaned = format!("{}{}", int_part.replace(',', ""), rest);
    if !cleaned
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'))
    {
        return None;
    }
    cleaned.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Strips what does not change a symbolic answer's meaning, for the non-numeric fallback.
fn normalise(s: &str) -> String {
    let mut t = s.to_string();
    for junk in [
        "\\left",
        "\\right",
        "\\!",
        "\\,",
        "\\;",
        "\\displaystyle",
        "$",
        "\\text",
        "\\mathrm",
        "^\\circ",
        "^{\\circ}",
        "\\dfrac",
        "\\tfrac",
    ] {
        t = t.replace(junk, if junk.ends_with("frac") { "\\frac" } else { "" });
    }
    t.chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .trim_end_matches('.')
        .to_lowercase()
}

/// Whether a predicted final answer equals the expected one.
pub fn answers_match(predicted: &str, expected: &str) -> bool {
    match (parse_number(predicted), parse_number(expected)) {
        (Some(p), Some(e)) => (p - e).abs() <= 1e-6 * e.abs().max(1.0),
        (None, None) => normalise(predicted) == normalise(expected),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn extracts_in_priority_order() {
        assert_eq!(
            extract_answer("so 3+4 = 7. \\boxed{7} and 9").as_deref(),
            Some("7")
        );
        assert_eq!(
            extract_answer("\\boxed{\\frac{1}{2}}").as_deref(),
            Some("\\frac{1}{2}")
        );
        assert_eq!(
            extract_answer("work\n#### 1,234\n").as_deref(),
            Some("1,234")
        );
        assert_eq!(
            extract_answer("I think the answer is 42 apples. Then 7 more").as_deref(),
            Some("42")
        );
        assert_eq!(
            extract_answer("Final answer: $18.50").as_deref(),
            Some("18.50")
        );
        assert_eq!(
            extract_answer("She has 5 then 12 left").as_deref(),
            Some("12")
        );
        assert_eq!(
            extract_answer("temperature fell to -3 degrees").as_deref(),
            Some("-3")
        );
        assert_eq!(extract_answer("no numbers here"), None);
        assert_eq!(
            extract_answer("The answer is: **36**").as_deref(),
            Some("36")
        );
    }

    #[test]
    fn later_boxed_wins() {
        assert_eq!(
            extract_answer("\\boxed{1} no wait \\boxed{2}").as_deref(),
            Some("2")
        );
    }

    #[test]
    fn numbers_compare_across_notations() {
        assert!(answers_match("1,234", "1234"));
        assert!(answers_match("$18.50", "18.5"));
        assert!(answers_match("\\frac{3}{4}", "0.75"));
        assert!(answers_match("3/4", "\\dfrac{3}{4}"));
        assert!(answers_match("25%", "25"));
        assert!(answers_match("-7", "-7.0"));
        assert!(answers_match("+7", "7"));
        assert!(!answers_match("7", "-7"));
        assert!(!answers_match("12,34", "1234"));
        assert!(!answers_match("x", "5"));
    }

    #[test]
    fn symbolic_answers_compare_normalised() {
        assert!(answers_match("\\left( 1, 2 \\right)", "(1,2)"));
        assert!(answers_match("x^2 + 1", "x^2+1"));
        assert!(!answers_match("x^2+2", "x^2+1"));
    }

    fn with_thousands(n: u64) -> String {
        let s = n.to_string();
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    }

    proptest! {
        #[test]
        fn integers_survive_every_notation(n in -10_000_000i64..10_000_000) {
            let plain = n.to_string();
            let sep = if n < 0 { format!("-{}", with_thousands(n.unsigned_abs())) } else { with_thousands(n as u64) };
            for written in [plain.clone(), sep.clone(), format!("{n}.0"), format!("\\boxed{{{sep}}}"), format!("#### {sep}"),
                            format!("So the answer is {sep}."), format!("Total: ${sep}")] {
                let got = extract_answer(&written);
                prop_assert!(got.is_some(), "nothing extracted from {written:?}");
                prop_assert!(answers_match(got.as_deref().unwrap(), &plain), "{written:?} -> {got:?} != {plain}");
            }
        }

        #[test]
        fn different_integers_never_match(a in -1_000_000i64..1_000_000, b in -1_000_000i64..1_000_000) {
            prop_assume!(a != b);
            prop_assert!(!answers_match(&a.to_string(), &b.to_string()));
        }

        #[test]
        fn fractions_match_their_decimals(p in -500i64..500, q_pow in 0u32..6) {
            let q = 2i64.pow(q_pow);
            let decimal = format!("{}", p as f64 / q as f64);
            let latex = format!("\\frac{{{p}}}{{{q}}}");
            let slash = format!("{p}/{q}");
            prop_assert!(answers_match(&latex, &decimal), "{} != {}", latex, decimal);
            prop_assert!(answers_match(&slash, &decimal), "{} != {}", slash, decimal);
        }

        #[test]
        fn extraction_never_panics(s in "\\PC{0,200}") {
            let _ = extract_answer(&s);
            let _ = parse_number(&s);
        }
    }
}
