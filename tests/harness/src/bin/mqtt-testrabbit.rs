//! `mqtt-testrabbit`: one RabbitMQ node and the decision service beside it, started by the
//! harness (`mqtt_policy_testkit::rabbitmq`) for the measuring scripts (`scripts/bench_rabbitmq.py`),
//! so that they configure, start and stop RabbitMQ exactly as the tests do.
//!
//! Prints one JSON line (`mqtt_port`, `pid` of the node's Erlang VM, `serve_pid`, `serve_port`,
//! `dir`) once the node has booted. Then each line read from standard input is a JSON array of
//! `rabbitmqctl` arguments run against the node (e.g. `["import_definitions", "FILE"]`), answered
//! by one JSON line (`ok`, `output`). The node and the service are stopped when standard input
//! closes.
//!
//! Exit status: 0 after a clean stop, 2 when the node or the service could not be started.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mqtt_policy_testkit::rabbitmq::{Cluster, DecisionService};

#[derive(Parser)]
#[command(about = "Start a RabbitMQ node and mqtt-policy serve as the tests do; run rabbitmqctl lines from stdin")]
struct Args {
    /// Directory for the decision service's policies, events and log (kept).
    #[arg(long)]
    dir: PathBuf,
    /// The `mqtt-policy` binary whose `serve` the node's HTTP backend asks.
    #[arg(long)]
    serve: PathBuf,
    /// A policy to deploy before the start: TENANT=FILE.
    #[arg(long = "policy", value_parser = pair)]
    policies: Vec<(String, String)>,
    /// A further argument of `mqtt-policy serve`.
    #[arg(long = "serve-arg", allow_hyphen_values = true)]
    serve_args: Vec<String>,
    /// The virtual host MQTT clients are placed in (`mqtt.vhost`, created at boot).
    #[arg(long, default_value = "bench")]
    vhost: String,
}

fn pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("`{s}` is not KEY=VALUE"))
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mqtt-testrabbit: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)?;
    let mut policies = Vec::new();
    for (tenant, file) in &args.policies {
        let bytes = std::fs::read(file).map_err(|e| anyhow::anyhow!("--policy {tenant}={file}: {e}"))?;
        policies.push((tenant.as_str(), bytes));
    }
    let extra: Vec<&str> = args.serve_args.iter().map(String::as_str).collect();
    let service = DecisionService::start(&args.serve, &args.dir, &policies, &extra)?;
    let cluster = Cluster::start("testrabbit", 1, &[service.url()], &args.vhost)?;
    let info = serde_json::json!({
        "mqtt_port": cluster.nodes[0].mqtt_port,
        "pid": cluster.pid(0),
        "serve_pid": service.pid(),
        "serve_port": service.port,
        "dir": cluster.dir,
    });
    println!("{info}");
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let answer = match serde_json::from_str::<Vec<String>>(&line) {
            Ok(ctl_args) => {
                let refs: Vec<&str> = ctl_args.iter().map(String::as_str).collect();
                match cluster.ctl(0, &refs) {
                    Ok(output) => serde_json::json!({ "ok": true, "output": output }),
                    Err(e) => serde_json::json!({ "ok": false, "output": format!("{e:#}") }),
                }
            }
            Err(e) => serde_json::json!({ "ok": false, "output": format!("not a JSON array of strings: {e}") }),
        };
        println!("{answer}");
    }
    drop(cluster);
    drop(service);
    Ok(())
}
