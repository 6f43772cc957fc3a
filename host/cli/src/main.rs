//! `mqtt-policy`: check, evaluate and unit-test WebAssembly MQTT policies.
//!
//! Exit codes: 0 success (all cases pass), 1 a case failed, 2 bad input.

use mqtt_policy_cli::client_view::{self, Asked};
use mqtt_policy_cli::{cases, compile, explain, new, run};

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use mqtt_policy_host::events::MemorySink;
use mqtt_policy_host::{Engine, Limits, PolicyModule, Tenant, WORLD};

/// Writes one line to stdout. A closed stdout (`mqtt-policy build ... | head -1`) is not an
/// error: what the command did (writing a policy) is done, and the rest of the report has no
/// reader; Rust ignores SIGPIPE, so the write fails with EPIPE, which `println!` would turn
/// into a panic (exit 101).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

#[derive(Parser)]
#[command(name = "mqtt-policy", version, about = "WebAssembly policies for MQTT brokers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Embed settings into a policy: one self-contained policy file for one tenant (a hub rules
    /// document into the built-in hub-rules policy, or any settings into `--policy`).
    Build {
        /// The settings: a hub rules document (TOML, see README), or the settings of `--policy`.
        rules: PathBuf,
        /// Where to write the policy.
        #[arg(short, long)]
        output: PathBuf,
        /// Generic policy to embed the rules into (default: the built-in hub-rules policy).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Memory cap for validating the rules, in MiB (large registries need more; the broker
        /// loading the policy needs at least as much).
        #[arg(long, default_value_t = default_memory_mib())]
        memory_mib: usize,
    },
    /// Load a policy, validate its settings, and describe it.
    Check {
        #[command(flatten)]
        policy: PolicyArgs,
        /// Warn about every rule of the settings this broker cannot enforce.
        #[arg(long, value_enum)]
        broker: Option<BrokerArg>,
    },
    /// Ask a policy for decisions on one connect and, optionally, one check; explain them.
    Eval(EvalArgs),
    /// Create a policy crate NAME (typed settings, rules with native tests, a cases file, a
    /// README) that builds on its own with `cargo build --offline --target wasm32-wasip2 --profile wasm`.
    New {
        /// The policy's (cargo package) name.
        name: String,
        /// Directory to create (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The SDK (`mqtt-policy-guest`) directory the crate depends on (default: the one this
        /// command was built from).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Hash a secret (a device token, an API key's token, a password) for the rules document.
    /// The secret is read from stdin, or prompted for on a terminal; never from the command line.
    Hash {
        /// PBKDF2-SHA512 rounds (each connect verifies once inside the policy: mind the deadline).
        #[arg(long, default_value_t = hub_rules::credentials::DEFAULT_ITERATIONS)]
        iterations: u32,
    },
    /// Answer brokers' HTTP authentication and authorization requests (RabbitMQ's
    /// rabbitmq_auth_backend_http at /rabbitmq/{user,vhost,resource,topic}) with the policies of
    /// a directory, hot-reloaded; /healthz and /metrics (Prometheus). Runs until killed.
    Serve(ServeArgs),
    /// Run a cases file against a policy and print a pass/fail table.
    Test {
        #[command(flatten)]
        policy: PolicyArgs,
        /// The cases file (TOML, see README).
        cases: PathBuf,
        /// Print every case, not only failures.
        #[arg(short, long)]
        verbose: bool,
        /// Also show what this broker's client sees for each decision, compare it with the
        /// cases' `client-sees`, and flag decisions the broker cannot carry out (default: the
        /// cases file's `broker`, else none).
        #[arg(long, value_enum)]
        broker: Option<BrokerArg>,
        /// List the topic rules of a hub-rules policy that no case matched (by document line).
        #[arg(long)]
        coverage: bool,
    },
}

#[derive(Args)]
struct PolicyArgs {
    /// The policy component (.wasm).
    policy: PathBuf,
    /// Settings file, replacing the settings embedded in the policy.
    #[arg(long)]
    settings: Option<PathBuf>,
    /// Per-check deadline in milliseconds.
    #[arg(long, default_value_t = Limits::default().deadline.as_millis() as u64)]
    deadline_ms: u64,
    /// Memory cap per policy instance, in MiB.
    #[arg(long, default_value_t = default_memory_mib())]
    memory_mib: usize,
}

