//! The master's HTTP dashboard (`--http HOST:PORT`): pages for people, a JSON API behind
//! every page, and Prometheus `/metrics`.
//!
//! | page                 | JSON                      |
//! |----------------------|---------------------------|
//! | `/`                  | `/api/overview`           |
//! | `/chunkservers`      | `/api/chunkservers`       |
//! | `/chunkservers/{id}` | `/api/chunkservers/{id}`  |
//! | `/blocks`            | `/api/blocks`             |
//! | `/metrics` (text)    |                           |
//!
//! Every answer is built from one short hold of the state lock (one pass over the chunk
//! table for the health counts), the same data `ClusterStatus` returns. Read-only: nothing
//! here changes the cluster, so it needs no authentication beyond listening on loopback by
//! default.

mod html;
pub mod json;
mod prom;

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::error::MasterError;
use crate::state::Master;

pub use html::human_bytes;
pub use json::status_json;

type Shared = Arc<Master>;

fn json_response(v: &Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

async fn overview_page(State(m): State<Shared>) -> Html<String> {
    Html(html::overview(&json::overview_json(&m)))
}

async fn overview_api(State(m): State<Shared>) -> Response {
    json_response(&json::overview_json(&m))
}

fn servers(m: &Master) -> Vec<Value> {
    m.cluster_status()
        .chunkservers
        .iter()
        .map(json::server_json)
        .collect()
}

async fn servers_page(State(m): State<Shared>) -> Html<String> {
    Html(html::chunkservers(&servers(&m)))
}

async fn servers_api(State(m): State<Shared>) -> Response {
    json_response(&Value::Array(servers(&m)))
}

async fn server_page(State(m): State<Shared>, Path(id): Path<u64>) -> Response {
    match json::server_detail_json(&m, id) {
        Some(v) => Html(html::chunkserver(&v)).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Html(html::not_found(&format!("chunkserver {id}"))),
        )
            .into_response(),
    }
}

async fn server_api(State(m): State<Shared>, Path(id): Path<u64>) -> Response {
    match json::server_detail_json(&m, id) {
        Some(v) => json_response(&v),
        None => (
            StatusCode::NOT_FOUND,
            json_response(&serde_json::json!({ "error": format!("chunkserver {id}: not found") })),
        )
            .into_response(),
    }
}

async fn blocks_page(State(m): State<Shared>) -> Html<String> {
    Html(html::blocks(&json::blocks_json(&m)))
}

async fn blocks_api(State(m): State<Shared>) -> Response {
    json_response(&json::blocks_json(&m))
}

async fn metrics(State(m): State<Shared>) -> Response {
    let status = m.cluster_status();
    let metrics = m.state.lock().metrics.clone();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        prom::render(&status, &metrics),
    )
        .into_response()
}

pub fn router(master: Arc<Master>) -> Router {
    Router::new()
        .route("/", get(overview_page))
        .route("/api/overview", get(overview_api))
        .route("/chunkservers", get(servers_page))
        .route("/api/chunkservers", get(servers_api))
        .route("/chunkservers/{id}", get(server_page))
        .route("/api/chunkservers/{id}", get(server_api))
        .route("/blocks", get(blocks_page))
        .route("/api/blocks", get(blocks_api))
        .route("/metrics", get(metrics))
        .with_state(master)
}

/// Serves the dashboard on `listener` until `shutdown`.
pub async fn serve(
    master: Arc<Master>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), MasterError> {
    axum::serve(listener, router(master))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(|e| MasterError::Transport(format!("dashboard: {e}")))
}
