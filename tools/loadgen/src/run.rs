//! Options, connection handling and the orchestration of one load run.
//!
//! Order of a run: subscribers connect and subscribe (SUBACK received), publishers connect,
//! all publishers start together, then a bounded drain waits for stragglers, then everyone
//! sends DISCONNECT. Every wait is bounded, so a run always ends by itself.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::{ArgAction, Parser};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, timeout};

use mqtt_policy_guest::topic;

use crate::codec::{Packet, connack_reason, decode};
use crate::report::{Histogram, Latency, Summary};

/// Longest publish phase (warm-up included) a run may have, whatever the options say.
pub const HARD_CAP: Duration = Duration::from_secs(3600);
/// Longest accepted `--warmup`.
pub const MAX_WARMUP_SECS: f64 = 60.0;
/// Longest accepted `--drain-ms`.
pub const MAX_DRAIN_MS: u64 = 60_000;
/// Bytes at the start of every payload: run id (u64), publisher (u32), sequence (u64),
/// send time in ns since the run's start (u64), all little-endian.
pub const HEADER_LEN: usize = 28;
/// Largest accepted `--payload`.
pub const MAX_PAYLOAD: usize = 1 << 20;

pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const KEEP_ALIVE_SECS: u16 = 60;
/// A client idle this long sends PINGREQ, well inside the keep-alive the broker enforces.
const PING_AFTER: Duration = Duration::from_secs(20);
/// Publishes encoded into one buffer before a `write`: fewer syscalls per message keeps the
/// client cheap next to the broker.
const BATCH: u64 = 64;
const READ_CHUNK: usize = 64 * 1024;
/// Refuse inbound packets larger than this rather than buffer without bound.
const MAX_INBOUND: usize = 16 << 20;
const POLL: Duration = Duration::from_millis(2);

/// Command-line options of `mqtt-loadgen`.
#[derive(Parser, Debug, Clone)]
#[command(name = "mqtt-loadgen", version, about = "MQTT 3.1.1 load generator for a broker on loopback")]
pub struct Options {
    /// Broker address: a loopback address (127.0.0.0/8, ::1) or "localhost"; anything else is refused.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker port.
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// Number of publisher connections.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub publishers: u32,
    /// Number of subscriber connections (each subscribes to --subscribe-filter).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub subscribers: u32,
    /// QoS for publishing and subscribing.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// Payload size in bytes (at least 28: the header carrying id, sequence and timestamp).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Messages per publisher (default 1000 when --duration is not given).
    #[arg(long, conflicts_with = "duration")]
    pub messages: Option<u64>,
    /// Publish for this many seconds after the warm-up instead of a fixed count (at most 3600 with the warm-up).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Distinct device ids the topics are spread over (default: one per publisher; at least --publishers).
    #[arg(long)]
    pub devices: Option<u32>,
    /// Topic of each message; "{device}" becomes the device id "dev-N".
    #[arg(long, default_value = "devices/{device}/telemetry")]
    pub topic_pattern: String,
    /// Client ids become "{prefix}pub-I" / "{prefix}sub-J" instead of "dev-N" / "loadgen-sub-J".
    #[arg(long)]
    pub client_id_prefix: Option<String>,
    /// Send the client id as the user name (`--username-from-device false` sends none).
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    pub username_from_device: bool,
    /// Send this password with the user name of every publisher and subscriber (brokers such as
    /// RabbitMQ refuse a user name without one). Not for the connect storm: see --credentials.
    #[arg(long)]
    pub password: Option<String>,
    /// Topic filter every subscriber subscribes to.
    #[arg(long, default_value = "devices/+/telemetry")]
    pub subscribe_filter: String,
    /// Print the summary as one JSON line instead of text.
    #[arg(long)]
    pub json: bool,
    /// Seconds at the start of publishing excluded from rates and latency.
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
    /// Messages per second per publisher (0 = as fast as possible / as the QoS 1 window allows).
    #[arg(long, default_value_t = 0)]
    pub rate: u32,
    /// QoS 1 messages a publisher may have unacknowledged at once.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..))]
    pub window: u16,
    /// Also report the CPU time process PID (e.g. the broker) used in the measured
    /// window, from the end of the warm-up to the last publish: what loading a policy at the first
    /// connect or the warm-up's messages cost is then left out.
    #[arg(long, value_name = "PID")]
    pub cpu_of: Option<u32>,
    /// After publishing, wait at most this long for missing deliveries and acknowledgements.
    #[arg(long, default_value_t = 2000)]
    pub drain_ms: u64,
    /// Exit with status 1 if any expected delivery (or QoS 1 acknowledgement) is missing.
    #[arg(long)]
    pub verify: bool,
    /// Tokio worker threads for the client (the broker needs the other core of a 2-core machine).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: u16,
    /// A connect storm instead of publishing: --clients connections each repeat CONNECT → CONNACK →
    /// DISCONNECT for --duration seconds (see `crate::storm`).
    #[arg(
        long,
        requires = "duration",
        conflicts_with_all = [
            "publishers", "subscribers", "qos", "payload", "rate", "window", "topic_pattern", "cpu_of",
            "subscribe_filter", "client_id_prefix", "drain_ms",
        ]
    )]
    pub connect_storm: bool,
    /// Concurrent clients of a connect storm.
    #[arg(long, default_value_t = 8, requires = "connect_storm", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub clients: u32,
    /// Identities for a connect storm, one a line: `CLIENT-ID<TAB>USER-NAME<TAB>PASSWORD` (user name and
    /// password optional; `#` starts a comment line). Default: ids "dev-N" for --devices N, no password.
    #[arg(long, requires = "connect_storm")]
    pub credentials: Option<std::path::PathBuf>,
}

