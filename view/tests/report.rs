//! `trawl report` with hostile content: names and replies are written by users and models, and
//! none of them may end an element, open a comment or a script, or take the page's own script
//! with it. The numbers embedded as JSON still read back as `trawl stats --json`'s.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use serde_json::Value;
use trawl_core::{ExitStatus, Message, TrajectoryRecord};

/// Names the name rules allow, each a way into the HTML tokenizer's other states: a model name
/// that opens a comment and a script inside a script element (the script-data-escaped state,
/// which swallows the rest of the page), an element's end, an entity, and a line separator
/// (which ends a JavaScript string in older engines).
const MODEL: &str = "m<!--<script>";
const ENVIRONMENT: &str = "</script><script>alert(1)</script>";
const TASK: &str = "t&amp;<b>\u{2028}";

fn hostile(i: usize) -> TrajectoryRecord {
    let mut r = trawl_core::strategies::example_record();
    r.key.environment = ENVIRONMENT.into();
    r.key.scaffold = "chat".into();
    r.key.model = MODEL.into();
    r.key.task = format!("{TASK}{}", i / 2);
    r.key.sample = (i % 2) as u32;
    r.outcome.exit_status = ExitStatus::Submitted;
    r.success = i.is_multiple_of(3);
    r.reward = if r.success { 1.0 } else { 0.0 };
    r.messages = vec![
        Message::user("<!--<script> what is 1 + 1?"),
        Message::assistant("</script><!-- 2"),
    ];
    r
}

#[test]
fn hostile_names_and_replies_stay_inside_their_elements() {
    let records: Vec<TrajectoryRecord> = (0..6).map(hostile).collect();
    let stats = trawl_core::stats::compute(&records);
    let expected = serde_json::to_value([&stats]).unwrap();
    let html = trawl_view::report::render(&[("<!--run".into(), records, stats)]);

    // No hostile text reaches the page as markup, in the HTML or in the embedded JSON.
    for raw in [MODEL, ENVIRONMENT, "t&amp;<b>", "<!--"] {
        assert!(
            !html.contains(raw),
            "{raw:?} is in the page as it was written"
        );
    }
    // The stats element holds no `<` at all (so nothing in it can open a comment or end it),
    // and its JSON is the stats, names included.
    let open = "<script id=\"trawl-stats\" type=\"application/json\">";
    let start = html.find(open).unwrap() + open.len();
    let end = start + html[start..].find("</script>").unwrap();
    let json = &html[start..end];
    for c in ['<', '>', '&', '\u{2028}'] {
        assert!(!json.contains(c), "{c:?} in the embedded JSON");
    }
    let embedded: Value = serde_json::from_str(json).unwrap();
    assert_eq!(embedded, expected);
    assert_eq!(
        embedded[0]["groups"][0]["group"]["model"], MODEL,
        "{embedded}"
    );
    // The page's own script follows as its own element, and the page ends.
    assert!(
        html[end..].starts_with("</script><script>document.querySelectorAll"),
        "{}",
        &html[end..]
    );
    assert!(html.ends_with("</script></body></html>"));
}

#[test]
fn script_json_escapes_what_html_reads_and_means_the_same() {
    let value = serde_json::json!({"a<b": "</script>&<!--\u{2028}\u{2029}>"});
    let text = trawl_view::report::script_json(&value);
    assert_eq!(
        text,
        r#"{"a\u003cb":"\u003c/script\u003e\u0026\u003c!--\u2028\u2029\u003e"}"#
    );
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), value);
}
