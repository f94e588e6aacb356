//! The connection cap, and who gives way when it is reached.
//!
//! Every open connection (over all listeners) holds one permit of a semaphore of
//! `[daemon] max_connections` permits, and is listed in accept order with the
//! number of requests it has in flight. At the cap, a new connection **evicts the
//! oldest connection that has no request in flight** (an idle keep-alive
//! connection, or one still sending its request head or body) and takes its
//! permit, as nginx reuses its idle connections when it runs out
//! (`ngx_drain_connections`). Only when every connection is waiting for the
//! daemon's answer is the new one closed.
//!
//! Without this, clients that connect and then send nothing (or trickle bytes)
//! would hold every slot until `client_timeout_secs` closes them, and an
//! attacker who reconnects at once would keep every new client out. With it, a
//! slow client keeps its slot only until newer clients need it, and the oldest
//! goes first; memory stays bounded by the cap either way.
//!
//! What "in flight" means: the daemon has a whole request and owes its answer.
//! hyper calls the service in the same poll of the connection task that parses a
//! request head, and our handlers answer at once, so hyper writes the small
//! response in that same poll. The count is taken when hyper calls the service and
//! released when the handler's future is done or dropped; between two polls of the
//! connection task it is therefore exact, and that is when the task looks at it
//! (see [`Admitted::evicted`]). The one thing a handler waits for is a request
//! body (no API needs one): while it waits, the request does not count
//! ([`InFlight::waiting_for_client`]), because a client trickling a body is as
//! slow as one trickling its head, and would otherwise hold its slot against
//! eviction for the whole body timeout.
//!
//! An evicted connection with nothing in flight is dropped at once (its socket
//! closed). Dropping, not hyper's graceful shutdown: a fresh connection that has
//! not finished its first head is not idle to hyper (its keep-alive state starts
//! busy), so a graceful shutdown would leave a slowloris client its full timeout.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Longest the accept loop waits for an evicted connection to give its permit
/// back. An idle one does so within microseconds; one that received a request in
/// between finishes it first.
pub const EVICTION_WAIT: Duration = Duration::from_secs(1);

/// One open connection, as the accept loop sees it.
#[derive(Debug, Default)]
struct Tracked {
    /// Requests handed to the service whose handler has not finished.
    in_flight: AtomicUsize,
    /// Set once the connection was chosen to give way.
    evicted: AtomicBool,
    /// Wakes the connection's task when it was chosen.
    wake: Notify,
}

/// Every open connection over all listeners, capped.
#[derive(Debug)]
pub struct Connections {
    cap: usize,
    permits: Arc<Semaphore>,
    /// Open connections by accept order (ids only grow).
    open: Mutex<BTreeMap<u64, Arc<Tracked>>>,
    next_id: AtomicU64,
}

/// What became of a new connection.
#[derive(Debug)]
pub enum Admission {
    /// It may be served.
    Admitted(Admitted),
    /// Every connection is serving a request (or the one evicted did not give its
    /// permit back in time): close it.
    Full,
}

