//! `verl`: verl's RL prompt dataset as Parquet, one row per distinct prompt of the selected
//! rollouts. verl generates its own rollouts from `prompt` and scores them against
//! `reward_model.ground_truth`; the rollouts trawl ran are summarised in `extra_info` (how many,
//! how many solved), which a curriculum can use to keep tasks the model solves sometimes.
//!
//! Columns, as verl's `RLHFDataset` and its data preprocessing scripts have them:
//! - `data_source`: string (the environment's name unless configured)
//! - `prompt`: list of `{role, content}` structs
//! - `ability`: string
//! - `reward_model`: `{style: "rule", ground_truth: string}`
//! - `extra_info`: `{split, index, need_tools_kwargs, task_id, environment, tools, task,
//!   rollouts, successes, mean_reward}`

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use parquet::basic::Compression;
use parquet::column::writer::ColumnWriter;
use parquet::data_type::ByteArray;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use serde::Deserialize;
use serde_json::Value;
use trawl_core::registry::{BuildContext, ComponentError, ExporterConfig};
use trawl_core::{ExportError, Exporter, TrajectoryRecord};

use crate::rl::{Collector, Group};
use crate::ToolsStyle;

/// `trawl export --format verl`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerlExporterConfig {
    /// `data_source` of every row (default: the environment's name). verl picks its reward
    /// function by this name.
    pub data_source: Option<String>,
    /// `ability` of every row (default: the environment's name).
    pub ability: Option<String>,
    /// `extra_info.split`.
    pub split: String,
    /// The field of the task's data that is the ground truth (default: `answer` when the task
    /// has one, else the task's whole data as a JSON string).
    pub ground_truth_field: Option<String>,
}

impl Default for VerlExporterConfig {
    fn default() -> Self {
        VerlExporterConfig {
            data_source: None,
            ability: None,
            split: "train".into(),
            ground_truth_field: None,
        }
    }
}

impl ExporterConfig for VerlExporterConfig {
    fn build(self, _: &BuildContext) -> Result<Arc<dyn Exporter>, ComponentError> {
        Ok(Arc::new(VerlExporter {
            config: self,
            groups: Collector::new(None, ToolsStyle::Json),
        }))
    }
}

trawl_core::register!(
    exporter,
    "verl",
    "verl's Parquet prompt dataset (data_source, prompt, ability, reward_model, extra_info)",
    VerlExporterConfig
);

pub struct VerlExporter {
    config: VerlExporterConfig,
    groups: Collector,
}

/// A JSON value as a string column holds it: strings as they are, anything else as JSON.
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl VerlExporter {
    fn ground_truth(&self, g: &Group) -> Option<String> {
        match &self.config.ground_truth_field {
            Some(f) => g.task_data.get(f).map(text_of),
            None => Some(
                g.task_data
                    .get("answer")
                    .map(text_of)
                    .unwrap_or_else(|| g.task_data.to_string()),
            ),
        }
    }

    /// The rows' columns, in the order of [`SCHEMA`]'s leaves.
    fn columns(&self, groups: &[Group]) -> Vec<Column> {
        let mut c = Columns::default();
        for (i, g) in groups.iter().enumerate() {
            c.data_source.push(
                self.config
                    .data_source
                    .as_deref()
                    .unwrap_or(&g.environment)
                    .into(),
            );
            let messages = g.prompt.as_array().map(Vec::as_slice).unwrap_or_default();
            if messages.is_empty() {
                // An empty list: one level entry, defined only down to the list itself.
                c.prompt_levels.push((0, 0));
            }
            for (j, m) in messages.iter().enumerate() {
                c.roles.push(
                    m.get("role")
                        .and_then(Value::as_str)
                        .unwrap_or("user")
                        .into(),
                );
                c.contents.push(
                    m.get("content")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .into(),
                );
                c.prompt_levels.push((1, i16::from(j > 0)));
            }
            c.ability.push(
                self.config
                    .ability
                    .as_deref()
                    .unwrap_or(&g.environment)
                    .into(),
            );
            c.style.push("rule".into());
            c.truth.push(ByteArray::from(
                self.ground_truth(g).unwrap_or_default().into_bytes(),
            ));
            c.split.push(self.config.split.as_str().into());
            c.index.push(i as i64);
            // trawl serves its environments' tools itself: there are no verl tool kwargs to
            // pass, and verl warns when it is told to expect some and finds none.
            c.need_tools.push(false);
            c.task_id.push(g.task.as_str().into());
            c.environment.push(g.environment.as_str().into());
            c.tools.push(g.tools.as_str().unwrap_or("[]").into());
            c.task
                .push(ByteArray::from(g.task_data.to_string().into_bytes()));
            c.rollouts.push(g.rollouts.len() as i64);
            c.successes
                .push(g.rollouts.iter().filter(|r| r.success).count() as i64);
            c.mean_reward.push(
                g.rollouts.iter().map(|r| r.reward).sum::<f64>() / g.rollouts.len().max(1) as f64,
            );
        }
        let (defs, reps): (Vec<i16>, Vec<i16>) = c.prompt_levels.iter().copied().unzip();
        let nested = |values| Column::Text(values, Some((defs.clone(), reps.clone())));
        vec![
            Column::Text(c.data_source, None),
            nested(c.roles),
            nested(c.contents),
            Column::Text(c.ability, None),
            Column::Text(c.style, None),
            Column::Text(c.truth, None),
            Column::Text(c.split, None),
            Column::Int(c.index),
            Column::Bool(c.need_tools),
            Column::Text(c.task_id, None),
            Column::Text(c.environment, None),
            Column::Text(c.tools, None),
            Column::Text(c.task, None),
            Column::Int(c.rollouts),
            Column::Int(c.successes),
            Column::Float(c.mean_reward),
        ]
    }

    /// The rows as one Parquet file (one row group, Snappy).
    fn parquet(&self, groups: &[Group]) -> Result<Vec<u8>, parquet::errors::ParquetError> {
        let schema = Arc::new(parquet::schema::parser::parse_message_type(SCHEMA)?);
        let props = Arc::new(
            WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .build(),
        );
        let mut bytes = Vec::new();
        let mut writer = SerializedFileWriter::new(&mut bytes, schema, props)?;
        let mut row_group = writer.next_row_group()?;
        let mut columns = self.columns(groups).into_iter();
        while let Some(mut col) = row_group.next_column()? {
            let Some(values) = columns.next() else {
                return Err(parquet::errors::ParquetError::General(
                    "the schema has more columns than the rows".into(),
                ));
            };
            match (col.untyped(), values) {
                (ColumnWriter::ByteArrayColumnWriter(w), Column::Text(v, levels)) => {
                    let levels = levels.as_ref();
                    w.write_batch(
                        &v,
                        levels.map(|l| l.0.as_slice()),
                        levels.map(|l| l.1.as_slice()),
                    )?;
                }
                (ColumnWriter::Int64ColumnWriter(w), Column::Int(v)) => {
                    w.write_batch(&v, None, None)?;
                }
                (ColumnWriter::DoubleColumnWriter(w), Column::Float(v)) => {
                    w.write_batch(&v, None, None)?;
                }
                (ColumnWriter::BoolColumnWriter(w), Column::Bool(v)) => {
                    w.write_batch(&v, None, None)?;
                }
                _ => {
                    return Err(parquet::errors::ParquetError::General(
                        "a column's values do not match its type in the schema".into(),
                    ))
                }
            }
            col.close()?;
        }
        row_group.close()?;
        writer.close()?;
        Ok(bytes)
    }
}

