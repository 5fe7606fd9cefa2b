//! The one mapping from a stable error code to its HTTP status: every
//! answer `http` sends for a [`Failure`](crate::error::Failure), and for the
//! partial outcomes of a write, takes its status from here.

use hyper::StatusCode;

use crate::error::ErrorCode;

/// The HTTP status an answer with `code` is sent with.
pub(crate) fn for_code(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadRequest
        | ErrorCode::InvalidJson
        | ErrorCode::InvalidLineProtocol
        | ErrorCode::PartialWrite
        | ErrorCode::SchemaConflict
        | ErrorCode::UnsupportedValue
        | ErrorCode::UnrepresentableValue
        | ErrorCode::InvalidGzip
        | ErrorCode::InvalidDatasetName
        | ErrorCode::InvalidTimestamp
        | ErrorCode::InvalidQuery
        | ErrorCode::InvalidCursor
        | ErrorCode::ConfirmationRequired => StatusCode::BAD_REQUEST,
        ErrorCode::QueryRefused => StatusCode::FORBIDDEN,
        ErrorCode::QueryTimeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::QueryBusy | ErrorCode::CompileBusy => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::QueryTooLarge => StatusCode::INSUFFICIENT_STORAGE,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotFound | ErrorCode::PolicyNotFound | ErrorCode::ColumnNotFound => StatusCode::NOT_FOUND,
        ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::PartitionReadOnly
        | ErrorCode::PartitionNotHot
        | ErrorCode::LateRowsRefused
        | ErrorCode::IdempotencyKeyInFlight
        | ErrorCode::PolicyUnavailable
        | ErrorCode::NotArchived
        | ErrorCode::CompactionDisabled
        | ErrorCode::DatasetExists
        | ErrorCode::SettingImmutable
        | ErrorCode::DatasetDeleted
        | ErrorCode::DatasetNotArchived
        | ErrorCode::ColumnRenamed
        | ErrorCode::TimeColumnFixed
        | ErrorCode::ColumnExists
        | ErrorCode::CastNotLossless
        | ErrorCode::ColumnNotArchived
        | ErrorCode::TokenExists
        | ErrorCode::GuardRailRefused => StatusCode::CONFLICT,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::IdempotencyKeyReused
        | ErrorCode::LimitExceeded
        | ErrorCode::PolicyInvalid
        | ErrorCode::PolicyLimitExceeded
        | ErrorCode::PolicyFailed => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::BufferFull => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::NotReady | ErrorCode::StorageUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
        ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        ErrorCode::TooManyConnections => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::HostNotAllowed | ErrorCode::CrossSiteRefused => StatusCode::FORBIDDEN,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
