//! Arrow Flight SQL (`server.flight_listen`) against the real binary: the
//! arrow-flight client's statements and metadata, gRPC statuses for every
//! refusal, tokens, and the InfluxDB 3 Python client's write and query.

use std::process::Command;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type};
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetTables, CommandStatementQuery, ProstMessageExt, SqlInfo};
use arrow_flight::{FlightDescriptor, Ticket};
use futures::TryStreamExt;
use prost::Message;
use tonic::transport::Channel;

use crate::sql_api::offline_token;
use crate::support::Server;

const T0: i64 = 1_767_225_600_000_000_000;

const CONFIG: &str = "[server]\nflight_listen = \"127.0.0.1:0\"\n";

/// The Flight address the server logged.
fn flight_url(server: &Server) -> String {
    let log = server.log();
    let at =
        log.rfind("strata flight listening on grpc://").unwrap_or_else(|| panic!("no flight address; log:\n{log}"));
    let rest = &log[at + "strata flight listening on grpc://".len()..];
    let address: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
    format!("http://{address}")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

async fn channel(server: &Server) -> Channel {
    Channel::from_shared(flight_url(server)).unwrap().connect().await.unwrap()
}

/// Runs `sql` through Flight SQL (GetFlightInfo, then DoGet).
async fn run(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> Vec<RecordBatch> {
    let info = client.execute(sql.to_string(), None).await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    client.do_get(ticket).await.unwrap().try_collect().await.unwrap()
}

/// The gRPC status code a statement gets at its DoGet (or before).
async fn refusal(channel: Channel, token: Option<&str>, sql: &str) -> tonic::Code {
    let mut client = FlightServiceClient::new(channel);
    fn with_token<T>(token: Option<&str>, mut request: tonic::Request<T>) -> tonic::Request<T> {
        if let Some(token) = token {
            request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        request
    }
    let command = CommandStatementQuery { query: sql.to_string(), transaction_id: None };
    let descriptor = FlightDescriptor::new_cmd(command.as_any().encode_to_vec());
    let info = match client.get_flight_info(with_token(token, tonic::Request::new(descriptor))).await {
        Ok(info) => info.into_inner(),
        Err(status) => return status.code(),
    };
    let ticket: Ticket = info.endpoint[0].ticket.clone().unwrap();
    match client.do_get(with_token(token, tonic::Request::new(ticket))).await {
        Err(status) => status.code(),
        Ok(stream) => match stream.into_inner().try_collect::<Vec<_>>().await {
            Err(status) => status.code(),
            Ok(_) => tonic::Code::Ok,
        },
    }
}

fn loaded(name: &str) -> Server {
    let server = Server::start(name, CONFIG);
    let lines: Vec<String> = (0..30).map(|i| format!("cpu,host=h{} usage={}.5,n={i}i {}", i % 3, i, T0 + i)).collect();
    assert_eq!(server.post("/api/v3/write_lp?db=cpu", lines[..15].join("\n")).0, 204);
    server.flush();
    assert_eq!(server.post("/api/v3/write_lp?db=cpu", lines[15..].join("\n")).0, 204);
    assert_eq!(server.post("/api/v3/write_lp?db=other", format!("o v=1 {T0}")).0, 204);
    server
}

#[test]
fn statements_and_metadata_answer_over_flight_sql() {
    let server = loaded("flight-sql");
    runtime().block_on(async {
        let mut client = FlightSqlServiceClient::new(channel(&server).await);
        let batches =
            run(&mut client, "SELECT host, sum(usage) AS s, count(*) AS c FROM cpu GROUP BY host ORDER BY host").await;
        let mut rows = Vec::new();
        for batch in &batches {
            let host = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
            for i in 0..batch.num_rows() {
                rows.push((
                    host.as_string::<i32>().value(i).to_string(),
                    batch.column(1).as_primitive::<Float64Type>().value(i),
                    batch.column(2).as_primitive::<Int64Type>().value(i),
                ));
            }
        }
        let expected: Vec<(String, f64, i64)> = (0..3)
            .map(|h| {
                let mine: Vec<i64> = (0..30).filter(|i| i % 3 == h).collect();
                (format!("h{h}"), mine.iter().map(|i| *i as f64 + 0.5).sum(), mine.len() as i64)
            })
            .collect();
        assert_eq!(rows, expected);
        // An empty answer still has its columns.
        let info = client.execute("SELECT usage FROM cpu WHERE false".into(), None).await.unwrap();
        let mut stream = client.do_get(info.endpoint[0].ticket.clone().unwrap()).await.unwrap();
        let mut rows = 0;
        while let Some(batch) = stream.try_next().await.unwrap() {
            rows += batch.num_rows();
        }
        assert_eq!(rows, 0);
        assert_eq!(stream.schema().unwrap().field(0).name(), "usage");
        // Prepared statements: the handle runs the text.
        let mut prepared = client.prepare("SELECT count(*) AS n FROM cpu".into(), None).await.unwrap();
        let info = prepared.execute().await.unwrap();
        let batches: Vec<RecordBatch> =
            client.do_get(info.endpoint[0].ticket.clone().unwrap()).await.unwrap().try_collect().await.unwrap();
        assert_eq!(batches[0].column(0).as_primitive::<Int64Type>().value(0), 30);

        // GetSqlInfo: the server's name and that it is read-only.
        let info =
            client.get_sql_info(vec![SqlInfo::FlightSqlServerName, SqlInfo::FlightSqlServerReadOnly]).await.unwrap();
        let batches: Vec<RecordBatch> =
            client.do_get(info.endpoint[0].ticket.clone().unwrap()).await.unwrap().try_collect().await.unwrap();
        assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 2);
        let names = batches[0].column(0).as_primitive::<arrow::datatypes::UInt32Type>();
        assert_eq!(
            names.values().to_vec(),
            [SqlInfo::FlightSqlServerName as u32, SqlInfo::FlightSqlServerReadOnly as u32]
        );
        let values = batches[0].column(1).as_union();
        assert_eq!(values.value(0).as_string::<i32>().value(0), "Strata");
        assert!(values.value(1).as_boolean().value(0));

        // GetTables: every dataset, with its schema when asked.
        let request = CommandGetTables { include_schema: true, ..Default::default() };
        let info = client.get_tables(request).await.unwrap();
        let batches: Vec<RecordBatch> =
            client.do_get(info.endpoint[0].ticket.clone().unwrap()).await.unwrap().try_collect().await.unwrap();
        let tables = &batches[0];
        let names: Vec<&str> =
            tables.column_by_name("table_name").unwrap().as_string::<i32>().iter().flatten().collect();
        assert_eq!(names, ["cpu", "other"]);
        let schema = tables.column_by_name("table_schema").unwrap().as_binary::<i32>().value(0).to_vec();
        let schema = arrow::ipc::convert::try_schema_from_ipc_buffer(&schema).unwrap();
        let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        for column in ["time", "host", "usage", "n"] {
            assert!(columns.contains(&column), "{columns:?}");
        }
        let info = client.get_catalogs().await.unwrap();
        let batches: Vec<RecordBatch> =
            client.do_get(info.endpoint[0].ticket.clone().unwrap()).await.unwrap().try_collect().await.unwrap();
        assert_eq!(batches[0].column(0).as_string::<i32>().value(0), "strata");

        // Refusals as gRPC statuses.
        let cases = [
            ("SELECT nope FROM cpu", tonic::Code::InvalidArgument),
            ("SELECT 1; SELECT 2", tonic::Code::PermissionDenied),
            ("SET threads = 1", tonic::Code::PermissionDenied),
            ("SELECT * FROM read_csv('/etc/passwd')", tonic::Code::PermissionDenied),
            ("SELECT count(*) FROM cpu", tonic::Code::Ok),
        ];
        for (sql, code) in cases {
            assert_eq!(refusal(channel(&server).await, None, sql).await, code, "{sql}");
        }
    });
}

#[test]
fn flight_sql_takes_the_same_tokens_and_scopes_as_http() {
    let mut server = loaded("flight-auth");
    server.terminate();
    let reader = offline_token(&server, "reader", &["read:cpu"]);
    server.start_again();
    runtime().block_on(async {
        let count = "SELECT count(*) FROM cpu";
        assert_eq!(refusal(channel(&server).await, None, count).await, tonic::Code::Unauthenticated);
        assert_eq!(refusal(channel(&server).await, Some("strata_0000"), count).await, tonic::Code::Unauthenticated);
        assert_eq!(refusal(channel(&server).await, Some(&reader), count).await, tonic::Code::Ok);
        let other = "SELECT count(*) FROM other";
        assert_eq!(refusal(channel(&server).await, Some(&reader), other).await, tonic::Code::PermissionDenied);
        // GetTables lists only what the token may read.
        let mut client = FlightSqlServiceClient::new(channel(&server).await);
        client.set_token(reader.clone());
        let info = client.get_tables(CommandGetTables::default()).await.unwrap();
        let batches: Vec<RecordBatch> =
            client.do_get(info.endpoint[0].ticket.clone().unwrap()).await.unwrap().try_collect().await.unwrap();
        let names: Vec<&str> =
            batches[0].column_by_name("table_name").unwrap().as_string::<i32>().iter().flatten().collect();
        assert_eq!(names, ["cpu"]);
    });
}

#[test]
fn flight_with_server_tls_is_refused_at_start() {
    let config =
        "[server]\nflight_listen = \"127.0.0.1:0\"\n[server.tls]\ncert_path = \"c.pem\"\nkey_path = \"k.pem\"\n";
    let error = strata::config::Config::parse(config).unwrap_err().to_string();
    assert!(error.contains("flight_listen") && error.contains("TLS"), "{error}");
}

/// The InfluxDB 3 Python client, from the venv `.ci/run` installs.
fn python() -> std::path::PathBuf {
    let venv = std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/strata-venv/bin/python");
    let check = Command::new(&venv).args(["-c", "import influxdb_client_3, pyarrow"]).output();
    assert!(
        check.as_ref().is_ok_and(|o| o.status.success()),
        "influxdb3-python is missing from {}: run .ci/run's install step ({check:?})",
        venv.display()
    );
    venv
}

const CLIENT: &str = r#"
import json, sys
from influxdb_client_3 import InfluxDBClient3, Point, WritePrecision
http, flight_port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3]
client = InfluxDBClient3(host=http, token=token, database="py", query_port_overwrite=flight_port)
client.write(record=[f"py,host=h{i % 2} v={i}.25,n={i}i {1767225600 + i}" for i in range(10)],
             write_precision=WritePrecision.S)
client.write(record=Point("py").tag("host", "p").field("v", 99.5).field("n", 99).time(1767225700, WritePrecision.S))
table = client.query("SELECT host, v, n, epoch_ns(time) AS t FROM py ORDER BY t", language="sql", mode="all")
print(json.dumps(table.to_pylist()))
"#;

#[test]
fn the_influxdb3_python_client_writes_and_queries() {
    let python = python();
    let mut server = Server::start("flight-influxdb3", CONFIG);
    server.terminate();
    let token = offline_token(&server, "py", &["read:py", "write:py"]);
    server.start_again();
    let flight_port = flight_url(&server).rsplit(':').next().unwrap().to_string();
    let output = Command::new(python).args(["-c", CLIENT, &server.url, &flight_port, &token]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    let mut expected: Vec<serde_json::Value> = (0..10)
        .map(|i| {
            serde_json::json!({ "host": format!("h{}", i % 2), "v": i as f64 + 0.25, "n": i,
                "t": (1_767_225_600 + i) * 1_000_000_000i64 })
        })
        .collect();
    expected.push(serde_json::json!({ "host": "p", "v": 99.5, "n": 99, "t": 1_767_225_700_000_000_000i64 }));
    assert_eq!(rows, expected);
}
