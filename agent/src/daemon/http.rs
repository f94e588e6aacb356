//! The HTTP side: listeners, connections and their limits, and the dispatch of each
//! request to the IMDS or container handler.
//!
//! HTTP/1.1 only, served by hyper. Every resource a client can make the daemon hold
//! is bounded:
//!
//! | limit | value | past it |
//! |---|---|---|
//! | open connections (all listeners) | `[daemon] max_connections`, default 256 | the oldest connection with no request in flight (idle, or still sending a head or body) is closed to make room (see [`super::connections`]); only if every one awaits its answer is the new one closed |
//! | request head (line + headers) | 16 KiB, at most 64 headers | 431, closed |
//! | request body | 1 KiB (no request needs one) | 413, closed |
//! | time to send the head, and idle time between requests | `[daemon] client_timeout_secs`, default 10 s (less when newer clients need the slot) | closed |
//! | time to send the body | the same (less when newer clients need the slot) | 408, closed |
//! | one connection's life | 5 minutes | finishes its request, then closed |
//!
//! Malformed requests get hyper's 400 (or a closed connection); nothing a client
//! sends can panic the daemon (the workspace forbids `unwrap`/`expect`/`panic`).
//!
//! Shutdown: each accept loop stops at the signal (so new connections are refused),
//! and each connection finishes the request it is serving and closes. Connections
//! hold a permit of the connection cap, so the daemon knows they are all gone when
//! every permit is back.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use aovis_formats::ProfileName;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body, Bytes, Incoming};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, HOST};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::connections::{Admission, Admitted, Connections, InFlight, EVICTION_WAIT};
use super::container;
use super::imds::Imds;
use super::store::Store;
use super::tokens::{ContainerToken, SessionTokens, MAX_SESSION_TOKENS};

/// Largest request head (hyper's read buffer; its floor is 8 KiB).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most headers in one request.
pub const MAX_HEADERS: usize = 64;
/// Largest request body read (and dropped): no request of either API has one.
pub const MAX_BODY_BYTES: usize = 1024;
/// Longest a connection lives before it is closed after its current request.
pub const MAX_CONNECTION_LIFE: Duration = Duration::from_secs(300);

/// Which API a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// The IMDSv2-compatible endpoint.
    Imds,
    /// The container-credentials endpoint.
    Container,
}

impl Endpoint {
    /// The name used in logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Imds => "imds",
            Self::Container => "container",
        }
    }
}

/// What a reload may change: which profile IMDS serves, and the container tokens.
#[derive(Debug, Default)]
pub struct Routes {
    /// The profile served as the instance's role.
    pub imds_profile: Option<ProfileName>,
    /// The container profiles and their tokens.
    pub container_tokens: BTreeMap<ProfileName, ContainerToken>,
}

/// State shared by every connection.
#[derive(Debug)]
pub struct Shared {
    /// The loaded caches.
    pub store: Store,
    /// The current routes, swapped whole on reload.
    routes: RwLock<Arc<Routes>>,
    /// IMDS session tokens.
    pub sessions: RwLock<SessionTokens>,
    /// Time a client has for a head or a body, and to idle.
    pub client_timeout: Duration,
}

impl Shared {
    /// Shared state serving `routes`.
    pub fn new(routes: Routes, client_timeout: Duration) -> Self {
        Self {
            store: Store::default(),
            routes: RwLock::new(Arc::new(routes)),
            sessions: RwLock::new(SessionTokens::new(MAX_SESSION_TOKENS)),
            client_timeout,
        }
    }

