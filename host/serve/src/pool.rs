//! The worker threads: each owns one gateway [`Worker`] and the last-seen time of each of its
//! sessions, and runs the jobs the HTTP side sends it.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mqtt_policy_gateway::{Gateway, Worker};

/// A session's key: (the broker's scope of client ids, e.g. a RabbitMQ virtual host; client id).
/// Clients choose both, hence [`RandomState`] for the session maps.
pub(crate) type Key = (String, String);

/// How often a worker applies reloads for quiet clients and ends idle sessions.
const TICK: Duration = Duration::from_secs(1);

/// What one worker thread owns.
pub(crate) struct Shard {
    /// The gateway worker: sessions and policy instances.
    pub worker: Worker<Key, RandomState>,
    /// When each session was last asked about: brokers such as RabbitMQ never say a client
    /// disconnected, so sessions end after [`Shard::idle`] without a request.
    seen: HashMap<Key, Instant, RandomState>,
    idle: Duration,
}

impl Shard {
    /// Records a request about `key`.
    pub fn touch(&mut self, key: &Key) {
        match self.seen.get_mut(key) {
            Some(t) => *t = Instant::now(),
            None => {
                self.seen.insert(key.clone(), Instant::now());
            }
        }
    }

    /// Ends the sessions idle for longer than `idle` (as a disconnect: the gateway's events
    /// and session ends apply).
    fn sweep(&mut self, now: Instant) {
        let idle = self.idle;
        let stale: Vec<Key> =
            self.seen.iter().filter(|(_, t)| now.duration_since(**t) > idle).map(|(k, _)| k.clone()).collect();
        for key in stale {
            self.seen.remove(&key);
            self.worker.disconnect(&key);
        }
    }
}

/// A job for a worker thread.
pub(crate) type Job = Box<dyn FnOnce(&mut Shard) + Send>;

/// The worker threads and their queues.
pub(crate) struct Pool {
    senders: Vec<SyncSender<Job>>,
    route: RandomState,
    sessions: Vec<Arc<AtomicUsize>>,
    threads: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Starts `n` workers of `gateway`, each with a queue of at most `queue` jobs.
    pub fn start(gateway: &Arc<Gateway>, n: usize, queue: usize, idle: Duration) -> std::io::Result<Pool> {
        let mut pool =
            Pool { senders: Vec::new(), route: RandomState::new(), sessions: Vec::new(), threads: Vec::new() };
        for i in 0..n.max(1) {
            let (tx, rx) = sync_channel::<Job>(queue.max(1));
            let sessions = Arc::new(AtomicUsize::new(0));
            let shard = Shard { worker: Worker::new(gateway.clone()), seen: HashMap::default(), idle };
            let count = sessions.clone();
            let thread =
                std::thread::Builder::new().name(format!("policy-{i}")).spawn(move || run(shard, rx, count))?;
            pool.senders.push(tx);
            pool.sessions.push(sessions);
            pool.threads.push(thread);
        }
        Ok(pool)
    }

    /// Queues `job` on the worker that holds the sessions of `client_id`; gives it back when
    /// that worker's queue is full.
    pub fn submit(&self, client_id: &str, job: Job) -> Result<(), Job> {
        let i = (self.route.hash_one(client_id) % self.senders.len() as u64) as usize;
        match self.senders[i].try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(job)) | Err(TrySendError::Disconnected(job)) => Err(job),
        }
    }

    /// Sessions held by all workers, as of their last job or tick.
    pub fn sessions(&self) -> usize {
        self.sessions.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.senders.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn run(mut shard: Shard, rx: Receiver<Job>, sessions: Arc<AtomicUsize>) {
    let mut last_tick = Instant::now();
    loop {
        match rx.recv_timeout(TICK) {
            Ok(job) => {
                // A panicking job drops its reply channel: the request is answered 503 `deny`.
                let _ = catch_unwind(AssertUnwindSafe(|| job(&mut shard)));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        if now.duration_since(last_tick) >= TICK {
            last_tick = now;
            // Expired proofs are denied at their next check; an HTTP service cannot kick clients.
            let _ = shard.worker.tick(now);
            shard.sweep(now);
        }
        sessions.store(shard.worker.session_count(), Ordering::Relaxed);
    }
}
