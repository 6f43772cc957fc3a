//! The HTTP side: accepts connections, bounds and reads requests, routes them to a dialect and
//! a worker, and answers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{Semaphore, oneshot};

use mqtt_policy_gateway::{Config, Gateway};

use crate::Error;
use crate::metrics::{CountingSink, Metrics};
use crate::pool::Pool;
use crate::rabbitmq::{self, Dialect};
use crate::{Reply, emqx, vernemq};

/// How the service runs. [`Options::default`] gives the defaults.
#[derive(Debug, Clone)]
pub struct Options {
    /// Address to listen on; loopback by default (`127.0.0.1:8790`).
    pub listen: SocketAddr,
    /// A Unix socket to listen on as well (none by default), bounded like TCP (the same
    /// connection bound, header and request timeouts, body size).
    pub unix: Option<std::path::PathBuf>,
    /// Worker threads, each with its own policy instances; default: the available cores.
    pub workers: usize,
    /// Requests waiting per worker before the service answers 503 `deny`.
    pub queue: usize,
    /// A shared secret every decision (and `/metrics`) request must carry: in the header
    /// `x-mqtt-policy-secret`, as `authorization: Bearer SECRET`, or as the first path
    /// segment (`/SECRET/rabbitmq/user`, for brokers such as RabbitMQ that cannot send headers).
    pub secret: Option<String>,
    /// Largest request body, in bytes (default 64 KiB: a password or token plus names).
    pub max_body: usize,
    /// Longest a request may take from its headers to its answer (body read, queueing and the
    /// policy call; default 2 s); past it the answer is 503 `deny`.
    pub request_timeout: Duration,
    /// Longest the headers of a request may take to arrive (default 5 s).
    pub header_timeout: Duration,
    /// Most connections open at once (default 1024); later ones are closed at once.
    pub max_connections: usize,
    /// A session without any request for this long ends (default 1 h): RabbitMQ never says
    /// that a client disconnected.
    pub idle_session: Duration,
    /// The RabbitMQ dialect's settings.
    pub rabbitmq: Dialect,
    /// The VerneMQ dialect's settings.
    pub vernemq: vernemq::Dialect,
}

/// The default listening address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8790";

impl Default for Options {
    fn default() -> Options {
        Options {
            listen: DEFAULT_LISTEN.parse().expect("a valid address"),
            unix: None,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            queue: 1024,
            secret: None,
            max_body: 64 << 10,
            request_timeout: Duration::from_secs(2),
            header_timeout: Duration::from_secs(5),
            max_connections: 1024,
            idle_session: Duration::from_secs(3600),
            rabbitmq: Dialect::default(),
            vernemq: vernemq::Dialect::default(),
        }
    }
}

/// What every request handler shares.
struct State {
    pool: Pool,
    metrics: Arc<Metrics>,
    options: Options,
}