/// Maps `--host` to a socket address, refusing anything that is not loopback: this tool is
/// only for benchmarking a broker on the same machine.
pub fn loopback_addr(host: &str, port: u16) -> Result<SocketAddr> {
    if host.eq_ignore_ascii_case("localhost") {
        // Not resolved through DNS or /etc/hosts: a hosts file could point it elsewhere.
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let ip: IpAddr =
        bare.parse().map_err(|_| anyhow!("--host {host:?}: give a loopback IP address or \"localhost\""))?;
    ensure!(ip.is_loopback(), "--host {host}: only loopback addresses (127.0.0.0/8, ::1) are allowed");
    Ok(SocketAddr::new(ip, port))
}

/// What one publisher does: its client id and the devices (topics) it cycles through.
#[derive(Debug, Clone)]
struct PublisherPlan {
    client_id: String,
    topics: Vec<String>,
    /// Whether each topic matches the subscribers' filter.
    matched: Vec<bool>,
}

impl PublisherPlan {
    /// Deliveries one subscriber should get from this publisher after it sent `sent` messages:
    /// message `seq` goes to topic `seq % topics.len()`.
    fn expected(&self, sent: u64) -> u64 {
        let n = self.topics.len() as u64;
        let per_cycle = self.matched.iter().filter(|&&m| m).count() as u64;
        let tail = self.matched[..(sent % n) as usize].iter().filter(|&&m| m).count() as u64;
        sent / n * per_cycle + tail
    }

    fn is_expected(&self, seq: u64, sent: u64) -> bool {
        seq < sent && self.matched[(seq % self.topics.len() as u64) as usize]
    }
}

/// Validated options.
struct Plan {
    addr: SocketAddr,
    qos: u8,
    payload: usize,
    devices: u32,
    messages: Option<u64>,
    /// Publishing stops at `start + publish_for` (warm-up included).
    publish_for: Duration,
    warmup: Duration,
    rate: u32,
    window: u16,
    cpu_of: Option<u32>,
    drain: Duration,
    filter: String,
    username_from_device: bool,
    password: Option<String>,
    publishers: Vec<PublisherPlan>,
    subscriber_ids: Vec<String>,
}

impl Plan {
    fn new(o: &Options) -> Result<Plan> {
        let addr = loopback_addr(&o.host, o.port)?;
        ensure!(
            (HEADER_LEN..=MAX_PAYLOAD).contains(&o.payload),
            "--payload must be between {HEADER_LEN} and {MAX_PAYLOAD} bytes"
        );
        ensure!(o.warmup.is_finite() && (0.0..=MAX_WARMUP_SECS).contains(&o.warmup), "--warmup must be 0..=60 s");
        let warmup = Duration::from_secs_f64(o.warmup);
        let (messages, publish_for) = match o.duration {
            Some(d) => {
                ensure!(d.is_finite() && d > 0.0, "--duration must be positive");
                let total = warmup + Duration::from_secs_f64(d.min(1e6));
                ensure!(total <= HARD_CAP, "--duration plus --warmup must not exceed {} s", HARD_CAP.as_secs());
                (None, total)
            }
            None => {
                let m = o.messages.unwrap_or(1000);
                ensure!(m > 0, "--messages must be positive");
                (Some(m), HARD_CAP)
            }
        };
        ensure!(o.drain_ms <= MAX_DRAIN_MS, "--drain-ms must be at most {MAX_DRAIN_MS}");
        if let Err(e) = topic::validate_topic_filter(&o.subscribe_filter) {
            bail!("--subscribe-filter {:?} is not a valid filter: {e}", o.subscribe_filter);
        }
        // The broker hands each message of a shared subscription to one member of the group,
        // so "every subscriber gets every matching message" holds only for a group of one.
        ensure!(
            topic::split_shared(&o.subscribe_filter).is_none() || o.subscribers <= 1,
            "--subscribe-filter {:?} is a shared subscription: use at most one subscriber",
            o.subscribe_filter
        );
        let devices = o.devices.unwrap_or(o.publishers);
        // Two publishers sharing a device would share a client id, and the broker would keep
        // disconnecting one of them.
        ensure!(devices >= o.publishers, "--devices ({devices}) must be at least --publishers ({})", o.publishers);
        ensure!(devices <= 10_000_000, "--devices must be at most 10000000");

        let mut publishers = Vec::with_capacity(o.publishers as usize);
        for i in 0..o.publishers {
            let first = (u64::from(i) * u64::from(devices) / u64::from(o.publishers)) as u32;
            let end = (u64::from(i + 1) * u64::from(devices) / u64::from(o.publishers)) as u32;
            let topics: Vec<String> =
                (first..end).map(|n| o.topic_pattern.replace("{device}", &format!("dev-{n}"))).collect();
            if let Some((bad, e)) = topics.iter().find_map(|t| topic::validate_topic_name(t).err().map(|e| (t, e))) {
                bail!("--topic-pattern gives {bad:?}, which is not a valid topic name: {e}");
            }
            let matched = topics.iter().map(|t| topic::matches(&o.subscribe_filter, t)).collect();
            let client_id = match &o.client_id_prefix {
                Some(p) => format!("{p}pub-{i}"),
                None => format!("dev-{first}"),
            };
            publishers.push(PublisherPlan { client_id, topics, matched });
        }
        let subscriber_ids = (0..o.subscribers)
            .map(|j| match &o.client_id_prefix {
                Some(p) => format!("{p}sub-{j}"),
                None => format!("loadgen-sub-{j}"),
            })
            .collect();
        Ok(Plan {
            addr,
            qos: o.qos,
            payload: o.payload,
            devices,
            messages,
            publish_for,
            warmup,
            rate: o.rate,
            window: o.window,
            cpu_of: o.cpu_of,
            drain: Duration::from_millis(o.drain_ms),
            filter: o.subscribe_filter.clone(),
            username_from_device: o.username_from_device,
            password: o.password.clone(),
            publishers,
            subscriber_ids,
        })
    }

    fn username<'a>(&self, client_id: &'a str) -> Option<&'a str> {
        self.username_from_device.then_some(client_id)
    }
}

