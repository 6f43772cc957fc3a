//! `mqtt-testbroker`: one Mosquitto started by the harness, for the measuring scripts
//! (`scripts/harness.py`), so that they configure, start, wait for and stop brokers exactly as
//! the tests do. Prints one JSON line (`port`, `pid`, `dir`, `policy_dir`, `events`, `log`) once
//! the broker listens, then stops it (SIGTERM) when its standard input closes.
//!
//! Exit status: 0 after a clean stop, 2 when the broker could not be started.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mqtt_policy_testkit::{Broker, Setup, mosquitto_bin};

#[derive(Parser)]
#[command(about = "Start a Mosquitto on a free loopback port as the tests do; stop it when stdin closes")]
struct Args {
    /// Directory for mosquitto.conf, the log, the policy directory and the events (kept).
    #[arg(long)]
    dir: PathBuf,
    /// The broker binary (default: $MOSQUITTO, else Debian's).
    #[arg(long)]
    mosquitto: Option<PathBuf>,
    /// Load this plugin library; without it, a bare Mosquitto that allows anonymous clients.
    #[arg(long)]
    plugin: Option<PathBuf>,
    /// A policy to deploy before the start: TENANT=FILE.
    #[arg(long = "policy", value_parser = pair)]
    policies: Vec<(String, String)>,
    /// A plugin option: KEY=VALUE becomes `plugin_opt_KEY VALUE`.
    #[arg(long = "option", value_parser = pair)]
    options: Vec<(String, String)>,
    /// A further line at the end of mosquitto.conf.
    #[arg(long = "conf")]
    conf: Vec<String>,
}

fn pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("`{s}` is not KEY=VALUE"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mqtt-testbroker: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let mut setup = Setup { options: args.options, ..Setup::default() };
    for (tenant, file) in &args.policies {
        let bytes = std::fs::read(file).map_err(|e| anyhow::anyhow!("--policy {tenant}={file}: {e}"))?;
        setup.policies.push((tenant.clone(), bytes));
    }
    let extra: String = args.conf.iter().map(|l| format!("{l}\n")).collect();
    let mosquitto = args.mosquitto.unwrap_or_else(mosquitto_bin);
    let broker = Broker::start_in(args.dir, true, &mosquitto, args.plugin.as_deref(), &setup, &extra)?;
    let info = serde_json::json!({
        "port": broker.port,
        "pid": broker.pid(),
        "dir": broker.dir,
        "policy_dir": broker.policy_dir,
        "events": broker.events,
        "log": broker.dir.join("mosquitto.log"),
    });
    println!("{info}");
    // Until the script is done with the broker: it closes our stdin (or exits).
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    let status = broker.stop()?;
    anyhow::ensure!(status.success() || status.code().is_none(), "mosquitto exited with {status}");
    Ok(())
}
