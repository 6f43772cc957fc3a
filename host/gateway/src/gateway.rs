//! The part of a gateway all workers share: configuration, engine, tenants, the latest
//! policies and the watcher of the policy directory (a thread, or polled by the host).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use mqtt_policy_host::events::EventSink;
use mqtt_policy_host::{Engine, Tenant, Ticking};

use crate::config::{Config, Threads};
use crate::directory::{Latest, PolledWatcher, Scanner, Tenants, Watcher};
use crate::error::{Error, Result};
use crate::events::{MonitorMessage, MonitorQueue, TenantSink};
use crate::monitoring::Monitoring;
use crate::tenancy::TenantSource;

/// One gateway: shared by every [`Worker`](crate::Worker) (one per thread that answers
/// checks), `Sync`.
/// Dropping the last handle stops the watcher thread.
pub struct Gateway {
    config: Config,
    engine: Engine,
    tenants: Arc<Tenants>,
    latest: Arc<Latest>,
    monitor: Arc<MonitorQueue>,
    monitoring: Option<Monitoring>,
    // Dropped last: stops and joins the watcher thread.
    watcher: Watch,
}

/// The policy directory's watcher: a thread, or polled by the host ([`Threads`]).
enum Watch {
    Thread(Watcher),
    Polled(Box<Mutex<PolledWatcher>>),
}

impl Gateway {
    /// Opens the configured event target, loads every policy in the directory (a directory
    /// that cannot be read yet is watched until it can), and starts the watcher.
    pub fn start(config: Config) -> Result<Arc<Gateway>> {
        let lines = config.events.open()?;
        Gateway::with_sink(config, lines)
    }

    /// As [`Gateway::start`], with events going to `lines` instead of `config.events`.
    pub fn with_sink(config: Config, lines: Option<Arc<dyn EventSink>>) -> Result<Arc<Gateway>> {
        if config.tenant == TenantSource::Certificate && config.tenant_cas.is_empty() {
            return Err(Error::NoTenantCas);
        }
        let ticking = match config.threads {
            Threads::Own => Ticking::Thread,
            Threads::None => Ticking::Signal,
        };
        let engine = Engine::configured(config.limits, config.compiler.as_deref(), ticking).map_err(Error::Engine)?;
        let monitor = Arc::new(MonitorQueue::default());
        let monitoring = match config.monitoring {
            false => None,
            true => Some(Monitoring::start(monitor.clone(), config.monitoring_state.as_deref()).map_err(|source| {
                Error::MonitoringState { path: config.monitoring_state.clone().unwrap_or_default(), source }
            })?),
        };
        let ibm = config.monitoring;
        let monitor_config = config.monitor.clone();
        let queue = monitor.clone();
        // Tenants without a policy file publish no monitoring messages: their name comes from
        // a client, which must not choose what the broker publishes.
        let unknown = Arc::new(TenantSink::new(lines.clone(), None, monitor_config.clone()).with_monitoring(ibm));
        let sink = Arc::new(move |name: &str| -> Arc<dyn EventSink> {
            let monitor = monitor_config.as_ref().and_then(|m| m.topic_for(name)).map(|t| (t, queue.clone()));
            Arc::new(TenantSink::new(lines.clone(), monitor, monitor_config.clone()).with_monitoring(ibm))
        });
        let tenants = Arc::new(Tenants::new(sink, unknown));
        let only = match &config.tenant {
            TenantSource::Fixed(t) => Some(t.clone()),
            _ => None,
        };
        let latest = Arc::new(Latest::default());
        let mut scanner =
            Scanner::new(&config.policy_dir, only, engine.clone(), tenants.clone(), config.tenant_cas.clone());
        for loaded in scanner.scan(false) {
            latest.publish(loaded);
        }
        let watcher = match config.threads {
            Threads::Own => {
                Watch::Thread(Watcher::spawn(scanner, config.reload_poll, latest.clone()).map_err(Error::Watcher)?)
            }
            Threads::None => {
                Watch::Polled(Box::new(Mutex::new(PolledWatcher::new(scanner, config.reload_poll, latest.clone()))))
            }
        };
        Ok(Arc::new(Gateway { config, engine, tenants, latest, monitor, monitoring, watcher }))
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The engine policies run on.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The tenant called `name` (counters, connection count, events). A tenant with a file in
    /// the policy directory is kept for the gateway's life; any other name (one a client made
    /// up) gets a short-lived tenant whose events share one sink and one budget with every
    /// such name, so clients cannot grow the gateway by naming tenants.
    pub fn tenant(&self, name: &str) -> Tenant {
        self.tenants.lookup(name)
    }

    /// Number of tenants the gateway keeps: those with a policy file (or that had one), and
    /// `*` once an event concerned no tenant in particular.
    pub fn tenant_count(&self) -> usize {
        self.tenants.len()
    }

    /// Tenants with a policy loaded, sorted.
    pub fn loaded_tenants(&self) -> Vec<String> {
        self.latest.tenants()
    }

    /// Asks the watcher for a full re-read of every file (e.g. on a broker's SIGHUP); with
    /// [`Threads::None`], done at the next [`Gateway::poll_directory`].
    pub fn rescan(&self) {
        match &self.watcher {
            Watch::Thread(w) => w.rescan(),
            Watch::Polled(w) => w.lock().unwrap_or_else(|e| e.into_inner()).rescan(),
        }
    }

    /// With [`Threads::None`]: what the watcher thread would do, done now on the calling
    /// thread (see [`PolledWatcher::poll`]); for the host's event loop, every few
    /// milliseconds. Nothing with a watcher thread.
    pub fn poll_directory(&self, now: Instant) {
        if let Watch::Polled(w) = &self.watcher {
            w.lock().unwrap_or_else(|e| e.into_inner()).poll(now);
        }
    }

    /// How the engine's deadlines tick: a thread, or a timer signal (see [`Threads`]).
    pub fn ticking(&self) -> Ticking {
        self.engine.ticking()
    }

    /// Monitoring messages to publish through the broker (QoS 0, from no client), taken
    /// from the queue, oldest first; cheap when there are none.
    pub fn drain_monitor(&self) -> Vec<MonitorMessage> {
        self.monitor.drain()
    }

    /// Whether monitoring messages wait in the queue ([`Gateway::drain_monitor`]); one load.
    pub fn monitor_pending(&self) -> bool {
        !self.monitor.is_empty()
    }

    /// Messages dropped so far because the monitor queue was full or a budget refused them.
    pub fn monitor_dropped(&self) -> u64 {
        self.monitor.dropped()
    }

    /// IBM-style monitoring, when the configuration turns it on.
    pub(crate) fn monitoring(&self) -> Option<&Monitoring> {
        self.monitoring.as_ref()
    }

    pub(crate) fn latest(&self) -> &Arc<Latest> {
        &self.latest
    }
}
