//! UDP JSON-RPC client: one socket (bound to the device port, e.g. `0.0.0.0:30000`, or an
//! ephemeral port) serving any number of devices. A receive task demultiplexes replies by
//! source address AND id to the waiting caller; duplicates, late replies, garbage and replies
//! from unexpected sources are counted and debug-logged, never a panic.
//!
//! Touches only its own UDP socket. Pacing (one request in flight, quiet gaps) is the device
//! actor's job; this layer does timeouts, bounded retries, the optional second copy of a read
//! after silence, and remembers methods a device answered with -32601.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::protocol::{METHOD_NOT_FOUND, Request, Response, method};
use crate::domain::DriverError;

/// Receive buffer, bytes: larger than any legal datagram so oversize can be detected.
const RECV_BUF: usize = 65_536;
/// How many finished (address, id) pairs are remembered to classify duplicates and late replies.
const RECENT: usize = 4096;

/// Timing of one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestOptions {
    /// Time to wait for a reply per attempt.
    pub timeout: Duration,
    /// Extra attempts after a silent one (ignored for `Reset.Factory`).
    pub retries: u32,
    /// For reads: send a second copy after this much silence within an attempt (None = off).
    pub resend_after: Option<Duration>,
}

impl Default for RequestOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(2500),
            retries: 1,
            resend_after: Some(Duration::from_millis(500)),
        }
    }
}

/// A successful exchange.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The `result` object.
    pub result: Value,
    /// `src` of the reply.
    pub src: Option<String>,
    /// Round trip of the answered attempt.
    pub latency: Duration,
    /// Attempts used (1 = first try).
    pub attempts: u32,
}

/// Counters of one transport (all datagrams of all devices).
#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    resent: AtomicU64,
    matched: AtomicU64,
    duplicates: AtomicU64,
    late: AtomicU64,
    unknown: AtomicU64,
    garbage: AtomicU64,
}

/// Snapshot of the transport counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ClientStats {
    /// Datagrams sent (including resends and retries).
    pub sent: u64,
    /// Second copies sent after silence.
    pub resent: u64,
    /// Replies delivered to a waiting request.
    pub matched: u64,
    /// Replies for a request already answered.
    pub duplicates: u64,
    /// Replies for a request that had already timed out.
    pub late: u64,
    /// Replies with an unknown (address, id).
    pub unknown: u64,
    /// Undecodable, empty, oversized or id-less datagrams.
    pub garbage: u64,
}

#[derive(Clone, Copy, PartialEq)]
enum Finished {
    Answered,
    Expired,
}

type Key = (SocketAddr, u16);

#[derive(Default)]
struct Table {
    pending: HashMap<Key, oneshot::Sender<(Response, Instant)>>,
    recent: VecDeque<(Key, Finished)>,
    next_id: u16,
}

impl Table {
    fn finish(&mut self, key: Key, how: Finished) {
        if self.recent.len() >= RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back((key, how));
    }
}

struct Shared {
    table: Mutex<Table>,
    unsupported: Mutex<HashSet<(SocketAddr, String)>>,
    counters: Counters,
}

