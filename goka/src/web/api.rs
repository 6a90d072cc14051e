//! The JSON API behind the pages.

use std::collections::HashMap;

use axum::extract::{Query, State};
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

/// The answer status of a failed query.
pub(super) fn status_of(error: &QueryError) -> StatusCode {
    match error {
        QueryError::UnknownTable { .. } => StatusCode::NOT_FOUND,
        QueryError::KeyTooLong { .. } | QueryError::BadKey { .. } => StatusCode::BAD_REQUEST,
        QueryError::Read { .. } => StatusCode::SERVICE_UNAVAILABLE,
    }
}
