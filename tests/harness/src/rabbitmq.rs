//! Real RabbitMQ nodes (Debian's `rabbitmq-server` 3.10) with `rabbitmq_mqtt` and
//! `rabbitmq_auth_backend_http`, started on free loopback ports with generated configurations,
//! clustered on this one machine, and stopped; and the decision service (`mqtt-policy serve`)
//! they ask, as a process that tests can kill and restart.
//!
//! Each [`Cluster`] has its own directory, Erlang cookie (`HOME`), `epmd` (on its own port,
//! killed with the cluster) and nodes `NAME@localhost`. Node 1 starts first; the others start
//! once it is up and join it at boot (`cluster_formation.peer_discovery_backend =
//! classic_config`), so no `rabbitmqctl join_cluster` round trips are needed.

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::free_port;

/// Where Debian puts RabbitMQ's own scripts (the `/usr/sbin` wrappers switch to the `rabbitmq`
/// user, which could not read the harness's files).
const BIN: &str = "/usr/lib/rabbitmq/bin";

/// How long a node may take to boot: Erlang and RabbitMQ take ~15 s on a busy 2-core machine.
const BOOT: Duration = Duration::from_secs(120);

/// Whether Debian's `rabbitmq-server` is installed.
pub fn installed() -> bool {
    Path::new(BIN).join("rabbitmq-server").exists()
}

/// Panics with the install command when RabbitMQ is missing.
pub fn require() {
    assert!(
        installed(),
        "rabbitmq-server is not installed: run `apt-get install -y rabbitmq-server` (scripts/test.sh does)"
    );
}

/// The backend's four URLs under `base` (e.g. `http://127.0.0.1:8790`), as rabbitmq.conf lines.
pub fn http_backend_conf(base: &str) -> String {
    let mut conf = String::from("auth_backends.1 = http\nauth_http.http_method = post\n");
    for (key, path) in
        [("user_path", "user"), ("vhost_path", "vhost"), ("resource_path", "resource"), ("topic_path", "topic")]
    {
        conf += &format!("auth_http.{key} = {base}/rabbitmq/{path}\n");
    }
    conf
}

/// One RabbitMQ node of a [`Cluster`].
pub struct Node {
    /// Erlang node name, e.g. `r1@localhost`.
    pub name: String,
    /// The MQTT listener's port.
    pub mqtt_port: u16,
    /// The AMQP listener's port.
    pub amqp_port: u16,
    child: Option<Child>,
    log: PathBuf,
}

/// A running RabbitMQ cluster of one or more nodes; every node is stopped when dropped.
pub struct Cluster {
    /// The cluster's directory: cookie, configurations, data, logs.
    pub dir: PathBuf,
    /// The nodes, in start order.
    pub nodes: Vec<Node>,
    epmd_port: u16,
}

impl Cluster {
    /// Starts `n` nodes that send their HTTP backend requests to the service at `auth[i]`
    /// (node `i`; a single URL serves all nodes), with MQTT clients placed in virtual host
    /// `vhost` (created at boot), anonymous clients refused, and clustered.
    pub fn start(tag: &str, n: usize, auth: &[String], vhost: &str) -> Result<Cluster> {
        Cluster::start_with(tag, n, auth, vhost, "")
    }

    /// [`Cluster::start`] with `extra` rabbitmq.conf lines for every node (e.g. a TLS listener).
    pub fn start_with(tag: &str, n: usize, auth: &[String], vhost: &str, extra: &str) -> Result<Cluster> {
        require();
        let dir = crate::temp_dir(tag);
        let cookie: String = format!("MQTTPOLICY{}{}", std::process::id(), free_port());
        std::fs::write(dir.join(".erlang.cookie"), &cookie)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join(".erlang.cookie"), std::fs::Permissions::from_mode(0o400))?;
        std::fs::write(dir.join("definitions.json"), format!("{{\"vhosts\":[{{\"name\":\"{vhost}\"}}]}}\n"))?;
        let mut cluster = Cluster { dir, nodes: Vec::new(), epmd_port: free_port() };
        let id = std::process::id();
        let names: Vec<String> = (1..=n).map(|i| format!("mp{id}r{i}@localhost")).collect();
        // One plugins file for every node, written by RabbitMQ's own tool.
        let out = cluster
            .command("rabbitmq-plugins", &names[0])
            .args(["--offline", "enable", "rabbitmq_mqtt", "rabbitmq_auth_backend_http"])
            .output()
            .context("rabbitmq-plugins")?;
        if !out.status.success() {
            bail!(
                "rabbitmq-plugins failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for (i, name) in names.iter().enumerate() {
            let base = auth.get(i).or(auth.first()).context("no decision service URL")?;
            let (amqp_port, mqtt_port) = (free_port(), free_port());
            let short = name.split('@').next().unwrap_or(name);
            let mut conf = format!(
                "listeners.tcp.default = 127.0.0.1:{amqp_port}\nmqtt.listeners.tcp.default = 127.0.0.1:{mqtt_port}\n\
                 mqtt.allow_anonymous = false\nmqtt.vhost = {vhost}\nload_definitions = {}\n\
                 log.file.level = info\nlog.console = false\n",
                cluster.dir.join("definitions.json").display()
            );
            conf += &http_backend_conf(base);
            conf += extra;
            if n > 1 {
                conf += "cluster_formation.peer_discovery_backend = classic_config\n";
                conf += "cluster_formation.randomized_startup_delay_range.min = 0\n";
                conf += "cluster_formation.randomized_startup_delay_range.max = 1\n";
                for (j, peer) in names.iter().enumerate() {
                    conf += &format!("cluster_formation.classic_config.nodes.{} = {peer}\n", j + 1);
                }
            }
            std::fs::write(cluster.dir.join(format!("{short}.conf")), conf)?;
            cluster.nodes.push(Node {
                name: name.clone(),
                mqtt_port,
                amqp_port,
                child: None,
                log: cluster.dir.join(format!("{short}.out")),
            });
        }
        // Node 1 forms the cluster; the others join it at boot, in parallel.
        cluster.launch(0)?;
        cluster.wait_up(0)?;
        for i in 1..n {
            cluster.launch(i)?;
        }
        for i in 1..n {
            cluster.wait_up(i)?;
        }
        Ok(cluster)
    }

