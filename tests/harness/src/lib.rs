//! The one broker harness of the workspace: a real Mosquitto (Debian's) started on free loopback
//! ports with a generated `mosquitto.conf`, with the mqtt-policy plugin or bare, waited for until
//! it listens, and stopped. The plugin's end-to-end tests, its demo example and reload bench, the
//! load generator's tests and, through the `mqtt-testbroker` binary, the measuring scripts all
//! start their brokers here. [`rabbitmq`] starts real RabbitMQ nodes and clusters (Debian's) and
//! the decision service they ask, for `mqtt-policy serve`'s tests.
//!
//! With the `plugin` feature it also has real MQTT clients ([`client`], rumqttc v5 and v3.1.1),
//! test CAs and certificates ([`pki`], rcgen) and [`hub_policy`], which builds a hub-rules policy
//! as `mqtt-policy build` does.
#![deny(missing_docs)]

#[cfg(feature = "plugin")]
pub mod client;
#[cfg(feature = "plugin")]
pub mod pki;
#[cfg(feature = "plugin")]
pub mod proofs;
pub mod rabbitmq;

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// What every generated `mosquitto.conf` starts with. `user root`: a broker started as root
/// stays root, so it can read the files the harness wrote; `set_tcp_nodelay`: without it
/// Nagle's algorithm adds ~40 ms to deliveries of small messages.
const BASE_CONF: &str =
    "user root\nmax_queued_messages 1000000\npersistence false\nset_tcp_nodelay true\nlog_dest stderr\n";

/// The log levels of a generated configuration: [`Broker::sighup`] waits for an
/// information-level line.
const LOG_CONF: &str = "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n";

/// The plugin library cargo built next to this test (or example, bench, harness) binary.
pub fn plugin_path() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let deps = exe.parent().expect("deps dir");
    for dir in [deps, deps.parent().expect("profile dir")] {
        let p = dir.join("libmqtt_policy_mosquitto.so");
        if p.exists() {
            return p;
        }
    }
    panic!("libmqtt_policy_mosquitto.so not found next to {}", exe.display());
}

/// The `mqtt-policy-compile` binary (of `mqtt-policy-host`) cargo built next to the plugin, for
/// `plugin_opt_compiler`. `cargo test --workspace --all-targets` builds it; a run of one test
/// file may not, hence the message.
pub fn compiler_path() -> PathBuf {
    let plugin = plugin_path();
    let profile = plugin.parent().map(|d| if d.ends_with("deps") { d.parent().unwrap_or(d) } else { d });
    let p = profile.expect("profile dir").join("mqtt-policy-compile");
    assert!(p.exists(), "{} not found: build it with `cargo build --workspace --bins --locked`", p.display());
    p
}

/// The broker binary: `$MOSQUITTO`, else Debian's.
pub fn mosquitto_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MOSQUITTO") {
        return p.into();
    }
    for p in ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("mosquitto is not installed: run `apt-get install -y mosquitto mosquitto-clients` (scripts/test.sh does)");
}

/// A port nobody listens on right now, and one this process has not handed out before: the
/// kernel may give a just-released ephemeral port again, and two listeners of one broker (or
/// two brokers of one test run) must not get the same one.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if given.insert(port) {
            return port;
        }
    }
}

/// Builds a hub-rules policy for `rules` (TOML) with `cas` embedded, as `mqtt-policy build` does.
#[cfg(feature = "plugin")]
pub fn hub_policy(rules: &str, cas: &[(&str, &str)]) -> Vec<u8> {
    use mqtt_policy_host::embedded::{self, EmbeddedCa};
    let cas: Vec<EmbeddedCa> =
        cas.iter().map(|(n, p)| EmbeddedCa { name: n.to_string(), pem: p.to_string() }).collect();
    embedded::embed_all(guest_artifacts::HUB_RULES_WASM, rules, &cas).expect("embedding rules")
}

/// Writes `bytes` as `dir/tenant.wasm` through a rename, as an operator's deploy would.
pub fn deploy(dir: &Path, tenant: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{tenant}.wasm.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{tenant}.wasm"))).unwrap();
}

/// A running broker; killed when dropped (its directory removed unless a test panicked or
/// the caller chose it).
pub struct Broker {
    /// The first listener's port.
    pub port: u16,
    /// The TLS listener's port, when there is one.
    pub tls_port: Option<u16>,
    /// Every listener port, in configuration order.
    pub ports: Vec<u16>,
    /// The broker's directory: `mosquitto.conf`, `mosquitto.log`, the policies, the events.
    pub dir: PathBuf,
    /// The plugin's policy directory.
    pub policy_dir: PathBuf,
    /// The plugin's events file (JSON lines).
    pub events: PathBuf,
    child: Child,
    log: PathBuf,
    keep: bool,
    conf: PathBuf,
}

