//! The rollout engine: environments × scaffolds × models × tasks × samples, run concurrently on
//! tokio, streamed to the run directory, resumable.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, ExperimentConfig, Samples, SourceMap};
use crate::environment::{Environment, EnvironmentError};
use crate::evaluator::{Evaluator, EvaluatorError};
use crate::matrix::Skipped;
use crate::model::{
    ConcurrencyLimit, EpisodeDeadline, LanguageModel, ModelWatch, Sampling, TokenDetail,
};
use crate::registry::{BuildContext, Factory, Registry, Role};
use crate::scaffold::{AgentScaffold, RolloutContext, ScaffoldError, Transcript};
use crate::store::{self, RunDir, StoreError};
use crate::task::Task;
use crate::trajectory::{
    ExitStatus, Outcome, Provenance, RecordedError, RolloutKey, Timing, TrajectoryRecord,
    TRAJECTORY_SCHEMA,
};

/// trawl's version, recorded in every record and manifest.
pub const TRAWL_VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("environment `{environment}` could not list its tasks: {source}")]
    Tasks {
        environment: String,
        #[source]
        source: EnvironmentError,
    },
    #[error("scaffold `{scaffold}` cannot run in environment `{environment}`: it needs {missing} actions, which the environment does not offer\n  hint (config): leave the pair out with `[matrix] exclude = [{{ environment = \"{environment}\", scaffold = \"{scaffold}\" }}]`, or set `[matrix] skip_incompatible = true` to skip and list every such pair\n  hint (environment author): an environment whose episodes accept {missing} actions says so in `Environment::action_space()` (`ActionSpace {{ {missing}: true, .. }}`)")]
    Mismatch {
        scaffold: String,
        environment: String,
        missing: String,
    },
    #[error("no rollout to run: {0}\n  hint: check the [matrix] include and exclude lists")]
    NothingToRun(String),
    #[error("{dir} was started with a different config ({dir}/config.toml); resuming with this one would mix two experiments\n  hint: use another --out, or pass --force to resume anyway")]
    ConfigChanged { dir: PathBuf },
}

/// A component built from the config, with its label and version for provenance.
struct Built<T: ?Sized> {
    name: String,
    label: String,
    live: Arc<T>,
}

/// An evaluator as one environment uses it.
struct ScoringEvaluator {
    /// The name `[scoring]` knows it by: `environment` for the environment's own.
    source: String,
    /// The name its evaluations are recorded under: a config evaluator's `name`, or the kind's
    /// own name for an environment's evaluator.
    recorded_as: Option<String>,
    live: Arc<dyn Evaluator>,
}

struct EnvironmentSlot {
    env: Built<dyn Environment>,
    evaluators: Vec<ScoringEvaluator>,
    tasks: Vec<Arc<Task>>,
    /// The (scaffold, model) indexes this environment is played with.
    pairs: Vec<(usize, usize)>,
}

struct ModelSlot {
    model: Built<dyn LanguageModel>,
    sampling: Sampling,
}

/// Everything the rollouts of a run share.
struct Shared {
    environments: Vec<EnvironmentSlot>,
    scaffolds: Vec<Built<dyn AgentScaffold>>,
    models: Vec<ModelSlot>,
    episode_timeout: Duration,
    seed: u64,
    run_id: String,
    scoring: crate::scoring::Scoring,
    /// Combinations the run leaves out because they cannot work, when the config says to skip.
    skipped: Vec<Skipped>,
    /// The models components built for themselves (a simulated user's, a judge's), each with
    /// the component that owns it (`environment usersim`), for `check --ping`.
    own_models: Vec<(String, Arc<dyn LanguageModel>)>,
}

impl Shared {
    /// Rollouts per sample: each environment's tasks × the (scaffold, model) pairs it plays.
    fn matrix_size(&self) -> u64 {
        self.environments
            .iter()
            .map(|e| (e.tasks.len() * e.pairs.len()) as u64)
            .sum()
    }

    /// Every (environment, task, scaffold, model) of the run, in run order.
    fn cells(&self) -> impl Iterator<Item = Cell> + '_ {
        self.environments
            .iter()
            .enumerate()
            .flat_map(move |(ei, e)| {
                (0..e.tasks.len()).flat_map(move |ti| {
                    e.pairs.iter().map(move |&(si, mi)| Cell {
                        env: ei,
                        task: ti,
                        scaffold: si,
                        model: mi,
                    })
                })
            })
    }

    /// Sample `sample` of `cell`.
    fn plan(&self, cell: Cell, sample: u32) -> Plan {
        let e = &self.environments[cell.env];
        Plan {
            key: RolloutKey {
                environment: e.env.name.clone(),
                scaffold: self.scaffolds[cell.scaffold].name.clone(),
                model: self.models[cell.model].model.name.clone(),
                task: e.tasks[cell.task].id.clone(),
                sample,
            },
            env: cell.env,
            task: cell.task,
            scaffold: cell.scaffold,
            model: cell.model,
        }
    }
}

/// One (environment, task, scaffold, model): the unit samples are drawn for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Cell {
    env: usize,
    task: usize,
    scaffold: usize,
    model: usize,
}

/// Where the launcher takes its next rollout from: the whole matrix walked lazily (a fixed
/// number of samples), or the follow-ups the writer asks for (sampling until enough succeed).
enum PlanSource {
    Fixed(Box<dyn Iterator<Item = Plan> + Send>),
    Adaptive(mpsc::UnboundedReceiver<Plan>),
}

impl PlanSource {
    async fn next(&mut self) -> Option<Plan> {
        match self {
            PlanSource::Fixed(it) => it.next(),
            PlanSource::Adaptive(rx) => rx.recv().await,
        }
    }
}

/// Sampling until enough succeed: per cell, how far it got. Sample n + 1 of a cell is asked for
/// only once sample n has a final record, so the samples a cell runs depend only on outcomes.
struct Adaptive {
    max: u32,
    until_successes: u32,
    cells: std::collections::HashMap<(String, String, String, String), CellState>,
    /// Cells with a rollout in flight or due.
    active: u64,
    /// Where follow-ups go; dropped when no cell is active, which ends the run.
    plans: Option<mpsc::UnboundedSender<Plan>>,
}

#[derive(Debug, Clone, Copy)]
struct CellState {
    cell: Cell,
    /// Samples with a final record (this session's and earlier ones').
    done: u32,
    successes: u32,
}

fn cell_key(k: &RolloutKey) -> (String, String, String, String) {
    (
        k.environment.clone(),
        k.task.clone(),
        k.scaffold.clone(),
        k.model.clone(),
    )
}