/// State shared by the coordinator and every connection task.
struct Shared {
    /// Zero of every timestamp in payloads: one Instant for all tasks of this process.
    epoch: Instant,
    /// Tells payloads of this run from anything else on the broker (e.g. retained messages).
    run_id: u64,
    /// Set to true to end the run (normally or after a failure).
    stop: watch::Sender<bool>,
    /// Set to true when the publishers may start.
    go: watch::Sender<bool>,
    failed: AtomicBool,
    /// Messages sent before this (ns since epoch) are warm-up: not in rates or latency.
    measure_from_ns: AtomicU64,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn fail(&self) {
        self.failed.store(true, Ordering::SeqCst);
        self.stop.send_replace(true);
    }
}

#[derive(Default)]
struct PubState {
    connected: AtomicBool,
    done: AtomicBool,
    sent: AtomicU64,
    /// Messages sent at or after the end of the warm-up.
    measured: AtomicU64,
    acked: AtomicU64,
    last_send_ns: AtomicU64,
}

#[derive(Default)]
struct SubState {
    ready: AtomicBool,
    /// Distinct messages of this run received so far (for the drain's early exit).
    unique: AtomicU64,
}

/// Per-subscriber record of what arrived.
struct Tracker {
    run_id: u64,
    /// One bit per (publisher, sequence number).
    seen: Vec<Vec<u64>>,
    delivered: u64,
    duplicates: u64,
    unique: u64,
    /// Payloads not from this run (e.g. another client publishing on a matching topic).
    foreign: u64,
    latency: Histogram,
    measured: u64,
    last_delivery_ns: u64,
}

impl Tracker {
    fn new(run_id: u64, publishers: usize) -> Tracker {
        Tracker {
            run_id,
            seen: vec![Vec::new(); publishers],
            delivered: 0,
            duplicates: 0,
            unique: 0,
            foreign: 0,
            latency: Histogram::default(),
            measured: 0,
            last_delivery_ns: 0,
        }
    }

    fn on_payload(&mut self, payload: &[u8], now_ns: u64, measure_from_ns: u64) {
        let Some(h) = decode_header(payload) else {
            self.foreign += 1;
            return;
        };
        // Sequence numbers are bounded by what a publisher can send in an hour; a larger one is
        // not ours, and must not make the bitmap grow without bound.
        if h.run_id != self.run_id || h.publisher as usize >= self.seen.len() || h.seq >= 1 << 34 {
            self.foreign += 1;
            return;
        }
        self.delivered += 1;
        self.last_delivery_ns = now_ns;
        let bits = &mut self.seen[h.publisher as usize];
        let (word, bit) = ((h.seq / 64) as usize, h.seq % 64);
        if bits.len() <= word {
            bits.resize((word + 1).next_power_of_two(), 0);
        }
        if bits[word] & (1 << bit) != 0 {
            self.duplicates += 1;
        } else {
            bits[word] |= 1 << bit;
            self.unique += 1;
        }
        if h.sent_ns >= measure_from_ns {
            self.measured += 1;
            self.latency.record(now_ns.saturating_sub(h.sent_ns));
        }
    }

    fn has(&self, publisher: usize, seq: u64) -> bool {
        let bits = &self.seen[publisher];
        bits.get((seq / 64) as usize).is_some_and(|w| w & (1 << (seq % 64)) != 0)
    }
}

struct Header {
    run_id: u64,
    publisher: u32,
    seq: u64,
    sent_ns: u64,
}

fn encode_header(out: &mut [u8], h: &Header) {
    out[0..8].copy_from_slice(&h.run_id.to_le_bytes());
    out[8..12].copy_from_slice(&h.publisher.to_le_bytes());
    out[12..20].copy_from_slice(&h.seq.to_le_bytes());
    out[20..28].copy_from_slice(&h.sent_ns.to_le_bytes());
}

fn decode_header(p: &[u8]) -> Option<Header> {
    let p = p.get(..HEADER_LEN)?;
    Some(Header {
        run_id: u64::from_le_bytes(p[0..8].try_into().ok()?),
        publisher: u32::from_le_bytes(p[8..12].try_into().ok()?),
        seq: u64::from_le_bytes(p[12..20].try_into().ok()?),
        sent_ns: u64::from_le_bytes(p[20..28].try_into().ok()?),
    })
}

