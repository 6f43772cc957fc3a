//! The policy directory: one `TENANT.wasm` per tenant, loaded at start and watched.
//!
//! Compilation and settings validation run on the watcher thread ([`Watcher`]), never on a
//! broker's; or, for a host that must run no thread of ours ([`PolledWatcher`]), compiles run
//! in child processes started and looked at from the host's event loop, which then validates
//! the settings. A loaded module is published in [`Latest`], from which every worker swaps it
//! in at its next callback. A file that fails to load (half-written, corrupt, wrong WIT version,
//! refused settings) changes nothing that runs: it produces one `load-failed` event per
//! version of the file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use mqtt_policy_host::events::{Action, Event, EventSink, Severity};
use mqtt_policy_host::{Engine, Loading, PolicyModule, Tenant, policy_digest};

use crate::notify::{self, DirNotify, Waker};
use crate::tenancy::check_name;
use crate::trust::TenantCas;

/// Makes the event sink of a tenant from its name.
pub type SinkFactory = Arc<dyn Fn(&str) -> Arc<dyn EventSink> + Send + Sync>;

/// The tenants known to one gateway, shared by its workers and its watcher thread.
/// A tenant's counters and connection count live here, so they survive reloads.
///
/// Only tenants with a file in the policy directory are kept (the operator bounds them).
/// A tenant a client names (a client-id or user-name pattern) that has no file gets a
/// short-lived [`Tenant`] whose events go to one sink shared by all such tenants, so clients
/// inventing tenant names grow nothing and share one event budget.
pub struct Tenants {
    by_name: Mutex<HashMap<String, Tenant>>,
    sink: SinkFactory,
    unknown: Arc<dyn EventSink>,
}

impl Tenants {
    /// `sink` makes the event sink of a tenant by name; `unknown` takes the events of every
    /// tenant without a policy file.
    pub fn new(sink: SinkFactory, unknown: Arc<dyn EventSink>) -> Tenants {
        Tenants { by_name: Mutex::new(HashMap::new()), sink, unknown }
    }

    /// The tenant called `name`, kept from now on: for the watcher, which creates the tenant
    /// of each policy file it finds.
    pub fn get(&self, name: &str) -> Tenant {
        let mut map = self.by_name.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(name.to_owned()).or_insert_with(|| Tenant::with_events(name, (self.sink)(name))).clone()
    }

    /// The tenant called `name` if it has a policy file (or had one), else a short-lived
    /// tenant with the shared sink, which nothing keeps.
    pub fn lookup(&self, name: &str) -> Tenant {
        let map = self.by_name.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(name) {
            Some(t) => t.clone(),
            None => Tenant::with_events(name, self.unknown.clone()),
        }
    }

