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

use mqtt_policy_gateway::{ConnectOutcome, Gateway, Hello, Restored, Worker};

/// What a broker names a client by: (its scope of client ids, e.g. a RabbitMQ virtual host;
/// client id). Clients choose both, hence [`RandomState`] for the maps.
pub(crate) type Client = (String, String);

/// A session's key in the gateway worker: the client and the login that created the session.
/// Each login gets a key of its own, so a login the policy refuses leaves the session of the
/// client already connected under that id alone (the gateway then decides a takeover by client
/// id, as for any broker): over a stateless protocol the service cannot tell whether the
/// broker's earlier connection still exists.
pub(crate) type Key = (String, String, u64);

/// How often a worker applies reloads for quiet clients and ends idle sessions.
const TICK: Duration = Duration::from_secs(1);

/// How long an accepted login answers one identical login after it without asking the policy
/// again: RabbitMQ asks `user_path` twice per connection (authentication, then authorization,
/// milliseconds apart). Once only, so a client's next connection is decided by the policy.
const SAME_LOGIN: Duration = Duration::from_secs(1);

/// The session a client has now.
struct Current {
    key: Key,
    /// When the last request about it came: brokers such as RabbitMQ never say a client
    /// disconnected, so sessions end after [`Shard::idle`] without a request.
    seen: Instant,
    /// When it became the client's current session.
    since: Instant,
    /// The keyed hash of the login's user name and password, and when it was accepted.
    login: Option<(u64, Instant)>,
}

/// What one worker thread owns.
pub(crate) struct Shard {
    /// The gateway worker: sessions and policy instances.
    pub worker: Worker<Key, RandomState>,
    current: HashMap<Client, Current, RandomState>,
    next: u64,
    idle: Duration,
    /// Keys the login hashes, chosen per process.
    hasher: RandomState,
}

impl Shard {
    fn new(worker: Worker<Key, RandomState>, idle: Duration) -> Shard {
        Shard { worker, current: HashMap::default(), next: 0, idle, hasher: RandomState::new() }
    }

    /// The key of `client`'s current session, if the gateway still holds it; marks it used.
    pub fn session(&mut self, client: &Client) -> Option<Key> {
        let current = self.current.get_mut(client)?;
        if !self.worker.knows(&current.key) {
            self.current.remove(client);
            return None;
        }
        current.seen = Instant::now();
        Some(current.key.clone())
    }

    /// A key for a new session of `client` (a login, or a re-established session).
    pub fn fresh(&mut self, client: &Client) -> Key {
        self.next += 1;
        (client.0.clone(), client.1.clone(), self.next)
    }

    /// Whether `client`'s current session was accepted for exactly this login within
    /// [`SAME_LOGIN`] and no repeat has been answered that way yet.
    pub fn same_login(&mut self, client: &Client, username: &str, password: Option<&str>) -> bool {
        let hash = self.hasher.hash_one((username, password));
        let now = Instant::now();
        let Some(key) = self.session(client) else { return false };
        let admitted = self.worker.admitted(&key);
        let Some(current) = self.current.get_mut(client) else { return false };
        let same = current.login.take().is_some_and(|(h, at)| h == hash && now.duration_since(at) < SAME_LOGIN);
        same && admitted
    }

    /// Makes `key` `client`'s current session (the gateway admitted it, or re-established it);
    /// `login` is the accepted login's user name and password.
    pub fn adopt(&mut self, client: Client, key: Key, login: Option<(&str, Option<&str>)>) {
        let now = Instant::now();
        let login = login.map(|l| (self.hasher.hash_one(l), now));
        if let Some(old) = self.current.insert(client, Current { key: key.clone(), seen: now, since: now, login })
            && old.key != key
        {
            // Taken over by the new login: the gateway already ended it (or will, at its tick).
            self.worker.disconnect(&old.key);
        }
    }

    /// A login of `client`: a session of its own, made `client`'s current one if the policy
    /// admits it (a refused login leaves the session already there alone).
    pub fn login(&mut self, client: Client, hello: &Hello<'_>) -> (ConnectOutcome, Key) {
        let key = self.fresh(&client);
        let outcome = self.worker.connect(key.clone(), hello);
        if matches!(outcome, ConnectOutcome::Accept { .. }) {
            self.adopt(client, key.clone(), None);
        }
        (outcome, key)
    }

    /// The key of `client`'s session; one the service does not hold (it restarted, or the
    /// client's node asked another service) is re-established from `restored` with
    /// `resumed = true`, and kept even when refused: its checks then get the refusal, until a
    /// login.
    pub fn session_or_restore(&mut self, client: &Client, restored: &Restored<'_>) -> Key {
        if let Some(key) = self.session(client) {
            return key;
        }
        let key = self.fresh(client);
        self.worker.restore(key.clone(), restored);
        self.adopt(client.clone(), key.clone(), None);
        key
    }

    /// Ends `client`'s session now (the broker said its client disconnected for good); whether
    /// there was one.
    pub fn end(&mut self, client: &Client) -> bool {
        match self.current.remove(client) {
            Some(c) => {
                self.worker.end(&c.key);
                true
            }
            None => false,
        }
    }

    /// As [`Shard::end`], unless `client`'s session became its current one less than `grace`
    /// ago (a disconnect hook that may be about the connection it took over).
    pub fn end_unless_newer(&mut self, client: &Client, grace: Duration) -> bool {
        if self.current.get(client).is_some_and(|c| c.since.elapsed() < grace) {
            return false;
        }
        self.end(client)
    }

    /// Ends the sessions idle for longer than `idle` (a connected one with the gateway's
    /// `disconnect` event).
    fn sweep(&mut self, now: Instant) {
        let idle = self.idle;
        let stale: Vec<Client> =
            self.current.iter().filter(|(_, c)| now.duration_since(c.seen) > idle).map(|(k, _)| k.clone()).collect();
        for client in stale {
            if let Some(c) = self.current.remove(&client) {
                // Restored sessions (offline in the gateway) end too: nothing asks about them.
                self.worker.end(&c.key);
            }
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
            let shard = Shard::new(Worker::new(gateway.clone()), idle);
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