/// A UDP socket shared by many devices, with its receive task.
pub struct Transport {
    socket: Arc<UdpSocket>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    local: SocketAddr,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("local", &self.local)
            .finish()
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Transport {
    /// Binds `addr` (e.g. `0.0.0.0:30000`, or port 0 for an ephemeral port) and starts the
    /// receive task, which stops when `shutdown` is cancelled or the transport is dropped.
    pub async fn bind(
        addr: SocketAddr,
        shutdown: &CancellationToken,
    ) -> Result<Arc<Self>, DriverError> {
        let socket = bind_udp(addr).map_err(|e| DriverError::Io(format!("bind {addr}: {e}")))?;
        let local = socket
            .local_addr()
            .map_err(|e| DriverError::Io(e.to_string()))?;
        let socket = Arc::new(socket);
        let shared = Arc::new(Shared {
            table: Mutex::new(Table {
                next_id: rand::random::<u16>().max(1),
                ..Table::default()
            }),
            unsupported: Mutex::new(HashSet::new()),
            counters: Counters::default(),
        });
        let cancel = shutdown.child_token();
        tokio::spawn(receive_loop(socket.clone(), shared.clone(), cancel.clone()));
        Ok(Arc::new(Self {
            socket,
            shared,
            cancel,
            local,
        }))
    }

    /// Local address of the socket.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Counters since start.
    pub fn stats(&self) -> ClientStats {
        let c = &self.shared.counters;
        ClientStats {
            sent: c.sent.load(Ordering::Relaxed),
            resent: c.resent.load(Ordering::Relaxed),
            matched: c.matched.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            late: c.late.load(Ordering::Relaxed),
            unknown: c.unknown.load(Ordering::Relaxed),
            garbage: c.garbage.load(Ordering::Relaxed),
        }
    }

    /// Whether `device` answered `method` with -32601 before.
    pub fn is_unsupported(&self, device: SocketAddr, method: &str) -> bool {
        lock(&self.shared.unsupported).contains(&(device, method.to_string()))
    }

    /// Forgets the unsupported methods of a device (e.g. after a firmware change).
    pub fn forget_unsupported(&self, device: SocketAddr) {
        lock(&self.shared.unsupported).retain(|(a, _)| *a != device);
    }

    fn allocate(
        &self,
        device: SocketAddr,
    ) -> Result<(u16, oneshot::Receiver<(Response, Instant)>), DriverError> {
        let mut t = lock(&self.shared.table);
        for _ in 0..u16::MAX {
            let id = t.next_id;
            t.next_id = if id == u16::MAX { 1 } else { id + 1 };
            if id != 0 && !t.pending.contains_key(&(device, id)) {
                let (tx, rx) = oneshot::channel();
                t.pending.insert((device, id), tx);
                return Ok((id, rx));
            }
        }
        Err(DriverError::Io("no free request id".into()))
    }

    async fn send(&self, device: SocketAddr, bytes: &[u8]) -> Result<(), DriverError> {
        if bytes.is_empty() {
            // An empty datagram can freeze the Open API until reboot: never send one.
            return Err(DriverError::Io("refusing to send an empty datagram".into()));
        }
        self.socket
            .send_to(bytes, device)
            .await
            .map_err(|e| DriverError::Io(format!("send to {device}: {e}")))?;
        self.shared.counters.sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Sends a request and waits for its reply, with timeouts, bounded retries (never for
    /// `Reset.Factory`) and, for reads, an optional second copy after silence.
    pub async fn request(
        &self,
        device: SocketAddr,
        method_name: &str,
        params: Value,
        opts: RequestOptions,
    ) -> Result<Reply, DriverError> {
        if self.is_unsupported(device, method_name) {
            return Err(DriverError::Unsupported {
                method: method_name.to_string(),
            });
        }
        let (id, mut rx) = self.allocate(device)?;
        let guard = PendingGuard {
            shared: &self.shared,
            key: (device, id),
        };
        let bytes = Request::new(id, method_name, params).to_bytes();
        let attempts = if method::is_retryable(method_name) {
            opts.retries + 1
        } else {
            1
        };
        let resend = opts
            .resend_after
            .filter(|r| method::is_read(method_name) && *r < opts.timeout);
        for attempt in 1..=attempts {
            let sent_at = Instant::now();
            self.send(device, &bytes).await?;
            let deadline = tokio::time::Instant::from_std(sent_at + opts.timeout);
            if let Some(r) = resend {
                tokio::select! {
                    got = &mut rx => return self.finish(got, device, method_name, sent_at, attempt, guard),
                    _ = tokio::time::sleep(r) => {
                        self.shared.counters.resent.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%device, method = method_name, id, "read_resent");
                        self.send(device, &bytes).await?;
                    }
                }
            }
            match tokio::time::timeout_at(deadline, &mut rx).await {
                Ok(got) => return self.finish(got, device, method_name, sent_at, attempt, guard),
                Err(_) => {
                    tracing::debug!(%device, method = method_name, id, attempt, "request_timeout");
                }
            }
        }
        drop(guard);
        Err(DriverError::Timeout {
            device: device.to_string(),
            method: method_name.to_string(),
            attempts,
        })
    }

    fn finish(
        &self,
        got: Result<(Response, Instant), oneshot::error::RecvError>,
        device: SocketAddr,
        method_name: &str,
        sent_at: Instant,
        attempt: u32,
        guard: PendingGuard<'_>,
    ) -> Result<Reply, DriverError> {
        drop(guard); // the receive task already removed the entry; this is a no-op then
        let (resp, at) = got.map_err(|_| DriverError::Closed)?;
        let latency = at.saturating_duration_since(sent_at);
        match resp.body {
            Ok(result) => Ok(Reply {
                result,
                src: resp.src,
                latency,
                attempts: attempt,
            }),
            Err(e) if e.code == METHOD_NOT_FOUND => {
                lock(&self.shared.unsupported).insert((device, method_name.to_string()));
                tracing::debug!(%device, method = method_name, "method_unsupported");
                Err(DriverError::Device {
                    code: e.code,
                    message: e.message,
                })
            }
            Err(e) => Err(DriverError::Device {
                code: e.code,
                message: e.message,
            }),
        }
    }
}

/// Removes a pending entry when a request ends without a reply (timeout or cancellation).
struct PendingGuard<'a> {
    shared: &'a Shared,
    key: Key,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        let mut t = lock(&self.shared.table);
        if t.pending.remove(&self.key).is_some() {
            t.finish(self.key, Finished::Expired);
        }
    }
}