    /// The current routes.
    pub fn routes(&self) -> Arc<Routes> {
        Arc::clone(&self.routes.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Swaps in new routes; requests already running keep the old ones.
    pub fn set_routes(&self, routes: Routes) {
        *self.routes.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(routes);
    }
}

/// A response with a short text body that names no secret.
pub fn refuse(status: StatusCode, message: &'static str) -> Response<Full<Bytes>> {
    let mut body = String::with_capacity(message.len() + 1);
    body.push_str(message);
    body.push('\n');
    plain(status, body)
}

/// A `text/plain` response.
pub fn plain(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// A JSON response holding credentials: never to be cached by anything in between.
pub fn json(body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Waits until the shutdown flag is up (or its sender is gone).
pub async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Accepts connections on `listener` until shutdown.
pub async fn accept_loop(
    listener: TcpListener,
    endpoint: Endpoint,
    shared: Arc<Shared>,
    connections: Arc<Connections>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopping(&mut shutdown) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(endpoint = endpoint.name(), error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // At the cap this evicts the oldest idle connection and waits (briefly) for
        // its slot: one connection in, at most one out, so the cap always holds and
        // a connect flood spawns no more tasks than the cap. Debug level only: a
        // flood must not flood the journal.
        let admitted = match connections.admit(EVICTION_WAIT).await {
            Admission::Admitted(admitted) => admitted,
            Admission::Full => {
                tracing::debug!(
                    endpoint = endpoint.name(),
                    %peer,
                    "every connection is serving a request; closing the new one"
                );
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(
            stream,
            endpoint,
            Arc::clone(&shared),
            admitted,
            shutdown.clone(),
        ));
    }
}

async fn serve_connection(
    stream: TcpStream,
    endpoint: Endpoint,
    shared: Arc<Shared>,
    admitted: Admitted,
    mut shutdown: watch::Receiver<bool>,
) {
    let client_timeout = shared.client_timeout;
    let admitted = Arc::new(admitted);
    let tracker = Arc::clone(&admitted);
    let service = service_fn(move |request| {
        // Counted here, where hyper hands over the parsed head, and released when
        // the handler's future ends or is dropped (see `connections` for why the
        // count is exact between polls of this task).
        let mut in_flight = tracker.request_started();
        let shared = Arc::clone(&shared);
        async move { handle(request, endpoint, shared, &mut in_flight).await }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(client_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let life = tokio::time::sleep(MAX_CONNECTION_LIFE);
    tokio::pin!(life);
    let finished = tokio::select! {
        result = connection.as_mut() => Some(result),
        () = stopping(&mut shutdown) => None,
        () = &mut life => None,
        () = admitted.evicted() => {
            // This branch runs between polls of `connection`, so the count is exact.
            if !admitted.is_busy() {
                tracing::debug!(
                    endpoint = endpoint.name(),
                    connection = admitted.id(),
                    "closing the oldest idle connection to make room for a new one"
                );
                // Dropped, not shut down gracefully: hyper would wait for a head
                // that a slow client may never finish.
                return;
            }
            None
        }
    };
    let result = match finished {
        Some(result) => result,
        None => {
            // Finish the request in flight (an idle connection closes at once),
            // within the client timeout.
            connection.as_mut().graceful_shutdown();
            match tokio::time::timeout(client_timeout, connection.as_mut()).await {
                Ok(result) => result,
                Err(_) => return,
            }
        }
    };
    if let Err(err) = result {
        // Timeouts, resets and malformed requests: the client's problem, not ours.
        tracing::debug!(endpoint = endpoint.name(), error = %err, "connection ended with an error");
    }
}

/// One request: the checks both APIs share, then the API's own handler.
async fn handle(
    request: Request<Incoming>,
    endpoint: Endpoint,
    shared: Arc<Shared>,
    in_flight: &mut InFlight,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    if !parts.headers.contains_key(HOST) {
        return Ok(refuse(StatusCode::BAD_REQUEST, "a Host header is required"));
    }
    // A client still sending a body is as slow as one still sending its head: the
    // connection may be evicted meanwhile (no API needs a body).
    let drained = in_flight
        .waiting_for_client(drain_body(body, shared.client_timeout))
        .await;
    if let Err(response) = drained {
        return Ok(response);
    }
    // The clock is read here, at the edge; the handlers take it as an argument.
    let now = chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now());
    let mono = Instant::now();
    let routes = shared.routes();
    let response = match endpoint {
        Endpoint::Imds => Imds {
            profile: routes.imds_profile.as_ref(),
            store: &shared.store,
            sessions: &shared.sessions,
        }
        .respond(&parts, now, mono),
        Endpoint::Container => {
            container::respond(&parts, &routes.container_tokens, &shared.store, now)
        }
    };
    Ok(response)
}

/// Reads and drops a request body of at most [`MAX_BODY_BYTES`] within `timeout`,
/// so the connection can carry the next request.
async fn drain_body(body: Incoming, timeout: Duration) -> Result<(), Response<Full<Bytes>>> {
    if body.is_end_stream() {
        return Ok(());
    }
    if body.size_hint().lower() > MAX_BODY_BYTES as u64 {
        return Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large",
        ));
    }
    match tokio::time::timeout(timeout, Limited::new(body, MAX_BODY_BYTES).collect()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) if err.downcast_ref::<LengthLimitError>().is_some() => Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large",
        )),
        Ok(Err(_)) => Err(refuse(StatusCode::BAD_REQUEST, "malformed request body")),
        Err(_) => Err(refuse(
            StatusCode::REQUEST_TIMEOUT,
            "request body not received in time",
        )),
    }
}

/// Binds every address, IMDS first. Port 0 picks a free port; the log says which.
pub async fn bind(
    addresses: &[(SocketAddr, Endpoint)],
) -> Result<Vec<(TcpListener, Endpoint)>, (SocketAddr, std::io::Error)> {
    let mut listeners = Vec::with_capacity(addresses.len());
    for (address, endpoint) in addresses {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|err| (*address, err))?;
        let local = listener.local_addr().map_err(|err| (*address, err))?;
        tracing::info!(endpoint = endpoint.name(), address = %local, "listening");
        listeners.push((listener, *endpoint));
    }
    Ok(listeners)
}

/// Listener addresses of a config, tagged with their endpoint.
pub fn endpoints(settings: &super::settings::DaemonSettings) -> Vec<(SocketAddr, Endpoint)> {
    let imds = settings
        .imds
        .iter()
        .flat_map(|imds| imds.listen.iter().map(|addr| (*addr, Endpoint::Imds)));
    let container = settings.container.iter().flat_map(|container| {
        container
            .listen
            .iter()
            .map(|addr| (*addr, Endpoint::Container))
    });
    imds.chain(container).collect()
}

/// Shared for the unit tests of this module.
#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves one IMDS listener with no profile and returns its address.
    async fn server(max_connections: usize) -> (SocketAddr, watch::Sender<bool>, Arc<Connections>) {
        server_with_timeout(max_connections, Duration::from_millis(500)).await
    }

