//! A domain: a policy for the agent, a JSON database, tools written in [`crate::lang`], and
//! tau2-bench-style tasks. One folder holds one domain: `policy.md`, `db.json`, `tools.json`,
//! `tasks.json`. Everything is checked when it loads: every tool's steps, and every task's
//! expected actions replayed on a fresh database, so a broken domain fails before a rollout.

use std::collections::BTreeSet;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::lang::{self, Scope, Step};

/// The files of a domain folder, in the order [`Domain::parse`] takes them.
pub const FILES: [&str; 4] = ["policy.md", "db.json", "tools.json", "tasks.json"];

/// The built-in domain, written for trawl: a small public library (its [`FILES`] in order).
pub const LIBRARY: [(&str, &str); 4] = [
    ("policy.md", include_str!("../domains/library/policy.md")),
    ("db.json", include_str!("../domains/library/db.json")),
    ("tools.json", include_str!("../domains/library/tools.json")),
    ("tasks.json", include_str!("../domains/library/tasks.json")),
];

/// Whether a tool only reads the database or may change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolKind {
    Read,
    Write,
}

/// One tool: its OpenAI schema parts and its steps.
#[derive(Debug, Clone)]
pub struct ToolDef {
    pub name: String,
    pub description: String,
    pub kind: ToolKind,
    /// A JSON schema object: `{"type": "object", "properties": {...}, "required": [...]}`.
    pub parameters: Value,
    pub steps: Vec<Step>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTool {
    name: String,
    description: String,
    kind: ToolKind,
    #[serde(default = "empty_parameters")]
    parameters: Value,
    steps: Vec<Value>,
}

fn empty_parameters() -> Value {
    serde_json::json!({"type": "object", "properties": {}})
}

impl<'de> Deserialize<'de> for ToolDef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawTool::deserialize(d)?;
        let steps = raw
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| lang::parse_step(s).map_err(|e| format!("steps[{i}]: {e}")))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| serde::de::Error::custom(format!("tool `{}`: {e}", raw.name)))?;
        if raw.parameters.get("type").and_then(Value::as_str) != Some("object") {
            return Err(serde::de::Error::custom(format!(
                "tool `{}`: `parameters` must be a JSON schema with \"type\": \"object\"",
                raw.name
            )));
        }
        Ok(ToolDef {
            name: raw.name,
            description: raw.description,
            kind: raw.kind,
            parameters: raw.parameters,
            steps,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolsFile {
    /// Values every tool can read as `$name` (today's date, limits, fees).
    #[serde(default)]
    constants: Map<String, Value>,
    tools: Vec<ToolDef>,
}

/// A tau2-bench task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolTask {
    pub id: String,
    /// Free text or tau2's `{"purpose", "relevant_policies", "notes"}`; not shown to the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<Value>,
    pub user_scenario: UserScenarioSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_state: Option<InitialState>,
    pub evaluation_criteria: Criteria,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserScenarioSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persona: Option<String>,
    /// Free text, or tau2's structured form (`reason_for_call`, `known_info`, `unknown_info`,
    /// `task_instructions`, ...), shown to the user model as labelled lines.
    pub instructions: Value,
}

impl UserScenarioSpec {
    /// The instructions as text for the user model.
    pub fn instructions_text(&self) -> String {
        match &self.instructions {
            Value::Object(m) => m
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| {
                    let mut label = k.replace('_', " ");
                    if let Some(first) = label.get(..1) {
                        label = first.to_uppercase() + &label[1..];
                    }
                    format!("{label}: {}", lang::text_of(v))
                })
                .collect::<Vec<_>>()
                .join("\n"),
            other => lang::text_of(other),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitialState {
    /// `{"agent_data": {table: {id: {field: value}}}}`: merged into the database first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initialization_data: Option<Value>,
    /// Tool calls run on the database before the conversation (and before the replay).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub initialization_actions: Vec<InitAction>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitAction {
    #[serde(default = "assistant")]
    pub env_type: String,
    pub func_name: String,
    #[serde(default)]
    pub arguments: Map<String, Value>,
}

fn assistant() -> String {
    "assistant".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Criteria {
    #[serde(default)]
    pub actions: Vec<ExpectedAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_assertions: Option<Value>,
    /// Strings that must appear in the agent's messages (case-insensitive, commas ignored).
    #[serde(default)]
    pub communicate_info: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nl_assertions: Option<Value>,
    #[serde(default = "default_basis")]
    pub reward_basis: Vec<Basis>,
}

fn default_basis() -> Vec<Basis> {
    vec![Basis::Db, Basis::Communicate]
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedAction {
    #[serde(default)]
    pub action_id: String,
    #[serde(default = "assistant")]
    pub requestor: String,
    pub name: String,
    #[serde(default)]
    pub arguments: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<String>,
    /// For the ACTION component: only these arguments must match (all when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare_args: Option<Vec<String>>,
}

/// A component of the reward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Basis {
    /// The final database equals the one the expected actions produce.
    #[serde(rename = "DB")]
    Db,
    /// Every `communicate_info` string appears in the agent's messages.
    #[serde(rename = "COMMUNICATE")]
    Communicate,
    /// Every expected action was called with the same arguments.
    #[serde(rename = "ACTION")]
    Action,
    #[serde(rename = "ENV_ASSERTION")]
    EnvAssertion,
    #[serde(rename = "NL_ASSERTION")]
    NlAssertion,
}

/// A loaded, checked domain.
#[derive(Debug, Clone)]
pub struct Domain {
    pub name: String,
    pub policy: String,
    pub db: Value,
    pub constants: Scope,
    pub tools: Vec<ToolDef>,
    pub tasks: Vec<ToolTask>,
}

/// Parses JSON into `T`; errors give `origin:line:column: field `path`: message`.
fn parse_json<T: DeserializeOwned>(origin: &str, text: &str) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner = e.inner();
        let msg = inner.to_string();
        let msg = msg.rfind(" at line ").map_or(msg.as_str(), |i| &msg[..i]);
        let path = e.path().to_string();
        if path == "." || path.is_empty() {
            format!("{origin}:{}:{}: {msg}", inner.line(), inner.column())
        } else {
            format!(
                "{origin}:{}:{}: field `{path}`: {msg}",
                inner.line(),
                inner.column()
            )
        }
    })
}

/// The line of the first occurrence of `"key": "value"` in JSON text, to point at a record.
fn line_of(text: &str, key: &str, value: &str) -> usize {
    let needle = serde_json::to_string(value).unwrap_or_default();
    let mut line = 1;
    let mut rest = text;
    while let Some(at) = rest.find(&format!("\"{key}\"")) {
        let after = rest[at..].trim_start_matches(&format!("\"{key}\""));
        let after = after.trim_start().trim_start_matches(':').trim_start();
        if after.starts_with(&needle) {
            return line + rest[..at].matches('\n').count();
        }
        line += rest[..at + 1].matches('\n').count();
        rest = &rest[at + 1..];
    }
    1
}

impl Domain {
    /// The built-in domain by name.
    pub fn builtin(name: &str) -> Option<Domain> {
        (name == "library").then(|| {
            let files = LIBRARY.map(|(file, text)| (format!("(built-in library)/{file}"), text));
            Domain::parse("library", files)
                .unwrap_or_else(|e| panic!("the built-in library domain is broken: {e}"))
        })
    }

    /// Names of the built-in domains.
    pub const BUILTIN: [&'static str; 1] = ["library"];

    /// Loads a domain folder: `policy.md`, `db.json`, `tools.json`, `tasks.json`.
    pub fn load(dir: &Path) -> Result<Domain, String> {
        let mut read = Vec::with_capacity(FILES.len());
        for file in FILES {
            let p = dir.join(file);
            let text = std::fs::read_to_string(&p).map_err(|e| {
                format!(
                    "cannot read {}: {e} (a domain folder holds {})",
                    p.display(),
                    FILES.join(", ")
                )
            })?;
            read.push((p.display().to_string(), text));
        }
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "domain".into());
        let files: [(String, &str); 4] =
            std::array::from_fn(|i| (read[i].0.clone(), read[i].1.as_str()));
        Domain::parse(&name, files)
    }

    /// Parses and checks a domain from (origin, text) of its policy, database, tools and tasks.
    pub fn parse(name: &str, files: [(String, &str); 4]) -> Result<Domain, String> {
        let [(_, policy), (db_origin, db_text), (tools_origin, tools_text), (tasks_origin, tasks_text)] =
            files;
        let db: Map<String, Value> = parse_json(&db_origin, db_text)?;
        if let Some((t, _)) = db.iter().find(|(_, v)| !v.is_object()) {
            return Err(format!(
                "{db_origin}: field `{t}`: each table is an object of records by id"
            ));
        }
        let tables: BTreeSet<String> = db.keys().cloned().collect();
        let file: ToolsFile = parse_json(&tools_origin, tools_text)?;
        let mut seen = BTreeSet::new();
        for tool in &file.tools {
            let at = |e: String| {
                format!(
                    "{tools_origin}:{}: tool `{}`: {e}",
                    line_of(tools_text, "name", &tool.name),
                    tool.name
                )
            };
            if !seen.insert(tool.name.clone()) {
                return Err(at("two tools have this name".into()));
            }
            let mut defined: BTreeSet<String> = file.constants.keys().cloned().collect();
            if let Some(props) = tool.parameters.get("properties").and_then(Value::as_object) {
                defined.extend(props.keys().cloned());
            }
            lang::check_steps(&tool.steps, defined, &tables, tool.kind == ToolKind::Read)
                .map_err(at)?;
        }
        let tasks: Vec<ToolTask> = parse_json(&tasks_origin, tasks_text)?;
        let domain = Domain {
            name: name.to_string(),
            policy: policy.to_string(),
            db: Value::Object(db),
            constants: file.constants,
            tools: file.tools,
            tasks,
        };
        let mut ids = BTreeSet::new();
        for task in &domain.tasks {
            let at = |e: String| {
                format!(
                    "{tasks_origin}:{}: task `{}`: {e}",
                    line_of(tasks_text, "id", &task.id),
                    task.id
                )
            };
            if !ids.insert(task.id.as_str()) {
                return Err(at("two tasks have this id".into()));
            }
            // Ids become parts of file paths: one that could reach outside a folder is refused.
            trawl_core::values::check_relative_path(&task.id)
                .map_err(|why| at(format!("field `id` {why}")))?;
            domain.check_task(task).map_err(at)?;
        }
        Ok(domain)
    }

    fn check_task(&self, task: &ToolTask) -> Result<(), String> {
        let c = &task.evaluation_criteria;
        for b in &c.reward_basis {
            if matches!(b, Basis::EnvAssertion | Basis::NlAssertion) {
                return Err(format!(
                    "evaluation_criteria.reward_basis: trawl does not score {} yet; use DB, COMMUNICATE and ACTION",
                    serde_json::to_string(b).unwrap_or_default()
                ));
            }
        }
        if c.reward_basis.is_empty() {
            return Err(
                "evaluation_criteria.reward_basis: name at least one of DB, COMMUNICATE, ACTION"
                    .into(),
            );
        }
        for (i, a) in c.actions.iter().enumerate() {
            if a.requestor != "assistant" {
                return Err(format!(
                    "evaluation_criteria.actions[{i}].requestor: only \"assistant\" actions are supported (the simulated user has no tools)"
                ));
            }
        }
        self.gold_db(task).map(|_| ())
    }

    pub fn tool(&self, name: &str) -> Option<&ToolDef> {
        self.tools.iter().find(|t| t.name == name)
    }

    /// Calls a tool with JSON arguments: the arguments are checked against its schema, then its
    /// steps run on `db`. The error is the message for the agent.
    pub fn call(
        &self,
        name: &str,
        args: &Map<String, Value>,
        db: &mut Value,
    ) -> Result<Value, String> {
        let tool = self.tool(name).ok_or_else(|| {
            format!(
                "there is no tool `{name}` (tools: {})",
                self.tools
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        let mut scope = self.constants.clone();
        let props = tool
            .parameters
            .get("properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        if let Some(k) = args.keys().find(|k| !props.contains_key(*k)) {
            return Err(format!(
                "`{name}` has no parameter `{k}` (parameters: {})",
                props.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        let required = tool.parameters.get("required").and_then(Value::as_array);
        for r in required.into_iter().flatten().filter_map(Value::as_str) {
            if args.get(r).is_none_or(Value::is_null) {
                return Err(format!("`{name}` needs the parameter `{r}`"));
            }
        }
        for (p, schema) in &props {
            let v = args.get(p).cloned().unwrap_or(Value::Null);
            if !v.is_null() {
                if let Some(t) = schema.get("type").and_then(Value::as_str) {
                    let ok = match t {
                        "string" => v.is_string(),
                        "integer" => v.is_i64() || v.is_u64(),
                        "number" => v.is_number(),
                        "boolean" => v.is_boolean(),
                        "array" => v.is_array(),
                        "object" => v.is_object(),
                        _ => true,
                    };
                    if !ok {
                        return Err(format!(
                            "`{name}`: parameter `{p}` must be of type {t}, not {v}"
                        ));
                    }
                }
                if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
                    if !allowed.iter().any(|a| lang::same(a, &v)) {
                        return Err(format!(
                            "`{name}`: parameter `{p}` must be one of {}",
                            Value::Array(allowed.clone())
                        ));
                    }
                }
            }
            scope.insert(p.clone(), v);
        }
        lang::run(&tool.steps, scope, db)
    }

    /// The database a task starts from: the domain's, with the task's initial state applied.
    pub fn initial_db(&self, task: &ToolTask) -> Result<Value, String> {
        let mut db = self.db.clone();
        if let Some(init) = &task.initial_state {
            if let Some(data) = &init.initialization_data {
                if let Some(agent) = data.get("agent_data") {
                    merge(&mut db, agent);
                }
            }
            for (i, a) in init.initialization_actions.iter().enumerate() {
                if a.env_type != "assistant" {
                    return Err(format!(
                        "initial_state.initialization_actions[{i}].env_type: only \"assistant\" is supported"
                    ));
                }
                self.call(&a.func_name, &a.arguments, &mut db)
                    .map_err(|e| {
                        format!(
                            "initial_state.initialization_actions[{i}] ({}) fails: {e}",
                            a.func_name
                        )
                    })?;
            }
        }
        Ok(db)
    }

    /// The database the expected actions produce from the task's initial state.
    pub fn gold_db(&self, task: &ToolTask) -> Result<Value, String> {
        let mut db = self.initial_db(task)?;
        for (i, a) in task.evaluation_criteria.actions.iter().enumerate() {
            self.call(&a.name, &a.arguments, &mut db).map_err(|e| {
                format!(
                    "evaluation_criteria.actions[{i}] ({}) fails on a fresh database: {e}",
                    a.name
                )
            })?;
        }
        Ok(db)
    }
}

/// Merges `patch` into `base`: objects field by field, anything else replaced.
fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                match b.get_mut(k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// Where two databases differ, as `table.id.field` paths (at most `limit`).
pub fn differences(a: &Value, b: &Value, limit: usize) -> Vec<String> {
    fn walk(a: &Value, b: &Value, path: &str, out: &mut Vec<String>, limit: usize) {
        if out.len() >= limit || lang::same(a, b) {
            return;
        }
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(
                        x.get(k).unwrap_or(&Value::Null),
                        y.get(k).unwrap_or(&Value::Null),
                        &p,
                        out,
                        limit,
                    );
                }
            }
            _ => out.push(path.to_string()),
        }
    }
    let mut out = Vec::new();
    walk(a, b, "", &mut out, limit);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_library_domain_loads_and_every_task_replays() {
        let d = Domain::builtin("library").unwrap();
        assert!(d.tools.len() >= 8, "{} tools", d.tools.len());
        assert!(d.tasks.len() >= 20, "{} tasks", d.tasks.len());
        assert!(d.tools.iter().any(|t| t.kind == ToolKind::Write));
        // Every task with expected actions changes the database or is read-only by design.
        for t in &d.tasks {
            d.gold_db(t).unwrap();
        }
    }

    #[test]
    fn the_library_refuses_what_its_policy_forbids() {
        let d = Domain::builtin("library").unwrap();
        let call = |name: &str, args: Value| {
            let mut db = d.db.clone();
            let r = d.call(name, args.as_object().unwrap(), &mut db);
            (r, db == d.db)
        };
        let refused = |name: &str, args: Value, why: &str| {
            let (r, unchanged) = call(name, args);
            let e = r.unwrap_err();
            assert!(e.contains(why), "{name}: {e}");
            assert!(unchanged, "{name} changed the database though it failed");
        };

        refused(
            "renew_loan",
            serde_json::json!({"loan_id": "L002"}),
            "overdue loan cannot be renewed",
        );
        refused(
            "renew_loan",
            serde_json::json!({"loan_id": "L007"}),
            "another member is waiting",
        );
        refused(
            "renew_loan",
            serde_json::json!({"loan_id": "L011"}),
            "renewed 2 times",
        );
        refused(
            "checkout_book",
            serde_json::json!({"member_id": "M003", "book_id": "B007"}),
            "owes $12.75",
        );
        refused(
            "checkout_book",
            serde_json::json!({"member_id": "M004", "book_id": "B005"}),
            "suspended",
        );
        refused(
            "checkout_book",
            serde_json::json!({"member_id": "M006", "book_id": "B010"}),
            "already has 5 books",
        );
        refused(
            "checkout_book",
            serde_json::json!({"member_id": "M009", "book_id": "B011"}),
            "no copy of The Martian",
        );
        refused(
            "place_hold",
            serde_json::json!({"member_id": "M001", "book_id": "B003"}),
            "has a copy available",
        );
        refused(
            "place_hold",
            serde_json::json!({"member_id": "M005", "book_id": "B012"}),
            "already has a hold",
        );
        refused(
            "pay_fine",
            serde_json::json!({"member_id": "M007", "amount": 5}),
            "cannot be more than that",
        );
        refused(
            "pay_fine",
            serde_json::json!({"member_id": "M007", "amount": "2"}),
            "must be of type number",
        );
        refused(
            "get_member",
            serde_json::json!({"member_id": "M001", "extra": 1}),
            "no parameter `extra`",
        );
        refused(
            "get_member",
            serde_json::json!({}),
            "needs the parameter `member_id`",
        );
        let (r, _) = call("return_book", serde_json::json!({"loan_id": "L004"}));
        assert_eq!(
            r.unwrap(),
            serde_json::json!({"loan_id": "L004", "title": "The Name of the Wind", "days_late": 28, "late_fee": 7.0, "fines_owed": 19.75})
        );
        let (r, _) = call("find_member", serde_json::json!({"query": "555-0107"}));
        assert_eq!(
            r.unwrap(),
            serde_json::json!([{"member_id": "M007", "name": "Gus Petrov", "email": "gus.petrov@example.com"}])
        );
    }

    #[test]
    fn each_task_changes_the_database_exactly_when_it_expects_writes() {
        let d = Domain::builtin("library").unwrap();
        for t in &d.tasks {
            let writes = t.evaluation_criteria.actions.iter().any(|a| {
                d.tool(&a.name)
                    .is_some_and(|tool| tool.kind == ToolKind::Write)
            });
            let gold = d.gold_db(t).unwrap();
            assert_eq!(!differences(&d.db, &gold, 5).is_empty(), writes, "{}", t.id);
        }
    }

    #[test]
    fn broken_domains_are_reported_with_file_line_and_field() {
        let [policy, db, tools, tasks] = LIBRARY.map(|(_, t)| t);
        let parse = |tools: &str, tasks: &str| {
            let parsed = Domain::parse(
                "t",
                [
                    ("p.md".into(), policy),
                    ("db.json".into(), db),
                    ("tools.json".into(), tools),
                    ("tasks.json".into(), tasks),
                ],
            );
            match parsed {
                Ok(_) => panic!("the broken domain was accepted"),
                Err(e) => e,
            }
        };
        let e = parse(
            &tools.replacen("\"$loan.renewals\"", "\"$lone.renewals\"", 1),
            tasks,
        );
        assert!(
            e.starts_with("tools.json:")
                && e.contains("tool `renew_loan`: steps[")
                && e.contains("`$lone` is not a parameter"),
            "{e}"
        );
        let e2 = parse(&tools.replacen("\"$gt\"", "\"$greater\"", 1), tasks);
        assert!(
            e2.starts_with("tools.json:") && e2.contains("unknown operator `$greater`"),
            "{e2}"
        );
        let e = parse(
            tools,
            &tasks.replacen("\"loan_id\": \"L001\"", "\"loan_id\": \"L999\"", 1),
        );
        assert!(
            e.starts_with("tasks.json:")
                && e.contains("task `lib-001`")
                && e.contains("`L999` not found in loans"),
            "{e}"
        );
        let e = parse(
            tools,
            &tasks.replacen(
                "\"reward_basis\": [",
                "\"reward_basis\": [\"NL_ASSERTION\", ",
                1,
            ),
        );
        assert!(e.contains("does not score \"NL_ASSERTION\""), "{e}");
        let e = parse(tools, &tasks.replacen("\"persona\"", "\"personna\"", 1));
        assert!(
            e.starts_with("tasks.json:") && e.contains("field `[0].user_scenario.personna`"),
            "{e}"
        );
    }

    #[test]
    fn line_of_points_at_the_record() {
        let text = "[\n {\"id\": \"a\"},\n {\n  \"id\" :  \"b\"\n }\n]";
        assert_eq!(line_of(text, "id", "a"), 2);
        assert_eq!(line_of(text, "id", "b"), 4);
    }

    #[test]
    fn differences_name_fields() {
        let a = serde_json::json!({"t": {"x": {"n": 1, "m": 2}}, "u": {}});
        let b = serde_json::json!({"t": {"x": {"n": 1.0, "m": 3}}, "u": {"y": {}}});
        assert_eq!(differences(&a, &b, 10), vec!["t.x.m", "u.y"]);
    }
}