    /// Number of tenants kept.
    pub fn len(&self) -> usize {
        self.by_name.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no tenant is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A policy ready to swap in for a tenant.
pub struct Loaded {
    /// Tenant name (the file stem): `acme`, or `acme.next` for acme's candidate policy.
    pub tenant: String,
    /// The compiled, validated module; `None` when a candidate's file was removed (a tenant's
    /// enforced policy is never withdrawn: the last good one stays).
    pub module: Option<PolicyModule>,
}

/// The newest good module of every tenant, published by the watcher for any number of
/// workers. A module is never removed: a deleted or broken file keeps the last good one.
#[derive(Default)]
pub struct Latest {
    /// Copy of `Modules::generation`, read on every callback without the lock. A worker that
    /// reads a new value before the lock shows the change only retries at its next callback,
    /// because it records the generation it saw under the lock.
    hint: AtomicU64,
    modules: Mutex<Modules>,
}

#[derive(Default)]
struct Modules {
    generation: u64,
    /// Per tenant: the generation it was published at, and the module (`None`: a withdrawn
    /// candidate).
    by_tenant: HashMap<String, (u64, Option<PolicyModule>)>,
}

impl Latest {
    /// Publishes `loaded` as its tenant's module.
    pub fn publish(&self, loaded: Loaded) {
        let mut m = self.modules.lock().unwrap_or_else(|e| e.into_inner());
        m.generation += 1;
        let generation = m.generation;
        m.by_tenant.insert(loaded.tenant, (generation, loaded.module));
        self.hint.store(generation, Ordering::Release);
    }

    /// The current generation: one relaxed atomic load, so asking on every check is free.
    pub fn generation(&self) -> u64 {
        self.hint.load(Ordering::Relaxed)
    }

    /// Every module published after generation `seen`, with the generation they bring the
    /// caller to.
    pub fn since(&self, seen: u64) -> (u64, Vec<(String, Option<PolicyModule>)>) {
        let m = self.modules.lock().unwrap_or_else(|e| e.into_inner());
        let changed = m
            .by_tenant
            .iter()
            .filter(|(_, (g, _))| *g > seen)
            .map(|(t, (_, module))| (t.clone(), module.clone()))
            .collect();
        (m.generation, changed)
    }

    /// Tenants with an enforced module, sorted.
    pub fn tenants(&self) -> Vec<String> {
        let m = self.modules.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<String> = m.by_tenant.keys().filter(|t| candidate_of(t).is_none()).cloned().collect();
        v.sort();
        v
    }
}

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(meta: &std::fs::Metadata) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    Stamp { modified: meta.modified().ok(), len: meta.len(), inode: meta.ino() }
}

/// What [`Scanner::start_scan`] found.
pub struct Scan {
    /// A load per new or changed file, to start one at a time.
    pub jobs: Vec<Job>,
    /// Candidates whose file was removed ([`Loaded::module`] is `None`).
    pub withdrawn: Vec<Loaded>,
    /// Every tenant whose file was removed (candidates too): a load of it still running or
    /// waiting is dropped, so a file deleted while it compiled never comes into force.
    pub removed: Vec<String>,
}

/// Scans the directory and loads what changed. Owned by the watcher thread (and used once
/// synchronously at start, so a gateway answers with every policy from its first check).
pub struct Scanner {
    dir: PathBuf,
    only: Option<String>,
    engine: Engine,
    tenants: Arc<Tenants>,
    /// The operator's CAs: a policy embedding another tenant's is not loaded.
    cas: TenantCas,
    seen: HashMap<String, Stamp>,
    /// The SHA-256 of each tenant's file as last loaded: a file whose stamp changed but whose
    /// bytes did not (`touch`) is not loaded again, since loading validates the policy, on the
    /// broker's thread where there is no watcher thread.
    loaded: HashMap<String, String>,
    dir_error: Option<String>,
}

/// A new or changed file to load ([`Scanner::start_scan`]), not started yet: a host starts
/// one at a time ([`Job::start`]), so a scan of many changed files compiles them one after
/// another, each within its own time and memory bound, not all at once.
pub struct Job {
    /// The tenant (the file stem).
    pub tenant: String,
    handle: Tenant,
    path: PathBuf,
    stamp: Stamp,
    engine: Engine,
    cas: TenantCas,
}

impl Job {
    /// Starts loading the file (its compile in a child process, with a compiler).
    pub fn start(self) -> Loading {
        // A candidate's CAs are checked as its tenant's.
        let owner = candidate_of(&self.tenant).unwrap_or(&self.tenant).to_owned();
        let cas = self.cas;
        let admit = move |m: &PolicyModule| cas.conflict(&owner, m.tenant_cas()).map_or(Ok(()), Err);
        PolicyModule::start_loading_for_tenant(&self.engine, &self.handle, &self.path, None, admit)
    }
}

impl Scanner {
    /// A scanner of `dir`; with `only`, just that tenant's file is considered. A policy that
    /// embeds a CA `cas` assigns to another tenant is refused.
    pub fn new(dir: &Path, only: Option<String>, engine: Engine, tenants: Arc<Tenants>, cas: TenantCas) -> Scanner {
        Scanner {
            dir: dir.to_owned(),
            only,
            engine,
            tenants,
            cas,
            seen: HashMap::new(),
            loaded: HashMap::new(),
            dir_error: None,
        }
    }

