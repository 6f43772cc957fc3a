//! Command-line entry point: parse options, run, print the summary.
//!
//! Exit status: 0 on success, 1 when `--verify` finds missing deliveries or acknowledgements,
//! 2 on any error (bad options, broker unreachable or refusing, connection lost).

use std::process::ExitCode;

use clap::Parser;
use mqtt_loadgen::{Options, run_blocking};

fn main() -> ExitCode {
    let opts = Options::parse();
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