impl Adaptive {
    /// The starting state from what earlier sessions finished; sends each active cell's next
    /// sample.
    fn start(
        shared: &Shared,
        max: u32,
        until_successes: u32,
        completed: &std::collections::HashSet<RolloutKey>,
        successes: &std::collections::HashSet<RolloutKey>,
        budget_spent: bool,
    ) -> (Self, mpsc::UnboundedReceiver<Plan>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut a = Adaptive {
            max,
            until_successes,
            cells: std::collections::HashMap::new(),
            active: 0,
            plans: Some(tx),
        };
        for cell in shared.cells() {
            let mut st = CellState {
                cell,
                done: 0,
                successes: 0,
            };
            loop {
                let plan = shared.plan(cell, st.done);
                if st.done >= max || st.successes >= until_successes {
                    break;
                }
                if !completed.contains(&plan.key) {
                    if !budget_spent {
                        if let Some(tx) = &a.plans {
                            let _ = tx.send(plan);
                            a.active += 1;
                        }
                    }
                    break;
                }
                st.done += 1;
                st.successes += u32::from(successes.contains(&plan.key));
            }
            a.cells.insert(cell_key(&shared.plan(cell, 0).key), st);
        }
        if a.active == 0 {
            a.plans = None;
        }
        (a, rx)
    }

    /// A record came back: ask for the cell's next sample, or close the cell.
    fn finished(&mut self, shared: &Shared, record: &TrajectoryRecord, stop_launching: bool) {
        let Some(st) = self.cells.get_mut(&cell_key(&record.key)) else {
            return;
        };
        let mut next = None;
        if record.is_final() {
            st.done += 1;
            st.successes += u32::from(record.success);
            if st.done < self.max && st.successes < self.until_successes && !stop_launching {
                next = Some(shared.plan(st.cell, st.done));
            }
        }
        // A rollout that is not final (infrastructure error, interrupted) stops its cell for
        // this session; the next one re-runs it.
        match (next, &self.plans) {
            (Some(plan), Some(tx)) => {
                let _ = tx.send(plan);
            }
            _ => {
                self.active = self.active.saturating_sub(1);
                if self.active == 0 {
                    self.plans = None;
                }
            }
        }
    }

    /// Stops asking for samples: the cells in flight finish, no new ones start.
    fn close(&mut self) {
        self.plans = None;
    }

    fn summary(&self) -> SamplingSummary {
        let mut s = SamplingSummary {
            max: self.max,
            until_successes: self.until_successes,
            cells: self.cells.len() as u64,
            ..SamplingSummary::default()
        };
        for st in self.cells.values() {
            s.samples += u64::from(st.done);
            if st.successes >= self.until_successes {
                s.reached_successes += 1;
            } else if st.done >= self.max {
                s.reached_max += 1;
            } else {
                s.unfinished += 1;
            }
        }
        s
    }
}

/// How sampling until enough succeed went: samples spent and where each cell stopped.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SamplingSummary {
    pub max: u32,
    pub until_successes: u32,
    /// (environment, task, scaffold, model) combinations.
    pub cells: u64,
    /// Finished samples over all cells (every session's).
    pub samples: u64,
    /// Cells that got `until_successes` successes.
    pub reached_successes: u64,
    /// Cells that used all `max` samples without that many.
    pub reached_max: u64,
    /// Cells stopped before either (interrupted, an infrastructure error, the token budget).
    pub unfinished: u64,
}

/// One rollout to do.
struct Plan {
    key: RolloutKey,
    env: usize,
    task: usize,
    scaffold: usize,
    model: usize,
}

impl Plan {
    /// Indexes of its (environment, scaffold, model).
    fn at(&self) -> (usize, usize, usize) {
        (self.env, self.scaffold, self.model)
    }
}

/// Tells the caller what the engine is doing, for progress bars and logs.
pub trait RunObserver: Send + Sync {
    /// The run is about to launch `pending` rollouts; `skipped` were already done.
    fn started(&self, _pending: u64, _skipped: u64) {}
    /// One record was written.
    fn finished(&self, _record: &TrajectoryRecord) {}
}

/// An observer that ignores everything.
pub struct Silent;
impl RunObserver for Silent {}

/// How a caller stops a run: `soft` stops launching new rollouts; `hard` cuts the ones in flight
/// short, recording them as interrupted.
#[derive(Clone, Default)]
pub struct StopSignal {
    pub soft: CancellationToken,
    pub hard: CancellationToken,
}

impl StopSignal {
    /// Stop launching now, and cut in-flight rollouts short after `grace`.
    pub fn stop_after(&self, grace: Duration) {
        self.soft.cancel();
        let hard = self.hard.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            hard.cancel();
        });
    }
}

pub struct RunOptions {
    pub out: PathBuf,
    /// Resume even if the stored config differs.
    pub force: bool,
    pub stop: StopSignal,
    pub observer: Arc<dyn RunObserver>,
}

/// How the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Finished,
    Interrupted,
    /// Too many infrastructure errors: the run stopped itself.
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub dir: PathBuf,
    pub status: RunStatus,
    pub skipped: u64,
    pub launched: u64,
    pub written: u64,
    pub successes: u64,
    pub infra_errors: u64,
    pub interrupted: u64,
    pub resume: ResumeSummary,
    /// What each environment reported about how it runs (its sandbox's isolation, ...), as in
    /// the manifest.
    pub environments: BTreeMap<String, serde_json::Value>,
    /// Incompatible combinations left out (`[matrix] skip_incompatible`), as in the manifest.
    pub skipped_combinations: Vec<Skipped>,
    /// What decides each record's reward and success.
    pub scoring: String,
    /// With `samples = { max, until_successes }`: the samples spent and where cells stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampling: Option<SamplingSummary>,
    /// Tokens (prompt and completion) the run's rollouts have used, every session's.
    pub tokens_used: u64,
    /// Whether `max_total_tokens` stopped the run from starting more rollouts.
    pub budget_spent: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ResumeSummary {
    pub moved_aside: usize,
    pub dropped_torn_tail: bool,
    pub duplicates_removed: usize,
    /// Records whose rewards trawl cannot use (`"reward": null`), among those moved aside and
    /// re-run: one note each, naming file, line and fields.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repaired: Vec<String>,
}

/// `manifest.json`: what ran, with which versions, when.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: String,
    pub run_id: String,
    pub name: String,
    pub trawl_version: String,
    pub host: String,
    pub seed: u64,
    /// `role/name` → `kind version`.
    pub components: BTreeMap<String, String>,
    /// Environment name → what it reported about how it runs (sandbox isolation, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environments: BTreeMap<String, serde_json::Value>,
    /// The plugin libraries the run loaded, with their versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<crate::registry::PluginLibrary>,
    /// Which evaluations make each record's reward and success (the config's `[scoring]`).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub scoring: serde_json::Value,
    /// Combinations left out because the scaffold needs actions the environment lacks
    /// (`[matrix] skip_incompatible = true`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_combinations: Vec<Skipped>,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub status: RunStatus,
    /// One entry per `trawl run` into this directory.
    pub sessions: Vec<Session>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub started_at: String,
    pub ended_at: Option<String>,
    pub status: RunStatus,
    pub skipped: u64,
    pub launched: u64,
    pub written: u64,
    pub infra_errors: u64,
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

/// A per-rollout seed from the run seed and the key: stable across runs and resumes, different
/// for every sample. Kept within 31 bits, which every backend accepts.
pub fn rollout_seed(run_seed: u64, key: &RolloutKey) -> u64 {
    // splitmix64 finaliser
    let mut z = run_seed ^ key.stable_hash();
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) & 0x7fff_ffff
}

fn entry_version(registry: &Registry, role: Role, kind: &str) -> String {
    registry
        .get(role, kind)
        .map(|e| format!("{kind} {}", e.version))
        .unwrap_or_else(|| kind.to_string())
}