    /// Records that `module` loaded for `tenant` (see [`Scanner::loaded`]'s field).
    pub fn loaded(&mut self, tenant: &str, module: &PolicyModule) {
        self.loaded.insert(tenant.to_owned(), module.digest().to_owned());
    }

    /// Loads every new or changed `TENANT.wasm` (all of them with `force`). Returns what
    /// loaded; failures are events.
    pub fn scan(&mut self, force: bool) -> Vec<Loaded> {
        let Scan { jobs, withdrawn, .. } = self.start_scan(force);
        let mut loaded = Vec::new();
        for job in jobs {
            let tenant = job.tenant.clone();
            if let Ok(m) = job.start().wait() {
                self.loaded(&tenant, &m);
                loaded.push(Loaded { tenant, module: Some(m) });
            }
        }
        loaded.extend(withdrawn);
        loaded
    }

    /// As [`Scanner::scan`], without loading: the files to load, the candidates withdrawn
    /// (to publish at once) and the tenants whose file was removed.
    pub fn start_scan(&mut self, force: bool) -> Scan {
        let mut jobs = Vec::new();
        let mut loaded = Vec::new();
        let mut removed = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => {
                self.dir_error = None;
                e
            }
            Err(e) => {
                let message = format!(
                    "cannot read policy directory {}: {e}; the loaded policies stay in force",
                    self.dir.display()
                );
                if self.dir_error.as_deref() != Some(message.as_str()) {
                    self.event_all(&message);
                    self.dir_error = Some(message);
                }
                return Scan { jobs, withdrawn: loaded, removed };
            }
        };
        let mut present = std::collections::HashSet::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(tenant) = tenant_of(&path) else { continue };
            // A listener bound to one tenant watches its file and its candidate's.
            if self.only.as_deref().is_some_and(|o| o != candidate_of(&tenant).unwrap_or(&tenant)) {
                continue;
            }
            let Ok(meta) = std::fs::metadata(&path) else { continue };
            if !meta.is_file() {
                continue;
            }
            present.insert(tenant.clone());
            let now = stamp(&meta);
            if !force && self.seen.get(&tenant) == Some(&now) {
                continue;
            }
            self.seen.insert(tenant.clone(), now);
            if !force
                && let Some(loaded) = self.loaded.get(&tenant)
                && std::fs::read(&path).is_ok_and(|bytes| policy_digest(&bytes) == *loaded)
            {
                continue;
            }
            let handle = self.tenants.get(&tenant);
            let (engine, cas) = (self.engine.clone(), self.cas.clone());
            jobs.push(Job { tenant, handle, path, stamp: now, engine, cas });
        }
        let gone: Vec<String> = self.seen.keys().filter(|t| !present.contains(*t)).cloned().collect();
        for tenant in gone {
            self.seen.remove(&tenant);
            self.loaded.remove(&tenant);
            removed.push(tenant.clone());
            let message = if candidate_of(&tenant).is_some() {
                // Promoted (renamed to the tenant's file) or given up: no longer evaluated.
                loaded.push(Loaded { tenant: tenant.clone(), module: None });
                format!(
                    "candidate policy file {} was removed; it is no longer evaluated",
                    self.dir.join(format!("{tenant}.wasm")).display()
                )
            } else {
                format!(
                    "policy file {} was removed; the loaded policy stays in force until a new file arrives or the broker restarts",
                    self.dir.join(format!("{tenant}.wasm")).display()
                )
            };
            let event = Event::new(&tenant, Action::Load, Severity::Warn, "file-removed", message);
            self.tenants.get(&tenant).events().emit(event);
        }
        Scan { jobs, withdrawn: loaded, removed }
    }

    fn event_all(&self, message: &str) {
        let names: Vec<String> = match &self.only {
            Some(t) => vec![t.clone()],
            None => self.seen.keys().cloned().collect(),
        };
        let names = if names.is_empty() { vec!["*".to_owned()] } else { names };
        for name in names {
            let event = Event::new(&name, Action::Load, Severity::Error, "load-failed", message);
            self.tenants.get(&name).events().emit(event);
        }
    }
}

