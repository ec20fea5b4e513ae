//! A misbehaving upstream: raw TCP on `127.0.0.1:0`, so that it can do what no well-behaved
//! HTTP server does on purpose — reset the connection (`SO_LINGER 0`), stall, drip one byte
//! at a time, flood a gigabyte, or answer with garbage.
//!
//! Each connection reads one HTTP request (head and `Content-Length` body), then plays the
//! [`Step`]s that the script chose for that request, and records how the connection ended —
//! in particular whether the gateway went away first ([`End::PeerGone`]), which is how a test
//! sees that the gateway closed its upstream connection.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::WAIT;

/// One thing the upstream does on a connection, after it has read the request.
#[derive(Clone, Debug)]
pub enum Step {
    /// Writes the bytes at once.
    Send(Vec<u8>),
    /// Writes the bytes one at a time, `every` apart (a slow drip).
    Drip(Vec<u8>, Duration),
    /// Writes `total` bytes of `fill` in 64 KiB writes, as fast as the peer reads them.
    Flood {
        /// How many bytes.
        total: u64,
        /// The byte repeated.
        fill: u8,
    },
    /// Writes the bytes every `every` until the gateway goes away: a stream that never ends.
    Endless(Vec<u8>, Duration),
    /// Waits until the test opens the gate ([`Notify::notify_one`]).
    Gate(Arc<Notify>),
    /// Sends nothing and reads until the gateway closes the connection.
    Stall,
    /// Closes with a TCP reset (`SO_LINGER 0`); ends the script.
    Reset,
}

/// How a connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// The script ran to its end and the upstream closed normally (FIN).
    Closed,
    /// The upstream reset the connection ([`Step::Reset`]).
    Reset,
    /// The gateway closed or reset the connection while the upstream was still stalling,
    /// streaming or flooding.
    PeerGone,
}

/// What one connection saw.
#[derive(Clone, Debug)]
pub struct Connection {
    /// The request head and body as text (lossy).
    pub request: String,
    /// How it ended, once it has.
    pub end: Option<End>,
    /// Bytes the upstream wrote.
    pub written: u64,
}

/// The script: the steps for a request (given as text).
type Script = Arc<dyn Fn(&str) -> Vec<Step> + Send + Sync>;

/// A scripted, misbehaving HTTP/1.1 upstream on `127.0.0.1:0`.
pub struct FaultyUpstream {
    addr: SocketAddr,
    connections: Arc<Mutex<Vec<Connection>>>,
    changed: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Drop for FaultyUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultyUpstream {
    /// Starts an upstream that plays `script(request)` on every connection.
    pub async fn start(script: impl Fn(&str) -> Vec<Step> + Send + Sync + 'static) -> Self {
        let script: Script = Arc::new(script);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the faulty upstream");
        let addr = listener.local_addr().expect("faulty upstream address");
        let connections = Arc::new(Mutex::new(Vec::new()));
        let changed = Arc::new(Notify::new());
        let (list, notify) = (Arc::clone(&connections), Arc::clone(&changed));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let index = {
                    let mut list = list.lock().expect("connections");
                    list.push(Connection { request: String::new(), end: None, written: 0 });
                    list.len() - 1
                };
                notify.notify_waiters();
                let (script, list, notify) =
                    (Arc::clone(&script), Arc::clone(&list), Arc::clone(&notify));
                tokio::spawn(async move {
                    let mut stream = stream;
                    let request = read_request(&mut stream).await;
                    list.lock().expect("connections")[index].request = request.clone();
                    let steps = script(&request);
                    let (end, written) = play(stream, steps).await;
                    {
                        let mut list = list.lock().expect("connections");
                        list[index].end = Some(end);
                        list[index].written = written;
                    }
                    notify.notify_waiters();
                });
            }
        });
        Self { addr, connections, changed, task }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every connection so far, in accept order.
    pub fn connections(&self) -> Vec<Connection> {
        self.connections.lock().expect("connections").clone()
    }

    /// The connections whose request contains `needle`.
    pub fn connections_for(&self, needle: &str) -> Vec<Connection> {
        self.connections().into_iter().filter(|c| c.request.contains(needle)).collect()
    }

    /// Waits until every connection whose request contains `needle` has ended and there is
    /// at least one; returns them. Panics after [`WAIT`].
    pub async fn wait_ended(&self, needle: &str) -> Vec<Connection> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let notified = self.changed.notified();
            let found = self.connections_for(needle);
            if !found.is_empty() && found.iter().all(|c| c.end.is_some()) {
                return found;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("the upstream connections for {needle:?} did not end: {found:?}");
            }
        }
    }
}

