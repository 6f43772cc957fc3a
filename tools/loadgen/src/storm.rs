//! Connect storm: what authentication costs a broker per connection.
//!
//! `--clients C` connections each repeat, for `--duration` seconds after `--warmup`: open a TCP
//! connection, send CONNECT (client id, user name, password), wait for CONNACK, send DISCONNECT
//! when accepted, and wait until the broker closes the connection. Waiting for the close puts the
//! broker's end of the session (and the policy's) inside the cycle, and puts TIME_WAIT on the
//! broker's side, so a long storm does not run out of client ports.
//!
//! Client `k` cycles through identities `k`, `k + C`, `k + 2C`, ...: no two clients ever use
//! the same client id at once, so the broker never has to take a session over.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::codec::{Packet, decode};
use crate::report::{Histogram, Latency, StormSummary};
use crate::run::{CONNECT_TIMEOUT, HARD_CAP, KEEP_ALIVE_SECS, MAX_WARMUP_SECS, Options, loopback_addr};

/// A client whose attempts fail this many times in a row (not refusals: connection errors and
/// timeouts) ends the run with an error: the broker is gone or unreachable.
pub const MAX_CONSECUTIVE_ERRORS: u32 = 20;
/// Largest accepted credentials file.
const MAX_CREDENTIALS_BYTES: u64 = 64 << 20;
/// CONNACK is 4 bytes; anything much larger in reply to CONNECT is not a broker we measure.
const MAX_REPLY: usize = 1024;

/// One identity a storm client connects as, with its CONNECT packet encoded once.
#[derive(Debug, Clone)]
struct Identity {
    connect: Vec<u8>,
}

impl Identity {
    fn new(client_id: &str, username: Option<&str>, password: Option<&[u8]>) -> Result<Identity> {
        let mut connect = Vec::new();
        Packet::Connect { client_id, username, password, keep_alive: KEEP_ALIVE_SECS, clean_session: true }
            .encode(&mut connect)
            .with_context(|| format!("identity {client_id:?}"))?;
        Ok(Identity { connect })
    }
}

/// Validated storm options.
struct StormPlan {
    addr: SocketAddr,
    /// The identities each client cycles through.
    clients: Vec<Vec<Identity>>,
    identities: usize,
    warmup: Duration,
    duration: Duration,
}

/// One client's client id, user name and password.
type Credential = (String, Option<String>, Option<String>);

/// Reads `--credentials`: `CLIENT-ID<TAB>USER-NAME<TAB>PASSWORD` a line, the last two optional
/// (an empty user name sends none). Client ids must be distinct, or two clients could connect
/// as the same one and knock each other off.
fn read_credentials(path: &Path) -> Result<Vec<Credential>> {
    let len = std::fs::metadata(path).with_context(|| format!("--credentials {}", path.display()))?.len();
    ensure!(len <= MAX_CREDENTIALS_BYTES, "--credentials {}: larger than 64 MiB", path.display());
    let text = std::fs::read_to_string(path).with_context(|| format!("--credentials {}", path.display()))?;
    parse_credentials(&text).with_context(|| format!("--credentials {}", path.display()))
}

fn parse_credentials(text: &str) -> Result<Vec<Credential>> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (n, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split('\t');
        let id = fields.next().unwrap_or_default().to_owned();
        let user = fields.next().filter(|u| !u.is_empty()).map(str::to_owned);
        let password = fields.next().map(str::to_owned);
        // Passwords are secrets: errors name the line, never its content.
        ensure!(fields.next().is_none(), "line {}: more than three tab-separated fields", n + 1);
        ensure!(!id.is_empty(), "line {}: empty client id", n + 1);
        ensure!(user.is_some() || password.is_none(), "line {}: a password needs a user name (MQTT 3.1.1)", n + 1);
        ensure!(seen.insert(id.clone()), "line {}: client id {id:?} appears twice", n + 1);
        out.push((id, user, password));
    }
    Ok(out)
}

impl StormPlan {
    fn new(o: &Options) -> Result<StormPlan> {
        let addr = loopback_addr(&o.host, o.port)?;
        let duration = o.duration.context("--connect-storm needs --duration")?;
        ensure!(duration.is_finite() && duration > 0.0, "--duration must be positive");
        ensure!(o.warmup.is_finite() && (0.0..=MAX_WARMUP_SECS).contains(&o.warmup), "--warmup must be 0..=60 s");
        let (warmup, duration) = (Duration::from_secs_f64(o.warmup), Duration::from_secs_f64(duration.min(1e6)));
        ensure!(warmup + duration <= HARD_CAP, "--duration plus --warmup must not exceed {} s", HARD_CAP.as_secs());
        let identities: Vec<Identity> = match &o.credentials {
            Some(path) => read_credentials(path)?
                .iter()
                .map(|(id, user, pw)| Identity::new(id, user.as_deref(), pw.as_deref().map(str::as_bytes)))
                .collect::<Result<_>>()?,
            None => {
                let n = o.devices.unwrap_or(o.clients);
                ensure!(n <= 10_000_000, "--devices must be at most 10000000");
                (0..n)
                    .map(|i| {
                        let id = format!("dev-{i}");
                        Identity::new(&id, o.username_from_device.then_some(id.as_str()), None)
                    })
                    .collect::<Result<_>>()?
            }
        };
        let c = o.clients as usize;
        ensure!(
            identities.len() >= c,
            "{} identities for {c} clients: each client needs its own (client ids must not be shared)",
            identities.len()
        );
        let mut clients = vec![Vec::new(); c];
        let count = identities.len();
        for (i, id) in identities.into_iter().enumerate() {
            clients[i % c].push(id);
        }
        Ok(StormPlan { addr, clients, identities: count, warmup, duration })
    }
}

