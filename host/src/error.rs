//! Stable error codes, and the [`Failure`] a client is told about.
//!
//! Subsystems have their own typed errors and say which [`ErrorCode`] each is
//! reported under ([`Coded`]); the HTTP layer renders a [`Failure`]. Codes are
//! part of the public contract: never rename one.

use serde_json::{Value, json};

/// A stable error code. `http` maps each to its HTTP status (`http::status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request body or a parameter is not well-formed.
    BadRequest,
    /// The JSON body could not be parsed.
    InvalidJson,
    /// Line protocol could not be parsed and nothing was written.
    InvalidLineProtocol,
    /// Some lines of a line-protocol body were rejected; the others were written.
    PartialWrite,
    /// A value has a type other than the column's stored type.
    SchemaConflict,
    /// A value is of a kind Strata does not store (nested object, array).
    UnsupportedValue,
    /// A number the column's type cannot hold exactly (it would be rounded
    /// or wrapped).
    UnrepresentableValue,
    /// A `Content-Encoding: gzip` body that is not whole gzip members.
    InvalidGzip,
    /// A dataset name does not match `[a-z0-9][a-z0-9_-]{0,62}`.
    InvalidDatasetName,
    /// A timestamp is missing, malformed or outside the representable range.
    InvalidTimestamp,
    /// No bearer token was presented where one is required.
    Unauthorized,
    /// The token lacks the scope for this operation.
    Forbidden,
    /// A token of that name exists already.
    TokenExists,
    /// The dataset, partition or route does not exist.
    NotFound,
    /// The method is not allowed on this route.
    MethodNotAllowed,
    /// The target partition is sealed (not hot) and accepts no writes.
    PartitionReadOnly,
    /// An operation only hot partitions allow (unseal) on one in another tier.
    PartitionNotHot,
    /// With `late_rows = "refuse_rows"`: the rows for sealed partitions were
    /// refused (listed), the others written.
    LateRowsRefused,
    /// The same idempotency key was used with a different body.
    IdempotencyKeyReused,
    /// A request with the same idempotency key is still being processed.
    IdempotencyKeyInFlight,
    /// The body is larger than `body_bytes_max`.
    PayloadTooLarge,
    /// A per-request or per-dataset limit was exceeded.
    LimitExceeded,
    /// The write buffers are full; retry after the advertised delay.
    BufferFull,
    /// The server is starting (WAL replay) or shutting down.
    NotReady,
    /// The disk refused a write.
    StorageFull,
    /// A storage target (an object store) could not be reached; retry later.
    StorageUnavailable,
    /// A query is malformed or names something that does not exist.
    InvalidQuery,
    /// SQL tried something read-only SQL may not do (files, settings, writes).
    QueryRefused,
    /// A query ran past `query.timeout_ms`.
    QueryTimeout,
    /// Too many queries are running.
    QueryBusy,
    /// A query needed more memory than `query.memory_bytes_max`.
    QueryTooLarge,
    /// No policy of that name is loaded.
    PolicyNotFound,
    /// A policy file, component, config or version cannot be used.
    PolicyInvalid,
    /// A policy call hit one of the policy's limits (deadline, memory, fuel, output).
    PolicyLimitExceeded,
    /// A policy trapped or broke the contract (unknown partition, bad key).
    PolicyFailed,
    /// The policy has no working version to run.
    PolicyUnavailable,
    /// A restore of a partition that is not archived.
    NotArchived,
    /// A compaction request for a dataset whose compaction is switched off.
    CompactionDisabled,
    /// A `PUT` of a dataset that exists with other settings.
    DatasetExists,
    /// A change to a dataset setting that cannot change (the time column).
    SettingImmutable,
    /// A write to (or `PUT` of) a dataset being deleted.
    DatasetDeleted,
    /// A dataset delete refused: partitions with rows have no archive copy
    /// while `lifecycle.require_archive_before_delete` is on.
    DatasetNotArchived,
    /// A write to a column name that was renamed (the detail names the new one).
    ColumnRenamed,
    /// A schema change to the time column.
    TimeColumnFixed,
    /// A schema change names a column the dataset does not have.
    ColumnNotFound,
    /// A rename to a name another column (or the time column) has.
    ColumnExists,
    /// A cast that could change or lose values; the message names the pair.
    CastNotLossless,
    /// A drop with `archive: true` while rows of the dataset have no archive copy.
    ColumnNotArchived,
    /// Every compile slot for simulations stayed taken past the wait.
    CompileBusy,
    /// A request's body arrived too slowly (`server.body_read_timeout_ms`,
    /// `server.body_bytes_per_second_min`); the connection is closed.
    RequestTimeout,
    /// The server holds `server.connections_max` connections (or is out of
    /// file descriptors); the connection is answered and closed.
    TooManyConnections,
    /// The `Host` is not in `server.allowed_hosts` (DNS rebinding).
    HostNotAllowed,
    /// A cross-site request a browser could have been made to send (CSRF).
    CrossSiteRefused,
    /// A listing's `cursor` is not one that listing answered.
    InvalidCursor,
    /// A guard rail refused a manual partition operation (minimum
    /// retention, archive-before-delete, the open period, the delete budget).
    GuardRailRefused,
    /// A delete did not name the partition in its `confirm` field.
    ConfirmationRequired,
    /// An unexpected internal failure; the message says what failed.
    Internal,
}