/// The host's default memory cap in MiB: the defaults live in `Limits::default()` only.
fn default_memory_mib() -> usize {
    Limits::default().memory >> 20
}

/// The brokers `check`, `eval` and `test` know.
#[derive(Clone, Copy, clap::ValueEnum)]
enum BrokerArg {
    /// Mosquitto 2.0 with the plugin.
    Mosquitto,
    /// RabbitMQ 3.10 through `mqtt-policy serve`.
    Rabbitmq,
    /// EMQX 5 (HTTP authentication and authorization; as documented, not tested here).
    Emqx,
    /// VerneMQ (webhooks; as documented, not tested here).
    Vernemq,
    /// No broker: the policy's decision only.
    None,
}

impl BrokerArg {
    fn broker(self) -> Option<compile::Broker> {
        match self {
            BrokerArg::Mosquitto => Some(compile::Broker::Mosquitto),
            BrokerArg::Rabbitmq => Some(compile::Broker::Rabbitmq),
            BrokerArg::Emqx => Some(compile::Broker::Emqx),
            BrokerArg::Vernemq => Some(compile::Broker::Vernemq),
            BrokerArg::None => None,
        }
    }
}

#[derive(Args)]
struct ServeArgs {
    /// Directory of TENANT.wasm policies (watched: new, replaced and removed files apply live).
    #[arg(long)]
    policy_dir: PathBuf,
    /// Address to listen on (loopback by default).
    #[arg(long, default_value = mqtt_policy_serve::DEFAULT_LISTEN)]
    listen: std::net::SocketAddr,
    /// Also listen on this Unix socket (bounded like TCP; its permissions are the umask's).
    #[arg(long)]
    unix: Option<PathBuf>,
    /// Every client belongs to this tenant (instead of the tenant named by the virtual host).
    #[arg(long, conflicts_with = "tenant_from")]
    tenant: Option<String>,
    /// Where a client's tenant comes from: `vhost` (RabbitMQ's virtual host), or the gateway's
    /// `client-id:PATTERN` / `username:PATTERN`.
    #[arg(long, default_value = "vhost")]
    tenant_from: String,
    /// Where events go: stderr, none, or a file (JSON lines, appended).
    #[arg(long, default_value = "stderr")]
    events: String,
    /// Worker threads, each with its own policy instances (default: the available cores).
    #[arg(long)]
    workers: Option<usize>,
    /// File holding a shared secret every decision request must carry (header
    /// x-mqtt-policy-secret, authorization: Bearer, or first path segment).
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// The exchange RabbitMQ's MQTT plugin publishes to (its mqtt.exchange).
    #[arg(long, default_value = "amq.topic")]
    rabbitmq_exchange: String,
    /// Per-check deadline in milliseconds.
    #[arg(long, default_value_t = Limits::default().deadline.as_millis() as u64)]
    deadline_ms: u64,
    /// Memory cap per policy instance, in MiB.
    #[arg(long, default_value_t = default_memory_mib())]
    memory_mib: usize,
    /// Compile policies in this mqtt-policy-compile binary (bounded child) instead of in-process.
    #[arg(long)]
    compiler: Option<PathBuf>,
    /// How often the policy directory is rescanned in any case, in milliseconds.
    #[arg(long, default_value_t = 100)]
    reload_poll_ms: u64,
    /// Sessions without any request for this many seconds end (RabbitMQ never reports disconnects).
    #[arg(long, default_value_t = 3600)]
    idle_session_s: u64,
    /// Largest request body in KiB (VerneMQ's auth_on_publish carries the payload, base64).
    #[arg(long, default_value_t = (mqtt_policy_serve::Options::default().max_body >> 10) as u64)]
    max_body_kib: u64,
    /// VerneMQ: a non-empty mountpoint names the client's tenant.
    #[arg(long)]
    vernemq_tenant_from_mountpoint: bool,
    /// VerneMQ: the webhooks send payloads as is (base64payload = off), not base64.
    #[arg(long)]
    vernemq_raw_payload: bool,
}