    /// A RabbitMQ script with this cluster's cookie and `epmd`, aimed at node `name`.
    fn command(&self, script: &str, name: &str) -> Command {
        let mut c = Command::new(Path::new(BIN).join(script));
        c.env("HOME", &self.dir)
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .env("RABBITMQ_NODENAME", name)
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", self.dir.join("enabled_plugins"))
            .env("RABBITMQ_CONF_ENV_FILE", self.dir.join("rabbitmq-env.conf"))
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        c
    }

    fn launch(&mut self, i: usize) -> Result<()> {
        let node = &self.nodes[i];
        let short = node.name.split('@').next().unwrap_or(&node.name).to_owned();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log)?;
        let mut c = self.command("rabbitmq-server", &node.name);
        c.env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", node.amqp_port.to_string())
            .env("RABBITMQ_DIST_PORT", free_port().to_string())
            .env("RABBITMQ_CONFIG_FILE", self.dir.join(&short))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", self.dir.join(format!("{short}-advanced.config")))
            .env("RABBITMQ_MNESIA_BASE", self.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.dir.join(format!("log-{short}")))
            .env("RABBITMQ_PID_FILE", self.dir.join(format!("{short}.pid")))
            // The script then execs the Erlang VM instead of waiting on it in a shell...
            .env("RUNNING_UNDER_SYSTEMD", "true")
            // ...and the VM's helpers (erl_child_setup, inet_gethost) share its process group,
            // which the harness kills.
            .process_group(0)
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = c.spawn().context("starting rabbitmq-server")?;
        self.nodes[i].child = Some(child);
        Ok(())
    }

    fn wait_up(&mut self, i: usize) -> Result<()> {
        let deadline = Instant::now() + BOOT;
        let port = self.nodes[i].mqtt_port;
        while Instant::now() < deadline {
            if let Some(c) = self.nodes[i].child.as_mut()
                && let Some(status) = c.try_wait()?
            {
                bail!("{} exited with {status} before listening:\n{}", self.nodes[i].name, self.log(i));
            }
            // The MQTT listener opens before the virtual hosts are up ("vhost is down"): wait
            // for the end of the boot as well.
            if TcpStream::connect(("127.0.0.1", port)).is_ok() && self.log(i).contains("Server startup complete") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("{} did not listen for MQTT within {BOOT:?}:\n{}", self.nodes[i].name, self.log(i))
    }

    /// The process id of node `i`'s Erlang VM, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    /// Runs `rabbitmqctl -n NODE ARGS` against node `i`; returns its output.
    pub fn ctl(&self, i: usize, args: &[&str]) -> Result<String> {
        let node = &self.nodes[i].name;
        let out = self.command("rabbitmqctl", node).arg("-n").arg(node).args(args).output()?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if !out.status.success() {
            bail!("rabbitmqctl {args:?} on {node} failed: {text}");
        }
        Ok(text)
    }

    /// The names of the running nodes of the cluster, as node `i` sees them.
    pub fn running_nodes(&self, i: usize) -> Result<Vec<String>> {
        let text = self.ctl(i, &["cluster_status", "--formatter", "json"])?;
        let v: serde_json::Value = serde_json::from_str(text.lines().find(|l| l.starts_with('{')).unwrap_or("{}"))
            .context("cluster_status")?;
        Ok(v["running_nodes"].as_array().into_iter().flatten().filter_map(|n| n.as_str().map(str::to_owned)).collect())
    }

    /// Stops node `i` as an operator would (`rabbitmqctl stop`), killing it if that fails.
    pub fn stop_node(&mut self, i: usize) {
        let _ = self.ctl(i, &["stop"]);
        if let Some(mut c) = self.nodes[i].child.take() {
            let deadline = Instant::now() + Duration::from_secs(20);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            kill_group(c);
        }
    }

    /// Node `i`'s console output and log file so far.
    pub fn log(&self, i: usize) -> String {
        let node = &self.nodes[i];
        let short = node.name.split('@').next().unwrap_or(&node.name);
        let file = self.dir.join(format!("log-{short}")).join(format!("{}.log", node.name));
        format!(
            "{}\n---- {} ----\n{}",
            std::fs::read_to_string(&node.log).unwrap_or_default(),
            file.display(),
            std::fs::read_to_string(&file).unwrap_or_default()
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Killing the Erlang VM and its helpers is enough for a test node: nothing of it is kept.
        for node in &mut self.nodes {
            if let Some(c) = node.child.take() {
                kill_group(c);
            }
        }
        let _ = Command::new("epmd")
            .arg("-kill")
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Kills the process group `child` leads (SIGKILL) and reaps the child.
fn kill_group(mut child: Child) {
    // SAFETY: kill(2) on the process group of a child this harness started and has not reaped.
    unsafe { crate::libc_kill(-(child.id() as i32), 9) };
    let _ = child.kill();
    let _ = child.wait();
}

/// The decision service (`mqtt-policy serve`) as a child process on a fixed loopback port, with
/// its own policy directory and events file; killed when dropped.
pub struct DecisionService {
    /// Its port on 127.0.0.1 (kept across [`DecisionService::restart`]).
    pub port: u16,
    /// Its policy directory.
    pub policy_dir: PathBuf,
    /// Its events file (JSON lines).
    pub events: PathBuf,
    bin: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
}

impl DecisionService {
    /// Starts `bin serve` (the `mqtt-policy` binary) in `dir` with `policies` (tenant, bytes)
    /// deployed and `extra` arguments, and waits until `/healthz` answers.
    pub fn start(bin: &Path, dir: &Path, policies: &[(&str, Vec<u8>)], extra: &[&str]) -> Result<DecisionService> {
        let policy_dir = dir.join("policies");
        std::fs::create_dir_all(&policy_dir)?;
        for (tenant, bytes) in policies {
            crate::deploy(&policy_dir, tenant, bytes);
        }
        let port = free_port();
        let events = dir.join("serve-events.jsonl");
        let mut s = DecisionService {
            port,
            policy_dir,
            events,
            bin: bin.to_owned(),
            args: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
            log: dir.join("serve.log"),
        };
        s.spawn()?;
        Ok(s)
    }

    /// The base URL RabbitMQ is configured with.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = Command::new(&self.bin)
            .arg("serve")
            .arg("--policy-dir")
            .arg(&self.policy_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--events")
            .arg(&self.events)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting mqtt-policy serve")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && let Some(status) = c.try_wait()?
            {
                bail!("mqtt-policy serve exited with {status}:\n{}", self.log());
            }
            if crate::http_get(self.port, "/healthz").is_some_and(|(code, _)| code == 200) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("mqtt-policy serve did not answer /healthz within 60 s:\n{}", self.log())
    }

    /// Kills the service with SIGKILL: it keeps nothing.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts it again on the same port and directory (after [`DecisionService::kill`]).
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }

    /// Its output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Events written so far, parsed.
    pub fn events(&self) -> Vec<serde_json::Value> {
        crate::read_events(&self.events)
    }
}

impl Drop for DecisionService {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The shipped ibm-platform example as the RabbitMQ tests use it: tenant `acme`, MQTT 3.1.1
/// clients. With the `plugin` feature (its clients and proofs).
#[cfg(feature = "plugin")]
pub mod ibm {
    use crate::client::{Opts, Proto};
    use crate::proofs::{API_KEY, API_TOKEN, device_token};

    /// Every device event, as the example's applications subscribe to it.
    pub const APP_FILTER: &str = "iot-2/type/+/id/+/evt/+/fmt/+";

    const IBM: &str = include_str!("../../../policies/examples/ibm-platform/rules.toml");

    /// The example's rules without its 3-messages-a-day quota: RabbitMQ asks about a topic twice
    /// per connection (its MQTT plugin, then its channel), so a per-check quota is not a message
    /// quota there (README, "Clusters (RabbitMQ)").
    pub fn rules() -> String {
        let start = IBM.find("[hub.rate]").expect("the example has a rate");
        let end = IBM.find("[identity]").expect("the example has an identity section");
        format!("{}{}", &IBM[..start], &IBM[end..])
    }

    /// Sensor `id` with its device token.
    pub fn device(port: u16, id: &str) -> Opts {
        Opts::new(port, Proto::V311, &format!("d:acme:sensor:{id}")).user("use-token-auth", &device_token(id))
    }

    /// Application `name` with the example's API key.
    pub fn app(port: u16, name: &str) -> Opts {
        Opts::new(port, Proto::V311, &format!("a:acme:{name}")).user(API_KEY, API_TOKEN)
    }

    /// The topic of sensor `id`'s `event`.
    pub fn evt(id: &str, event: &str) -> String {
        format!("iot-2/type/sensor/id/{id}/evt/{event}/fmt/json")
    }
}
