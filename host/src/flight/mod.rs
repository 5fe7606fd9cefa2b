//! Arrow Flight SQL on its own port (`server.flight_listen`): statements,
//! prepared statements and the metadata clients ask for on connecting
//! (`GetSqlInfo`, `GetCatalogs`, `GetDbSchemas`, `GetTables`,
//! `GetTableTypes`), plus the InfluxDB 3 clients' plain Flight ticket
//! (`{"database":…,"sql_query":…,"query_type":"sql"}`).
//!
//! **Invariant:** every statement runs through `QueryEngine::sql`, the
//! locked-down engine `/v1/sql` uses (one read-only query, timeouts, the
//! concurrency limit), with the datasets the caller's token may read; the
//! token is checked by the same code as HTTP's (`Authenticate`, built by
//! `server` from the token cache). Nothing here reads files or the catalog.

mod metadata;

use std::pin::Pin;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::buffer::Buffer;
use arrow::ipc::reader::StreamDecoder;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult,
    Any, CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandPreparedStatementQuery, CommandStatementQuery, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest,
    HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use prost::Message;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::error::{ErrorCode, Failure};
use crate::query::output::OutputFormat;
use crate::query::{DatasetFilter, QueryEngine};
use crate::store::Store;

/// Checks a request's credentials (its metadata as HTTP headers: the
/// `authorization: Bearer <token>` the Flight clients send) and answers
/// the datasets the caller may read, or why it may not.
pub type Authenticate = Arc<dyn Fn(&hyper::HeaderMap) -> Result<DatasetFilter, Failure> + Send + Sync>;

type DoGetStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

/// The gRPC status of a failure.
pub fn status(failure: &Failure) -> Status {
    let message = failure.message.clone();
    match failure.code {
        ErrorCode::InvalidQuery | ErrorCode::BadRequest | ErrorCode::LimitExceeded => Status::invalid_argument(message),
        ErrorCode::QueryRefused | ErrorCode::Forbidden => Status::permission_denied(message),
        ErrorCode::Unauthorized => Status::unauthenticated(message),
        ErrorCode::QueryBusy | ErrorCode::QueryTooLarge => Status::resource_exhausted(message),
        ErrorCode::QueryTimeout => Status::deadline_exceeded(message),
        ErrorCode::NotFound => Status::not_found(message),
        ErrorCode::NotReady => Status::unavailable(message),
        _ => Status::internal(message),
    }
}

/// The Flight SQL service.
pub struct FlightSql {
    store: Arc<Store>,
    engine: Arc<QueryEngine>,
    authenticate: Authenticate,
}

impl FlightSql {
    /// A service answering from `store` through `engine`.
    pub fn new(store: Arc<Store>, engine: Arc<QueryEngine>, authenticate: Authenticate) -> FlightSql {
        FlightSql { store, engine, authenticate }
    }

    fn readable<T>(&self, request: &Request<T>) -> Result<DatasetFilter, Status> {
        let headers = request.metadata().clone().into_headers();
        (self.authenticate)(&headers).map_err(|failure| status(&failure))
    }

    /// Runs `sql` and streams its record batches as Flight data.
    async fn execute(&self, sql: &str, readable: DatasetFilter) -> Result<Response<DoGetStream>, Status> {
        let result = self.engine.sql(&self.store, sql, OutputFormat::Arrow, readable).await.map_err(|f| status(&f))?;
        let batches = decoded(result.chunks);
        let encoded = FlightDataEncoderBuilder::new().build(batches).map(|item| item.map_err(Status::from));
        Ok(Response::new(Box::pin(encoded)))
    }

    fn statement_info(&self, ticket: impl ProstMessageExt, descriptor: FlightDescriptor) -> Response<FlightInfo> {
        let ticket = Ticket::new(ticket.as_any().encode_to_vec());
        let info = FlightInfo::new()
            .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
            .with_descriptor(descriptor)
            .with_ordered(true);
        Response::new(info)
    }