/// Opens a TCP connection and completes the CONNECT/CONNACK exchange. Returns the stream and
/// any bytes read past the CONNACK.
async fn mqtt_connect(
    addr: SocketAddr,
    client_id: &str,
    username: Option<&str>,
    password: Option<&str>,
) -> Result<(TcpStream, Vec<u8>)> {
    let mut stream = timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .with_context(|| format!("{client_id}: timed out connecting to {addr}"))?
        .with_context(|| format!("{client_id}: cannot connect to {addr}"))?;
    // Latency is the point of the measurement: do not let Nagle hold small packets back.
    stream.set_nodelay(true)?;
    let mut out = Vec::new();
    // A password only goes with a user name (MQTT 3.1.1).
    let password = password.filter(|_| username.is_some()).map(str::as_bytes);
    Packet::Connect { client_id, username, password, keep_alive: KEEP_ALIVE_SECS, clean_session: true }
        .encode(&mut out)?;
    stream.write_all(&out).await?;
    let mut buf = Vec::with_capacity(READ_CHUNK);
    let used = timeout(CONNECT_TIMEOUT, async {
        loop {
            if let Some((p, n)) = decode(&buf, MAX_INBOUND)? {
                match p {
                    Packet::ConnAck { return_code: 0, .. } => return Ok(n),
                    Packet::ConnAck { return_code, .. } => {
                        bail!("broker refused {client_id}: {} (CONNACK {return_code})", connack_reason(return_code))
                    }
                    other => bail!("{client_id}: expected CONNACK, got {other:?}"),
                }
            }
            if stream.read_buf(&mut buf).await? == 0 {
                bail!("{client_id}: broker closed the connection before CONNACK");
            }
        }
    })
    .await
    .with_context(|| format!("{client_id}: no CONNACK within {CONNECT_TIMEOUT:?}"))??;
    buf.drain(..used);
    Ok((stream, buf))
}

/// Resolves once the flag behind `rx` is true (or its sender is gone). Drops the borrow guard
/// at once, so futures using it stay `Send`.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Reads into `buf`, making room first so each read can take a large chunk.
async fn read_more(r: &mut (impl AsyncReadExt + Unpin), buf: &mut Vec<u8>) -> Result<()> {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    if r.read_buf(buf).await? == 0 {
        bail!("broker closed the connection");
    }
    Ok(())
}

async fn subscriber(shared: Arc<Shared>, plan: Arc<Plan>, idx: usize, state: Arc<SubState>) -> Result<Tracker> {
    let client_id = &plan.subscriber_ids[idx];
    let (mut stream, mut buf) =
        mqtt_connect(plan.addr, client_id, plan.username(client_id), plan.password.as_deref()).await?;
    let mut out = Vec::new();
    Packet::Subscribe { packet_id: 1, filters: vec![(&plan.filter, plan.qos)] }.encode(&mut out)?;
    stream.write_all(&out).await?;
    out.clear();

    let mut tracker = Tracker::new(shared.run_id, plan.publishers.len());
    let mut stop = shared.stop.subscribe();
    let mut last_write = Instant::now();
    loop {
        // Process everything complete in the buffer: one receive time for all of it, since
        // that is when they were read, and one write for all the PUBACKs.
        let now_ns = shared.now_ns();
        let measure_from = shared.measure_from_ns.load(Ordering::Relaxed);
        let mut at = 0;
        while let Some((p, n)) = decode(&buf[at..], MAX_INBOUND).with_context(|| format!("{client_id}: bad packet"))? {
            at += n;
            match p {
                Packet::Publish { qos, packet_id, payload, .. } => {
                    tracker.on_payload(payload, now_ns, measure_from);
                    if let (1, Some(packet_id)) = (qos, packet_id) {
                        Packet::PubAck { packet_id }.encode(&mut out)?;
                    }
                }
                Packet::SubAck { packet_id: 1, return_codes } => {
                    ensure!(
                        return_codes.first() != Some(&0x80),
                        "{client_id}: broker refused the subscription to {:?}",
                        plan.filter
                    );
                    if return_codes.first() != Some(&plan.qos) {
                        eprintln!("mqtt-loadgen: {client_id}: broker granted QoS {return_codes:?}, asked {}", plan.qos);
                    }
                    state.ready.store(true, Ordering::SeqCst);
                }
                Packet::PingResp => {}
                other => bail!("{client_id}: unexpected packet {other:?}"),
            }
        }
        buf.drain(..at);
        state.unique.store(tracker.unique, Ordering::Relaxed);
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
            last_write = Instant::now();
        }
        tokio::select! {
            biased;
            _ = stopped(&mut stop) => break,
            r = read_more(&mut stream, &mut buf) => r.with_context(|| format!("{client_id}: reading"))?,
            _ = sleep_until((last_write + PING_AFTER).into()) => {
                stream.write_all(&[0xC0, 0]).await?; // PINGREQ
                last_write = Instant::now();
            }
        }
    }
    let mut bye = Vec::new();
    Packet::Disconnect.encode(&mut bye)?;
    // The run is over: a broker that already went away is not an error any more.
    let _ = stream.write_all(&bye).await;
    let _ = stream.shutdown().await;
    Ok(tracker)
}

