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
        return run_storm(&opts);
    }
    let summary = match run_blocking(&opts) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mqtt-loadgen: error: {e:#}");
            return ExitCode::from(2);
        }
    };
    if opts.json {
        println!("{}", summary.to_json_line());
    } else {
        println!("{summary}");
    }
    if opts.verify && !summary.complete() {
        eprintln!(
            "mqtt-loadgen: verify failed: {} of {} deliveries missing, {} of {} messages acknowledged",
            summary.missing, summary.expected, summary.acked, summary.sent
        );
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

fn run_storm(opts: &Options) -> ExitCode {
    let summary = match storm::run_blocking(opts) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mqtt-loadgen: error: {e:#}");
            return ExitCode::from(2);
        }
    };
    if opts.json {
        println!("{}", summary.to_json_line());
    } else {
        println!("{summary}");
    }
    if opts.verify && !summary.complete() {
        eprintln!(
            "mqtt-loadgen: verify failed: {} of {} connects refused, {} failed",
            summary.refused, summary.attempts, summary.errors
        );
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
