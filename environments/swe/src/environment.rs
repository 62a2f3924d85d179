//! The `swe` environment: its instances selected from the settings, checked before a run, and
//! each episode started on a fresh working copy.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::OnceCell;
use trawl_core::registry::{BuildContext, ComponentError, EnvironmentConfig};
use trawl_core::{async_trait, ActionSpace, Environment, EnvironmentError, Episode, Task};

use crate::config::SweConfig;
use crate::episode::SweEpisode;
use crate::instance::{self, SweInstance};
use crate::workspace::Workspace;

impl EnvironmentConfig for SweConfig {
    fn build(self, cx: &BuildContext) -> Result<Arc<dyn Environment>, ComponentError> {
        let mut instances = match self.dataset.as_str() {
            "builtin" => instance::builtin(),
            "none" => Vec::new(),
            other => {
                return Err(ComponentError::at(
                    "dataset",
                    format!("unknown dataset `{other}`; use \"builtin\" or \"none\" with `files`"),
                ))
            }
        };
        for (i, f) in self.files.iter().enumerate() {
            let loaded = instance::load_file_with(&cx.resolve(f), &self.fields)
                .map_err(|e| ComponentError::at(&format!("files.{i}"), e))?;
            instances.extend(loaded);
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = instances
            .iter()
            .find(|i| !seen.insert(i.instance_id.clone()))
        {
            return Err(ComponentError::at(
                "files",
                format!(
                    "instance_id `{}` appears twice; ids must be unique",
                    dup.instance_id
                ),
            ));
        }
        if !self.instance_ids.is_empty() {
            for id in &self.instance_ids {
                if !seen.contains(id) {
                    return Err(ComponentError::at(
                        "instance_ids",
                        format!("no instance has id `{id}`"),
                    ));
                }
            }
            instances.retain(|i| self.instance_ids.contains(&i.instance_id));
        }
        if let Some(limit) = self.limit {
            instances.truncate(limit);
        }
        if instances.is_empty() {
            return Err(ComponentError::at(
                "files",
                "no instances: give `files` or use `dataset = \"builtin\"`",
            ));
        }
        trawl_core::values::check_secs(self.eval_timeout_secs, false)
            .map_err(|m| ComponentError::at("eval_timeout_secs", m))?;
        let workspace = Workspace::new(self, cx)?;
        Ok(Arc::new(SweEnvironment {
            instances,
            workspace,
            ready: OnceCell::new(),
        }))
    }
}

/// The SWE environment, built from [`SweEnvironmentConfig`].
pub struct SweEnvironment {
    instances: Vec<SweInstance>,
    workspace: Workspace,
    ready: OnceCell<()>,
}

#[async_trait]
impl Environment for SweEnvironment {
    fn action_space(&self) -> ActionSpace {
        ActionSpace {
            shell: true,
            tool_calls: true,
            answer: true,
            ..ActionSpace::default()
        }
    }

    async fn tasks(&self) -> Result<Vec<Task>, EnvironmentError> {
        self.ready
            .get_or_try_init(|| async {
                self.workspace
                    .preflight(&self.instances)
                    .await
                    .map_err(EnvironmentError::Tasks)
            })
            .await?;
        Ok(self.instances.iter().map(SweInstance::to_task).collect())
    }

    async fn start(&self, task: &Task) -> Result<Box<dyn Episode>, EnvironmentError> {
        let start_error = |message: String| EnvironmentError::Start {
            task: task.id.clone(),
            message,
        };
        let inst = SweInstance::from_task(task).map_err(start_error)?;
        let run = self.workspace.settings();
        let checkout = self
            .workspace
            .checkout_for_agent(&inst, run.hide_history)
            .await
            .map_err(|e| start_error(e.to_string()))?;
        Ok(Box::new(SweEpisode {
            inst,
            checkout: Some(checkout),
            limits: run.limits.clone(),
            new_files: run.new_files,
            exclude: run.exclude.clone(),
            history: HashMap::new(),
        }))
    }

    fn default_evaluators(&self) -> Vec<(String, Value)> {
        vec![(
            "swe_tests".into(),
            serde_json::to_value(self.workspace.settings()).unwrap_or(Value::Null),
        )]
    }

    fn facts(&self) -> Value {
        self.workspace.facts()
    }

    async fn shutdown(&self) {
        self.workspace.shutdown().await;
    }
}