/// Reads PUBACKs (and PINGRESPs) for a publisher and returns window slots.
async fn publisher_reader(
    shared: Arc<Shared>,
    client_id: String,
    mut rd: OwnedReadHalf,
    mut buf: Vec<u8>,
    state: Arc<PubState>,
    window: Arc<Semaphore>,
) -> Result<()> {
    let mut stop = shared.stop.subscribe();
    let result = async {
        loop {
            let mut at = 0;
            let mut acks = 0;
            while let Some((p, n)) = decode(&buf[at..], MAX_INBOUND)? {
                at += n;
                match p {
                    Packet::PubAck { .. } => acks += 1,
                    Packet::PingResp => {}
                    other => bail!("{client_id}: unexpected packet {other:?}"),
                }
            }
            buf.drain(..at);
            if acks > 0 {
                state.acked.fetch_add(acks as u64, Ordering::Relaxed);
                window.add_permits(acks);
            }
            tokio::select! {
                biased;
                _ = stopped(&mut stop) => return Ok(()),
                r = read_more(&mut rd, &mut buf) => {
                    // After the stop the publisher says DISCONNECT and the broker closes: the
                    // end of the run, whichever of the two this task noticed first.
                    if r.is_err() && *stop.borrow() {
                        return Ok(());
                    }
                    r?
                }
            }
        }
    }
    .await;
    // Wake a publisher blocked on the window so it sees the failure instead of waiting it out.
    window.close();
    result
}

async fn publisher(shared: Arc<Shared>, plan: Arc<Plan>, idx: usize, state: Arc<PubState>) -> Result<()> {
    let me = &plan.publishers[idx];
    let client_id = me.client_id.clone();
    let (stream, leftover) =
        mqtt_connect(plan.addr, &client_id, plan.username(&client_id), plan.password.as_deref()).await?;
    let (rd, mut wr) = stream.into_split();
    let window = Arc::new(Semaphore::new(usize::from(plan.window)));
    let reader =
        tokio::spawn(publisher_reader(shared.clone(), client_id.clone(), rd, leftover, state.clone(), window.clone()));
    state.connected.store(true, Ordering::SeqCst);

    let mut go = shared.go.subscribe();
    let mut stop = shared.stop.subscribe();
    tokio::select! {
        _ = stopped(&mut go) => {}
        _ = stopped(&mut stop) => {}
    }
    let send_result =
        if *shared.stop.borrow() { Ok(()) } else { send_all(&shared, &plan, idx, &state, &mut wr, &window).await };
    state.done.store(true, Ordering::SeqCst);
    if let Err(e) = send_result {
        // The reader's error (e.g. the broker closed the connection) explains a closed window better.
        return match reader.await {
            Ok(Err(re)) => Err(re),
            _ => Err(e.context(format!("{client_id}: publishing"))),
        };
    }
    stopped(&mut stop).await;
    let mut bye = Vec::new();
    Packet::Disconnect.encode(&mut bye)?;
    let _ = wr.write_all(&bye).await;
    let _ = wr.shutdown().await;
    reader.await.context("reader task panicked")?
}

async fn send_all(
    shared: &Shared,
    plan: &Plan,
    idx: usize,
    state: &PubState,
    wr: &mut OwnedWriteHalf,
    window: &Semaphore,
) -> Result<()> {
    let me = &plan.publishers[idx];
    let start = Instant::now();
    let deadline = start + plan.publish_for;
    let measure_from = shared.measure_from_ns.load(Ordering::Relaxed);
    let limit = plan.messages.unwrap_or(u64::MAX);
    let mut payload = vec![0u8; plan.payload];
    let mut buf = Vec::with_capacity(READ_CHUNK);
    let mut seq = 0u64;
    let mut measured = 0u64;
    let mut next_id = 0u16;
    let mut last_write = Instant::now();
    let ping_if_idle = |last_write: Instant| last_write.elapsed() >= PING_AFTER;

    while seq < limit {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let mut n = BATCH.min(limit - seq);
        if plan.rate > 0 {
            // Messages due by now on a fixed schedule from the start, so pacing does not drift.
            let due = (now - start).as_secs_f64() * f64::from(plan.rate);
            let due = due as u64 + 1;
            if due <= seq {
                let next = start + Duration::from_secs_f64(seq as f64 / f64::from(plan.rate));
                sleep_until(next.min(deadline).min(last_write + PING_AFTER).into()).await;
                if ping_if_idle(last_write) {
                    wr.write_all(&[0xC0, 0]).await?;
                    last_write = Instant::now();
                }
                continue;
            }
            n = n.min(due - seq);
        }
        if plan.qos > 0 {
            let free = window.available_permits() as u64;
            if free == 0 {
                // Window full: wait for an acknowledgement, but not past the deadline, and
                // keep the connection alive if the broker is slow.
                let wait = deadline.min(last_write + PING_AFTER).saturating_duration_since(Instant::now());
                match timeout(wait, window.acquire()).await {
                    Ok(Ok(permit)) => permit.forget(),
                    Ok(Err(_)) => bail!("connection closed"),
                    Err(_) => {
                        if ping_if_idle(last_write) {
                            wr.write_all(&[0xC0, 0]).await?;
                            last_write = Instant::now();
                        }
                        continue;
                    }
                }
                n = 1;
            } else {
                n = n.min(free);
                window.try_acquire_many(n as u32).context("window closed")?.forget();
            }
        }
        for _ in 0..n {
            let sent_ns = shared.now_ns();
            if sent_ns >= measure_from {
                measured += 1;
            }
            encode_header(&mut payload, &Header { run_id: shared.run_id, publisher: idx as u32, seq, sent_ns });
            let packet_id = if plan.qos > 0 {
                next_id = next_id.checked_add(1).unwrap_or(1); // ids cycle 1..=65535, never 0
                Some(next_id)
            } else {
                None
            };
            let topic = &me.topics[(seq % me.topics.len() as u64) as usize];
            Packet::Publish { dup: false, qos: plan.qos, retain: false, topic, packet_id, payload: &payload }
                .encode(&mut buf)?;
            seq += 1;
        }
        wr.write_all(&buf).await?;
        buf.clear();
        last_write = Instant::now();
        state.sent.store(seq, Ordering::Relaxed);
        state.last_send_ns.store(shared.now_ns(), Ordering::Relaxed);
    }
    state.measured.store(measured, Ordering::Relaxed);
    Ok(())
}