/// Reads one request: the head up to the blank line, then `Content-Length` bytes of body.
/// Stops early (returning what it has) when the peer closes.
async fn read_request(stream: &mut TcpStream) -> String {
    let mut buffer = Vec::new();
    let mut chunk = [0_u8; 4096];
    loop {
        if let Some(head_end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buffer.len() >= head_end + 4 + length {
                break;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&buffer).into_owned()
}

/// Plays the steps; returns how the connection ended and how many bytes were written.
async fn play(mut stream: TcpStream, steps: Vec<Step>) -> (End, u64) {
    let mut written = 0_u64;
    for step in steps {
        let outcome = match step {
            Step::Send(bytes) => write(&mut stream, &bytes, &mut written).await,
            Step::Drip(bytes, every) => {
                let mut result = Ok(());
                for byte in bytes {
                    result = write(&mut stream, &[byte], &mut written).await;
                    if result.is_err() {
                        break;
                    }
                    // Pacing of the mock's own output, not synchronisation of the test.
                    tokio::time::sleep(every).await;
                }
                result
            }
            Step::Flood { total, fill } => {
                let block = vec![fill; 64 * 1024];
                let mut left = total;
                let mut result = Ok(());
                while left > 0 && result.is_ok() {
                    let n = usize::try_from(left.min(block.len() as u64)).expect("block size");
                    result = write(&mut stream, &block[..n], &mut written).await;
                    left -= n as u64;
                }
                result
            }
            Step::Endless(bytes, every) => {
                let (mut reader, mut writer) = stream.split();
                let mut probe = [0_u8; 1024];
                let mut tick = tokio::time::interval(every);
                loop {
                    tokio::select! {
                        read = reader.read(&mut probe) => {
                            if matches!(read, Ok(0) | Err(_)) {
                                break;
                            }
                        }
                        _ = tick.tick() => {
                            if writer.write_all(&bytes).await.is_err() {
                                break;
                            }
                            written += bytes.len() as u64;
                        }
                    }
                }
                Err(())
            }
            Step::Gate(gate) => {
                gate.notified().await;
                Ok(())
            }
            Step::Stall => {
                let mut probe = [0_u8; 1024];
                while let Ok(n) = stream.read(&mut probe).await {
                    if n == 0 {
                        break;
                    }
                }
                Err(())
            }
            Step::Reset => {
                stream.set_zero_linger().expect("SO_LINGER 0");
                drop(stream);
                return (End::Reset, written);
            }
        };
        if outcome.is_err() {
            return (End::PeerGone, written);
        }
    }
    let _ = stream.shutdown().await;
    (End::Closed, written)
}

async fn write(stream: &mut TcpStream, bytes: &[u8], written: &mut u64) -> Result<(), ()> {
    stream.write_all(bytes).await.map_err(|_| ())?;
    *written += bytes.len() as u64;
    Ok(())
}

/// A response head: status line, `content-type`, optionally `content-length`, and
/// `connection: close` (the gateway must not pool a connection the script will close).
pub fn head(status: u16, content_type: &str, length: Option<u64>) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        502 => "Bad Gateway",
        _ => "Status",
    };
    let mut text = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\nconnection: close\r\n"
    );
    if let Some(length) = length {
        text.push_str(&format!("content-length: {length}\r\n"));
    }
    text.push_str("\r\n");
    text.into_bytes()
}

/// A listener whose accept queue is full and which never accepts: a connection to it stays
/// in `SYN_SENT` (the kernel drops the SYN), so the gateway's connect timeout fires.
pub struct FullBacklog {
    addr: SocketAddr,
    _listener: TcpListener,
    _fillers: Vec<TcpStream>,
}

impl FullBacklog {
    /// Binds with a backlog of 1 and connects until a connect no longer completes (bounded).
    pub async fn start() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind("127.0.0.1:0".parse().expect("address")).expect("bind");
        let listener = socket.listen(1).expect("listen");
        let addr = listener.local_addr().expect("address");
        let mut fillers = Vec::new();
        for _ in 0..16 {
            // A connect that does not complete within the bound shows the queue is full.
            match tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => fillers.push(stream),
                Ok(Err(error)) => panic!("connect to the backlog listener: {error}"),
                Err(_) => return Self { addr, _listener: listener, _fillers: fillers },
            }
        }
        panic!("the accept queue of a backlog-1 listener never filled");
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}