#[derive(Args)]
struct EvalArgs {
    #[command(flatten)]
    policy: PolicyArgs,
    /// Tenant to connect as.
    #[arg(long, default_value = "default")]
    tenant: String,
    /// Client identifier.
    #[arg(long, default_value = "client-1")]
    client_id: String,
    /// User name.
    #[arg(long)]
    username: Option<String>,
    /// Password (visible to other local users in the process list: prefer --password-stdin).
    #[arg(long)]
    password: Option<String>,
    /// Read the password from stdin (one line).
    #[arg(long, conflicts_with = "password")]
    password_stdin: bool,
    /// Protocol version: 3.1, 3.1.1 or 5.
    #[arg(long, default_value_t)]
    protocol: cases::ProtocolVersion,
    /// Connect without clean session / clean start.
    #[arg(long)]
    no_clean_start: bool,
    /// Connect over TLS.
    #[arg(long)]
    tls: bool,
    /// Client certificate (PEM or DER) to parse and present.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Check a publish to this topic.
    #[arg(long, group = "check")]
    publish: Option<String>,
    /// Check a subscription to this filter.
    #[arg(long, group = "check")]
    subscribe: Option<String>,
    /// Check a delivery of this topic to the client.
    #[arg(long, group = "check")]
    deliver: Option<String>,
    /// QoS of the publish, subscription or delivery.
    #[arg(long, default_value_t = 0)]
    qos: u8,
    /// Retain flag of the publish or delivery.
    #[arg(long)]
    retain: bool,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 0)]
    payload_size: u32,
    /// Also show what this broker's client sees, and flag what it cannot carry out.
    #[arg(long, value_enum, default_value = "none")]
    broker: BrokerArg,
    /// Say which topic rules of a hub-rules policy decided (by document line).
    #[arg(long)]
    explain: bool,
}

/// A failure that is the user's input, not the policy's verdict: exit code 2.
struct BadInput(String);