/// Waits until `cond` holds, the run failed, or `limit` passes. Returns whether `cond` held.
async fn wait_until(shared: &Shared, limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if shared.failed.load(Ordering::SeqCst) || Instant::now() >= end {
            return false;
        }
        sleep(POLL).await;
    }
}

/// Collects a task's result, aborting it if it does not finish in time.
async fn join<T>(handle: JoinHandle<Result<T>>) -> Result<T> {
    let abort = handle.abort_handle();
    match timeout(Duration::from_secs(5), handle).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(anyhow!("task failed: {e}")),
        Err(_) => {
            abort.abort();
            Err(anyhow!("task did not stop within 5 s"))
        }
    }
}

/// Runs one load test on a fresh multi-threaded Tokio runtime with `--threads` workers.
pub fn run_blocking(opts: &Options) -> Result<Summary> {
    block_on(opts, run(opts))
}

/// Runs `work` on a fresh multi-threaded Tokio runtime with `--threads` workers.
pub(crate) fn block_on<T>(opts: &Options, work: impl Future<Output = Result<T>>) -> Result<T> {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(usize::from(opts.threads)).enable_all().build()?;
    rt.block_on(work)
}

/// Runs one load test and returns what it measured. Fails on setup errors (refused host,
/// connection refused, CONNACK or SUBACK refusal) and on connections lost mid-run; missing
/// deliveries are not an error here but are reported in the [`Summary`].
pub async fn run(opts: &Options) -> Result<Summary> {
    let plan = Arc::new(Plan::new(opts)?);
    let epoch = Instant::now();
    let run_id = {
        // Unique enough to tell this run's payloads from an earlier or concurrent run's.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        (t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32)
    };
    let shared = Arc::new(Shared {
        epoch,
        run_id,
        stop: watch::channel(false).0,
        go: watch::channel(false).0,
        failed: AtomicBool::new(false),
        measure_from_ns: AtomicU64::new(u64::MAX),
    });
    let result = drive(&shared, &plan).await;
    // Whatever happened, release every task before returning.
    shared.stop.send_replace(true);
    result
}