/// verl's columns as a Parquet schema: every field required, `prompt` a standard three-level
/// LIST of `{role, content}` structs (pyarrow reads it as `list<struct<role, content>>`).
const SCHEMA: &str = "
message verl {
    required binary data_source (STRING);
    required group prompt (LIST) {
        repeated group list {
            required group element {
                required binary role (STRING);
                required binary content (STRING);
            }
        }
    }
    required binary ability (STRING);
    required group reward_model {
        required binary style (STRING);
        required binary ground_truth (STRING);
    }
    required group extra_info {
        required binary split (STRING);
        required int64 index;
        required boolean need_tools_kwargs;
        required binary task_id (STRING);
        required binary environment (STRING);
        required binary tools (STRING);
        required binary task (STRING);
        required int64 rollouts;
        required int64 successes;
        required double mean_reward;
    }
}";

/// One leaf column's values (and, for the prompt's, its definition and repetition levels).
enum Column {
    Text(Vec<ByteArray>, Option<(Vec<i16>, Vec<i16>)>),
    Int(Vec<i64>),
    Float(Vec<f64>),
    Bool(Vec<bool>),
}

/// The leaf columns while the rows are read.
#[derive(Default)]
struct Columns {
    data_source: Vec<ByteArray>,
    roles: Vec<ByteArray>,
    contents: Vec<ByteArray>,
    /// (definition, repetition) level of each prompt entry.
    prompt_levels: Vec<(i16, i16)>,
    ability: Vec<ByteArray>,
    style: Vec<ByteArray>,
    truth: Vec<ByteArray>,
    split: Vec<ByteArray>,
    index: Vec<i64>,
    need_tools: Vec<bool>,
    task_id: Vec<ByteArray>,
    environment: Vec<ByteArray>,
    tools: Vec<ByteArray>,
    task: Vec<ByteArray>,
    rollouts: Vec<i64>,
    successes: Vec<i64>,
    mean_reward: Vec<f64>,
}

/// Parquet trouble while writing becomes an I/O error of the export.
fn parquet_error(e: impl std::fmt::Display) -> ExportError {
    ExportError::Io(std::io::Error::other(format!("writing Parquet: {e}")))
}

impl Exporter for VerlExporter {
    fn extension(&self) -> &str {
        "parquet"
    }

    fn write(&self, r: &TrajectoryRecord, _out: &mut dyn Write) -> Result<usize, ExportError> {
        self.groups.add(r)
    }

    fn finish(&self, out: &mut dyn Write) -> Result<usize, ExportError> {
        let mut groups = self.groups.take();
        if let Some(f) = &self.config.ground_truth_field {
            let before = groups.len();
            groups.retain(|g| g.task_data.get(f).is_some());
            self.groups
                .counts
                .add("prompts_without_ground_truth", before - groups.len());
        }
        let bytes = self.parquet(&groups).map_err(parquet_error)?;
        out.write_all(&bytes)?;
        self.groups.counts.add("prompts", groups.len());
        Ok(groups.len())
    }

    fn counts(&self) -> BTreeMap<String, usize> {
        self.groups.counts.snapshot()
    }
}