/// A built component with its label, its version recorded under `role/name`.
fn built<T: ?Sized>(
    registry: &Registry,
    versions: &mut BTreeMap<String, String>,
    role: Role,
    spec: &crate::config::ComponentSpec,
    live: Arc<T>,
) -> Built<T> {
    let label = entry_version(registry, role, &spec.kind);
    versions.insert(format!("{role}/{}", spec.name), label.clone());
    Built {
        name: spec.name.clone(),
        label,
        live,
    }
}

/// Builds every component of the config. Errors point at the component's table.
async fn build(
    config: &ExperimentConfig,
    map: &SourceMap,
    registry: &Registry,
) -> Result<(Shared, BTreeMap<String, String>), RunError> {
    let mut cx = BuildContext {
        base_dir: config.base_dir.clone(),
        seed: config.seed,
        run_name: config.name.clone(),
        // Set once the run's own models are built (below), so that components can share them.
        models: None,
        sandboxes: Some(crate::registry::SandboxBuilder::from_registry(registry)),
    };
    let mut versions = BTreeMap::new();
    let factory = |role: Role, kind: &str| registry.get(role, kind).map(|e| e.factory.clone());
    let as_value =
        |s: &serde_json::Map<String, serde_json::Value>| serde_json::Value::Object(s.clone());

    let mut models = Vec::new();
    for spec in &config.models {
        let c = &spec.component;
        let Some(Factory::Model(f)) = factory(Role::Model, &c.kind) else {
            continue;
        };
        let raw = f(&as_value(&c.settings), &cx)
            .map_err(|e| ExperimentConfig::component_error(map, c, e))?;
        // Waiting for a free slot counts as waiting on the server: the deadline is outermost.
        let live: Arc<dyn LanguageModel> = Arc::new(EpisodeDeadline::new(Arc::new(
            ConcurrencyLimit::new(raw, spec.max_concurrency),
        )));
        models.push(ModelSlot {
            model: built(registry, &mut versions, Role::Model, c, live),
            sampling: spec.sampling.clone(),
        });
    }

    // Components with a model of their own (a simulated user) may name one of these, to share
    // it rather than build another.
    let inline: Arc<std::sync::Mutex<Vec<Arc<dyn LanguageModel>>>> = Arc::default();
    let mut own_models = Vec::new();
    // The models built since the last call, owned by the component `owner` names.
    let mut take_own = |owner: String| {
        let mut new = inline.lock().unwrap_or_else(|p| p.into_inner());
        own_models.extend(new.drain(..).map(|m| (owner.clone(), m)));
    };
    cx.models = Some(
        crate::registry::ModelBuilder::from_registry(registry)
            .recording(inline.clone())
            .with_named(
                models
                    .iter()
                    .map(|m| (m.model.name.clone(), m.model.live.clone()))
                    .collect(),
            ),
    );

    let mut extra_evaluators: Vec<(&crate::config::EvaluatorSpec, Arc<dyn Evaluator>)> = Vec::new();
    for spec in &config.evaluators {
        let c = &spec.component;
        let Some(Factory::Evaluator(f)) = factory(Role::Evaluator, &c.kind) else {
            continue;
        };
        let live = f(&as_value(&c.settings), &cx)
            .map_err(|e| ExperimentConfig::component_error(map, c, e))?;
        extra_evaluators.push((spec, live));
        take_own(format!("evaluator {}", c.name));
        versions.insert(
            format!("evaluator/{}", c.name),
            entry_version(registry, Role::Evaluator, &c.kind),
        );
    }

    let mut scaffolds = Vec::new();
    for spec in &config.scaffolds {
        let Some(Factory::Scaffold(f)) = factory(Role::Scaffold, &spec.kind) else {
            continue;
        };
        let live = f(&as_value(&spec.settings), &cx)
            .map_err(|e| ExperimentConfig::component_error(map, spec, e))?;
        scaffolds.push(built(registry, &mut versions, Role::Scaffold, spec, live));
        take_own(format!("scaffold {}", spec.name));
    }

    let mut environments = Vec::new();
    let mut skipped = Vec::new();
    for spec in &config.environments {
        let Some(Factory::Environment(f)) = factory(Role::Environment, &spec.kind) else {
            continue;
        };
        let env = f(&as_value(&spec.settings), &cx)
            .map_err(|e| ExperimentConfig::component_error(map, spec, e))?;
        let at = || {
            spec.field
                .split('/')
                .map(str::to_string)
                .collect::<Vec<_>>()
        };

        // The (scaffold, model) pairs it plays: what the matrix asks for, less what cannot work.
        let mut pairs = Vec::new();
        for (si, s) in scaffolds.iter().enumerate() {
            let wanted: Vec<usize> = models
                .iter()
                .enumerate()
                .filter(|(_, m)| config.matrix.wants(&spec.name, &s.name, &m.model.name))
                .map(|(mi, _)| mi)
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let missing = env.action_space().missing(&s.live.required_actions());
            if !missing.is_empty() {
                if config.matrix.skip_incompatible {
                    skipped.push(Skipped {
                        environment: spec.name.clone(),
                        scaffold: s.name.clone(),
                        reason: format!(
                            "the scaffold needs {} actions, which the environment does not offer",
                            missing.join(", ")
                        ),
                    });
                    continue;
                }
                return Err(RunError::Mismatch {
                    scaffold: s.name.clone(),
                    environment: spec.name.clone(),
                    missing: missing.join(", "),
                });
            }
            pairs.extend(wanted.into_iter().map(|mi| (si, mi)));
        }

        let mut evaluators = Vec::new();
        for (kind, settings) in env.default_evaluators() {
            let Some(Factory::Evaluator(ef)) = factory(Role::Evaluator, &kind) else {
                return Err(ConfigError {
                    location: map.locate(&at()),
                    field: spec.field.replace('/', "."),
                    message: format!(
                        "environment `{}` scores with evaluator `{kind}`, which is not registered",
                        spec.kind
                    ),
                    hint: Some(format!(
                        "registered evaluators: {}",
                        registry.kind_list(Role::Evaluator)
                    )),
                }
                .into());
            };
            evaluators.push(ScoringEvaluator {
                source: crate::scoring::ENVIRONMENT.to_string(),
                recorded_as: None,
                live: ef(&settings, &cx)
                    .map_err(|e| ExperimentConfig::component_error(map, spec, e))?,
            });
            versions.insert(
                format!("evaluator/{kind}"),
                entry_version(registry, Role::Evaluator, &kind),
            );
        }
        for (es, live) in &extra_evaluators {
            if es.applies_to(&spec.name) {
                // Each verdict is recorded under one name: two evaluators with one name would
                // read as one in stats and selection.
                if let Some(own) = evaluators
                    .iter()
                    .find(|e| e.live.name() == es.component.name)
                {
                    return Err(ExperimentConfig::component_error(
                        map,
                        &es.component,
                        crate::registry::ComponentError::at(
                            "name",
                            format!(
                                "`{}` is also the name environment `{}` records its own evaluator's verdicts under; give this evaluator another `name`",
                                own.live.name(),
                                spec.name
                            ),
                        ),
                    )
                    .into());
                }
                evaluators.push(ScoringEvaluator {
                    source: es.component.name.clone(),
                    recorded_as: Some(es.component.name.clone()),
                    live: live.clone(),
                });
            }
        }
        if !pairs.is_empty()
            && !config
                .scoring
                .evaluators()
                .iter()
                .any(|name| evaluators.iter().any(|e| &e.source == name))
        {
            let why = if evaluators.is_empty() {
                "no evaluator scores it: it has none of its own and every [[evaluators]] entry leaves it out of its `environments`".to_string()
            } else {
                format!(
                    "none of the evaluators `[scoring]` reads ({}) scores it; those that do: {}",
                    config.scoring.evaluators().join(", "),
                    evaluators
                        .iter()
                        .map(|e| e.source.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            return Err(ConfigError {
                location: map.locate(&["scoring".to_string()]).or_else(|| map.locate(&at())),
                field: "scoring".into(),
                message: format!("the rollouts of environment `{}` would have no reward: {why}", spec.name),
                hint: Some("add an evaluator whose `environments` include it, or name one that scores it in [scoring]".into()),
            }
            .into());
        }
        let tasks = env
            .tasks()
            .await
            .map_err(|source| RunError::Tasks {
                environment: spec.name.clone(),
                source,
            })?
            .into_iter()
            .map(Arc::new)
            .collect::<Vec<_>>();
        // Ids become parts of file paths (`trawl swe reports`, exports by task): one that could
        // reach outside a folder is refused here, whichever environment or plugin made it.
        if let Some((task, why)) = tasks
            .iter()
            .find_map(|t| store::check_relative_path(&t.id).err().map(|e| (t, e)))
        {
            return Err(RunError::Tasks {
                environment: spec.name.clone(),
                source: EnvironmentError::Tasks(format!(
                    "task id `{}` {why}\n  hint: give the task another id in its task file",
                    task.id.escape_debug()
                )),
            });
        }
        if tasks.is_empty() {
            return Err(ExperimentConfig::component_error(
                map,
                spec,
                crate::registry::ComponentError::new(
                    "the environment has no tasks (its task files are empty, or `limit` is 0); a run with nothing to do is refused",
                ),
            )
            .into());
        }
        environments.push(EnvironmentSlot {
            env: built(registry, &mut versions, Role::Environment, spec, env),
            evaluators,
            tasks,
            pairs,
        });
        take_own(format!("environment {}", spec.name));
    }
    if environments.iter().all(|e| e.pairs.is_empty()) {
        let why = if skipped.is_empty() {
            "the [matrix] leaves out every combination".to_string()
        } else {
            format!(
                "every combination the [matrix] asks for is incompatible ({})",
                skipped
                    .iter()
                    .map(|s| format!("{} × {}", s.environment, s.scaffold))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        return Err(RunError::NothingToRun(why));
    }
    let shared = Shared {
        environments,
        scaffolds,
        models,
        episode_timeout: crate::config::secs(config.episode_timeout_secs),
        seed: config.seed,
        run_id: String::new(),
        scoring: config.scoring.clone(),
        skipped,
        own_models,
    };
    Ok((shared, versions))
}

/// What `trawl check` found: the run the config describes, without running it.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// Rollouts the run would make (every sample of every combination and task).
    pub rollouts: u64,
    /// Environment name → its tasks, in the order the run starts them.
    pub tasks: BTreeMap<String, Vec<Task>>,
    /// The (environment, scaffold, model) combinations that run.
    pub combinations: Vec<(String, String, String)>,
    pub skipped_combinations: Vec<Skipped>,
    /// Environment name → the evaluators that score it (`environment` for its own).
    pub evaluators: BTreeMap<String, Vec<String>>,
    pub scoring: String,
    /// With `ping`: each model's answer to "which models do you serve?"
    pub ping: Vec<PingResult>,
}

/// One model server's answer to `trawl check --ping`.
#[derive(Debug, Clone, Serialize)]
pub struct PingResult {
    pub model: String,
    /// The model id the config asks for.
    pub model_id: String,
    /// `Ok(None)`: a backend with no server (the embedded model).
    pub served: Result<Option<Vec<String>>, String>,
}

/// Builds every component of the config (plugins, tasks, tool domains, images, pair
/// compatibility, evaluator scopes, scoring) and drops them: exactly the errors a run would
/// meet before its first rollout, without running one. With `ping`, each model server is asked
/// for its model list too.
pub async fn check(
    config: &ExperimentConfig,
    map: &SourceMap,
    registry: &Registry,
    ping: bool,
) -> Result<CheckReport, RunError> {
    let (shared, _) = build(config, map, registry).await?;
    let mut report = CheckReport {
        rollouts: u64::from(config.samples.max()).saturating_mul(shared.matrix_size()),
        tasks: BTreeMap::new(),
        combinations: Vec::new(),
        skipped_combinations: shared.skipped.clone(),
        evaluators: BTreeMap::new(),
        scoring: shared.scoring.describe(),
        ping: Vec::new(),
    };
    for slot in &shared.environments {
        report.tasks.insert(
            slot.env.name.clone(),
            slot.tasks.iter().map(|t| Task::clone(t)).collect(),
        );
        report.evaluators.insert(
            slot.env.name.clone(),
            slot.evaluators
                .iter()
                .map(|e| {
                    e.recorded_as.clone().unwrap_or_else(|| {
                        format!("{} ({})", crate::scoring::ENVIRONMENT, e.live.name())
                    })
                })
                .collect(),
        );
        for &(si, mi) in &slot.pairs {
            report.combinations.push((
                slot.env.name.clone(),
                shared.scaffolds[si].name.clone(),
                shared.models[mi].model.name.clone(),
            ));
        }
    }
    if ping {
        for m in &shared.models {
            let served = m.model.live.list_models().await.map_err(|e| e.to_string());
            report.ping.push(PingResult {
                model: m.model.name.clone(),
                model_id: m.model.live.describe().model_id,
                served,
            });
        }
        for (owner, model) in &shared.own_models {
            let served = model.list_models().await.map_err(|e| e.to_string());
            report.ping.push(PingResult {
                model: format!("{} (its own model)", owner),
                model_id: model.describe().model_id,
                served,
            });
        }
    }
    for slot in &shared.environments {
        slot.env.live.shutdown().await;
    }
    Ok(report)
}

/// Runs the experiment into `options.out`, resuming whatever is there.
pub async fn run(
    config: &ExperimentConfig,
    map: &SourceMap,
    registry: &Registry,
    options: RunOptions,
) -> Result<RunSummary, RunError> {
    let (mut shared, versions) = build(config, map, registry).await?;
    let dir = RunDir::open(&options.out)?;

    // The stored config must match, or resuming would mix experiments.
    let resolved = config.to_toml();
    let config_path = dir.file(store::CONFIG);
    if let Ok(previous) = std::fs::read_to_string(&config_path) {
        if without_budget(&previous) != without_budget(&resolved) && !options.force {
            return Err(RunError::ConfigChanged {
                dir: options.out.clone(),
            });
        }
    }
    dir.write_atomic(store::CONFIG, resolved.as_bytes())?;

    let resume = dir.prepare_resume()?;
    let manifest_path = dir.file(store::MANIFEST);
    let mut manifest = std::fs::read(&manifest_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Manifest>(&b).ok())
        .unwrap_or_else(|| Manifest {
            schema: "trawl.manifest/1".into(),
            run_id: format!(
                "{}-{}",
                config.name,
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
            ),
            name: config.name.clone(),
            trawl_version: TRAWL_VERSION.into(),
            host: hostname(),
            seed: config.seed,
            components: BTreeMap::new(),
            environments: BTreeMap::new(),
            plugins: Vec::new(),
            scoring: serde_json::Value::Null,
            skipped_combinations: Vec::new(),
            started_at: now_rfc3339(),
            ended_at: None,
            status: RunStatus::Running,
            sessions: Vec::new(),
        });
    manifest.components = versions;
    manifest.plugins = registry.libraries().to_vec();
    manifest.environments = shared
        .environments
        .iter()
        .map(|e| (e.env.name.clone(), e.env.live.facts()))
        .filter(|(_, facts)| !facts.is_null())
        .collect();
    manifest.scoring = serde_json::to_value(&shared.scoring).unwrap_or_default();
    manifest.skipped_combinations = shared.skipped.clone();
    manifest.trawl_version = TRAWL_VERSION.into();
    manifest.status = RunStatus::Running;
    manifest.ended_at = None;
    manifest.sessions.push(Session {
        started_at: now_rfc3339(),
        ended_at: None,
        status: RunStatus::Running,
        skipped: 0,
        launched: 0,
        written: 0,
        infra_errors: 0,
    });
    shared.run_id = manifest.run_id.clone();
    write_manifest(&dir, &manifest)?;

    // The matrix is walked lazily, so memory does not grow with the number of rollouts.
    let shared = Arc::new(shared);
    // Tokens spent, every session's, counted as each rollout ends (before the writer sees it),
    // so that the launcher never starts one after the budget is gone: at most the rollouts in
    // flight go over.
    let spent = Arc::new(std::sync::atomic::AtomicU64::new(resume.tokens_used));
    let tokens_used = {
        let spent = spent.clone();
        move || spent.load(std::sync::atomic::Ordering::SeqCst)
    };
    let limit = config.max_total_tokens;
    let over_budget = move |used: u64| limit.is_some_and(|b| used >= b);
    let budget_spent_at_start = over_budget(tokens_used());
    let completed = Arc::new(resume.completed);
    let (mut adaptive, source, total, skipped) = match config.samples {
        Samples::Fixed(n) => {
            let total = u64::from(n).saturating_mul(shared.matrix_size());
            // Counted from what is done, never by walking the plan: `samples = 4000000000`
            // must start at once, not spin through every rollout it will ever run.
            let cells: std::collections::HashSet<_> = shared
                .cells()
                .map(|c| cell_key(&shared.plan(c, 0).key))
                .collect();
            let skipped = completed
                .iter()
                .filter(|k| k.sample < n && cells.contains(&cell_key(k)))
                .count() as u64;
            let plans: Box<dyn Iterator<Item = Plan> + Send> = if budget_spent_at_start {
                Box::new(std::iter::empty())
            } else {
                let shared = shared.clone();
                let completed = completed.clone();
                Box::new(
                    (0..n)
                        .flat_map(move |sample| {
                            let cells: Vec<Cell> = shared.cells().collect();
                            let shared = shared.clone();
                            cells.into_iter().map(move |c| shared.plan(c, sample))
                        })
                        .filter(move |p| !completed.contains(&p.key)),
                )
            };
            (None, PlanSource::Fixed(plans), total, skipped)
        }
        Samples::Until {
            max,
            until_successes,
        } => {
            let (a, rx) = Adaptive::start(
                &shared,
                max,
                until_successes,
                &completed,
                &resume.successes,
                budget_spent_at_start,
            );
            let total = u64::from(max).saturating_mul(shared.matrix_size());
            (
                Some(a),
                PlanSource::Adaptive(rx),
                total,
                completed.len() as u64,
            )
        }
    };
    let pending_count = total.saturating_sub(skipped);
    options.observer.started(pending_count, skipped);
    tracing::info!(dir = %options.out.display(), pending = pending_count, skipped, "run starting");

    let stop = options.stop.clone();
    // Spending the token budget stops new rollouts; those in flight finish.
    let budget = CancellationToken::new();
    let mut budget_spent = budget_spent_at_start;
    let slots = Arc::new(Semaphore::new(config.concurrency));
    let (tx, mut rx) = mpsc::channel::<TrajectoryRecord>(1024);
    let launcher = {
        let shared = shared.clone();
        let stop = stop.clone();
        let budget = budget.clone();
        let spent = spent.clone();
        let tokens_used = tokens_used.clone();
        let mut source = source;
        tokio::spawn(async move {
            let mut launched = 0u64;
            loop {
                let plan = tokio::select! {
                    biased;
                    _ = stop.soft.cancelled() => break,
                    _ = budget.cancelled() => break,
                    p = source.next() => match p { Some(p) => p, None => break },
                };
                let permit = tokio::select! {
                    biased;
                    _ = stop.soft.cancelled() => break,
                    _ = budget.cancelled() => break,
                    p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                };
                if stop.soft.is_cancelled() || budget.is_cancelled() || over_budget(tokens_used()) {
                    break;
                }
                let tx = tx.clone();
                let shared = shared.clone();
                let hard = stop.hard.clone();
                let spent = spent.clone();
                tokio::spawn(async move {
                    let record = guarded_rollout(shared, plan, hard).await;
                    spent.fetch_add(
                        record.usage.total_tokens(),
                        std::sync::atomic::Ordering::SeqCst,
                    );
                    let _ = tx.send(record).await;
                    drop(permit);
                });
                launched += 1;
            }
            launched
        })
    };

    let mut writer = dir.appender()?;
    let (mut written, mut successes, mut infra, mut interrupted) = (0u64, 0u64, 0u64, 0u64);
    let mut failed = false;
    let mut errors = ErrorBudget::new(config.max_infra_error_rate);
    let mut last_sync = Instant::now();
    while let Some(record) = rx.recv().await {
        writer.append(&record)?;
        written += 1;
        match record.outcome.exit_status {
            ExitStatus::InfraError => infra += 1,
            ExitStatus::Interrupted => interrupted += 1,
            _ => successes += u64::from(record.success),
        }
        if !budget_spent && over_budget(tokens_used()) {
            budget_spent = true;
            tracing::info!(
                tokens_used = tokens_used(),
                "the token budget is spent; no more rollouts start"
            );
            budget.cancel();
        }
        if let Some(a) = &mut adaptive {
            a.finished(&shared, &record, budget_spent || stop.soft.is_cancelled());
            if budget_spent || stop.soft.is_cancelled() {
                a.close();
            }
        }
        options.observer.finished(&record);
        if !failed && errors.record(record.outcome.exit_status) {
            failed = true;
            tracing::error!(
                infra,
                written,
                "too many infrastructure errors among the recent rollouts; stopping the run"
            );
            stop.soft.cancel();
            stop.hard.cancel();
        }
        if last_sync.elapsed() > Duration::from_secs(1) {
            writer.sync()?;
            last_sync = Instant::now();
        }
    }
    writer.sync()?;
    let launched = launcher.await.unwrap_or(0);
    // However the run ended (finished, stopped, cut short), environments release what they
    // still hold: containers of interrupted or crashed rollouts included, and so do their
    // evaluators (each once, however many environments it scores).
    for slot in &shared.environments {
        slot.env.live.shutdown().await;
    }
    let mut done: Vec<*const ()> = Vec::new();
    for e in shared.environments.iter().flat_map(|s| &s.evaluators) {
        let at = Arc::as_ptr(&e.live) as *const ();
        if !done.contains(&at) {
            done.push(at);
            e.live.shutdown().await;
        }
    }

    // A run whose every attempt failed on infrastructure produced nothing, whatever its size:
    // it fails too.
    let all_infra = infra > 0 && written == infra + interrupted;
    let status = if failed || all_infra {
        RunStatus::Failed
    } else if stop.soft.is_cancelled() || interrupted > 0 {
        RunStatus::Interrupted
    } else {
        RunStatus::Finished
    };
    let ended = now_rfc3339();
    manifest.status = status;
    manifest.ended_at = Some(ended.clone());
    if let Some(s) = manifest.sessions.last_mut() {
        *s = Session {
            ended_at: Some(ended),
            status,
            skipped,
            launched,
            written,
            infra_errors: infra,
            ..s.clone()
        };
    }
    write_manifest(&dir, &manifest)?;
    Ok(RunSummary {
        dir: options.out,
        status,
        skipped,
        launched,
        written,
        successes,
        infra_errors: infra,
        interrupted,
        resume: ResumeSummary {
            moved_aside: resume.moved_aside,
            dropped_torn_tail: resume.dropped_torn_tail,
            duplicates_removed: resume.duplicates_removed,
            repaired: resume.repaired,
        },
        environments: manifest.environments,
        skipped_combinations: manifest.skipped_combinations,
        scoring: shared.scoring.describe(),
        sampling: adaptive.as_ref().map(Adaptive::summary),
        tokens_used: tokens_used(),
        budget_spent,
    })
}

/// A resolved config without its top-level `max_total_tokens`: raising the budget to go on is
/// the same experiment.
fn without_budget(toml_text: &str) -> String {
    let mut top = true;
    // `--set` arguments are recorded as comments; the values they set are compared, not how.
    ExperimentConfig::without_override_comments(toml_text)
        .lines()
        .filter(|l| {
            top &= !l.trim_start().starts_with('[');
            !(top && l.trim_start().starts_with("max_total_tokens"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// How many recent rollouts the infrastructure-error budget looks at.
const BUDGET_WINDOW: usize = 50;
/// The fewest rollouts in the window before the budget can stop a run mid-way.
const BUDGET_MIN: usize = 10;

/// Judges infrastructure errors over the recent rollouts, so that a server that dies late in a
/// long run stops it quickly.
struct ErrorBudget {
    rate: f64,
    recent: std::collections::VecDeque<bool>,
    infra_in_window: usize,
}

impl ErrorBudget {
    fn new(rate: f64) -> Self {
        ErrorBudget {
            rate,
            recent: std::collections::VecDeque::with_capacity(BUDGET_WINDOW),
            infra_in_window: 0,
        }
    }

    /// Counts one rollout; true when the recent ones pass the budget. Interrupted rollouts say
    /// nothing about the infrastructure and are not counted.
    fn record(&mut self, status: ExitStatus) -> bool {
        let is_infra = match status {
            ExitStatus::Interrupted => return false,
            ExitStatus::InfraError => true,
            _ => false,
        };
        if self.recent.len() == BUDGET_WINDOW && self.recent.pop_front() == Some(true) {
            self.infra_in_window -= 1;
        }
        self.recent.push_back(is_infra);
        self.infra_in_window += usize::from(is_infra);
        self.recent.len() >= BUDGET_MIN
            && self.infra_in_window as f64 > self.rate * self.recent.len() as f64
    }
}

fn write_manifest(dir: &RunDir, manifest: &Manifest) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec_pretty(manifest).unwrap_or_default();
    dir.write_atomic(store::MANIFEST, &bytes)
}

/// Runs one rollout in its own task so that a panic in a scaffold, environment or evaluator
/// becomes an infrastructure-error record instead of taking the run down.
async fn guarded_rollout(
    shared: Arc<Shared>,
    plan: Plan,
    hard: CancellationToken,
) -> TrajectoryRecord {
    let (key, at) = (plan.key.clone(), plan.at());
    let task = shared.environments[plan.env].tasks[plan.task].clone();
    let inner = tokio::spawn(rollout(shared.clone(), plan, hard));
    match inner.await {
        Ok(record) => record,
        Err(e) => {
            let message = if e.is_panic() {
                "a component panicked during the rollout".to_string()
            } else {
                e.to_string()
            };
            tracing::error!(%key, %message, "rollout crashed");
            let mut b = RecordBuilder::new(&shared, key, (*task).clone(), at);
            b.outcome = infra("panic", message);
            b.into_record(Transcript::new())
        }
    }
}

/// An infrastructure-error outcome.
fn infra(kind: &str, message: impl Into<String>) -> Outcome {
    outcome(ExitStatus::InfraError, None, Some((kind, message.into())))
}

/// A bounded fallible step as one result: its own error, or `timed_out` if the bound passed.
fn flatten_timeout<T, E: std::fmt::Display>(
    r: Result<Result<T, E>, tokio::time::error::Elapsed>,
    timed_out: &str,
) -> Result<T, String> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(timed_out.to_string()),
    }
}

fn outcome(
    exit_status: ExitStatus,
    submission: Option<String>,
    error: Option<(&str, String)>,
) -> Outcome {
    Outcome {
        exit_status,
        submission,
        error: error.map(|(kind, message)| RecordedError {
            kind: kind.into(),
            message,
        }),
        artifacts: serde_json::Value::Null,
    }
}

struct RecordBuilder<'a> {
    shared: &'a Shared,
    key: RolloutKey,
    task: Task,
    model: usize,
    env: usize,
    scaffold: usize,
    started_at: String,
    t0: Instant,
    sampling: Sampling,
    seed: u64,
    outcome: Outcome,
}

impl<'a> RecordBuilder<'a> {
    fn new(
        shared: &'a Shared,
        key: RolloutKey,
        task: Task,
        (env, scaffold, model): (usize, usize, usize),
    ) -> Self {
        let seed = rollout_seed(shared.seed, &key);
        let mut sampling = shared.models[model].sampling.clone();
        let seed = *sampling.seed.get_or_insert(seed);
        RecordBuilder {
            shared,
            key,
            task,
            model,
            env,
            scaffold,
            started_at: now_rfc3339(),
            t0: Instant::now(),
            sampling,
            seed,
            outcome: outcome(ExitStatus::Interrupted, None, None),
        }
    }

    fn into_record(self, transcript: Transcript) -> TrajectoryRecord {
        let m = &self.shared.models[self.model].model;
        let description = m.live.describe();
        let mut components = BTreeMap::new();
        components.insert(
            "environment".into(),
            self.shared.environments[self.env].env.label.clone(),
        );
        components.insert(
            "scaffold".into(),
            self.shared.scaffolds[self.scaffold].label.clone(),
        );
        components.insert("model".into(), m.label.clone());
        TrajectoryRecord {
            schema: TRAJECTORY_SCHEMA.into(),
            key: self.key,
            task: self.task,
            messages: transcript.messages,
            tools: transcript.tools,
            steps: transcript.steps,
            outcome: self.outcome,
            evaluations: Vec::new(),
            reward: 0.0,
            success: false,
            usage: transcript.usage,
            // No record claims token data when no turn had any.
            tokens: if transcript.tokens.iter().all(TokenDetail::is_empty) {
                Vec::new()
            } else {
                transcript.tokens
            },
            finish_reasons: transcript.finish_reasons,
            timing: Timing {
                started_at: self.started_at,
                duration_ms: self.t0.elapsed().as_millis() as u64,
                model_ms: transcript.model_ms,
            },
            provenance: Provenance {
                trawl_version: TRAWL_VERSION.into(),
                model_kind: description.kind,
                model_id: description.model_id,
                sampling: self.sampling,
                seed: self.seed,
                run_id: self.shared.run_id.clone(),
                components,
            },
        }
    }
}

/// One rollout: start the episode, let the scaffold play it within the time limit, collect the
/// artifacts, score. Always returns a record.
async fn rollout(shared: Arc<Shared>, plan: Plan, hard: CancellationToken) -> TrajectoryRecord {
    let slot = &shared.environments[plan.env];
    let task = slot.tasks[plan.task].clone();
    let mut b = RecordBuilder::new(&shared, plan.key.clone(), (*task).clone(), plan.at());
    let mut transcript = Transcript::new();
    let deadline = tokio::time::Instant::now() + shared.episode_timeout;
    // Model calls (the agent's, and a simulated user's) fit inside the episode's time, and the
    // watch tells a stalled server from a slow agent when the time runs out.
    let watch = ModelWatch::new(deadline);

    let started = tokio::select! {
        r = tokio::time::timeout_at(deadline, watch.scope(slot.env.live.start(&task))) => r,
        _ = hard.cancelled() => {
            b.outcome = outcome(ExitStatus::Interrupted, None, None);
            return b.into_record(transcript);
        }
    };
    let mut episode =
        match flatten_timeout(started, "episode start outlasted the episode time limit") {
            Ok(e) => e,
            Err(message) => {
                b.outcome = infra("environment", message);
                return b.into_record(transcript);
            }
        };
    transcript.messages = episode.opening();
    transcript.tools = episode.tools();

    let sampling = b.sampling.clone();
    let result = {
        let cx = RolloutContext {
            episode: episode.as_mut(),
            model: shared.models[plan.model].model.live.as_ref(),
            sampling: &sampling,
            transcript: &mut transcript,
        };
        tokio::select! {
            r = tokio::time::timeout_at(deadline, watch.scope(shared.scaffolds[plan.scaffold].live.run(cx))) => Some(r),
            _ = hard.cancelled() => None,
        }
    };
    b.outcome = match result {
        None => outcome(ExitStatus::Interrupted, None, None),
        // Time ran out while the model server had not answered: not the model's failure.
        Some(Err(_)) if watch.waited_on_model() => infra(
            "model_timeout",
            format!(
                "the episode's time limit ({:?}) ran out while waiting on the model server",
                shared.episode_timeout
            ),
        ),
        Some(Err(_)) => outcome(ExitStatus::TimeExceeded, None, None),
        Some(Ok(Ok(o))) => outcome(o.exit_status, o.submission, None),
        Some(Ok(Err(ScaffoldError::Model(e)))) => infra(e.kind(), e.to_string()),
        Some(Ok(Err(ScaffoldError::Environment(e)))) => infra("environment", e.to_string()),
        Some(Ok(Err(ScaffoldError::Scaffold(m)))) => infra("scaffold", m),
    };
    if !b.outcome.exit_status.is_final() {
        return b.into_record(transcript);
    }

    // Artifacts and scoring are bounded too: a wedged environment must not hold a slot forever.
    let grace = shared.episode_timeout.max(Duration::from_secs(30));
    match flatten_timeout(
        tokio::time::timeout(grace, episode.finish()).await,
        "collecting artifacts timed out",
    ) {
        Ok(artifacts) => {
            if b.outcome.submission.is_none() {
                b.outcome.submission = artifacts.submission;
            }
            b.outcome.artifacts = artifacts.extra;
            // A step reward trawl cannot record (NaN, infinite, absurd) is the environment's
            // fault, not the model's.
            if let Some((i, why)) = artifacts
                .step_rewards
                .iter()
                .enumerate()
                .find_map(|(i, r)| crate::reward::unsound(*r).map(|why| (i, why)))
            {
                b.outcome = infra(
                    "environment",
                    format!(
                        "environment `{}` gave step {i} a reward that is {why}",
                        slot.env.name
                    ),
                );
                return b.into_record(transcript);
            }
            // Step rewards are kept only when there is one for every step: a partial list
            // could not say which step earned what.
            if artifacts.step_rewards.len() == transcript.steps.len() {
                for (step, reward) in transcript.steps.iter_mut().zip(&artifacts.step_rewards) {
                    step.reward = Some(*reward);
                }
            } else if !artifacts.step_rewards.is_empty() {
                tracing::warn!(
                    steps = transcript.steps.len(),
                    rewards = artifacts.step_rewards.len(),
                    "the environment gave step rewards that do not match the steps; not recorded"
                );
            }
            if !transcript.artifacts.is_empty() {
                let mut merged = match std::mem::take(&mut b.outcome.artifacts) {
                    serde_json::Value::Object(m) => m,
                    serde_json::Value::Null => serde_json::Map::new(),
                    other => serde_json::Map::from_iter([("environment".to_string(), other)]),
                };
                merged.extend(std::mem::take(&mut transcript.artifacts));
                b.outcome.artifacts = serde_json::Value::Object(merged);
            }
        }
        Err(message) => {
            b.outcome = infra("environment", message);
            return b.into_record(transcript);
        }
    }
    drop(episode);
    let mut record = b.into_record(transcript);
    score(&shared.scoring, &slot.evaluators, &mut record, grace).await;
    record
}

/// Runs every evaluator that applies on a finished rollout and sets its reward and success as
/// `[scoring]` says. An evaluator that finds the task outside what it can score (`Unscorable`)
/// is not applicable and records nothing; one that fails or hangs, one whose verdict breaks
/// [`crate::reward`]'s rule (NaN, infinite, beyond ±1e9: see [`crate::evaluator::Evaluation::check`]), a combined
/// reward that breaks it, or a rollout that no evaluator `[scoring]` reads could score, is an
/// infrastructure error: no label is better than a wrong one, and every verdict passes through
/// here (built-in, plugin and judge evaluators alike) before it is recorded.
async fn score(
    scoring: &crate::scoring::Scoring,
    evaluators: &[ScoringEvaluator],
    record: &mut TrajectoryRecord,
    grace: Duration,
) {
    let mut sources = Vec::new();
    let mut not_applicable = Vec::new();
    for evaluator in evaluators {
        let name = evaluator
            .recorded_as
            .clone()
            .unwrap_or_else(|| evaluator.live.name().to_string());
        let timed_out = format!("evaluator `{name}` timed out");
        let result = match tokio::time::timeout(grace, evaluator.live.evaluate(record)).await {
            Ok(r) => r.and_then(|eval| eval.check(&name).map(|()| eval)),
            Err(_) => Err(EvaluatorError::Failed {
                evaluator: name.clone(),
                message: timed_out,
            }),
        };
        match result {
            Ok(mut eval) => {
                eval.evaluator = name;
                record.evaluations.push(eval);
                sources.push(evaluator.source.as_str());
            }
            Err(e @ EvaluatorError::Unscorable { .. }) => {
                tracing::debug!(key = %record.key, "{e}");
                not_applicable.push(format!("{name}: {e}"));
            }
            Err(e) => {
                record.outcome = Outcome {
                    artifacts: record.outcome.artifacts.clone(),
                    ..infra("evaluator", e.to_string())
                };
                return;
            }
        }
    }
    let verdicts: Vec<crate::scoring::Verdict<'_>> = sources
        .iter()
        .zip(&record.evaluations)
        .map(|(source, evaluation)| crate::scoring::Verdict { source, evaluation })
        .collect();
    match scoring.decide(&verdicts) {
        Some(d) => match crate::reward::unsound(d.reward) {
            None => {
                record.reward = d.reward;
                record.success = d.success;
            }
            Some(why) => {
                record.outcome = Outcome {
                    artifacts: record.outcome.artifacts.clone(),
                    ..infra(
                        "evaluator",
                        format!(
                            "the reward scoring combines ({}) is {why}",
                            scoring.describe()
                        ),
                    )
                };
            }
        },
        None => {
            let why = if not_applicable.is_empty() {
                String::new()
            } else {
                format!(" ({})", not_applicable.join("; "))
            };
            record.outcome = Outcome {
                artifacts: record.outcome.artifacts.clone(),
                ..infra(
                    "unscored",
                    format!(
                        "no evaluator that [scoring] reads could score this rollout{why}; scoring is {}",
                        scoring.describe()
                    ),
                )
            };
        }
    }
}

/// The run directory a config writes to by default: `runs/<name>`.
pub fn default_run_dir(config: &ExperimentConfig) -> PathBuf {
    Path::new("runs").join(&config.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluator::Evaluation;
    use crate::scoring::{Combine, Scoring, ENVIRONMENT};
    use proptest::prelude::*;
    use serde_json::{json, Value};

    /// An evaluator that says whatever it is told: any verdict a built-in evaluator, a plugin
    /// across the ABI or a judge could give.
    struct Says(Evaluation);

    #[async_trait::async_trait]
    impl Evaluator for Says {
        fn name(&self) -> &str {
            "says"
        }

        async fn evaluate(&self, _: &TrajectoryRecord) -> Result<Evaluation, EvaluatorError> {
            Ok(self.0.clone())
        }
    }

    /// Any f64: NaN, infinities, subnormals, huge, and ordinary rewards.
    fn any_reward() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>(),
            -10.0f64..10.0,
            proptest::sample::select(vec![
                f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
                1e308,
                f64::MAX,
                -crate::reward::MAX_REWARD,
                crate::reward::MAX_REWARD,
                crate::reward::MAX_REWARD * (1.0 + f64::EPSILON),
                f64::MIN_POSITIVE / 4.0,
                -0.0,
            ]),
        ]
    }

    /// Any details, some nested far deeper than a record can hold.
    fn any_details() -> impl Strategy<Value = Value> {
        prop_oneof![
            crate::strategies::json_value(),
            (crate::strategies::json_value(), 0usize..200)
                .prop_map(|(v, n)| (0..n).fold(v, |v, _| json!([v]))),
        ]
    }

    fn evaluation() -> impl Strategy<Value = Evaluation> {
        (
            any_reward(),
            any::<bool>(),
            proptest::collection::btree_map("[a-z_]{1,8}", any_reward(), 0..3),
            any_details(),
        )
            .prop_map(|(reward, success, components, details)| Evaluation {
                evaluator: "says".into(),
                reward,
                success,
                components,
                details,
            })
    }

    fn weight() -> impl Strategy<Value = f64> {
        prop_oneof![0.0f64..10.0, Just(1e300), Just(f64::MAX)]
    }

    fn scoring() -> impl Strategy<Value = Scoring> {
        let both = || vec![ENVIRONMENT.to_string(), "judge".to_string()];
        prop_oneof![
            Just(Scoring::default_for(&["judge".to_string()])),
            proptest::sample::select(vec![Combine::Product, Combine::Min, Combine::All]).prop_map(
                move |combine| Scoring::Combine {
                    combine,
                    evaluators: both(),
                    weights: BTreeMap::new(),
                    success_threshold: None,
                }
            ),
            // Any weight the config accepts (finite, at least 0).
            (weight(), weight()).prop_map(move |(a, b)| Scoring::Combine {
                combine: Combine::WeightedSum,
                evaluators: both(),
                weights: BTreeMap::from([(ENVIRONMENT.to_string(), a), ("judge".to_string(), b)]),
                success_threshold: Some(0.5),
            }),
        ]
    }

    proptest! {
        /// Whatever evaluators say, the record `score` leaves reads back with the store's reader
        /// as it is (nothing to repair); a verdict that breaks the reward rule makes it an
        /// infrastructure error that names the evaluator, never a label.
        #[test]
        fn no_evaluator_output_makes_a_record_that_fails_to_load(
            own in evaluation(),
            judge in evaluation(),
            scoring in scoring(),
        ) {
            let evaluators = [(ENVIRONMENT, &own), ("judge", &judge)]
                .map(|(source, e)| ScoringEvaluator {
                    source: source.into(),
                    recorded_as: Some(source.into()),
                    live: Arc::new(Says(e.clone())),
                });
            let mut record = crate::strategies::example_record();
            record.evaluations.clear();
            record.outcome.exit_status = ExitStatus::Submitted;
            record.outcome.error = None;
            record.reward = 0.0;
            record.success = false;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            rt.block_on(score(&scoring, &evaluators, &mut record, Duration::from_secs(5)));

            let line = serde_json::to_string(&record).unwrap();
            let (back, note) =
                store::parse_record_noting(Path::new("t.jsonl"), 1, &line).unwrap();
            prop_assert_eq!(note, None);
            prop_assert_eq!(&back, &record);
            let first_bad = [(ENVIRONMENT, &own), ("judge", &judge)]
                .into_iter()
                .find_map(|(name, e)| e.check(name).err());
            if let Some(e) = first_bad {
                prop_assert_eq!(record.outcome.exit_status, ExitStatus::InfraError);
                let error = record.outcome.error.clone().unwrap();
                prop_assert_eq!(error.kind.as_str(), "evaluator");
                prop_assert_eq!(error.message, e.to_string());
            } else if record.is_final() {
                prop_assert!(crate::reward::unsound(record.reward).is_none());
            } else {
                // Sound verdicts that scoring combines past the bound (a product or a heavy
                // weight): refused too, as the evaluator's infrastructure error.
                let error = record.outcome.error.clone().unwrap();
                prop_assert!(error.message.starts_with("the reward scoring combines"), "{}", error.message);
            }
        }
    }
}