async fn drive(shared: &Arc<Shared>, plan: &Arc<Plan>) -> Result<Summary> {
    // Wraps a task so that its failure stops the whole run at once.
    fn spawn<T: Send + 'static>(
        shared: &Arc<Shared>,
        f: impl Future<Output = Result<T>> + Send + 'static,
    ) -> JoinHandle<Result<T>> {
        let shared = shared.clone();
        tokio::spawn(async move {
            let r = f.await;
            if r.is_err() {
                shared.fail();
            }
            r
        })
    }

    let sub_states: Vec<Arc<SubState>> = plan.subscriber_ids.iter().map(|_| Arc::default()).collect();
    let subs: Vec<_> = (0..sub_states.len())
        .map(|j| spawn(shared, subscriber(shared.clone(), plan.clone(), j, sub_states[j].clone())))
        .collect();
    let all_subscribed =
        wait_until(shared, SETUP_TIMEOUT, || sub_states.iter().all(|s| s.ready.load(Ordering::SeqCst))).await;

    let pub_states: Vec<Arc<PubState>> = plan.publishers.iter().map(|_| Arc::default()).collect();
    let mut pubs = Vec::new();
    let mut all_connected = false;
    if all_subscribed {
        pubs = (0..pub_states.len())
            .map(|i| spawn(shared, publisher(shared.clone(), plan.clone(), i, pub_states[i].clone())))
            .collect();
        all_connected =
            wait_until(shared, SETUP_TIMEOUT, || pub_states.iter().all(|s| s.connected.load(Ordering::SeqCst))).await;
    }
    if !all_subscribed || !all_connected {
        shared.fail();
        let what = if all_subscribed { "publishers to connect" } else { "subscribers to get SUBACK" };
        return Err(first_error(subs, pubs).await.unwrap_or_else(|| anyhow!("timed out waiting for {what}")));
    }

    let start_ns = shared.now_ns();
    let warmup_end_ns = start_ns + plan.warmup.as_nanos() as u64;
    shared.measure_from_ns.store(warmup_end_ns, Ordering::SeqCst);
    shared.go.send_replace(true);
    // The process's CPU clock at the end of the warm-up, read by a thread of its own so the
    // client's runtime is not held up.
    let cpu_from = plan.cpu_of.map(|pid| {
        let warmup = plan.warmup;
        std::thread::spawn(move || {
            std::thread::sleep(warmup);
            process_cpu_secs(pid)
        })
    });

    // Publishers bound themselves by the deadline; the slack only guards against a bug.
    let all_done = wait_until(shared, plan.publish_for + Duration::from_secs(10), || {
        pub_states.iter().all(|s| s.done.load(Ordering::SeqCst))
    })
    .await;
    let publish_done_ns = shared.now_ns();
    let cpu_measured_secs = match (plan.cpu_of, cpu_from) {
        (Some(pid), Some(from)) => {
            let from = from.join().map_err(|_| anyhow!("reading the CPU time of process {pid} panicked"))??;
            Some(process_cpu_secs(pid)? - from)
        }
        _ => None,
    };
    if !all_done {
        shared.fail();
        return Err(first_error(subs, pubs).await.unwrap_or_else(|| anyhow!("publishers did not finish in time")));
    }

    let sent: Vec<u64> = pub_states.iter().map(|s| s.sent.load(Ordering::SeqCst)).collect();
    let expected_each: u64 = plan.publishers.iter().zip(&sent).map(|(p, &n)| p.expected(n)).sum();
    let total_sent: u64 = sent.iter().sum();
    let drained = wait_until(shared, plan.drain, || {
        let acked =
            plan.qos == 0 || pub_states.iter().map(|s| s.acked.load(Ordering::Relaxed)).sum::<u64>() >= total_sent;
        acked && sub_states.iter().all(|s| s.unique.load(Ordering::Relaxed) >= expected_each)
    })
    .await;
    let end_ns = shared.now_ns();
    if shared.failed.load(Ordering::SeqCst) {
        return Err(first_error(subs, pubs).await.unwrap_or_else(|| anyhow!("a connection failed")));
    }
    shared.stop.send_replace(true);

    let mut trackers = Vec::new();
    for s in subs {
        trackers.push(join(s).await?);
    }
    for p in pubs {
        join(p).await?;
    }

    let mut latency = Histogram::default();
    let (mut delivered, mut duplicates, mut missing, mut measured_deliveries, mut last_delivery_ns) = (0, 0, 0, 0, 0);
    for t in &trackers {
        latency.merge(&t.latency);
        delivered += t.delivered;
        duplicates += t.duplicates;
        measured_deliveries += t.measured;
        last_delivery_ns = last_delivery_ns.max(t.last_delivery_ns);
        for (p, (plan_p, &n)) in plan.publishers.iter().zip(&sent).enumerate() {
            missing += (0..n).filter(|&q| plan_p.is_expected(q, n) && !t.has(p, q)).count() as u64;
        }
        if t.foreign > 0 {
            eprintln!("mqtt-loadgen: a subscriber ignored {} messages not from this run", t.foreign);
        }
    }
    let last_send_ns = pub_states.iter().map(|s| s.last_send_ns.load(Ordering::SeqCst)).max().unwrap_or(start_ns);
    let measured_sent: u64 = pub_states.iter().map(|s| s.measured.load(Ordering::SeqCst)).sum();
    let secs = |a: u64, b: u64| b.saturating_sub(a) as f64 / 1e9;
    let per_sec = |n: u64, until_ns: u64| {
        let s = secs(warmup_end_ns, until_ns);
        if n == 0 || s <= 0.0 { 0.0 } else { (n as f64 / s).round() }
    };
    let hit_time_cap = plan.messages.is_some_and(|m| sent.iter().any(|&n| n < m));
    Ok(Summary {
        publishers: plan.publishers.len() as u32,
        subscribers: plan.subscriber_ids.len() as u32,
        qos: plan.qos,
        payload_bytes: plan.payload,
        devices: plan.devices,
        sent: total_sent,
        acked: pub_states.iter().map(|s| s.acked.load(Ordering::SeqCst)).sum(),
        expected: expected_each * plan.subscriber_ids.len() as u64,
        delivered,
        missing,
        duplicates,
        sent_per_sec: per_sec(measured_sent, last_send_ns),
        delivered_per_sec: per_sec(measured_deliveries, last_delivery_ns),
        latency: Latency::from(&latency),
        warmup_secs: plan.warmup.as_secs_f64(),
        elapsed_secs: secs(start_ns, end_ns),
        publish_secs: secs(start_ns, last_send_ns),
        drain_secs: secs(publish_done_ns, end_ns),
        hit_time_cap,
        drain_timed_out: !drained,
        measured_deliveries,
        cpu_of_measured_secs: cpu_measured_secs,
    })
}

/// CPU time of process `pid` so far, seconds: the time its threads ran, to the nanosecond
/// (`/proc/PID/task/*/schedstat`; `/proc/PID/stat` counts in 10 ms ticks, too coarse for a
/// few seconds of a broker at a fixed rate).
fn process_cpu_secs(pid: u32) -> Result<f64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).with_context(|| format!("--cpu-of {pid}"))?;
    let mut ns = 0u64;
    for task in tasks {
        let path = task?.path().join("schedstat");
        // A thread that ended meanwhile has no file any more: its time is lost to both readings.
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let first = text.split_whitespace().next().and_then(|f| f.parse::<u64>().ok());
        ns += first.ok_or_else(|| anyhow!("{}: no run time", path.display()))?;
    }
    Ok(ns as f64 / 1e9)
}