impl<E: std::fmt::Display> From<E> for BadInput {
    fn from(e: E) -> Self {
        BadInput(e.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Build { rules, output, policy, memory_mib } => build(&rules, &output, policy.as_deref(), memory_mib),
        Command::Check { policy, broker } => check(&policy, broker),
        Command::Eval(args) => eval(&args),
        Command::Hash { iterations } => hash(iterations),
        Command::New { name, dir, sdk } => new_policy(&name, dir, sdk),
        Command::Serve(args) => serve(&args),
        Command::Test { policy, cases, verbose, broker, coverage } => test(&policy, &cases, verbose, broker, coverage),
    };
    match result {
        Ok(code) => code,
        Err(BadInput(message)) => {
            eprintln!("mqtt-policy: error: {}", message.replace('\n', " "));
            ExitCode::from(2)
        }
    }
}

fn new_policy(name: &str, dir: Option<PathBuf>, sdk: Option<PathBuf>) -> Result<ExitCode, BadInput> {
    let dir = dir.unwrap_or_else(|| new::default_dir(name));
    let sdk = sdk.unwrap_or_else(|| PathBuf::from(new::DEFAULT_SDK));
    let artifact = new::generate(name, &dir, &sdk).map_err(BadInput)?;
    let d = dir.display();
    out!("created {d}: policy {name}");
    out!("  cd {d}");
    out!("  cargo test --offline                                          # rules and cases.toml, natively");
    out!("  cargo build --offline --target wasm32-wasip2 --profile wasm  # target/wasm32-wasip2/wasm/{artifact}.wasm");
    out!("  mqtt-policy test target/wasm32-wasip2/wasm/{artifact}.wasm cases.toml --settings settings.toml");
    out!("  mqtt-policy build settings.toml --policy target/wasm32-wasip2/wasm/{artifact}.wasm -o acme.wasm");
    Ok(ExitCode::SUCCESS)
}

fn serve(args: &ServeArgs) -> Result<ExitCode, BadInput> {
    use mqtt_policy_gateway::{Config, EventTarget, TenantSource};
    let (source, from_vhost) = match (&args.tenant, args.tenant_from.as_str()) {
        (Some(t), _) => (TenantSource::fixed(t)?, false),
        // The virtual host names the tenant of every request (`Hello::tenant`); the configured
        // source is then never asked.
        (None, "vhost") => (TenantSource::parse("username:{tenant}")?, true),
        (None, other) => (TenantSource::parse(other)?, false),
    };
    let mut config = Config::new(&args.policy_dir, source);
    config.events = match args.events.as_str() {
        "stderr" => EventTarget::Stderr,
        "none" => EventTarget::None,
        path => EventTarget::File(path.into()),
    };
    config.limits.deadline = std::time::Duration::from_millis(args.deadline_ms);
    config.limits.memory = args.memory_mib << 20;
    config.compiler = args.compiler.clone();
    config.reload_poll = std::time::Duration::from_millis(args.reload_poll_ms.max(1));
    let mut options = mqtt_policy_serve::Options { listen: args.listen, unix: args.unix.clone(), ..Default::default() };
    if let Some(n) = args.workers {
        options.workers = n.max(1);
    }
    if let Some(path) = &args.secret_file {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        options.secret = Some(text.trim().to_owned());
    }
    options.idle_session = std::time::Duration::from_secs(args.idle_session_s);
    options.max_body = usize::try_from(args.max_body_kib.max(1) << 10).unwrap_or(usize::MAX);
    options.vernemq.tenant_from_mountpoint = args.vernemq_tenant_from_mountpoint;
    options.vernemq.raw_payload = args.vernemq_raw_payload;
    options.rabbitmq = mqtt_policy_serve::rabbitmq::Dialect {
        tenant_from_vhost: from_vhost,
        exchange: args.rabbitmq_exchange.clone(),
    };
    let service = mqtt_policy_serve::Service::start(config, options)?;
    let loaded = service.gateway().loaded_tenants();
    eprintln!(
        "mqtt-policy serve: listening on http://{} with {} polic{} from {} ({})",
        service.local_addr(),
        loaded.len(),
        if loaded.len() == 1 { "y" } else { "ies" },
        args.policy_dir.display(),
        loaded.join(", ")
    );
    service.wait();
    Ok(ExitCode::from(1))
}

/// The settings file's text, if one was given.
fn settings_text(args: &PolicyArgs) -> Result<Option<String>, BadInput> {
    match &args.settings {
        Some(path) => Ok(Some(std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?)),
        None => Ok(None),
    }
}

/// The explainer of a hub-rules policy, for `--explain` and `--coverage`: not one is an input
/// error (exit 2), said before any decision.
fn explainer(args: &PolicyArgs) -> Result<explain::Explainer, BadInput> {
    let bytes = std::fs::read(&args.policy).map_err(|e| format!("{}: {e}", args.policy.display()))?;
    explain::Explainer::of(&bytes, settings_text(args)?.as_deref())
        .map_err(|e| BadInput(format!("{}: {e}", args.policy.display())))
}

fn load(args: &PolicyArgs) -> Result<PolicyModule, BadInput> {
    let settings = settings_text(args)?;
    let limits = Limits {
        deadline: std::time::Duration::from_millis(args.deadline_ms),
        memory: args.memory_mib << 20,
        ..Limits::default()
    };
    let engine = Engine::new(limits)?;
    engine.load_file(&args.policy, settings.as_deref()).map_err(|e| match (e, &args.settings) {
        // The settings file is at fault, not the policy: name it first.
        (mqtt_policy_host::Error::InvalidSettings { message, .. }, Some(path)) => {
            BadInput(format!("{}: invalid settings for {}: {message}", path.display(), args.policy.display()))
        }
        (e, _) => e.into(),
    })
}

fn build(rules: &Path, output: &Path, policy: Option<&Path>, memory_mib: usize) -> Result<ExitCode, BadInput> {
    let generic = match policy {
        Some(p) => std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?,
        None => mqtt_policy_cli::HUB_RULES_WASM.to_vec(),
    };
    let limits = Limits { memory: memory_mib << 20, ..Limits::default() };
    let (module, bytes) = compile::build(rules, &generic, limits).map_err(|e| {
        if e.contains("memory limit") { BadInput(format!("{e} (raise it with --memory-mib)")) } else { BadInput(e) }
    })?;
    compile::write_atomically(output, &bytes).map_err(BadInput)?;
    out!("built {} from {}", output.display(), rules.display());
    out!("size:     {} bytes", bytes.len());
    out!("digest:   sha256:{}", module.digest());
    print_settings(&module);
    Ok(ExitCode::SUCCESS)
}

/// Reads a secret without echoing it: prompted twice on a terminal, else the first line of stdin.
fn read_secret(prompt: &str, confirm: bool) -> Result<String, BadInput> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        let secret = rpassword::prompt_password(format!("{prompt}: "))?;
        if confirm && rpassword::prompt_password(format!("{prompt} again: "))? != secret {
            return Err(BadInput("the two entries differ".to_owned()));
        }
        return Ok(secret);
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.strip_suffix('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).unwrap_or(&line).to_owned())
}

fn hash(iterations: u32) -> Result<ExitCode, BadInput> {
    let secret = read_secret("secret", true)?;
    if secret.is_empty() {
        return Err(BadInput("empty secret: nothing to hash".to_owned()));
    }
    if secret.chars().count() < 16 {
        eprintln!(
            "mqtt-policy: warning: a secret of {} characters: with {iterations} PBKDF2 rounds only a long random \
             secret (16+ characters, e.g. a generated device token) resists an offline guess of a leaked hash",
            secret.chars().count()
        );
    }
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(|e| format!("random salt: {e}"))?;
    out!("{}", hub_rules::credentials::hash_secret(secret.as_bytes(), &salt, iterations)?);
    Ok(ExitCode::SUCCESS)
}

fn check(args: &PolicyArgs, broker: Option<BrokerArg>) -> Result<ExitCode, BadInput> {
    let module = load(args)?;
    let source = match &args.settings {
        Some(p) => format!("from {}", p.display()),
        None if module.settings().is_empty() => "none".to_owned(),
        None => "embedded".to_owned(),
    };
    out!("policy:   {}", args.policy.display());
    out!("world:    {WORLD}");
    out!("size:     {} bytes", module.size());
    out!("digest:   sha256:{}", module.digest());
    out!("settings: {source}, {} bytes, accepted by the policy", module.settings().len());
    print_settings(&module);
    for warning in compile::warnings(module.settings()) {
        out!("warning:  {warning}");
    }
    let broker = broker.and_then(BrokerArg::broker);
    for warning in broker.map(|b| compile::broker_warnings(module.settings(), b)).unwrap_or_default() {
        out!("warning:  {warning}");
    }
    out!(
        "limits:   {:?} per check, {} MiB memory",
        module.engine().limits().deadline,
        module.engine().limits().memory >> 20
    );
    Ok(ExitCode::SUCCESS)
}

/// The settings as a summary of their TOML (or their first lines), then the embedded CAs.
fn print_settings(module: &PolicyModule) {
    match compile::summary(module.settings()).filter(|s| !s.is_empty()) {
        Some(lines) => lines.iter().for_each(|l| out!("settings: {l}")),
        None => {
            let lines: Vec<String> =
                module.settings().lines().filter(|l| !l.trim().is_empty()).map(compile::redact_line).collect();
            lines.iter().take(20).for_each(|l| out!("  | {l}"));
            if lines.len() > 20 {
                out!("  | ... ({} more lines)", lines.len() - 20);
            }
        }
    }
    for line in compile::credentials(module.settings()) {
        out!("proofs:   {line}");
    }
    for ca in module.tenant_cas() {
        out!("ca:       {}", ca.name());
    }
}

fn eval(args: &EvalArgs) -> Result<ExitCode, BadInput> {
    let module = load(&args.policy)?;
    let events = Arc::new(MemorySink::new());
    let mut policy = module.instantiate(Tenant::with_events(&args.tenant, events.clone()));
    let password = if args.password_stdin { Some(read_secret("password", false)?) } else { args.password.clone() };
    let spec = cases::ConnectSpec {
        client_id: args.client_id.clone(),
        username: args.username.clone(),
        password,
        clean_start: Some(!args.no_clean_start),
        protocol: Some(args.protocol),
        tls: Some(args.tls || args.cert.is_some()),
        ..Default::default()
    };
    let mut connect = run::connect(&args.tenant, &spec);
    if let Some(path) = &args.cert {
        connect.certificate = Some(read_certificate(&module, path)?);
    }
    let broker = args.broker.broker();
    let protocol = cases::protocol(args.protocol);
    let sees = |action: &'static str, outcome: &run::Outcome| {
        let Some(b) = broker else { return };
        let asked = Asked { action, protocol, qos: args.qos, retain: args.retain };
        let seen = client_view::client_sees(b, &asked, outcome);
        out!("          {} client sees: {}", b.name(), seen.client);
        for flag in seen.flags {
            out!("          warning: {flag}");
        }
    };
    let explainer = if args.explain { Some(explainer(&args.policy)?) } else { None };
    let (outcome, session) = run::run_connect(&mut policy, &connect);
    out!("connect {:<40} -> {outcome}", args.client_id);
    sees("connect", &outcome);
    // The session the topic rules see, read natively (the decisions stay the policy's).
    let native = match (&explainer, &session) {
        (Some(x), Some(_)) => match x.session(&connect) {
            Ok(s) => {
                out!("          explain: as {}", s.describe());
                Some(s)
            }
            Err(e) => {
                out!("          explain: the rules document refuses this connect natively ({e}): no explanation");
                None
            }
        },
        _ => None,
    };
    let explained = |action: hub_rules::config::Action, topic: &str, o: &run::Outcome| {
        if let (Some(x), Some(s)) = (&explainer, &native) {
            for line in x.explain(s, action, topic, o) {
                out!("          explain: {line}");
            }
        }
    };
    if let Some(s) = session {
        let body = |topic: &str| cases::PublishSpec {
            topic: topic.to_owned(),
            qos: args.qos,
            retain: args.retain,
            payload_size: args.payload_size,
        };
        if let Some(t) = &args.publish {
            let o = run::run_publish(&mut policy, s, &body(t));
            out!("publish {t:<40} -> {o}");
            sees("publish", &o);
            explained(hub_rules::config::Action::Publish, t, &o);
        }
        if let Some(f) = &args.subscribe {
            let sub = cases::SubscribeSpec { filter: f.clone(), qos: args.qos };
            let o = run::run_subscribe(&mut policy, s, &sub);
            out!("subscribe {f:<38} -> {o}");
            sees("subscribe", &o);
            explained(hub_rules::config::Action::Subscribe, f, &o);
        }
        if let Some(t) = &args.deliver {
            let o = run::run_delivery(&mut policy, s, &body(t));
            out!("deliver {t:<40} -> {o}");
            sees("deliver", &o);
            explained(hub_rules::config::Action::Delivery, t, &o);
        }
    }
    for event in events.take() {
        out!("event   {}", event.to_json());
    }
    Ok(ExitCode::SUCCESS)
}