/// How one CONNECT ended.
enum Outcome {
    /// CONNACK 0, then a clean DISCONNECT and close.
    Accepted,
    /// CONNACK with this non-zero return code (the broker then closed the connection).
    Refused(u8),
}

/// What one client counted.
#[derive(Default)]
struct Tally {
    attempts: u64,
    accepted: u64,
    refused: BTreeMap<u8, u64>,
    errors: u64,
    accepted_latency: Histogram,
    refused_latency: Histogram,
    all_attempts: u64,
    first_error: Option<String>,
}

/// One cycle: connect, CONNECT, CONNACK, DISCONNECT when accepted, the broker's close. Returns
/// the outcome and when CONNACK arrived, or why the cycle failed.
async fn attempt(addr: SocketAddr, id: &Identity, scratch: &mut Vec<u8>) -> Result<(Outcome, Instant)> {
    let mut stream = timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow!("timed out connecting to {addr}"))?
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    stream.write_all(&id.connect).await?;
    scratch.clear();
    let code = timeout(CONNECT_TIMEOUT, async {
        loop {
            if let Some((p, _)) = decode(scratch, MAX_REPLY)? {
                match p {
                    Packet::ConnAck { return_code, .. } => return Ok(return_code),
                    other => bail!("expected CONNACK, got {other:?}"),
                }
            }
            if stream.read_buf(scratch).await? == 0 {
                bail!("the broker closed the connection before CONNACK");
            }
        }
    })
    .await
    .map_err(|_| anyhow!("no CONNACK within {CONNECT_TIMEOUT:?}"))??;
    let connack_at = Instant::now();
    if code == 0 {
        stream.write_all(&[0xE0, 0]).await?; // DISCONNECT
    }
    // The broker closes after DISCONNECT (or after a refusing CONNACK).
    timeout(CONNECT_TIMEOUT, async {
        let mut sink = [0u8; 64];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await
    .map_err(|_| anyhow!("the broker did not close the connection within {CONNECT_TIMEOUT:?}"))??;
    Ok((if code == 0 { Outcome::Accepted } else { Outcome::Refused(code) }, connack_at))
}

async fn client(plan: Arc<StormPlan>, k: usize, start: Instant) -> Result<Tally> {
    let (measure_from, deadline) = (start + plan.warmup, start + plan.warmup + plan.duration);
    let ids = &plan.clients[k];
    let mut tally = Tally::default();
    let mut scratch = Vec::with_capacity(MAX_REPLY);
    let mut in_a_row = 0;
    let mut next = 0;
    while Instant::now() < deadline {
        let id = &ids[next % ids.len()];
        next += 1;
        let began = Instant::now();
        let result = attempt(plan.addr, id, &mut scratch).await;
        tally.all_attempts += 1;
        // An attempt counts when its CONNACK (or its failure) came inside the measured window.
        let at = result.as_ref().map(|(_, t)| *t).unwrap_or_else(|_| Instant::now());
        let measured = at >= measure_from && at < deadline;
        match result {
            Ok((outcome, at)) => {
                in_a_row = 0;
                if !measured {
                    continue;
                }
                tally.attempts += 1;
                let ns = at.duration_since(began).as_nanos() as u64;
                match outcome {
                    Outcome::Accepted => {
                        tally.accepted += 1;
                        tally.accepted_latency.record(ns);
                    }
                    Outcome::Refused(code) => {
                        *tally.refused.entry(code).or_default() += 1;
                        tally.refused_latency.record(ns);
                    }
                }
            }
            Err(e) => {
                in_a_row += 1;
                if measured {
                    tally.attempts += 1;
                    tally.errors += 1;
                }
                tally.first_error.get_or_insert_with(|| format!("{e:#}"));
                if in_a_row >= MAX_CONSECUTIVE_ERRORS {
                    return Err(e.context(format!("client {k}: {in_a_row} failed attempts in a row")));
                }
            }
        }
    }
    Ok(tally)
}

/// Runs a connect storm on a fresh Tokio runtime with `--threads` workers.
pub fn run_blocking(opts: &Options) -> Result<StormSummary> {
    crate::run::block_on(opts, run(opts))
}

/// Runs a connect storm and returns what it counted. Refusals and failed attempts are counted,
/// not errors; the run fails on bad options and when a client fails
/// [`MAX_CONSECUTIVE_ERRORS`] attempts in a row.
pub async fn run(opts: &Options) -> Result<StormSummary> {
    let plan = Arc::new(StormPlan::new(opts)?);
    let start = Instant::now();
    let tasks: Vec<_> = (0..plan.clients.len()).map(|k| tokio::spawn(client(plan.clone(), k, start))).collect();
    // Every wait inside a cycle is bounded by CONNECT_TIMEOUT, three of them per cycle.
    let limit = plan.warmup + plan.duration + 3 * CONNECT_TIMEOUT + Duration::from_secs(5);
    let mut tallies = Vec::new();
    let mut failure = None;
    for t in tasks {
        let abort = t.abort_handle();
        match timeout(limit.saturating_sub(start.elapsed()), t).await {
            Ok(Ok(Ok(tally))) => tallies.push(tally),
            Ok(Ok(Err(e))) => {
                failure.get_or_insert(e);
            }
            Ok(Err(e)) => {
                failure.get_or_insert(anyhow!("client task failed: {e}"));
            }
            Err(_) => {
                abort.abort();
                failure.get_or_insert(anyhow!("a client did not stop in time"));
            }
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let elapsed = start.elapsed();
    let (mut accepted_latency, mut refused_latency) = (Histogram::default(), Histogram::default());
    let mut refused_by_code = BTreeMap::new();
    let (mut attempts, mut accepted, mut errors, mut all_attempts, mut first_error) = (0, 0, 0, 0, None);
    for t in tallies {
        attempts += t.attempts;
        accepted += t.accepted;
        errors += t.errors;
        all_attempts += t.all_attempts;
        accepted_latency.merge(&t.accepted_latency);
        refused_latency.merge(&t.refused_latency);
        for (code, n) in t.refused {
            *refused_by_code.entry(code.to_string()).or_default() += n;
        }
        first_error = first_error.or(t.first_error);
    }
    let secs = plan.duration.as_secs_f64();
    Ok(StormSummary {
        mode: "connect-storm".to_owned(),
        clients: plan.clients.len() as u32,
        identities: plan.identities,
        attempts,
        accepted,
        refused: refused_by_code.values().sum(),
        refused_by_code,
        errors,
        connects_per_sec: (accepted as f64 / secs).round(),
        attempts_per_sec: (attempts as f64 / secs).round(),
        latency: Latency::from(&accepted_latency),
        refused_latency: Latency::from(&refused_latency),
        all_attempts,
        warmup_secs: plan.warmup.as_secs_f64(),
        measured_secs: secs,
        elapsed_secs: elapsed.as_secs_f64(),
        first_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn credentials_lines_parse_and_bad_ones_are_refused() {
        let got = parse_credentials("# comment\na\tuser-a\tpw a\nb\tuser-b\nc\n\nd\t\n").unwrap();
        assert_eq!(got[0], ("a".into(), Some("user-a".into()), Some("pw a".into())));
        assert_eq!(got[1], ("b".into(), Some("user-b".into()), None));
        assert_eq!(got[2], ("c".into(), None, None));
        assert_eq!(got[3], ("d".into(), None, None));
        for bad in ["a\tu\tp\textra", "\tu\tp", "a\t\tp", "a\nb\na"] {
            let e = parse_credentials(bad).unwrap_err().to_string();
            assert!(e.starts_with("line "), "{bad:?}: {e}");
        }
        // The message names the line, never the password.
        let e = parse_credentials("x\t\tsecret-pw").unwrap_err().to_string();
        assert!(!e.contains("secret-pw"), "{e}");
    }

    #[test]
    fn clients_get_disjoint_identities() {
        let o = Options::parse_from(["x", "--connect-storm", "--duration", "1", "--clients", "3", "--devices", "7"]);
        let plan = StormPlan::new(&o).unwrap();
        assert_eq!(plan.identities, 7);
        assert_eq!(plan.clients.iter().map(Vec::len).collect::<Vec<_>>(), [3, 2, 2]);
        let o = Options::parse_from(["x", "--connect-storm", "--duration", "1", "--clients", "3", "--devices", "2"]);
        assert!(StormPlan::new(&o).is_err(), "fewer identities than clients");
    }

    #[test]
    fn storm_options_are_checked() {
        assert!(Options::try_parse_from(["x", "--connect-storm"]).is_err(), "needs --duration");
        assert!(Options::try_parse_from(["x", "--connect-storm", "--duration", "1", "--qos", "1"]).is_err());
        assert!(Options::try_parse_from(["x", "--connect-storm", "--duration", "1", "--publishers", "2"]).is_err());
        assert!(Options::try_parse_from(["x", "--clients", "2"]).is_err(), "--clients only with --connect-storm");
        let o = Options::parse_from(["x", "--connect-storm", "--duration", "1", "--host", "10.0.0.1"]);
        assert!(StormPlan::new(&o).is_err());
    }
}
