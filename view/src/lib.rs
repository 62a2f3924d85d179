//! trawl-view: looking at runs. [`report`] renders `trawl report`'s self-contained HTML file;
//! [`Viewer`] is `trawl view`, a local web application to browse runs. The server (axum, on
//! 127.0.0.1) keeps an index of every rollout and does the filtering, sorting and paging, so
//! the page only ever holds one page of rows and the rollouts it opens; the page is one HTML
//! file with its script inline (no network requests beyond this server). Labels a reviewer
//! makes are appended to the run's `labels.jsonl`, which `trawl export --labels` reads.

pub mod index;
mod query;
pub mod report;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use trawl_core::labels::{self, Label, Verdict};
use trawl_core::store::StoreError;

pub use index::RunIndex;
use query::{Filter, ListCache};

const PAGE: &str = include_str!("page.html");

/// The runs being viewed, shared by the request handlers.
#[derive(Clone)]
pub struct Viewer {
    runs: Arc<Vec<RwLock<RunIndex>>>,
    cache: Arc<Mutex<ListCache>>,
    /// The address served, for the Host and Origin checks.
    addr: Arc<Mutex<Option<SocketAddr>>>,
}

/// An answer that is the request's fault (400), the run directory's (409) or the server's (500),
/// as JSON `{"error": …}`.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn bad_request(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

impl Viewer {
    /// Indexes each run (a run directory or a trajectories file).
    pub fn open(runs: &[PathBuf]) -> Result<Self, String> {
        let mut indexed = Vec::new();
        for r in runs {
            indexed.push(RwLock::new(RunIndex::open(r)?));
        }
        Ok(Viewer {
            runs: Arc::new(indexed),
            cache: Arc::new(Mutex::new(ListCache::default())),
            addr: Arc::new(Mutex::new(None)),
        })
    }

    /// How many rollouts are indexed, over all runs.
    pub fn rollouts(&self) -> usize {
        self.runs
            .iter()
            .map(|r| r.read().map(|r| r.entries.len()).unwrap_or(0))
            .sum()
    }

    /// Lines left out of the index (damaged), each named by file and line.
    pub fn damaged(&self) -> Vec<String> {
        self.runs
            .iter()
            .flat_map(|r| r.read().map(|r| r.damaged.clone()).unwrap_or_default())
            .collect()
    }

    /// The application's routes.
    pub fn router(self) -> Router {
        Router::new()
            .route("/", get(page))
            .route("/api/runs", get(runs))
            .route("/api/rollouts", get(list))
            .route("/api/rollouts/{run}/{index}", get(open))
            .route("/api/rollouts/{run}/{index}/label", post(label))
            .layer(axum::middleware::from_fn_with_state(self.clone(), guard))
            .with_state(self)
    }

    /// Serves on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        *self.addr.lock().expect("address lock") = listener.local_addr().ok();
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }

    fn refresh(&self) -> Result<(), ApiError> {
        for run in self.runs.iter() {
            let mut r = run.write().map_err(internal)?;
            r.refresh().map_err(internal)?;
        }
        Ok(())
    }

    fn run(&self, i: usize) -> Result<&RwLock<RunIndex>, ApiError> {
        self.runs.get(i).ok_or_else(|| {
            bad_request(format!(
                "no run number {i}; runs are 0..{}",
                self.runs.len()
            ))
        })
    }
}

/// Refuses requests that did not come from a page of this server: a Host other than the
/// loopback address served (DNS rebinding), a cross-site Origin, or a label sent as anything
/// but JSON (a form another site could post).
async fn guard(
    State(v): State<Viewer>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let addr = *v.addr.lock().expect("address lock");
    if let Some(addr) = addr {
        let port = addr.port();
        let ok_host = |h: &str| {
            [
                format!("127.0.0.1:{port}"),
                format!("localhost:{port}"),
                format!("[::1]:{port}"),
            ]
            .iter()
            .any(|a| a == h)
        };
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        if !ok_host(host) {
            return (
                StatusCode::FORBIDDEN,
                "trawl view answers only on its loopback address",
            )
                .into_response();
        }
        if let Some(origin) = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|h| h.to_str().ok())
        {
            let same = origin.strip_prefix("http://").is_some_and(ok_host);
            if !same {
                return (StatusCode::FORBIDDEN, "cross-site requests are refused").into_response();
            }
        }
    }
    if req.method() == axum::http::Method::POST {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|h| h.to_str().ok())
            .is_some_and(is_json);
        if !json {
            return bad_request("send the label as JSON (Content-Type: application/json)")
                .into_response();
        }
    }
    next.run(req).await
}

/// Whether a Content-Type is JSON's media type: exactly `application/json` (any case), with or
/// without parameters (`; charset=utf-8`). Not a longer type that starts the same
/// (`application/jsonp`), which a cross-site form or script could send.
fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
}

async fn page() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], Html(PAGE))
}