impl Connections {
    /// Room for `cap` connections (at least one).
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        Self {
            cap,
            permits: Arc::new(Semaphore::new(cap)),
            open: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(0),
        }
    }

    /// The cap.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.cap - self.permits.available_permits()
    }

    /// Admits a new connection, evicting the oldest one with no request in flight
    /// when the cap is reached; waits at most `wait` for that one's permit.
    pub async fn admit(self: &Arc<Self>, wait: Duration) -> Admission {
        if let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() {
            return Admission::Admitted(self.register(permit));
        }
        if !self.evict_oldest_idle() {
            return Admission::Full;
        }
        match tokio::time::timeout(wait, Arc::clone(&self.permits).acquire_owned()).await {
            Ok(Ok(permit)) => Admission::Admitted(self.register(permit)),
            // Timed out, or the semaphore was closed (it never is).
            Ok(Err(_)) | Err(_) => Admission::Full,
        }
    }

    /// Waits until every connection is gone, at most `timeout`; false if some are
    /// still open then.
    pub async fn drained(&self, timeout: Duration) -> bool {
        let all = u32::try_from(self.cap).unwrap_or(u32::MAX);
        tokio::time::timeout(timeout, self.permits.acquire_many(all))
            .await
            .is_ok()
    }

    fn register(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Admitted {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let tracked = Arc::new(Tracked::default());
        self.lock().insert(id, Arc::clone(&tracked));
        Admitted {
            id,
            tracked,
            connections: Arc::clone(self),
            _permit: permit,
        }
    }

    /// Signals the oldest connection with no request in flight (and not already
    /// signalled) to close. False when there is none.
    fn evict_oldest_idle(&self) -> bool {
        let open = self.lock();
        let oldest = open.values().find(|tracked| {
            !tracked.evicted.load(Ordering::Acquire)
                && tracked.in_flight.load(Ordering::Acquire) == 0
        });
        match oldest {
            Some(tracked) => {
                tracked.evicted.store(true, Ordering::Release);
                // `notify_one` keeps the wake-up if the task is not waiting yet.
                tracked.wake.notify_one();
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Tracked>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An admitted connection: holds its permit and its place in the accept order
/// until dropped.
#[derive(Debug)]
pub struct Admitted {
    id: u64,
    tracked: Arc<Tracked>,
    connections: Arc<Connections>,
    // Declared last: dropped after `Drop::drop` has taken the entry out of the list,
    // so a waiting accept loop never sees the permit before the list is current.
    _permit: OwnedSemaphorePermit,
}

impl Admitted {
    /// Counts one request in flight until the returned guard is dropped. Call it
    /// where hyper calls the service, not inside the handler's future, so the
    /// request counts from the moment its head is parsed.
    pub fn request_started(&self) -> InFlight {
        self.tracked.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight {
            tracked: Arc::clone(&self.tracked),
            counted: true,
        }
    }

    /// True while a request is in flight.
    pub fn is_busy(&self) -> bool {
        self.tracked.in_flight.load(Ordering::Acquire) > 0
    }

    /// Completes when this connection was chosen to give way.
    pub async fn evicted(&self) {
        self.tracked.wake.notified().await;
    }

    /// Its place in the accept order (for logs).
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.connections.lock().remove(&self.id);
    }
}

/// One request in flight; the count drops with it.
#[derive(Debug)]
pub struct InFlight {
    tracked: Arc<Tracked>,
    /// False while the request waits for its client (then it is not counted).
    counted: bool,
}

impl InFlight {
    /// Runs `wait` (reading from the client) with this request not counted, so
    /// the connection may be evicted meanwhile; if it is, `wait` is dropped with
    /// the connection and the count stays right.
    pub async fn waiting_for_client<F: std::future::Future>(&mut self, wait: F) -> F::Output {
        self.tracked.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.counted = false;
        let output = wait.await;
        self.tracked.in_flight.fetch_add(1, Ordering::AcqRel);
        self.counted = true;
        output
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.counted {
            self.tracked.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(admission: Admission) -> Admitted {
        match admission {
            Admission::Admitted(admitted) => admitted,
            Admission::Full => panic!("expected a slot"),
        }
    }

    /// A connection's task as `http` runs it, reduced to its eviction rule: when
    /// chosen, an idle connection closes at once; a busy one when its request ends
    /// (here: when `finish` is notified).
    fn run(admitted: Admitted, finish: Arc<Notify>) -> tokio::task::JoinHandle<u64> {
        tokio::spawn(async move {
            admitted.evicted().await;
            if admitted.is_busy() {
                finish.notified().await;
            }
            admitted.id()
        })
    }

    #[tokio::test]
    async fn at_the_cap_the_oldest_idle_connection_gives_way() {
        let connections = Arc::new(Connections::new(3));
        let wait = Duration::from_secs(1);
        let first = admitted(connections.admit(wait).await);
        let second = admitted(connections.admit(wait).await);
        let third = admitted(connections.admit(wait).await);
        assert_eq!(connections.open(), 3);
        // The oldest is serving a request: it is skipped.
        let request = first.request_started();
        let finish = Arc::new(Notify::new());
        let first = run(first, Arc::clone(&finish));
        let second = run(second, Arc::clone(&finish));
        let third = run(third, Arc::clone(&finish));

        let fourth = admitted(connections.admit(wait).await);
        assert_eq!(second.await.unwrap(), 1, "the oldest idle one went");
        assert_eq!(connections.open(), 3, "the cap holds");
        assert!(!third.is_finished());
        assert!(!first.is_finished());

        let fifth = admitted(connections.admit(wait).await);
        assert_eq!(third.await.unwrap(), 2);
        assert!(!first.is_finished(), "still serving its request");
        assert_eq!((fourth.id(), fifth.id()), (3, 4));

        // The busy one and the two newest: the newest are idle, so the next evicts
        // the fourth, not the busy first.
        let fourth = run(fourth, Arc::clone(&finish));
        let _sixth = admitted(connections.admit(wait).await);
        assert_eq!(fourth.await.unwrap(), 3);
        drop(request);
        drop(fifth);
    }

    #[tokio::test]
    async fn when_every_connection_is_busy_the_new_one_is_refused() {
        let connections = Arc::new(Connections::new(2));
        let wait = Duration::from_millis(200);
        let first = admitted(connections.admit(wait).await);
        let second = admitted(connections.admit(wait).await);
        let requests = (first.request_started(), second.request_started());
        assert!(matches!(connections.admit(wait).await, Admission::Full));
        assert_eq!(connections.open(), 2);
        // A request ending makes its connection evictable again.
        drop(requests);
        let finish = Arc::new(Notify::new());
        let first = run(first, Arc::clone(&finish));
        let _third = admitted(connections.admit(wait).await);
        assert_eq!(first.await.unwrap(), 0);
        drop(second);
    }

    #[tokio::test]
    async fn an_evicted_connection_that_never_lets_go_costs_the_new_one_its_slot() {
        // A connection chosen while idle but stuck finishing a request (it arrived
        // just before the signal was seen) keeps its slot; the wait is bounded.
        let connections = Arc::new(Connections::new(1));
        let wait = Duration::from_millis(100);
        let stuck = admitted(connections.admit(wait).await);
        assert!(matches!(connections.admit(wait).await, Admission::Full));
        // It was signalled once; it is not chosen twice.
        assert!(!connections.evict_oldest_idle());
        drop(stuck);
        let _next = admitted(connections.admit(wait).await);
    }

    #[tokio::test]
    async fn a_request_waiting_for_its_body_does_not_protect_its_connection() {
        let connections = Arc::new(Connections::new(1));
        let wait = Duration::from_secs(1);
        let reading = admitted(connections.admit(wait).await);
        let mut request = reading.request_started();
        assert!(reading.is_busy());
        let body = Arc::new(Notify::new());
        let arrived = Arc::clone(&body);
        // The handler: waits for a body that never comes, with the request not
        // counted, on the connection's task; eviction drops it mid-wait.
        let task = tokio::spawn(async move {
            tokio::select! {
                () = request.waiting_for_client(arrived.notified()) => unreachable!(),
                () = reading.evicted() => {
                    assert!(!reading.is_busy(), "not busy while waiting for the body");
                    drop(request);
                    // Dropped mid-wait: the count did not go below zero.
                    assert!(!reading.is_busy());
                    reading.id()
                }
            }
        });
        // Let the handler reach its wait.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _next = admitted(connections.admit(wait).await);
        assert_eq!(task.await.unwrap(), 0);
    }

    #[tokio::test]
    async fn the_count_comes_back_after_the_wait() {
        let connections = Arc::new(Connections::new(1));
        let open = admitted(connections.admit(Duration::ZERO).await);
        let mut request = open.request_started();
        let during = request.waiting_for_client(async { open.is_busy() }).await;
        assert!(!during);
        assert!(open.is_busy(), "counted again once the body is in");
        drop(request);
        assert!(!open.is_busy());
    }

    #[tokio::test]
    async fn drained_waits_for_every_connection() {
        let connections = Arc::new(Connections::new(2));
        let open = admitted(connections.admit(Duration::ZERO).await);
        assert!(!connections.drained(Duration::from_millis(50)).await);
        drop(open);
        assert!(connections.drained(Duration::from_millis(50)).await);
    }
}
