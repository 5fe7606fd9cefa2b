//! The HTTP client behind the remote commands (`strata datasets`, `query`,
//! `import`, `policy list`, …): the server's address and token, requests
//! over hyper's HTTP/1 client, the server's `{"error":{code,message}}`
//! turned into a [`CliError`], and the exit code each error ends with.
//!
//! Exit codes: 0 ok, 1 the server refused the request (or a file could not
//! be read), 2 a usage error (clap's own, or a bad argument value), 3 the
//! server could not be reached.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value as Json;

/// The exit code of a request the server refused, or of a file error.
pub const EXIT_FAILURE: i32 = 1;
/// The exit code of a usage error.
pub const EXIT_USAGE: i32 = 2;
/// The exit code when the server cannot be reached.
pub const EXIT_CONNECTION: i32 = 3;

/// How long a connection attempt may take before the command gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An error a remote command ends with; `main` prints it on one line as
/// `error: <code>: <message>` and exits with [`CliError::exit_code`].
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server answered with an error.
    #[error("{code}: {message}")]
    Server {
        /// The HTTP status.
        status: u16,
        /// The server's stable error code.
        code: String,
        /// The server's message.
        message: String,
    },
    /// The server could not be reached, or the connection broke.
    #[error("connection: {0}")]
    Connection(String),
    /// A command-line value is wrong.
    #[error("usage: {0}")]
    Usage(String),
    /// A local file could not be read or written, or its content is bad.
    #[error("{0}")]
    Local(String),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Server { .. } | CliError::Local(_) => EXIT_FAILURE,
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Connection(_) => EXIT_CONNECTION,
        }
    }

    /// Whether sending the same request again may succeed: the connection
    /// broke, or the server is busy, not ready yet, or still processing the
    /// same idempotency key.
    pub fn is_retryable(&self) -> bool {
        match self {
            CliError::Connection(_) => true,
            CliError::Server { status, code, .. } => {
                matches!(*status, 429 | 502 | 503 | 504) || code == "idempotency_key_in_flight"
            }
            _ => false,
        }
    }
}

/// Where the server is and how to authenticate: `--url`/`STRATA_URL` and
/// `--token`/`STRATA_TOKEN`.
#[derive(Debug, Clone, clap::Args)]
pub struct Remote {
    /// The server's base URL.
    #[arg(long, env = "STRATA_URL", default_value = "http://127.0.0.1:8086")]
    pub url: String,
    /// An access token (sent as `Authorization: Bearer …`).
    #[arg(long, env = "STRATA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// A parsed server address: `http://host:port[/prefix]`.
#[derive(Debug, Clone)]
pub struct Client {
    authority: String,
    prefix: String,
    token: Option<String>,
}

/// A response whose body was read whole.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The `Idempotent-Replayed: true` header was present.
    pub replayed: bool,
    /// The body.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON (`null` when empty or not JSON).
    pub fn json(&self) -> Json {
        serde_json::from_slice(&self.body).unwrap_or(Json::Null)
    }
}

/// One HTTP/1 connection, kept alive across requests.
pub struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    /// Checks the URL and keeps the token.
    pub fn new(remote: &Remote) -> Result<Client, CliError> {
        let url = remote.url.trim();
        let rest = match url.split_once("://") {
            Some(("http", rest)) => rest,
            Some(("https", _)) => {
                return Err(CliError::Usage(format!(
                    "{url}: this client speaks plain http; reach an https server through a local proxy"
                )));
            }
            Some((scheme, _)) => return Err(CliError::Usage(format!("{url}: unknown scheme {scheme:?}"))),
            None => url,
        };
        let (authority, prefix) = match rest.find('/') {
            Some(slash) => (&rest[..slash], rest[slash..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(CliError::Usage(format!("{url}: no host")));
        }
        let authority = if authority.contains(':') && !authority.ends_with(']') {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let token = remote.token.clone().filter(|t| !t.is_empty());
        Ok(Client { authority, prefix: prefix.to_string(), token })
    }

    /// Opens a connection.
    pub async fn connect(&self) -> Result<Connection, CliError> {
        let connecting = tokio::net::TcpStream::connect(&self.authority);
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| CliError::Connection(format!("{}: timed out", self.authority)))?
            .map_err(|e| CliError::Connection(format!("{}: {e}", self.authority)))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| CliError::Connection(format!("{}: {e}", self.authority)))?;
        tokio::spawn(connection);
        Ok(Connection { sender })
    }

    /// Builds a request for `path` (below the URL's prefix).
    pub fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, CliError> {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.prefix))
            .header("host", &self.authority)
            .header("user-agent", concat!("strata-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(token) = &self.token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(Full::new(body)).map_err(|e| CliError::Usage(format!("{path}: {e}")))
    }

    /// Sends one request on a new connection and reads the whole answer;
    /// an error status becomes [`CliError::Server`].
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Answer, CliError> {
        let mut connection = self.connect().await?;
        let answer = connection.send(self.request(method, path, headers, body)?).await?;
        check(answer)
    }

    /// `GET path` answered with JSON.
    pub async fn get_json(&self, path: &str) -> Result<Json, CliError> {
        Ok(self.call(Method::GET, path, &[], Bytes::new()).await?.json())
    }

    /// `POST path` with a JSON body, answered with JSON.
    pub async fn post_json(&self, path: &str, body: &Json) -> Result<Json, CliError> {
        let headers = [("content-type", "application/json")];
        Ok(self.call(Method::POST, path, &headers, Bytes::from(body.to_string())).await?.json())
    }

    /// Sends a request and hands back the streaming response once its
    /// status is known to be a success.
    pub async fn stream(&self, request: Request<Full<Bytes>>) -> Result<Response<Incoming>, CliError> {
        let mut connection = self.connect().await?;
        let response = connection.start(request).await?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        Err(server_error(&Answer { status, replayed: false, body }))
    }
}