/// What goes into mosquitto.conf besides the listener and the plugin line.
#[derive(Default, Clone)]
pub struct Setup {
    /// `plugin_opt_*` lines without the prefix, besides policy_dir and events.
    pub options: Vec<(String, String)>,
    /// Policies to put in the directory before start: (tenant, bytes).
    pub policies: Vec<(String, Vec<u8>)>,
    /// A TLS listener requiring client certificates: (CA bundle PEM, server cert PEM, server key PEM).
    pub tls: Option<(String, String, String)>,
    /// Mosquitto's `persistence true`, saved in the broker's directory (kept across [`Broker::restart`]).
    pub persistence: bool,
}

impl Setup {
    /// One tenant for every client of the listener, with its policy.
    pub fn tenant(name: &str, policy: Vec<u8>) -> Setup {
        Setup {
            options: vec![("tenant".into(), name.into())],
            policies: vec![(name.into(), policy)],
            tls: None,
            persistence: false,
        }
    }

    /// With Mosquitto's persistence on.
    pub fn persistent(mut self) -> Setup {
        self.persistence = true;
        self
    }

    /// With one more `plugin_opt_KEY VALUE` line.
    pub fn option(mut self, key: &str, value: &str) -> Setup {
        self.options.push((key.into(), value.into()));
        self
    }
}