/// The tenant a file serves: `acme.wasm` → `acme`, and `acme.next.wasm` → `acme.next` (acme's
/// candidate, see [`candidate_of`]). Other files are ignored (editors' temp files,
/// `acme.wasm.tmp` written before an atomic rename).
pub fn tenant_of(path: &Path) -> Option<String> {
    if path.extension()? != "wasm" {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    let name = candidate_of(stem).unwrap_or(stem);
    check_name(name).ok().map(|()| stem.to_owned())
}

/// The tenant whose candidate policy `stem` names (`acme.next` → `acme`), if it names one.
pub fn candidate_of(stem: &str) -> Option<&str> {
    stem.strip_suffix(crate::tenancy::CANDIDATE_SUFFIX)
}

/// The background watcher: scans when a file lands in the directory (inotify), every `poll`
/// in any case, and at once when asked (SIGHUP).
pub struct Watcher {
    stop: Arc<AtomicBool>,
    rescan: Arc<AtomicBool>,
    /// Ends the thread's wait when `stop` or `rescan` is set, so it need not wake to look.
    waker: Option<Arc<Waker>>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    /// Starts the thread; it publishes every module it loads in `latest`.
    pub fn spawn(mut scanner: Scanner, poll: Duration, latest: Arc<Latest>) -> std::io::Result<Watcher> {
        let stop = Arc::new(AtomicBool::new(false));
        let rescan = Arc::new(AtomicBool::new(false));
        let (stop2, rescan2) = (stop.clone(), rescan.clone());
        let waker = Waker::new().map(Arc::new);
        let waker2 = waker.clone();
        let thread = std::thread::Builder::new().name("mqtt-policy-watch".into()).spawn(move || {
            let mut notify = DirNotify::new(&scanner.dir);
            while !stop2.load(Ordering::Relaxed) {
                let force = rescan2.swap(false, Ordering::Relaxed);
                for loaded in scanner.scan(force) {
                    latest.publish(loaded);
                }
                if let Some(n) = notify.as_mut() {
                    n.rewatch();
                }
                // A file landing (inotify), a stop or a rescan request (the waker) ends the
                // wait at once; it wakes otherwise only for the periodic scan. Without a waker
                // it waits in 10 ms steps to look at the flags.
                let step = if waker2.is_some() { poll } else { poll.min(Duration::from_millis(10)) };
                let mut slept = Duration::ZERO;
                while slept < poll && !stop2.load(Ordering::Relaxed) && !rescan2.load(Ordering::Relaxed) {
                    let step = (poll - slept).min(step);
                    if notify::wait(notify.as_mut(), waker2.as_deref(), step) {
                        break;
                    }
                    slept += step;
                }
            }
        })?;
        Ok(Watcher { stop, rescan, waker, thread: Some(thread) })
    }

    /// Asks for a full re-read of every file (e.g. on a broker's SIGHUP).
    pub fn rescan(&self) {
        self.rescan.store(true, Ordering::Relaxed);
        if let Some(w) = &self.waker {
            w.wake();
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = &self.waker {
            w.wake();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The watcher of a host that must run no thread of ours: the host calls
/// [`PolledWatcher::poll`] from its event loop (Mosquitto's TICK). It scans every `poll`, and
/// at once after [`PolledWatcher::rescan`]; changed files are loaded one at a time, each
/// compile in a child process, and a later `poll` that finds it done validates the policy and
/// publishes it. A file changed again while it compiles starts over (the older compile is
/// killed); a rescan leaves a compile of an unchanged file running; a file removed while it
/// compiles or waits is not loaded. No inotify: with the scan every `poll` anyway, reading its
/// descriptor at every turn of the broker's loop would only add a system call per turn (0.2 per
/// message at 200 messages/s, counted), so a file lands within `poll` (100 ms by default).
pub struct PolledWatcher {
    scanner: Scanner,
    poll: Duration,
    next_scan: Instant,
    rescan: bool,
    /// The load running: its tenant, its file's stamp, the load.
    current: Option<(String, Stamp, Loading)>,
    waiting: std::collections::VecDeque<Job>,
    latest: Arc<Latest>,
}

impl PolledWatcher {
    /// A watcher publishing in `latest` what `scanner` loads.
    pub fn new(scanner: Scanner, poll: Duration, latest: Arc<Latest>) -> PolledWatcher {
        PolledWatcher {
            scanner,
            poll,
            next_scan: Instant::now() + poll,
            rescan: false,
            current: None,
            waiting: Default::default(),
            latest,
        }
    }

    /// Does what is due at `now`: finishes the running load if its compile ended (at most one
    /// policy validated per call), scans if a rescan was asked for or `poll` has passed, and
    /// starts the next waiting load. Otherwise nothing but one `waitpid` while a compile runs.
    pub fn poll(&mut self, now: Instant) {
        if let Some((tenant, _, loading)) = &mut self.current
            && let Some(done) = loading.poll()
        {
            if let Ok(module) = done {
                self.scanner.loaded(tenant, &module);
                self.latest.publish(Loaded { tenant: tenant.clone(), module: Some(module) });
            }
            self.current = None;
        }
        if self.rescan || now >= self.next_scan {
            let force = std::mem::take(&mut self.rescan);
            self.next_scan = now + self.poll;
            let Scan { jobs, withdrawn, removed } = self.scanner.start_scan(force);
            for tenant in &removed {
                self.drop_load_of(tenant);
            }
            for job in jobs {
                if let Some((t, stamp, _)) = &self.current
                    && *t == job.tenant
                {
                    if *stamp == job.stamp {
                        continue;
                    }
                    self.current = None;
                }
                self.waiting.retain(|j| j.tenant != job.tenant);
                self.waiting.push_back(job);
            }
            for w in withdrawn {
                self.latest.publish(w);
            }
        }
        if self.current.is_none()
            && let Some(job) = self.waiting.pop_front()
        {
            let (tenant, stamp) = (job.tenant.clone(), job.stamp);
            self.current = Some((tenant, stamp, job.start()));
        }
    }

    /// Drops the running or waiting load of `tenant` (its compile is killed).
    fn drop_load_of(&mut self, tenant: &str) {
        if self.current.as_ref().is_some_and(|(t, _, _)| t == tenant) {
            self.current = None;
        }
        self.waiting.retain(|j| j.tenant != tenant);
    }

    /// Asks for a full re-read of every file at the next [`PolledWatcher::poll`].
    pub fn rescan(&mut self) {
        self.rescan = true;
    }

    /// Whether a load is running or waiting.
    pub fn loading(&self) -> bool {
        self.current.is_some() || !self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_safe_wasm_names_are_tenants() {
        assert_eq!(tenant_of(Path::new("/p/acme.wasm")).as_deref(), Some("acme"));
        assert_eq!(tenant_of(Path::new("/p/acme.wasm.tmp")), None);
        assert_eq!(tenant_of(Path::new("/p/acme.next.wasm")).as_deref(), Some("acme.next"));
        assert_eq!(candidate_of("acme.next"), Some("acme"));
        assert_eq!(tenant_of(Path::new("/p/.next.wasm")), None);
        assert!(check_name("acme.next").is_err(), "no tenant of its own");
        assert_eq!(tenant_of(Path::new("/p/.acme.wasm")), None);
        assert_eq!(tenant_of(Path::new("/p/ac me.wasm")), None);
        assert_eq!(tenant_of(Path::new("/p/acme.toml")), None);
    }
}
