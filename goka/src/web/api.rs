//! The JSON API behind the pages.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;

use super::{ComponentStats, Monitor, QueryError};

/// `GET /api/components`: every component's figures.
pub(super) async fn components(State(monitor): State<Monitor>) -> Json<Vec<ComponentStats>> {
    Json(monitor.stats())
}

/// `GET /api/query?table=T&key=K`: the row as JSON; 404 for an unknown table, 400 for a
/// missing, too long or undecodable key.
pub(super) async fn query(
    State(monitor): State<Monitor>,
    Query(params): Query<HashMap<String, String>>,
) -> (StatusCode, Json<serde_json::Value>) {
    let (Some(table), Some(key)) = (params.get("table"), params.get("key")) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({
                "error": "give both `table` and `key`, e.g. /api/query?table=my-group-table&key=alice",
                "tables": monitor.tables(),
            })),
        );
    };
    match monitor.query(table, key) {
        Ok(value) => (
            StatusCode::OK,
            Json(serde_json::json!({
                "table": table,
                "key": key,
                "found": value.is_some(),
                "value": value,
            })),
        ),
        Err(error) => (
            status_of(&error),
            Json(serde_json::json!({ "error": error.to_string() })),
        ),
    }
}

/// `GET /api/components/{name}/history`: the samples the charts of the component draw;
/// 404 for an unknown name.
pub(super) async fn history(
    State(monitor): State<Monitor>,
    Path(name): Path<String>,
) -> (StatusCode, Json<serde_json::Value>) {
    let found = monitor.history(&name);
    if found.is_empty() {
        return (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": format!("no component is named {name:?}") })),
        );
    }
    let found: Vec<_> = found
        .into_iter()
        .map(|(kind, series)| serde_json::json!({ "kind": kind, "name": name, "history": series }))
        .collect();
    (StatusCode::OK, Json(serde_json::json!(found)))
}

/// `GET /api/rows?table=T[&prefix=P][&from=A][&to=B][&after=HEX][&limit=N]`: a page of
/// rows in key order; `next` is the `after` of the next page.
pub(super) async fn rows(
    State(monitor): State<Monitor>,
    Query(params): Query<HashMap<String, String>>,
) -> (StatusCode, Json<serde_json::Value>) {
    let Some(table) = params.get("table") else {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({
                "error": "give `table`, e.g. /api/rows?table=my-group-table&prefix=a",
                "tables": monitor.tables(),
            })),
        );
    };
    let browse = match super::browse::Browse::from_params(&params) {
        Ok(browse) => browse,
        Err(error) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({ "error": error })),
            )
        }
    };
    match monitor.rows(table, &browse) {
        Ok(page) => (StatusCode::OK, Json(serde_json::json!(page))),
        Err(error) => (
            status_of(&error),
            Json(serde_json::json!({ "error": error.to_string() })),
        ),
    }
}

/// The answer status of a failed query.
pub(super) fn status_of(error: &QueryError) -> StatusCode {
    match error {
        QueryError::UnknownTable { .. } => StatusCode::NOT_FOUND,
        QueryError::KeyTooLong { .. } | QueryError::BadKey { .. } => StatusCode::BAD_REQUEST,
        QueryError::Read { .. } => StatusCode::SERVICE_UNAVAILABLE,
    }
}