fn read_certificate(module: &PolicyModule, path: &Path) -> Result<mqtt_policy_host::cert::Certificate, BadInput> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let der = match std::str::from_utf8(&bytes) {
        Ok(text) if text.contains("-----BEGIN") => mqtt_policy_host::cert::pem_to_der(text)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .into_iter()
            .next()
            .ok_or_else(|| format!("{}: no certificate in the PEM file", path.display()))?,
        _ => bytes,
    };
    Ok(module.verify_certificate(&der).map_err(|e| format!("{}: {e}", path.display()))?)
}

fn test(
    args: &PolicyArgs,
    cases_path: &Path,
    verbose: bool,
    broker: Option<BrokerArg>,
    coverage: bool,
) -> Result<ExitCode, BadInput> {
    let file = cases::load(cases_path).map_err(BadInput)?;
    let explainer = if coverage { Some(explainer(args)?) } else { None };
    let mut covered = explain::Coverage::default();
    let broker = match broker {
        Some(b) => b.broker(),
        None => match &file.broker {
            Some(name) => compile::Broker::parse(name).map_err(|e| format!("{}: broker: {e}", cases_path.display()))?,
            None => None,
        },
    };
    let module = load(args)?;
    let mut policy = module.instantiate(Tenant::new(&file.tenant));
    let width = file.cases.iter().map(|c| c.name.chars().count()).max().unwrap_or(0).min(60);
    let (mut passed, mut failed) = (0, 0);
    let against = broker.map(|b| format!(", as a {} client sees it", b.name())).unwrap_or_default();
    out!("{} against {} ({} cases{against})", args.policy.display(), cases_path.display(), file.cases.len());
    for case in &file.cases {
        let mut outcome = run::run_case(&mut policy, &file.tenant, case);
        if let Some(x) = &explainer
            && !matches!(outcome.actual.kind, "reject" | "defer")
            && let Some((action, topic)) = checked(case)
            && let Ok(s) = x.session(&run::connect(&file.tenant, &case.connect))
        {
            covered.record(x, &s, action, topic);
        }
        let seen = broker.map(|b| (b, client_view::client_sees(b, &asked(case, &outcome.actual), &outcome.actual)));
        match (&case.client_sees, &seen) {
            (Some(want), Some((b, seen))) if !seen.client.starts_with(want.as_str()) => outcome.problems.push(format!(
                "expected the client to see {want}, a {} client sees {}",
                b.name(),
                seen.client
            )),
            (Some(want), None) => outcome
                .problems
                .push(format!("client-sees = {want:?} needs a broker: `broker = ...` in the file or --broker")),
            _ => {}
        }
        let shown = match &seen {
            Some((b, s)) => format!("{}  [{}: {}]", outcome.actual, b.name(), s.client),
            None => outcome.actual.to_string(),
        };
        let flags = seen.map(|(_, s)| s.flags).unwrap_or_default();
        let status = if !outcome.problems.is_empty() {
            failed += 1;
            "FAIL"
        } else {
            passed += 1;
            if flags.is_empty() { "PASS" } else { "WARN" }
        };
        if status != "PASS" || verbose {
            out!("  {status}  {:<width$}  {:<9} -> {shown}", case.name, case.action());
        }
        for p in &outcome.problems {
            out!("        {:<width$}  {p}", "");
        }
        if status != "PASS" || verbose {
            for f in &flags {
                out!("        {:<width$}  the broker: {f}", "");
            }
        }
    }
    out!("{passed} passed, {failed} failed");
    if let Some(x) = &explainer {
        let missed = covered.unexercised(x);
        out!("coverage: {} of {} topic rules matched by a case", covered.exercised(), x.rules().len());
        for rule in &missed {
            out!("  not exercised: {rule}");
        }
        if let Some(c) = x.caveat() {
            out!("  note: {c}");
        }
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The check a case makes after its connect, for coverage.
fn checked(case: &cases::Case) -> Option<(hub_rules::config::Action, &str)> {
    use hub_rules::config::Action;
    match (&case.publish, &case.subscribe, &case.deliver) {
        (Some(p), _, _) => Some((Action::Publish, p.topic.as_str())),
        (_, Some(s), _) => Some((Action::Subscribe, s.filter.as_str())),
        (_, _, Some(d)) => Some((Action::Delivery, d.topic.as_str())),
        _ => None,
    }
}

/// What a case asked the broker, for the client's view of its outcome: the check, or the
/// connect when the connect was refused before it.
fn asked(case: &cases::Case, actual: &run::Outcome) -> Asked {
    let protocol = cases::protocol(case.connect.protocol.unwrap_or_default());
    let connect_refused = matches!(actual.kind, "accept" | "reject");
    let (action, qos, retain) = match (&case.publish, &case.subscribe, &case.deliver) {
        _ if connect_refused || case.action() == "connect" => ("connect", 0, false),
        (Some(p), _, _) => ("publish", p.qos, p.retain),
        (_, Some(s), _) => ("subscribe", s.qos, false),
        (_, _, Some(d)) => ("deliver", d.qos, d.retain),
        _ => ("connect", 0, false),
    };
    Asked { action, protocol, qos, retain }
}
