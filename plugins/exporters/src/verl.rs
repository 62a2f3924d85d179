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

use arrow_array::builder::{BooleanBuilder, Float64Builder, Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, ListArray, RecordBatch, StructArray};
use arrow_buffer::{OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, Fields, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
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

    fn batch(&self, groups: &[Group]) -> Result<RecordBatch, arrow_schema::ArrowError> {
        let string = |name: &str| Field::new(name, DataType::Utf8, false);
        let message_fields = Fields::from(vec![string("role"), string("content")]);
        let mut data_source = StringBuilder::new();
        let mut ability = StringBuilder::new();
        let mut roles = StringBuilder::new();
        let mut contents = StringBuilder::new();
        let mut offsets: Vec<i32> = vec![0];
        let mut messages_so_far: i32 = 0;
        let mut style = StringBuilder::new();
        let mut truth = StringBuilder::new();
        let mut split = StringBuilder::new();
        let mut index = Int64Builder::new();
        let mut need_tools = BooleanBuilder::new();
        let mut task_id = StringBuilder::new();
        let mut environment = StringBuilder::new();
        let mut tools = StringBuilder::new();
        let mut task = StringBuilder::new();
        let mut rollouts = Int64Builder::new();
        let mut successes = Int64Builder::new();
        let mut mean_reward = Float64Builder::new();
        for (i, g) in groups.iter().enumerate() {
            data_source.append_value(self.config.data_source.as_deref().unwrap_or(&g.environment));
            ability.append_value(self.config.ability.as_deref().unwrap_or(&g.environment));
            for m in g.prompt.as_array().map(Vec::as_slice).unwrap_or_default() {
                roles.append_value(m.get("role").and_then(Value::as_str).unwrap_or("user"));
                contents.append_value(m.get("content").and_then(Value::as_str).unwrap_or(""));
                messages_so_far = messages_so_far.checked_add(1).ok_or_else(|| {
                    arrow_schema::ArrowError::ComputeError("over 2^31 prompt messages".into())
                })?;
            }
            offsets.push(messages_so_far);
            style.append_value("rule");
            truth.append_value(self.ground_truth(g).unwrap_or_default());
            split.append_value(&self.config.split);
            index.append_value(i as i64);
            let tool_list = g.tools.as_str().unwrap_or("[]");
            // trawl serves its environments' tools itself: there are no verl tool kwargs to
            // pass, and verl warns when it is told to expect some and finds none.
            need_tools.append_value(false);
            task_id.append_value(&g.task);
            environment.append_value(&g.environment);
            tools.append_value(tool_list);
            task.append_value(g.task_data.to_string());
            rollouts.append_value(g.rollouts.len() as i64);
            successes.append_value(g.rollouts.iter().filter(|r| r.success).count() as i64);
            mean_reward.append_value(
                g.rollouts.iter().map(|r| r.reward).sum::<f64>() / g.rollouts.len().max(1) as f64,
            );
        }
        let messages = StructArray::try_new(
            message_fields.clone(),
            vec![
                Arc::new(roles.finish()) as ArrayRef,
                Arc::new(contents.finish()),
            ],
            None,
        )?;
        let item = Arc::new(Field::new("item", DataType::Struct(message_fields), false));
        let prompt = ListArray::try_new(
            item.clone(),
            OffsetBuffer::new(ScalarBuffer::from(offsets)),
            Arc::new(messages),
            None,
        )?;
        let reward_fields = Fields::from(vec![string("style"), string("ground_truth")]);
        let reward_model = StructArray::try_new(
            reward_fields.clone(),
            vec![
                Arc::new(style.finish()) as ArrayRef,
                Arc::new(truth.finish()),
            ],
            None,
        )?;
        let extra_fields = Fields::from(vec![
            string("split"),
            Field::new("index", DataType::Int64, false),
            Field::new("need_tools_kwargs", DataType::Boolean, false),
            string("task_id"),
            string("environment"),
            string("tools"),
            string("task"),
            Field::new("rollouts", DataType::Int64, false),
            Field::new("successes", DataType::Int64, false),
            Field::new("mean_reward", DataType::Float64, false),
        ]);
        let extra_info = StructArray::try_new(
            extra_fields.clone(),
            vec![
                Arc::new(split.finish()) as ArrayRef,
                Arc::new(index.finish()),
                Arc::new(need_tools.finish()),
                Arc::new(task_id.finish()),
                Arc::new(environment.finish()),
                Arc::new(tools.finish()),
                Arc::new(task.finish()),
                Arc::new(rollouts.finish()),
                Arc::new(successes.finish()),
                Arc::new(mean_reward.finish()),
            ],
            None,
        )?;
        let schema = Schema::new(vec![
            string("data_source"),
            Field::new("prompt", DataType::List(item), false),
            string("ability"),
            Field::new("reward_model", DataType::Struct(reward_fields), false),
            Field::new("extra_info", DataType::Struct(extra_fields), false),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(data_source.finish()) as ArrayRef,
                Arc::new(prompt),
                Arc::new(ability.finish()),
                Arc::new(reward_model),
                Arc::new(extra_info),
            ],
        )
    }
}

/// Arrow trouble while writing becomes an I/O error of the export.
fn arrow_error(e: impl std::fmt::Display) -> ExportError {
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
        let batch = self.batch(&groups).map_err(arrow_error)?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build();
        let mut bytes = Vec::new();
        let mut writer =
            ArrowWriter::try_new(&mut bytes, batch.schema(), Some(props)).map_err(arrow_error)?;
        writer.write(&batch).map_err(arrow_error)?;
        writer.close().map_err(arrow_error)?;
        out.write_all(&bytes)?;
        self.groups.counts.add("prompts", groups.len());
        Ok(groups.len())
    }

    fn counts(&self) -> BTreeMap<String, usize> {
        self.groups.counts.snapshot()
    }
}