/// The runs, their sizes and what the filters can choose from.
async fn runs(State(v): State<Viewer>) -> Result<Json<Value>, ApiError> {
    v.refresh()?;
    let mut runs = Vec::new();
    let mut facets = query::Facets::default();
    for (i, run) in v.runs.iter().enumerate() {
        let r = run.read().map_err(internal)?;
        facets.add(&r);
        runs.push(json!({
            "run": i,
            "name": r.name,
            "file": r.file.display().to_string(),
            "labels_file": r.dir.join(labels::LABELS).display().to_string(),
            "rollouts": r.entries.len(),
            "damaged": r.damaged,
            "accepted": r.labels.count(Verdict::Accept),
            "rejected": r.labels.count(Verdict::Reject),
            "labels_error": r.labels_error,
        }));
    }
    Ok(Json(json!({ "runs": runs, "facets": facets })))
}

/// One page of the rollouts the filter selects.
async fn list(
    State(v): State<Viewer>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    v.refresh()?;
    let filter = Filter::parse(&params).map_err(bad_request)?;
    let mut guards = Vec::new();
    for run in v.runs.iter() {
        guards.push(run.read().map_err(internal)?);
    }
    let runs: Vec<&RunIndex> = guards.iter().map(|g| &**g).collect();
    let ids = {
        let mut cache = v.cache.lock().map_err(internal)?;
        cache.select(&runs, &filter).map_err(internal)?
    };
    let page: Vec<Value> = ids
        .iter()
        .skip(filter.offset)
        .take(filter.limit)
        .map(|&(run, i)| summary(runs[run], run, i))
        .collect();
    Ok(Json(json!({
        "total": ids.len(),
        "offset": filter.offset,
        "limit": filter.limit,
        "rollouts": page,
    })))
}

fn summary(run: &RunIndex, run_no: usize, i: usize) -> Value {
    let e = &run.entries[i];
    let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
    v["id"] = json!(format!("{run_no}/{i}"));
    v["run"] = json!(run_no);
    v["index"] = json!(i);
    v["outcome"] = json!(e.outcome());
    v["label"] = label_json(run.label(i));
    v
}

fn label_json(l: Option<&Label>) -> Value {
    match l {
        Some(l) => json!({ "verdict": l.verdict, "note": l.note, "at": l.at }),
        None => Value::Null,
    }
}

/// One rollout, whole, with its label and the other rollouts of its task (in every run).
async fn open(
    State(v): State<Viewer>,
    Path((run_no, i)): Path<(usize, usize)>,
) -> Result<Json<Value>, ApiError> {
    v.refresh()?;
    let run = v.run(run_no)?.read().map_err(internal)?;
    if i >= run.entries.len() {
        return Err(bad_request(format!(
            "run {run_no} has {} rollouts; there is no number {i}",
            run.entries.len()
        )));
    }
    let record = run.record(i).map_err(internal)?;
    let key = run.entries[i].key.clone();
    let line = run.entries[i].line;
    let label = label_json(run.label(i));
    drop(run);
    let mut siblings = Vec::new();
    for (other_no, other) in v.runs.iter().enumerate() {
        let other = other.read().map_err(internal)?;
        for (j, e) in other.entries.iter().enumerate() {
            if e.key.task == key.task
                && e.key.environment == key.environment
                && (other_no, j) != (run_no, i)
            {
                siblings.push(summary(&other, other_no, j));
                if siblings.len() >= 200 {
                    break;
                }
            }
        }
    }
    Ok(Json(json!({
        "id": format!("{run_no}/{i}"),
        "run": run_no,
        "index": i,
        "line": line,
        "label": label,
        "record": record,
        "siblings": siblings,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelBody {
    verdict: String,
    #[serde(default)]
    note: String,
}

/// Records a reviewer's decision in the run's `labels.jsonl`.
async fn label(
    State(v): State<Viewer>,
    Path((run_no, i)): Path<(usize, usize)>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let body: LabelBody = serde_json::from_slice(&body).map_err(|e| {
        bad_request(format!(
            "the label is not {{\"verdict\": \"accept\"|\"reject\"|\"clear\", \"note\": \"…\"}}: {e}"
        ))
    })?;
    let Some(verdict) = Verdict::parse(&body.verdict) else {
        return Err(bad_request(format!(
            "verdict `{}`: give accept, reject or clear",
            body.verdict
        )));
    };
    if body.note.len() > 20_000 {
        return Err(bad_request("the note is longer than 20,000 bytes"));
    }
    let mut run = v.run(run_no)?.write().map_err(internal)?;
    let Some(entry) = run.entries.get(i) else {
        return Err(bad_request(format!(
            "run {run_no} has {} rollouts; there is no number {i}",
            run.entries.len()
        )));
    };
    let label = Label {
        key: entry.key.clone(),
        verdict,
        note: body.note.trim().to_string(),
        at: trawl_core::engine::now_rfc3339(),
    };
    let file = labels::append(&run.dir, &label).map_err(|e| match e {
        // A planted link or the like: the run directory's state, not a fault of the server.
        StoreError::Refused { .. } => ApiError(StatusCode::CONFLICT, e.to_string()),
        e => internal(e),
    })?;
    run.reload_labels();
    if let Some(e) = &run.labels_error {
        return Err(internal(e));
    }
    Ok(Json(json!({
        "label": label_json(run.label(i)),
        "file": file.display().to_string(),
    })))
}