/// A broadcast-capable UDP socket with a large receive buffer (a fleet answers in bursts).
fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_broadcast(true)?;
    // best effort: the kernel caps it at net.core.rmem_max
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn receive_loop(socket: Arc<UdpSocket>, shared: Arc<Shared>, cancel: CancellationToken) {
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        let (n, from) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    // ICMP port unreachable etc. surface here on some platforms; keep going.
                    tracing::debug!(error = %e, "udp_recv_error");
                    continue;
                }
            },
        };
        let at = Instant::now();
        let bytes = buf.get(..n).unwrap_or_default();
        let resp = match Response::decode(bytes) {
            Ok(r) => r,
            Err(e) => {
                shared.counters.garbage.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%from, error = %e, "datagram_garbage");
                continue;
            }
        };
        let Some(id) = resp.id else {
            shared.counters.garbage.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%from, "datagram_without_id");
            continue;
        };
        let key = (from, id);
        let mut t = lock(&shared.table);
        if let Some(tx) = t.pending.remove(&key) {
            t.finish(key, Finished::Answered);
            drop(t);
            shared.counters.matched.fetch_add(1, Ordering::Relaxed);
            let _ = tx.send((resp, at));
            continue;
        }
        let seen = t
            .recent
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, h)| *h);
        drop(t);
        match seen {
            Some(Finished::Answered) => {
                shared.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%from, id, "reply_duplicate");
            }
            Some(Finished::Expired) => {
                shared.counters.late.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%from, id, "reply_late");
            }
            None => {
                shared.counters.unknown.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%from, id, "reply_unknown");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::protocol::{DeviceResult, EsMode, EsStatus, decode_result};
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn decoder_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..5000)) {
            let _ = Response::decode(&bytes);
        }

        #[test]
        fn decoder_never_panics_on_json(
            id in prop_oneof![Just(serde_json::json!(null)), any::<i64>().prop_map(serde_json::Value::from), ".*".prop_map(serde_json::Value::from)],
            key in prop_oneof![Just("result"), Just("error"), Just("other")],
            inner in prop_oneof![
                Just(serde_json::json!({"mode": 99, "bat_soc": "x", "ongrid_power": [1]})),
                Just(serde_json::json!({"code": "abc", "message": 5})),
                Just(serde_json::json!([1, 2, 3])),
                any::<f64>().prop_map(serde_json::Value::from),
                ".*".prop_map(serde_json::Value::from),
            ],
        ) {
            let v = serde_json::json!({ "id": id, key: inner });
            let bytes = serde_json::to_vec(&v).unwrap();
            if let Ok(Response { body: Ok(res), .. }) = Response::decode(&bytes) {
                let _ = decode_result::<EsMode>(&res);
                let _ = decode_result::<EsStatus>(&res);
                let _ = decode_result::<DeviceResult>(&res);
            }
        }
    }
}