impl ErrorCode {
    /// The stable string clients match on.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidLineProtocol => "invalid_line_protocol",
            ErrorCode::PartialWrite => "partial_write",
            ErrorCode::SchemaConflict => "schema_conflict",
            ErrorCode::UnsupportedValue => "unsupported_value",
            ErrorCode::UnrepresentableValue => "unrepresentable_value",
            ErrorCode::InvalidGzip => "invalid_gzip",
            ErrorCode::InvalidDatasetName => "invalid_dataset_name",
            ErrorCode::InvalidTimestamp => "invalid_timestamp",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TokenExists => "token_exists",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::PartitionReadOnly => "partition_read_only",
            ErrorCode::PartitionNotHot => "partition_not_hot",
            ErrorCode::LateRowsRefused => "late_rows_refused",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorCode::IdempotencyKeyInFlight => "idempotency_key_in_flight",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::BufferFull => "buffer_full",
            ErrorCode::NotReady => "not_ready",
            ErrorCode::StorageFull => "storage_full",
            ErrorCode::StorageUnavailable => "storage_unavailable",
            ErrorCode::InvalidQuery => "invalid_query",
            ErrorCode::QueryRefused => "query_refused",
            ErrorCode::QueryTimeout => "query_timeout",
            ErrorCode::QueryBusy => "query_busy",
            ErrorCode::QueryTooLarge => "query_too_large",
            ErrorCode::PolicyNotFound => "policy_not_found",
            ErrorCode::PolicyInvalid => "policy_invalid",
            ErrorCode::PolicyLimitExceeded => "policy_limit_exceeded",
            ErrorCode::PolicyFailed => "policy_failed",
            ErrorCode::PolicyUnavailable => "policy_unavailable",
            ErrorCode::NotArchived => "partition_not_archived",
            ErrorCode::CompactionDisabled => "compaction_disabled",
            ErrorCode::DatasetExists => "dataset_exists",
            ErrorCode::SettingImmutable => "setting_immutable",
            ErrorCode::DatasetDeleted => "dataset_deleted",
            ErrorCode::DatasetNotArchived => "dataset_not_archived",
            ErrorCode::ColumnRenamed => "column_renamed",
            ErrorCode::TimeColumnFixed => "time_column_fixed",
            ErrorCode::ColumnNotFound => "column_not_found",
            ErrorCode::ColumnExists => "column_exists",
            ErrorCode::CastNotLossless => "cast_not_lossless",
            ErrorCode::ColumnNotArchived => "column_not_archived",
            ErrorCode::CompileBusy => "compile_busy",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::HostNotAllowed => "host_not_allowed",
            ErrorCode::CrossSiteRefused => "cross_site_refused",
            ErrorCode::InvalidCursor => "invalid_cursor",
            ErrorCode::GuardRailRefused => "guard_rail_refused",
            ErrorCode::ConfirmationRequired => "confirmation_required",
            ErrorCode::Internal => "internal",
        }
    }
}

/// A failure as a client is told about it: a stable code, a sentence, optional
/// structured detail and a retry hint. Rendered by `http` as
/// `{"error":{"code","message",…}}`.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The stable code.
    pub code: ErrorCode,
    /// A sentence for humans naming what was wrong.
    pub message: String,
    /// Extra structured detail merged into the `error` object (e.g. rejected lines).
    pub detail: Option<Value>,
    /// Seconds after which a retry may succeed.
    pub retry_after_seconds: Option<u32>,
}

impl Failure {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Failure {
        Failure { code, message: message.into(), detail: None, retry_after_seconds: None }
    }

    /// Adds structured detail to the error body.
    pub fn with_detail(mut self, detail: Value) -> Failure {
        self.detail = Some(detail);
        self
    }

    /// Adds a `Retry-After` hint.
    pub fn with_retry_after(mut self, seconds: u32) -> Failure {
        self.retry_after_seconds = Some(seconds);
        self
    }

    /// The JSON form, `{"error":{"code","message",…detail}}`.
    pub fn body(&self) -> Value {
        let mut error = json!({ "code": self.code.as_str(), "message": self.message });
        if let (Some(Value::Object(extra)), Value::Object(map)) = (&self.detail, &mut error) {
            for (key, value) in extra {
                map.insert(key.clone(), value.clone());
            }
        }
        json!({ "error": error })
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for Failure {}

/// A typed error that knows its stable code. Each subsystem implements it for
/// its own error type; `?` then turns that error into a [`Failure`].
pub trait Coded: std::fmt::Display {
    /// The stable code this error is reported under.
    fn code(&self) -> ErrorCode;

    /// The sentence for the client; the error's `Display` unless overridden.
    fn message(&self) -> String {
        self.to_string()
    }

    /// Structured detail for the client, if any.
    fn detail(&self) -> Option<Value> {
        None
    }

    /// Seconds after which a retry may succeed, if retrying can help.
    fn retry_after_seconds(&self) -> Option<u32> {
        None
    }
}

impl<E: Coded> From<E> for Failure {
    fn from(error: E) -> Failure {
        Failure {
            code: error.code(),
            message: error.message(),
            detail: error.detail(),
            retry_after_seconds: error.retry_after_seconds(),
        }
    }
}