    async fn server_with_timeout(
        max_connections: usize,
        client_timeout: Duration,
    ) -> (SocketAddr, watch::Sender<bool>, Arc<Connections>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::new(Routes::default(), client_timeout));
        let connections = Arc::new(Connections::new(max_connections));
        let (stop, shutdown) = watch::channel(false);
        tokio::spawn(accept_loop(
            listener,
            Endpoint::Imds,
            shared,
            Arc::clone(&connections),
            shutdown,
        ));
        (address, stop, connections)
    }

    /// Sends `request` and reads until the server closes or 2 s pass.
    async fn exchange(address: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(address).await.unwrap();
        let _ = stream.write_all(request).await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    fn status_of(response: &str) -> &str {
        response.split(' ').nth(1).unwrap_or("closed")
    }

    #[tokio::test]
    async fn hostile_requests_are_refused_and_the_server_goes_on() {
        let (address, _stop, _) = server(16).await;
        let big_header = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES + 1)
        );
        let many_headers = format!(
            "GET / HTTP/1.1\r\nHost: x\r\n{}\r\n",
            "X-A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        let huge_body = format!(
            "PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: 10000000\r\n\r\n{}",
            "b".repeat(4096)
        );
        let chunked_body = format!(
            "PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n{}\r\n0\r\n\r\n",
            "c".repeat(0x800)
        );
        let cases: [(&str, &[u8], &str); 8] = [
            ("oversized header", big_header.as_bytes(), "431"),
            ("too many headers", many_headers.as_bytes(), "431"),
            ("huge declared body", huge_body.as_bytes(), "413"),
            ("huge chunked body", chunked_body.as_bytes(), "413"),
            ("no Host", b"GET / HTTP/1.1\r\n\r\n", "400"),
            (
                "garbage bytes",
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
                "400",
            ),
            ("bad request line", b"GET\r\n\r\n", "400"),
            (
                "bad content length",
                b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
                "400",
            ),
        ];
        for (name, request, expected) in cases {
            let response = exchange(address, request).await;
            assert_eq!(status_of(&response), expected, "{name}: {response:?}");
        }
        let fine = exchange(
            address,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status_of(&fine), "401", "still serving: {fine:?}");
    }

    #[tokio::test]
    async fn a_slow_client_is_cut_off() {
        let (address, _stop, connections) = server(16).await;
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let started = Instant::now();
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut out)).await;
        assert!(read.is_ok(), "the connection must be closed by the server");
        assert!(started.elapsed() < Duration::from_secs(2));
        // Its permit is back.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(connections.open(), 0);
    }

    /// True when the server has closed `stream` (read gives end of file); false if it
    /// is still open (nothing to read within 200 ms).
    async fn closed_by_server(stream: &mut TcpStream) -> bool {
        let mut buf = [0u8; 1024];
        loop {
            match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
                Err(_) => return false,
                Ok(Ok(0) | Err(_)) => return true,
                // Leftovers of an earlier response.
                Ok(Ok(_)) => continue,
            }
        }
    }

    /// A connection that has been served one request and stays open (keep-alive).
    async fn idle_keep_alive(address: SocketAddr) -> TcpStream {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 401"), "{:?}", &buf[..n]);
        stream
    }

    #[tokio::test]
    async fn at_the_cap_a_new_connection_evicts_the_oldest_idle_one() {
        // A long client timeout: only eviction can close a connection here.
        let (address, _stop, connections) = server_with_timeout(3, Duration::from_secs(30)).await;
        let mut keep_alive = idle_keep_alive(address).await;
        // Connected, sent nothing.
        let mut silent = TcpStream::connect(address).await.unwrap();
        // Half a head.
        let mut partial = TcpStream::connect(address).await.unwrap();
        partial.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(connections.open(), 3);

        let cases = [
            ("idle keep-alive, oldest", &mut keep_alive),
            ("sent nothing", &mut silent),
            ("half a head", &mut partial),
        ];
        // Each new client stays open after its answer, so the cap stays reached and
        // the next one must evict again.
        let mut newcomers = Vec::new();
        for (name, evicted) in cases {
            newcomers.push(idle_keep_alive(address).await);
            assert!(closed_by_server(evicted).await, "{name}: evicted");
            assert!(connections.open() <= 3, "{name}: the cap holds");
        }
        for mut stream in newcomers {
            assert!(!closed_by_server(&mut stream).await, "newcomers stay open");
        }
    }

    #[tokio::test]
    async fn a_client_trickling_a_body_gives_way_like_one_trickling_its_head() {
        let (address, _stop, connections) = server_with_timeout(2, Duration::from_secs(30)).await;
        // Each has sent a whole head; its body trickles.
        let mut slow = Vec::new();
        for _ in 0..2 {
            let mut stream = TcpStream::connect(address).await.unwrap();
            stream
                .write_all(
                    b"PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab",
                )
                .await
                .unwrap();
            slow.push(stream);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(connections.open(), 2);
        let _newcomer = idle_keep_alive(address).await;
        assert!(closed_by_server(&mut slow[0]).await, "the oldest went");
        assert!(!closed_by_server(&mut slow[1]).await, "the newer one stays");
    }
}