/// After a failure: stops every task and returns the first error any of them reported.
async fn first_error(
    subs: Vec<JoinHandle<Result<Tracker>>>,
    pubs: Vec<JoinHandle<Result<()>>>,
) -> Option<anyhow::Error> {
    let mut first = None;
    for s in subs {
        if let Err(e) = join(s).await {
            first.get_or_insert(e);
        }
    }
    for p in pubs {
        if let Err(e) = join(p).await {
            first.get_or_insert(e);
        }
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_are_accepted() {
        for ok in ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST"] {
            assert!(loopback_addr(ok, 1883).is_ok(), "{ok}");
        }
        for bad in ["10.0.0.1", "192.168.1.1", "8.8.8.8", "0.0.0.0", "::", "::ffff:127.0.0.1", "example.com", ""] {
            assert!(loopback_addr(bad, 1883).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_password_goes_with_every_client_of_a_run() {
        let o = Options::parse_from(["x", "--password", "s3cret"]);
        assert_eq!(Plan::new(&o).unwrap().password.as_deref(), Some("s3cret"));
        assert_eq!(Plan::new(&Options::parse_from(["x"])).unwrap().password, None);
    }

    #[test]
    fn devices_are_split_between_publishers() {
        let o = Options::parse_from(["x", "--publishers", "3", "--devices", "10"]);
        let plan = Plan::new(&o).unwrap();
        let ids: Vec<_> = plan.publishers.iter().map(|p| p.client_id.as_str()).collect();
        assert_eq!(ids, ["dev-0", "dev-3", "dev-6"]);
        assert_eq!(plan.publishers[2].topics.len(), 4);
        assert_eq!(plan.publishers[1].topics[0], "devices/dev-3/telemetry");
        let all: usize = plan.publishers.iter().map(|p| p.topics.len()).sum();
        assert_eq!(all, 10);

        let o = Options::parse_from(["x", "--publishers", "2", "--client-id-prefix", "bench-"]);
        let plan = Plan::new(&o).unwrap();
        assert_eq!(plan.publishers[1].client_id, "bench-pub-1");
        assert_eq!(plan.subscriber_ids[0], "bench-sub-0");
        assert_eq!(plan.username("bench-pub-1"), Some("bench-pub-1"));
        let o = Options::parse_from(["x", "--username-from-device", "false"]);
        assert_eq!(Plan::new(&o).unwrap().username("dev-0"), None);
    }

    #[test]
    fn bad_options_are_refused() {
        for args in [
            &["x", "--host", "10.1.1.1"][..],
            &["x", "--publishers", "4", "--devices", "3"],
            &["x", "--payload", "27"],
            &["x", "--duration", "3601"],
            &["x", "--duration", "3550", "--warmup", "60"],
            &["x", "--warmup", "61"],
            &["x", "--subscribe-filter", "a/#/b"],
            &["x", "--topic-pattern", "devices/+/{device}"],
            &["x", "--drain-ms", "60001"],
            &["x", "--subscribers", "2", "--subscribe-filter", "$share/g/devices/+/telemetry"],
        ] {
            let o = Options::parse_from(args);
            assert!(Plan::new(&o).is_err(), "{args:?}");
        }
        assert!(Options::try_parse_from(["x", "--qos", "2"]).is_err());
        assert!(Options::try_parse_from(["x", "--messages", "5", "--duration", "1"]).is_err());
    }

    #[test]
    fn expected_counts_follow_the_filter() {
        let o = Options::parse_from(["x", "--devices", "4", "--subscribe-filter", "devices/dev-1/#"]);
        let plan = Plan::new(&o).unwrap();
        let p = &plan.publishers[0];
        // Topics cycle dev-0..dev-3; only dev-1 (seq 1, 5, 9, ...) matches.
        assert_eq!(p.expected(0), 0);
        assert_eq!(p.expected(1), 0);
        assert_eq!(p.expected(2), 1);
        assert_eq!(p.expected(10), 3);
        assert!(p.is_expected(5, 10) && !p.is_expected(4, 10) && !p.is_expected(13, 10));
    }

    #[test]
    fn a_shared_subscription_expects_what_its_filter_matches() {
        let shared = ["x", "--devices", "4", "--subscribe-filter", "$share/g/devices/dev-1/#"];
        let plan = Plan::new(&Options::parse_from(shared)).unwrap();
        assert_eq!(plan.publishers[0].matched, [false, true, false, false]);
        assert_eq!(plan.publishers[0].expected(10), 3);
    }

    #[test]
    fn tracker_counts_duplicates_and_ignores_foreign_payloads() {
        let mut t = Tracker::new(7, 2);
        let mut p = vec![0u8; HEADER_LEN];
        encode_header(&mut p, &Header { run_id: 7, publisher: 1, seq: 100, sent_ns: 1_000 });
        t.on_payload(&p, 5_000, 0);
        t.on_payload(&p, 6_000, 0);
        encode_header(&mut p, &Header { run_id: 8, publisher: 1, seq: 1, sent_ns: 0 });
        t.on_payload(&p, 6_000, 0);
        t.on_payload(b"short", 6_000, 0);
        assert_eq!((t.delivered, t.unique, t.duplicates, t.foreign), (2, 1, 1, 2));
        assert!(t.has(1, 100) && !t.has(1, 99) && !t.has(0, 100));
        assert_eq!(t.latency.count(), 2);
        assert_eq!(t.latency.max(), 5_000);
    }
}
