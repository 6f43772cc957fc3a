//! Command-line entry point: parse options, run, print the summary.
//!
//! Exit status: 0 on success, 1 when `--verify` finds missing deliveries or acknowledgements (in
//! a connect storm: any refused or failed connect), 2 on any error (bad options, broker
//! unreachable or refusing, connection lost).

use std::process::ExitCode;

use clap::Parser;
use mqtt_loadgen::{Options, run_blocking, storm};

fn main() -> ExitCode {
    let opts = Options::parse();
    if opts.connect_storm {
        report(
            &opts,
            storm::run_blocking(&opts),
            |s| s.to_json_line(),
            |s| {
                (!s.complete())
                    .then(|| format!("{} of {} connects refused, {} failed", s.refused, s.attempts, s.errors))
            },
        )
    } else {
        report(
            &opts,
            run_blocking(&opts),
            |s| s.to_json_line(),
            |s| {
                (!s.complete()).then(|| {
                    format!(
                        "{} of {} deliveries missing, {} of {} messages acknowledged",
                        s.missing, s.expected, s.acked, s.sent
                    )
                })
            },
        )
    }
}

/// Prints a run's summary (as a JSON line with `--json`) and turns it into the exit status:
/// `failure` says what `--verify` found missing, if anything.
fn report<S: std::fmt::Display>(
    opts: &Options,
    result: anyhow::Result<S>,
    json: impl FnOnce(&S) -> String,
    failure: impl FnOnce(&S) -> Option<String>,
) -> ExitCode {
    let summary = match result {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mqtt-loadgen: error: {e:#}");
            return ExitCode::from(2);
        }
    };
    if opts.json {
        println!("{}", json(&summary));
    } else {
        println!("{summary}");
    }
    match failure(&summary).filter(|_| opts.verify) {
        Some(missing) => {
            eprintln!("mqtt-loadgen: verify failed: {missing}");
            ExitCode::from(1)
        }
        None => ExitCode::SUCCESS,
    }
}