/// A running service; stopped when dropped.
pub struct Service {
    addr: SocketAddr,
    unix: Option<std::path::PathBuf>,
    gateway: Arc<Gateway>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Service {
    /// Starts the gateway for `config` (its events counted in `/metrics`), the workers, and the
    /// listener; returns once the service accepts connections.
    pub fn start(config: Config, options: Options) -> Result<Service, Error> {
        if options.secret.as_deref().is_some_and(|s| s.is_empty() || s.contains(['/', '?', '#'])) {
            return Err(Error::Options("the secret must be non-empty and contain no / ? #".into()));
        }
        let metrics = Arc::new(Metrics::default());
        let lines = config.events.open()?;
        let sink = Arc::new(CountingSink { metrics: metrics.clone(), next: lines });
        let gateway = Gateway::with_sink(config, Some(sink))?;
        let pool =
            Pool::start(&gateway, options.workers, options.queue, options.idle_session).map_err(Error::Threads)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.workers.clamp(1, 4))
            .thread_name("serve-io")
            .enable_io()
            .enable_time()
            .build()
            .map_err(Error::Threads)?;
        let std_listener = std::net::TcpListener::bind(options.listen)
            .map_err(|source| Error::Listen { addr: options.listen, source })?;
        std_listener.set_nonblocking(true).map_err(Error::Threads)?;
        let addr = std_listener.local_addr().map_err(Error::Threads)?;
        let unix = match &options.unix {
            None => None,
            Some(path) => Some(bind_unix(path)?),
        };
        let (tx, rx) = oneshot::channel();
        let unix_path = options.unix.clone();
        let state = Arc::new(State { pool, metrics, options });
        let thread = std::thread::Builder::new()
            .name("serve".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let unix = unix.map(tokio::net::UnixListener::from_std).transpose();
                    match (tokio::net::TcpListener::from_std(std_listener), unix) {
                        (Ok(tcp), Ok(unix)) => accept(Listeners { tcp, unix }, state, rx).await,
                        (Err(e), _) | (_, Err(e)) => eprintln!("mqtt-policy serve: {e}"),
                    }
                });
                // Dropping the runtime ends the connections' tasks; the pool's threads end
                // when the last `State` goes.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(Error::Threads)?;
        Ok(Service { addr, unix: unix_path, gateway, shutdown: Some(tx), thread: Some(thread) })
    }

    /// The address the service listens on (with the port chosen when `listen` said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The gateway the service answers with.
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// Blocks until the service stops (it stops only when dropped, or if its listener fails).
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Binds the Unix socket at `path`: a socket left there by an earlier run is replaced, any
/// other file is an error. Its permissions are the umask's: restrict them (or its directory)
/// to the broker's user.
fn bind_unix(path: &std::path::Path) -> Result<std::os::unix::net::UnixListener, Error> {
    use std::os::unix::fs::FileTypeExt;
    let listen = |source| Error::ListenUnix { path: path.to_owned(), source };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(listen(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "a file that is not a socket")));
        }
        std::fs::remove_file(path).map_err(listen)?;
    }
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(listen)?;
    listener.set_nonblocking(true).map_err(listen)?;
    Ok(listener)
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(path) = &self.unix {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The listeners of a service: TCP, and a Unix socket if configured.
struct Listeners {
    tcp: tokio::net::TcpListener,
    unix: Option<tokio::net::UnixListener>,
}

async fn accept(listeners: Listeners, state: Arc<State>, mut shutdown: oneshot::Receiver<()>) {
    // One bound for both listeners.
    let connections = Arc::new(Semaphore::new(state.options.max_connections));
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listeners.tcp.accept() => accepted.map(|(stream, _)| {
                let _ = stream.set_nodelay(true);
                Stream::Tcp(stream)
            }),
            accepted = async { listeners.unix.as_ref().expect("only polled when set").accept().await },
                if listeners.unix.is_some() => accepted.map(|(stream, _)| Stream::Unix(stream)),
        };
        let stream = match accepted {
            Ok(stream) => stream,
            // Out of file descriptors and the like: wait instead of spinning.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            state.metrics.rejected("connections");
            drop(stream);
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            match stream {
                Stream::Tcp(s) => serve_connection(s, state).await,
                Stream::Unix(s) => serve_connection(s, state).await,
            }
            drop(permit);
        });
    }
}

/// An accepted connection.
enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// Serves one connection's requests, bounded alike whatever the listener.
async fn serve_connection<S>(stream: S, state: Arc<State>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let header_timeout = state.options.header_timeout;
    let service = service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(&state, req).await) }
    });
    let _ = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(64 << 10)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/plain"));
    r
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    r
}

/// Whose conventions a refusal follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    /// RabbitMQ (and anything unknown): the status, body `deny`.
    Text,
    /// EMQX: `200 {"result": "deny"}`, since EMQX takes any other status as `ignore` (and
    /// then its `no_match`, by default allow).
    Emqx,
    /// VerneMQ: the status with `{"result": {"error": REASON}}` (any status but 200 is the
    /// hook's error, a refusal).
    Vernemq,
}

impl Flavor {
    /// The flavor of a request path: by its dialect segment, first or after the secret, so
    /// that even a wrong secret is refused in the broker's terms.
    fn of(path: &str) -> Flavor {
        let mut segments = path.split('/').skip(1).take(2);
        match (segments.next(), segments.next()) {
            (Some("emqx"), _) | (_, Some("emqx")) => Flavor::Emqx,
            (Some("vernemq"), _) | (_, Some("vernemq")) => Flavor::Vernemq,
            _ => Flavor::Text,
        }
    }

