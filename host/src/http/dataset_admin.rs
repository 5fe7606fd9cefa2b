//! Dataset administration: `PUT` (define before any write), `PATCH`
//! (change the settings that can change) and the `GET` view of a dataset
//! with its settings, partition specs and schema versions; `POST …/schema`
//! (rename, drop or cast a column).

use std::sync::Arc;

use bytes::Bytes;
use hyper::{Response, StatusCode};
use serde_json::{Value as Json, json};

use super::{Body, json_response};
use crate::catalog::DatasetAdmin;
use crate::error::{ErrorCode, Failure};
use crate::lifecycle::Lifecycle;
use crate::names::DatasetName;
use crate::schema::SchemaChange;
use crate::store::{DatasetDefinition, DatasetState, Store};
use crate::time::rfc3339;

fn definition(body: &Bytes) -> Result<DatasetDefinition, Failure> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(DatasetDefinition::default());
    }
    serde_json::from_slice(body).map_err(|e| Failure::new(ErrorCode::InvalidJson, format!("dataset settings: {e}")))
}

fn specs(admin: &DatasetAdmin) -> Json {
    let specs = admin.specs.iter().map(|spec| {
        json!({
            "version": spec.version,
            "period": spec.period.as_str(),
            "effective_from": (spec.effective_from_ns != i64::MIN).then(|| rfc3339(spec.effective_from_ns)),
            "created_at": rfc3339(spec.created_at_ns),
        })
    });
    Json::Array(specs.collect())
}

/// The administrative view: settings (and where each comes from), the
/// partition specs and the schema versions.
async fn view(store: &Arc<Store>, dataset: &Arc<DatasetState>) -> Result<Json, Failure> {
    let id = dataset.record.id;
    let versions = store.catalog().call(move |c| c.schema_versions(id)).await?;
    let mut answer = super::datasets::summary(store, dataset).await?;
    let settings = store.effective_settings(dataset);
    let map = answer.as_object_mut().expect("a summary is an object");
    map.insert("period".into(), settings["settings"]["period"].clone());
    for key in ["settings", "settings_source"] {
        map.insert(key.into(), settings[key].clone());
    }
    map.insert("partition_specs".into(), specs(&dataset.admin()));
    let versions = versions.iter().map(|v| {
        json!({
            "version": v.schema.version,
            "created_at": rfc3339(v.created_at_ns),
            "change": v.schema.alterations.change,
            "columns": v.schema.columns.iter().map(|c| json!({ "name": c.name, "kind": c.kind.as_str() })).collect::<Vec<_>>(),
        })
    });
    map.insert("schema_versions".into(), Json::Array(versions.collect()));
    Ok(answer)
}

/// `GET /v1/datasets/{ds}`.
pub(super) async fn show(store: &Arc<Store>, raw: &str) -> Result<Response<Body>, Failure> {
    let dataset = super::datasets::find(store, raw)?;
    Ok(json_response(StatusCode::OK, &view(store, &dataset).await?))
}

/// `PUT /v1/datasets/{ds}`: 201 when created, 200 when it exists with the
/// same settings, 409 `dataset_exists` otherwise.
pub(super) async fn put(store: &Arc<Store>, raw: &str, body: Bytes) -> Result<Response<Body>, Failure> {
    let name = DatasetName::parse(raw).map_err(|m| Failure::new(ErrorCode::InvalidDatasetName, m))?;
    let (dataset, created) = store.define_dataset(&name, definition(&body)?).await?;
    let mut answer = view(store, &dataset).await?;
    answer["created"] = json!(created);
    Ok(json_response(if created { StatusCode::CREATED } else { StatusCode::OK }, &answer))
}

/// `PATCH /v1/datasets/{ds}`: changes settings; a new period answers the
/// spec it became, with the instant it applies from.
pub(super) async fn patch(store: &Arc<Store>, raw: &str, body: Bytes) -> Result<Response<Body>, Failure> {
    let dataset = super::datasets::find(store, raw)?;
    store.change_dataset(&dataset, definition(&body)?).await?;
    Ok(json_response(StatusCode::OK, &view(store, &dataset).await?))
}

/// `DELETE /v1/datasets/{ds}[?dry=true]`.
pub(super) async fn delete(lifecycle: &Arc<Lifecycle>, raw: &str, dry: bool) -> Result<Response<Body>, Failure> {
    let name = DatasetName::parse(raw).map_err(|m| Failure::new(ErrorCode::InvalidDatasetName, m))?;
    let answer = lifecycle.delete_dataset(name.as_str(), dry).await?;
    Ok(json_response(StatusCode::OK, &answer))
}

/// `POST /v1/datasets/{ds}/schema`: one schema change (`op` rename, drop
/// or cast), or with `"dry": true` what it would change.
pub(super) async fn change_schema(store: &Arc<Store>, raw: &str, body: Bytes) -> Result<Response<Body>, Failure> {
    let dataset = super::datasets::find(store, raw)?;
    let invalid = |e: serde_json::Error| Failure::new(ErrorCode::InvalidJson, format!("schema change: {e}"));
    let mut request: serde_json::Map<String, Json> = serde_json::from_slice(&body).map_err(invalid)?;
    let dry = match request.remove("dry") {
        None => false,
        Some(Json::Bool(dry)) => dry,
        Some(other) => {
            return Err(Failure::new(ErrorCode::BadRequest, format!("dry must be true or false, not {other}")));
        }
    };
    let change: SchemaChange = serde_json::from_value(Json::Object(request)).map_err(invalid)?;
    let answer = store.change_schema(&dataset, change, dry).await?;
    Ok(json_response(StatusCode::OK, &answer))
}
