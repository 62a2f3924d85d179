//! No value of any number in a config makes trawl panic: `inf`, `nan`, negatives, zero and
//! huge values are either accepted or refused with an error naming the field (`inf` and `nan`
//! always refused, at the field that holds them), and a config that loads builds every
//! component (models, environments with their sandboxes and tasks).

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use trawl_core::{ExperimentConfig, Registry};

use trawl_chat as _;
use trawl_code as _;
use trawl_math as _;
use trawl_openai as _;
use trawl_sandbox_local as _; // the `local` sandbox kind the code environment runs programs in
use trawl_tool_calling as _;

/// A float as TOML writes it, from the values that break code: non-finite, negative, zero,
/// tiny, huge, and ordinary ones.
fn float() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("inf".to_string()),
        Just("-inf".to_string()),
        Just("nan".to_string()),
        Just("0.0".to_string()),
        Just("-1.0".to_string()),
        Just("1e-300".to_string()),
        Just("1e300".to_string()),
        Just("1.7976931348623157e308".to_string()),
        (-1e6f64..1e6).prop_map(|v| format!("{v:?}")),
        (0.0f64..2.0).prop_map(|v| format!("{v:?}")),
    ]
}

fn integer() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("9223372036854775807".to_string()),
        Just("4294967296".to_string()),
        (0i64..100).prop_map(|v| v.to_string()),
    ]
}

/// Which field gets the value: (path in the config, is it an integer field).
const FIELDS: [(&str, bool); 22] = [
    ("episode_timeout_secs", false),
    ("max_infra_error_rate", false),
    ("samples", true),
    ("concurrency", true),
    ("seed", true),
    ("models.request_timeout_secs", false),
    ("models.connect_timeout_secs", false),
    ("models.max_concurrency", true),
    ("models.max_response_bytes", true),
    ("models.retry.max_attempts", true),
    ("models.retry.initial_backoff_secs", false),
    ("models.retry.max_backoff_secs", false),
    ("models.retry.max_retry_after_secs", false),
    ("models.retry.total_deadline_secs", false),
    ("models.sampling.temperature", false),
    ("models.sampling.top_p", false),
    ("models.sampling.min_p", false),
    ("models.sampling.max_tokens", true),
    ("environments.per_test_timeout_secs", false),
    ("environments.limits.wall_time_secs", false),
    ("environments.limits.memory_mb", true),
    ("environments.limits.output_bytes", true),
];

fn config(values: &[(usize, String)]) -> String {
    let mut top = String::new();
    let mut model = String::new();
    let mut retry = String::new();
    let mut sampling = String::new();
    let mut env = String::new();
    let mut limits = String::new();
    for (i, v) in values {
        let (path, _) = FIELDS[*i];
        let line = |name: &str| format!("{name} = {v}\n");
        match path.split('.').collect::<Vec<_>>().as_slice() {
            [name] => top.push_str(&line(name)),
            ["models", "retry", name] => retry.push_str(&line(name)),
            ["models", "sampling", name] => sampling.push_str(&line(name)),
            ["models", name] => model.push_str(&line(name)),
            ["environments", "limits", name] => limits.push_str(&line(name)),
            ["environments", name] => env.push_str(&line(name)),
            _ => unreachable!(),
        }
    }
    format!(
        "name = \"p\"\n{top}\n[[environments]]\ntype = \"code\"\nlimit = 1\n{env}\n[environments.limits]\n{limits}\n\
         [[scaffolds]]\ntype = \"chat\"\n\n[[models]]\ntype = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"m\"\n{model}\n\
         [models.retry]\n{retry}\n[models.sampling]\n{sampling}"
    )
}

fn field_value() -> impl Strategy<Value = (usize, String)> {
    (0..FIELDS.len()).prop_flat_map(|i| {
        let value = if FIELDS[i].1 {
            integer().boxed()
        } else {
            float().boxed()
        };
        value.prop_map(move |v| (i, v))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_config_values_never_panic(values in proptest::collection::vec(field_value(), 1..6)) {
        let mut seen = std::collections::HashSet::new();
        let values: Vec<_> = values.into_iter().filter(|(i, _)| seen.insert(*i)).collect();
        let text = config(&values);
        // NaN and infinities are refused as the file is read, whichever field holds them,
        // naming that field.
        let non_finite: Vec<&str> = values
            .iter()
            .filter(|(_, v)| ["inf", "-inf", "nan"].contains(&v.as_str()))
            .map(|(i, _)| FIELDS[*i].0.rsplit('.').next().unwrap())
            .collect();
        if !non_finite.is_empty() {
            let registry = Registry::builtin().unwrap();
            let err = ExperimentConfig::parse(std::path::Path::new("p.toml"), &text, &registry, "p")
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            prop_assert!(err.starts_with("p.toml:") && err.contains("must be a finite number"), "{err}\n{text}");
            prop_assert!(non_finite.iter().any(|name| err.contains(&format!("{name}`"))), "{err}\n{text}");
            return Ok(());
        }
        let registry = Registry::builtin().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        match ExperimentConfig::parse(std::path::Path::new("p.toml"), &text, &registry, "p") {
            Err(e) => {
                // A refusal names the file and a field.
                let msg = e.to_string();
                prop_assert!(msg.starts_with("error: p.toml") || msg.contains("p.toml"), "{msg}");
            }
            Ok((config, map)) => {
                if let Err(e) = rt.block_on(trawl_core::engine::check(&config, &map, &registry, false)) {
                    let msg = e.to_string();
                    prop_assert!(msg.contains("field"), "{msg}\n{text}");
                }
            }
        }
    }
}