    fn refuse(self, status: StatusCode, reason: &'static str) -> Response<Full<Bytes>> {
        match self {
            Flavor::Text => text(status, "deny"),
            Flavor::Emqx => json_response(StatusCode::OK, &serde_json::json!({ "result": "deny" })),
            Flavor::Vernemq => json_response(status, &crate::vernemq::error(reason)),
        }
    }
}

/// A request refused before any policy was asked: its status and metrics reason. The body is
/// always a deny in the broker's terms ([`Flavor`]).
type Refusal = (StatusCode, &'static str);

async fn handle(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let flavor = Flavor::of(req.uri().path());
    match route(state, req, started).await {
        Ok(response) => response,
        Err((status, reason)) => {
            state.metrics.rejected(reason);
            flavor.refuse(status, reason)
        }
    }
}

/// Constant-time comparison: the time taken does not tell how much of a guess was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a decision request asks, parsed.
enum Parsed {
    Rabbitmq(rabbitmq::Request),
    Emqx(emqx::Request),
    Vernemq(vernemq::Request),
}

/// Which dialect and endpoint a path is.
enum Endpoint {
    Rabbitmq(rabbitmq::Path),
    Emqx(emqx::Path),
    /// The hook named by the path, if it names one.
    Vernemq(Option<String>),
}

fn endpoint(rest: &str) -> Option<Endpoint> {
    if let Some(segment) = rest.strip_prefix("/rabbitmq/") {
        return rabbitmq::Path::from_segment(segment).map(Endpoint::Rabbitmq);
    }
    if let Some(segment) = rest.strip_prefix("/emqx/") {
        return emqx::Path::from_segment(segment).map(Endpoint::Emqx);
    }
    match rest.strip_prefix("/vernemq") {
        Some("" | "/") => Some(Endpoint::Vernemq(None)),
        Some(hook) => {
            hook.strip_prefix('/').filter(|h| !h.contains('/')).map(|h| Endpoint::Vernemq(Some(h.to_owned())))
        }
        None => None,
    }
}

async fn route(state: &State, req: Request<Incoming>, started: Instant) -> Result<Response<Full<Bytes>>, Refusal> {
    let path = req.uri().path().to_owned();
    if path == "/healthz" {
        return Ok(text(StatusCode::OK, "ok\n"));
    }
    let mut rest = path.as_str();
    let mut authorized = state.options.secret.is_none();
    if let Some(secret) = &state.options.secret {
        let header = |name: &str| req.headers().get(name).map(|v| v.as_bytes());
        let bearer = header("authorization").and_then(|v| v.strip_prefix(b"Bearer "));
        if header("x-mqtt-policy-secret").is_some_and(|v| same(v, secret.as_bytes()))
            || bearer.is_some_and(|v| same(v, secret.as_bytes()))
        {
            authorized = true;
        } else if let Some((first, _)) = rest.strip_prefix('/').and_then(|r| r.split_once('/'))
            && same(first.as_bytes(), secret.as_bytes())
        {
            authorized = true;
            rest = &path[first.len() + 1..];
        }
    }
    if !authorized {
        return Err((StatusCode::FORBIDDEN, "secret"));
    }
    if rest == "/metrics" {
        return Ok(text_owned(StatusCode::OK, state.metrics.render(state.pool.sessions())));
    }
    let Some(endpoint) = endpoint(rest) else {
        return Err((StatusCode::NOT_FOUND, "not-found"));
    };
    let method = req.method().clone();
    let allowed = match endpoint {
        Endpoint::Rabbitmq(_) | Endpoint::Emqx(_) => method == Method::GET || method == Method::POST,
        // VerneMQ always POSTs.
        Endpoint::Vernemq(_) => method == Method::POST,
    };
    if !allowed {
        return Err((StatusCode::METHOD_NOT_ALLOWED, "method"));
    }
    let hook = match &endpoint {
        Endpoint::Vernemq(by_path) => {
            let by_header = match req.headers().get("vernemq-hook").map(|v| v.to_str()) {
                None => None,
                Some(Ok(h)) => Some(h.to_owned()),
                Some(Err(_)) => return Err((StatusCode::BAD_REQUEST, "bad-request")),
            };
            let name = match (by_path, by_header) {
                (Some(p), Some(h)) if *p != h => return Err((StatusCode::BAD_REQUEST, "bad-request")),
                (Some(p), _) => p.clone(),
                (None, Some(h)) => h,
                (None, None) => return Err((StatusCode::BAD_REQUEST, "bad-request")),
            };
            Some(vernemq::Hook::from_name(&name).ok_or((StatusCode::NOT_FOUND, "not-found"))?)
        }
        _ => None,
    };
    let max = state.options.max_body;
    let declared = req.headers().get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err((StatusCode::PAYLOAD_TOO_LARGE, "too-large"));
    }
    let query = req.uri().query().map(str::to_owned);
    let deadline = started + state.options.request_timeout;
    let body = match tokio::time::timeout_at(deadline.into(), Limited::new(req.into_body(), max).collect()).await {
        Err(_) => return Err((StatusCode::REQUEST_TIMEOUT, "timeout")),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return Err((StatusCode::PAYLOAD_TOO_LARGE, "too-large"));
        }
        Ok(Err(_)) => return Err((StatusCode::BAD_REQUEST, "bad-request")),
        Ok(Ok(b)) => b.to_bytes(),
    };
    let bad = |_| (StatusCode::BAD_REQUEST, "bad-request");
    let parsed = match (endpoint, hook) {
        (Endpoint::Rabbitmq(kind), _) => Parsed::Rabbitmq(rabbitmq::parse(kind, query.as_deref(), &body).map_err(bad)?),
        (Endpoint::Emqx(kind), _) => Parsed::Emqx(emqx::parse(kind, query.as_deref(), &body).map_err(bad)?),
        (Endpoint::Vernemq(_), Some(hook)) => {
            Parsed::Vernemq(vernemq::parse(hook, &state.options.vernemq, &body).map_err(bad)?)
        }
        (Endpoint::Vernemq(_), None) => unreachable!("a VerneMQ request always has its hook"),
    };
    let (tx, rx) = oneshot::channel();
    let client_id = match &parsed {
        Parsed::Rabbitmq(r) => r.client_id(),
        Parsed::Emqx(r) => r.client_id(),
        Parsed::Vernemq(r) => r.client_id(),
    }
    .to_owned();
    let rabbit = state.options.rabbitmq.clone();
    let verne = state.options.vernemq.clone();
    let job = Box::new(move |shard: &mut crate::pool::Shard| {
        let answer = match &parsed {
            Parsed::Rabbitmq(r) => {
                let a = rabbitmq::decide(shard, &rabbit, r);
                // The body is text: only `allow` matters.
                ("rabbitmq", Reply { allow: a.allow, kind: a.kind, tenant: a.tenant, body: serde_json::Value::Null })
            }
            Parsed::Emqx(r) => ("emqx", emqx::decide(shard, r)),
            Parsed::Vernemq(r) => ("vernemq", vernemq::decide(shard, &verne, r)),
        };
        let _ = tx.send(answer);
    });
    if state.pool.submit(&client_id, job).is_err() {
        return Err((StatusCode::SERVICE_UNAVAILABLE, "overloaded"));
    }
    let (dialect, reply) = match tokio::time::timeout_at(deadline.into(), rx).await {
        Err(_) => return Err((StatusCode::SERVICE_UNAVAILABLE, "timeout")),
        // The worker panicked.
        Ok(Err(_)) => return Err((StatusCode::SERVICE_UNAVAILABLE, "fault")),
        Ok(Ok(a)) => a,
    };
    state.metrics.decision(dialect, &reply.tenant, reply.kind, reply.allow, started.elapsed());
    Ok(match dialect {
        "rabbitmq" => text(StatusCode::OK, if reply.allow { "allow" } else { "deny" }),
        _ => json_response(StatusCode::OK, &reply.body),
    })
}

fn text_owned(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"));
    r
}