    fn batch_stream(batch: Result<RecordBatch, Failure>) -> Result<Response<DoGetStream>, Status> {
        let batch = batch.map_err(|f| status(&f))?;
        let stream = futures::stream::iter([Ok(batch)]);
        Ok(Response::new(Box::pin(FlightDataEncoderBuilder::new().build(stream).map(|r| r.map_err(Status::from)))))
    }
}

/// Record batches decoded from the engine's Arrow IPC chunks as they come;
/// a failure mid-answer ends the stream with an error, never cleanly.
fn decoded(mut chunks: mpsc::Receiver<Result<Bytes, Failure>>) -> BoxStream<'static, Result<RecordBatch, FlightError>> {
    let (sender, receiver) = mpsc::channel::<Result<RecordBatch, FlightError>>(4);
    tokio::spawn(async move {
        let mut decoder = StreamDecoder::new();
        let mut sent = false;
        while let Some(chunk) = chunks.recv().await {
            let mut buffer = match chunk {
                Ok(chunk) => Buffer::from(chunk.to_vec()),
                Err(failure) => {
                    let _ = sender.send(Err(FlightError::Tonic(Box::new(status(&failure))))).await;
                    return;
                }
            };
            while !buffer.is_empty() {
                match decoder.decode(&mut buffer) {
                    Ok(Some(batch)) => {
                        sent = true;
                        if sender.send(Ok(batch)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => {}
                    Err(error) => {
                        let _ = sender.send(Err(FlightError::Arrow(error))).await;
                        return;
                    }
                }
            }
        }
        // An empty answer still tells its schema.
        if !sent && let Some(schema) = decoder.schema() {
            let _ = sender.send(Ok(RecordBatch::new_empty(schema))).await;
        }
    });
    futures::stream::unfold(receiver, |mut receiver| async move { receiver.recv().await.map(|item| (item, receiver)) })
        .boxed()
}

fn sql_of(handle: &[u8]) -> Result<String, Status> {
    String::from_utf8(handle.to_vec()).map_err(|_| Status::invalid_argument("the statement handle is not UTF-8"))
}

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    /// No handshake is needed: every call carries its bearer token.
    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>, Status> {
        self.readable(&request)?;
        let answer = HandshakeResponse { protocol_version: 0, payload: Bytes::new() };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(answer)]))))
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.readable(&request)?;
        let ticket = TicketStatementQuery { statement_handle: query.query.into_bytes().into() };
        Ok(self.statement_info(ticket, request.into_inner()))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let readable = self.readable(&request)?;
        self.execute(&sql_of(&ticket.statement_handle)?, readable).await
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.readable(&request)?;
        Ok(self.statement_info(query, request.into_inner()))
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let readable = self.readable(&request)?;
        self.execute(&sql_of(&query.prepared_statement_handle)?, readable).await
    }

    /// A prepared statement's handle is its text; it takes no parameters.
    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        self.readable(&request)?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: query.query.into_bytes().into(),
            ..Default::default()
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        self.readable(&request)?;
        Ok(())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.readable(&request)?;
        Ok(self.statement_info(query, request.into_inner()))
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.readable(&request)?;
        FlightSql::batch_stream(metadata::sql_info(query))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.readable(&request)?;
        Ok(self.statement_info(query, request.into_inner()))
    }

    async fn do_get_catalogs(
        &self,
        _query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.readable(&request)?;
        FlightSql::batch_stream(metadata::catalogs())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.readable(&request)?;
        Ok(self.statement_info(query, request.into_inner()))
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.readable(&request)?;
        FlightSql::batch_stream(metadata::schemas(query))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.readable(&request)?;
        Ok(self.statement_info(query, request.into_inner()))
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let readable = self.readable(&request)?;
        FlightSql::batch_stream(metadata::tables(&self.store, query, &readable))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.readable(&request)?;
        Ok(self.statement_info(query, request.into_inner()))
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.readable(&request)?;
        FlightSql::batch_stream(metadata::table_types(query))
    }

    async fn do_put_fallback(
        &self,
        _request: Request<PeekableFlightDataStream>,
        message: Any,
    ) -> Result<Response<Pin<Box<dyn Stream<Item = Result<PutResult, Status>> + Send>>>, Status> {
        Err(Status::permission_denied(format!("Strata's Flight SQL is read-only: {} is refused", message.type_url)))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// The InfluxDB 3 clients' ticket: plain Flight, JSON.
#[derive(Debug, serde::Deserialize)]
struct InfluxTicket {
    #[serde(default)]
    database: Option<String>,
    sql_query: String,
    #[serde(default)]
    query_type: Option<String>,
}

/// The Flight service as served: Flight SQL, and the InfluxDB 3 clients'
/// JSON tickets on `DoGet`, which Flight SQL would refuse as undecodable.
pub struct Gateway(FlightSql);

impl Gateway {
    /// Wraps the Flight SQL service.
    pub fn new(sql: FlightSql) -> Gateway {
        Gateway(sql)
    }

    /// The tonic service to serve.
    pub fn into_service(self) -> FlightServiceServer<Gateway> {
        FlightServiceServer::new(self)
    }

    async fn influx_ticket(&self, request: Request<Ticket>) -> Result<Response<DoGetStream>, Status> {
        let readable = self.0.readable(&request)?;
        let ticket: InfluxTicket = serde_json::from_slice(&request.get_ref().ticket)
            .map_err(|e| Status::invalid_argument(format!("the ticket is not an InfluxDB 3 query: {e}")))?;
        match ticket.query_type.as_deref() {
            None | Some("sql") => {}
            Some(other) => {
                return Err(Status::invalid_argument(format!(
                    "query_type {other:?} is not supported over Flight (only sql)"
                )));
            }
        }
        if let Some(database) = &ticket.database {
            // As `/api/v3/query_sql`: the database is the dataset the query is about.
            if self.0.store.dataset(database).is_none() {
                return Err(Status::not_found(format!("no dataset {database}")));
            }
            if !readable(database) {
                return Err(Status::permission_denied(format!(
                    "reading dataset {database} needs scope read:{database}"
                )));
            }
        }
        self.0.execute(&ticket.sql_query, readable).await
    }
}

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl FlightService for Gateway {
    type HandshakeStream = Stream_<HandshakeResponse>;
    type ListFlightsStream = Stream_<FlightInfo>;
    type DoGetStream = Stream_<FlightData>;
    type DoPutStream = Stream_<PutResult>;
    type DoActionStream = Stream_<arrow_flight::Result>;
    type ListActionsStream = Stream_<ActionType>;
    type DoExchangeStream = Stream_<FlightData>;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        FlightService::handshake(&self.0, request).await
    }

    async fn list_flights(&self, request: Request<Criteria>) -> Result<Response<Self::ListFlightsStream>, Status> {
        FlightService::list_flights(&self.0, request).await
    }

    async fn get_flight_info(&self, request: Request<FlightDescriptor>) -> Result<Response<FlightInfo>, Status> {
        FlightService::get_flight_info(&self.0, request).await
    }

    async fn poll_flight_info(&self, request: Request<FlightDescriptor>) -> Result<Response<PollInfo>, Status> {
        FlightService::poll_flight_info(&self.0, request).await
    }

    async fn get_schema(&self, request: Request<FlightDescriptor>) -> Result<Response<SchemaResult>, Status> {
        FlightService::get_schema(&self.0, request).await
    }

    async fn do_get(&self, request: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        if request.get_ref().ticket.trim_ascii_start().first() == Some(&b'{') {
            return self.influx_ticket(request).await;
        }
        FlightService::do_get(&self.0, request).await
    }

    async fn do_put(&self, request: Request<Streaming<FlightData>>) -> Result<Response<Self::DoPutStream>, Status> {
        FlightService::do_put(&self.0, request).await
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        FlightService::do_exchange(&self.0, request).await
    }

    async fn do_action(&self, request: Request<Action>) -> Result<Response<Self::DoActionStream>, Status> {
        FlightService::do_action(&self.0, request).await
    }

    async fn list_actions(&self, request: Request<Empty>) -> Result<Response<Self::ListActionsStream>, Status> {
        FlightService::list_actions(&self.0, request).await
    }
}

/// Serves Flight on `listener` until `shutdown` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: Gateway,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    // Without TCP_NODELAY, Nagle and delayed ACKs add ~40 ms per call.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(service.into_service())
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
}