static DIRS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A directory removed when dropped, unless the thread is panicking (kept for a look).
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh one (see [`temp_dir`]).
    pub fn new(tag: &str) -> TempDir {
        TempDir(temp_dir(tag))
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A fresh directory for one broker or service of this test process.
pub fn temp_dir(tag: &str) -> PathBuf {
    let n = DIRS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // The clock too: test processes in other PID namespaces may share /tmp and a pid.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("mqtt-policy-e2e-{}-{nanos}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Broker {
    /// Starts Mosquitto with the plugin and `setup`, and waits until it accepts connections.
    pub fn start(tag: &str, setup: Setup) -> Result<Broker> {
        Broker::start_in(temp_dir(tag), false, &mosquitto_bin(), Some(&plugin_path()), &setup, "")
    }

    /// Starts a bare Mosquitto (no plugin, anonymous clients allowed) with `extra_conf` lines
    /// at the end of its configuration, and waits until it accepts connections.
    pub fn start_bare(tag: &str, extra_conf: &str) -> Result<Broker> {
        Broker::start_in(temp_dir(tag), false, &mosquitto_bin(), None, &Setup::default(), extra_conf)
    }

    /// Starts Mosquitto with `setup`, with the plugin when `plugin` (else bare, anonymous clients
    /// allowed: `setup` then only adds persistence), and `extra_conf` lines at the end of its
    /// configuration; waits until it accepts connections. For side-by-side comparisons of the
    /// same configuration with and without the plugin.
    pub fn start_with(tag: &str, plugin: bool, setup: &Setup, extra_conf: &str) -> Result<Broker> {
        let path = plugin.then(plugin_path);
        Broker::start_in(temp_dir(tag), false, &mosquitto_bin(), path.as_deref(), setup, extra_conf)
    }

    /// Starts `mosquitto` in `dir` (created; kept afterwards when `keep`): with `plugin`, as
    /// [`Broker::start`] does; without, as [`Broker::start_bare`] does. `extra_conf` lines end
    /// the configuration.
    pub fn start_in(
        dir: PathBuf,
        keep: bool,
        mosquitto: &Path,
        plugin: Option<&Path>,
        setup: &Setup,
        extra_conf: &str,
    ) -> Result<Broker> {
        let policy_dir = dir.join("policies");
        std::fs::create_dir_all(&policy_dir)?;
        for (tenant, bytes) in &setup.policies {
            deploy(&policy_dir, tenant, bytes);
        }
        let events = dir.join("events.jsonl");
        let port = free_port();
        let base = if setup.persistence {
            BASE_CONF
                .replace("persistence false\n", &format!("persistence true\npersistence_location {}/\n", dir.display()))
        } else {
            BASE_CONF.to_owned()
        };
        let mut conf = format!("{base}{LOG_CONF}per_listener_settings false\nlistener {port} 127.0.0.1\n");
        let mut tls_port = None;
        if let Some((ca, cert, key)) = &setup.tls {
            let p = free_port();
            for (name, text) in [("ca.pem", ca), ("server.pem", cert), ("server.key", key)] {
                std::fs::write(dir.join(name), text)?;
            }
            conf += &format!(
                "listener {p} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
                dir.join("ca.pem").display(),
                dir.join("server.pem").display(),
                dir.join("server.key").display()
            );
            tls_port = Some(p);
        }
        match plugin {
            Some(plugin) => {
                conf += &format!("allow_anonymous false\nplugin {}\n", plugin.display());
                conf += &format!(
                    "plugin_opt_policy_dir {}\nplugin_opt_events {}\n",
                    policy_dir.display(),
                    events.display()
                );
                for (k, v) in &setup.options {
                    conf += &format!("plugin_opt_{k} {v}\n");
                }
            }
            None => conf += "allow_anonymous true\n",
        }
        conf += extra_conf;
        let ports = std::iter::once(port).chain(tls_port).collect();
        Broker::launch(mosquitto, dir, keep, policy_dir, events, ports, conf)
    }

    /// Starts Mosquitto with `per_listener_settings true` and one listener per policy, in
    /// order, each with its own plugin instance bound to that policy's tenant
    /// (`plugin_opt_tenant`), plus the plugin options in `extra` (lines). `ports[i]` is the
    /// listener of `policies[i]`.
    pub fn start_per_listener(tag: &str, policies: &[(&str, Vec<u8>)], extra: &str) -> Result<Broker> {
        let tenants: Vec<&str> = policies.iter().map(|(t, _)| *t).collect();
        Broker::start_conf(tag, policies, tenants.len(), |plugin, dir, events, ports| {
            let mut conf = String::from("per_listener_settings true\n");
            for (port, tenant) in ports.iter().zip(&tenants) {
                conf += &format!(
                    "listener {port} 127.0.0.1\nallow_anonymous false\nplugin {}\nplugin_opt_policy_dir {}\n\
                     plugin_opt_events {}\nplugin_opt_tenant {tenant}\n{extra}",
                    plugin.display(),
                    dir.display(),
                    events.display()
                );
            }
            conf
        })
    }

    /// Starts Mosquitto with a whole configuration of the caller's, made by `conf` from the
    /// plugin path, the policy directory, the events file and `listeners` free ports;
    /// `policies` are deployed first. Waits for every port.
    pub fn start_conf(
        tag: &str,
        policies: &[(&str, Vec<u8>)],
        listeners: usize,
        conf: impl FnOnce(&Path, &Path, &Path, &[u16]) -> String,
    ) -> Result<Broker> {
        let dir = temp_dir(tag);
        let policy_dir = dir.join("policies");
        std::fs::create_dir_all(&policy_dir)?;
        for (tenant, bytes) in policies {
            deploy(&policy_dir, tenant, bytes);
        }
        let events = dir.join("events.jsonl");
        let ports: Vec<u16> = (0..listeners).map(|_| free_port()).collect();
        let text = format!("{BASE_CONF}{}", conf(&plugin_path(), &policy_dir, &events, &ports));
        Broker::launch(&mosquitto_bin(), dir, false, policy_dir, events, ports, text)
    }

    fn launch(
        mosquitto: &Path,
        dir: PathBuf,
        keep: bool,
        policy_dir: PathBuf,
        events: PathBuf,
        ports: Vec<u16>,
        conf: String,
    ) -> Result<Broker> {
        let conf_path = dir.join("mosquitto.conf");
        std::fs::write(&conf_path, &conf)?;
        let log = dir.join("mosquitto.log");
        let child = Command::new(mosquitto)
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting mosquitto")?;
        let (port, tls_port) = (ports[0], ports.get(1).copied());
        let mut broker = Broker { port, tls_port, ports, dir, policy_dir, events, child, log, keep, conf: conf_path };
        broker.wait_ready()?;
        Ok(broker)
    }

    fn wait_ready(&mut self) -> Result<()> {
        // Mosquitto listens once the plugin has loaded every policy. A Python or JavaScript
        // policy takes 15-18 s of CPU to compile (README, "Policies in other languages"), and a
        // test machine may be running other builds: generous, as a bound only.
        let deadline = Instant::now() + Duration::from_secs(180);
        let ports = self.ports.clone();
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("mosquitto exited with {status} before listening:\n{}", self.log());
            }
            // The broker's own log line, not only a successful connect: until Mosquitto has
            // bound a port, another thread's `free_port` may briefly listen on that same port
            // (the kernel hands it out again), and a connect to it proves nothing. Seen in CI:
            // ready while the plugin was still loading, then "connection refused".
            let log = self.log();
            let this_run = log.rsplit("---- restart ----").next().unwrap_or_default();
            let bound = |p: &u16| this_run.contains(&format!("listen socket on port {p}."));
            if ports.iter().all(bound) && ports.iter().all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok()) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("mosquitto did not listen within 180 s:\n{}", self.log())
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Events written so far, parsed.
    pub fn events(&self) -> Vec<serde_json::Value> {
        read_events(&self.events)
    }

    /// Waits (bounded) for an event matching `pred` and returns it.
    pub fn wait_event(&self, what: &str, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                return e;
            }
            if Instant::now() > deadline {
                panic!("no event {what} within 10 s; events:\n{:#?}\nlog:\n{}", self.events(), self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (bounded) until `n` policy loads have been recorded.
    pub fn wait_loads(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.events().iter().filter(|e| field(e, "outcome") == "loaded").count() < n {
            assert!(Instant::now() < deadline, "{n} loads not seen within 10 s: {:#?}", self.events());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGHUP (Mosquitto's reload), once Mosquitto says it is running: it installs its
    /// signal handlers after opening the listeners, and an earlier SIGHUP would end it.
    pub fn sighup(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log().contains(" running") {
            assert!(Instant::now() < deadline, "mosquitto never logged that it is running:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(10));
        }
        self.signal(1);
    }

    /// The broker's process id (for CPU and memory figures).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The broker's resident memory (`VmRSS` of `/proc/PID/status`), in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("/proc/PID/status");
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
        line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("VmRSS in kB")
    }

    /// Stops the broker as an operator would (SIGTERM), killing it if it has not exited within
    /// 10 s; returns how it exited.
    pub fn stop(mut self) -> Result<ExitStatus> {
        self.signal(15);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill()?;
        Ok(self.child.wait()?)
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the pid of a child this value owns and has not reaped yet.
        unsafe { libc_kill(self.child.id() as i32, sig) };
    }

    /// Sends SIGTERM and waits up to `wait` for the broker to exit; true if it did.
    pub fn terminate(&mut self, wait: Duration) -> bool {
        self.signal(15);
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Kills the broker with SIGKILL (no chance to save anything) and reaps it.
    pub fn kill(&mut self) {
        self.signal(9);
        let _ = self.child.wait();
    }

    /// Starts the broker again with the same configuration, directory and ports (after
    /// [`Broker::terminate`] or [`Broker::kill`]), and waits until it listens.
    pub fn restart(&mut self) -> Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut log = std::fs::OpenOptions::new().append(true).open(&self.log)?;
        use std::io::Write;
        writeln!(log, "---- restart ----")?;
        self.child = Command::new(mosquitto_bin())
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("restarting mosquitto")?;
        self.wait_ready()
    }

    /// Whether the broker process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().map(|s| s.is_none()).unwrap_or(false)
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    pub(crate) fn libc_kill(pid: i32, sig: i32) -> i32;
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Keep the configuration and log of a failed test for a look, and show the log's end
        // in the test's output (a CI run leaves nothing else behind).
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            eprintln!("mosquitto log ({}), last lines:", self.dir.display());
            tail.iter().rev().for_each(|l| eprintln!("  {l}"));
        }
        if !self.keep && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Runs `mosquitto_pub -V 5 -d -l` (one message per line of stdin): waits `before` after
/// start, sends `lines` one by one, waits `after`, and returns everything it printed.
pub fn mosquitto_pub_lines(port: u16, args: &[&str], before: Duration, lines: &[&str], after: Duration) -> String {
    use std::io::Write;
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", "5", "-d", "-l"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub is installed (mosquitto-clients)");
    std::thread::sleep(before);
    let mut stdin = child.stdin.take().unwrap();
    for l in lines {
        let _ = writeln!(stdin, "{l}");
        let _ = stdin.flush();
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(after);
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Runs `mosquitto_sub` and `mosquitto_pub` style one-shot commands and returns (status, output).
pub fn run(cmd: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(cmd).args(args).output().expect("mosquitto-clients are installed");
    (
        out.status.code().unwrap_or(-1),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

/// The events of a JSON lines file written so far, parsed (none if it does not exist yet).
pub fn read_events(path: &Path) -> Vec<serde_json::Value> {
    let Ok(f) = std::fs::File::open(path) else { return Vec::new() };
    BufReader::new(f).lines().map_while(Result::ok).filter_map(|l| serde_json::from_str(&l).ok()).collect()
}

/// Sends `request` (a whole HTTP/1.1 request, `Connection: close`) to 127.0.0.1:`port`; returns
/// the status code and body, or `None` if nothing answered within 10 s.
pub fn http_request(port: u16, request: &[u8]) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(request).ok()?;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    let code = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((code, body.to_owned()))
}

/// `GET path` on 127.0.0.1:`port`: the status code and body.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_request(port, format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes())
}

/// A form-encoded `POST path` on 127.0.0.1:`port`, as RabbitMQ's HTTP backend sends it: the
/// status code and body.
pub fn http_post_form(port: u16, path: &str, form: &str) -> Option<(u16, String)> {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{form}",
        form.len()
    );
    http_request(port, request.as_bytes())
}

/// An event's field as text.
pub fn field<'a>(e: &'a serde_json::Value, name: &str) -> &'a str {
    e.get(name).and_then(|v| v.as_str()).unwrap_or("")
}