impl Connection {
    /// Sends a request and waits for the status and headers.
    pub async fn start(&mut self, request: Request<Full<Bytes>>) -> Result<Response<Incoming>, CliError> {
        self.sender.ready().await.map_err(|e| CliError::Connection(e.to_string()))?;
        self.sender.send_request(request).await.map_err(|e| CliError::Connection(e.to_string()))
    }

    /// Sends a request and reads the whole answer, whatever its status.
    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<Answer, CliError> {
        let response = self.start(request).await?;
        let status = response.status().as_u16();
        let replayed = response.headers().get("idempotent-replayed").is_some_and(|v| v.as_bytes() == b"true");
        let body = response.into_body().collect().await.map_err(|e| CliError::Connection(e.to_string()))?.to_bytes();
        Ok(Answer { status, replayed, body })
    }

    /// Whether the server closed this connection (it may close an idle one).
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

/// A success passes; an error status becomes [`CliError::Server`].
pub fn check(answer: Answer) -> Result<Answer, CliError> {
    if (200..300).contains(&answer.status) {
        return Ok(answer);
    }
    Err(server_error(&answer))
}

/// The server's error in an answer: its code and message, or the status
/// and body text when the body is not Strata's error object.
pub fn server_error(answer: &Answer) -> CliError {
    let json = answer.json();
    let error = &json["error"];
    match (error["code"].as_str(), error["message"].as_str()) {
        (Some(code), Some(message)) => {
            CliError::Server { status: answer.status, code: code.to_string(), message: one_line(message) }
        }
        _ => {
            let text = String::from_utf8_lossy(&answer.body);
            let text: String = text.trim().chars().take(200).collect();
            CliError::Server { status: answer.status, code: format!("http_{}", answer.status), message: text }
        }
    }
}

/// A message on one line: its lines joined, blank ones dropped.
pub fn one_line(message: &str) -> String {
    let lines: Vec<&str> = message.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines.join(" ")
}

/// A tokio runtime for one command: the remote commands are short and
/// mostly wait on the network.
pub fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::Local(format!("tokio runtime: {e}")))
}

/// Percent-encodes a path segment or query value.
pub fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>().replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(url: &str) -> Result<Client, CliError> {
        Client::new(&Remote { url: url.to_string(), token: None })
    }

    #[test]
    fn urls_parse_into_authority_and_prefix() {
        let c = client("http://127.0.0.1:8086").unwrap();
        assert_eq!((c.authority.as_str(), c.prefix.as_str()), ("127.0.0.1:8086", ""));
        let c = client("http://db.local/strata/").unwrap();
        assert_eq!((c.authority.as_str(), c.prefix.as_str()), ("db.local:80", "/strata"));
        let c = client("[::1]:9000").unwrap();
        assert_eq!(c.authority, "[::1]:9000");
        assert!(matches!(client("https://x:1"), Err(CliError::Usage(_))));
        assert!(matches!(client("ftp://x:1"), Err(CliError::Usage(_))));
        assert!(matches!(client("http:///x"), Err(CliError::Usage(_))));
    }

    #[test]
    fn server_errors_keep_code_and_message() {
        let answer = Answer {
            status: 404,
            replayed: false,
            body: Bytes::from_static(br#"{"error":{"code":"not_found","message":"no dataset x"}}"#),
        };
        let error = server_error(&answer);
        assert_eq!(error.to_string(), "not_found: no dataset x");
        assert_eq!(error.exit_code(), EXIT_FAILURE);
        assert!(!error.is_retryable());
        let answer = Answer { status: 502, replayed: false, body: Bytes::from_static(b"Bad Gateway") };
        let error = server_error(&answer);
        assert_eq!(error.to_string(), "http_502: Bad Gateway");
        assert!(error.is_retryable());
    }
}
