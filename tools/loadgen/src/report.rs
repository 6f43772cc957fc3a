//! Latency histogram and the run summary (human-readable and one-line JSON).

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// Values below `2 * SUB` are counted exactly; above, each power of two is split into `SUB`
/// buckets, so a recorded value is off by less than 1/128 (< 0.8 %).
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = (2 * SUB + (63 - SUB_BITS as u64) * SUB) as usize;

/// A log-linear histogram of nanosecond latencies.
///
/// Fixed size (about 60 KiB) whatever the run length: a 300 s run at 100 k deliveries/s would
/// need 30 M samples if latencies were kept raw.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    min: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: vec![0; BUCKETS], count: 0, min: u64::MAX, max: 0, sum: 0 }
    }
}

fn bucket_of(v: u64) -> usize {
    if v < 2 * SUB {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // ≥ SUB_BITS + 1
    let shift = exp - SUB_BITS;
    let mantissa = v >> shift; // in [SUB, 2*SUB)
    (2 * SUB + (shift as u64 - 1) * SUB + (mantissa - SUB)) as usize
}

/// Smallest and largest value that fall in bucket `i`.
fn bucket_range(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < 2 * SUB {
        return (i, i);
    }
    let shift = (i - 2 * SUB) / SUB + 1;
    let mantissa = (i - 2 * SUB) % SUB + SUB;
    let low = mantissa << shift;
    (low, low + ((1u64 << shift) - 1))
}

impl Histogram {
    /// Records one value.
    pub fn record(&mut self, v: u64) {
        self.counts[bucket_of(v)] += 1;
        self.count += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += u128::from(v);
    }

    /// Adds all of `other`'s values to this histogram.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Largest recorded value (exact), or 0 when empty.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Mean of the recorded values (exact), or 0 when empty.
    pub fn mean(&self) -> f64 {
        if self.count == 0 { 0.0 } else { self.sum as f64 / self.count as f64 }
    }

    /// The value at quantile `q` (0..=1): the smallest recorded value such that a fraction `q`
    /// of values are at or below it, within the bucket precision. 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        if rank >= self.count {
            return self.max; // the top of the distribution is known exactly
        }
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (low, high) = bucket_range(i);
                // The bucket midpoint halves the error; clamping keeps it within what was seen.
                return (low + (high - low) / 2).clamp(self.min, self.max);
            }
        }
        self.max
    }
}

/// Latency percentiles in microseconds (publish → delivery at a subscriber).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Latency {
    /// Number of samples (deliveries outside the warm-up).
    pub samples: u64,
    /// Mean latency.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Largest latency seen.
    pub max_us: f64,
}

fn us(ns: f64) -> f64 {
    (ns / 100.0).round() / 10.0
}

impl From<&Histogram> for Latency {
    fn from(h: &Histogram) -> Self {
        Latency {
            samples: h.count(),
            mean_us: us(h.mean()),
            p50_us: us(h.quantile(0.50) as f64),
            p90_us: us(h.quantile(0.90) as f64),
            p99_us: us(h.quantile(0.99) as f64),
            max_us: us(h.max() as f64),
        }
    }
}

/// Everything a run measured. Serialised as the `--json` line, so field names are a stable
/// interface for scripts.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Number of publisher connections.
    pub publishers: u32,
    /// Number of subscriber connections.
    pub subscribers: u32,
    /// QoS used for publishing and subscribing.
    pub qos: u8,
    /// Payload size in bytes.
    pub payload_bytes: usize,
    /// Distinct device ids the topics were spread over.
    pub devices: u32,
    /// Messages published (all, including warm-up).
    pub sent: u64,
    /// QoS 1 messages acknowledged by the broker (0 at QoS 0).
    pub acked: u64,
    /// Deliveries the subscribers should have received in total: for each subscriber, every
    /// sent message whose topic matches its filter.
    pub expected: u64,
    /// Deliveries received, duplicates included.
    pub delivered: u64,
    /// Expected deliveries that never arrived.
    pub missing: u64,
    /// Deliveries of a message the same subscriber had already received.
    pub duplicates: u64,
    /// Messages published outside the warm-up, per second of the measured publish window.
    pub sent_per_sec: f64,
    /// Deliveries (all subscribers) of messages sent outside the warm-up, per second.
    pub delivered_per_sec: f64,
    /// Publish → delivery latency of messages sent outside the warm-up.
    pub latency: Latency,
    /// Warm-up excluded from rates and latency, seconds.
    pub warmup_secs: f64,
    /// From the first publish to the end of the drain, seconds.
    pub elapsed_secs: f64,
    /// From the first publish to the last publish (or last QoS 1 acknowledgement), seconds.
    pub publish_secs: f64,
    /// Time spent waiting for stragglers after publishing ended, seconds.
    pub drain_secs: f64,
    /// The publish phase was cut by the hard time cap.
    pub hit_time_cap: bool,
    /// Some deliveries were still missing when the drain time ran out.
    pub drain_timed_out: bool,
    /// Deliveries of messages sent outside the warm-up.
    pub measured_deliveries: u64,
    /// With `--cpu-of PID`: the time that process ran (all its threads) from the end of the warm-up
    /// to the last publish, seconds.
    pub cpu_of_measured_secs: Option<f64>,
}

impl Summary {
    /// Whether the run delivered everything it should have (what `--verify` checks).
    pub fn complete(&self) -> bool {
        self.missing == 0 && (self.qos == 0 || self.acked == self.sent)
    }

    /// The one-line JSON form printed by `--json`.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("a summary of numbers always serialises")
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.latency;
        writeln!(
            f,
            "mqtt-loadgen: {} publishers -> {} subscribers, QoS {}, {} B payload, {} devices",
            self.publishers, self.subscribers, self.qos, self.payload_bytes, self.devices
        )?;
        writeln!(
            f,
            "  elapsed     {:.3} s (publish {:.3} s, drain {:.3} s, warm-up {:.1} s excluded)",
            self.elapsed_secs, self.publish_secs, self.drain_secs, self.warmup_secs
        )?;
        let acked = if self.qos > 0 { format!(" ({} acked)", self.acked) } else { String::new() };
        writeln!(f, "  sent        {}{} = {:.0} msg/s", self.sent, acked, self.sent_per_sec)?;
        writeln!(
            f,
            "  delivered   {} of {} expected = {:.0} deliveries/s",
            self.delivered, self.expected, self.delivered_per_sec
        )?;
        writeln!(f, "  missing     {}   duplicates {}", self.missing, self.duplicates)?;
        write!(
            f,
            "  latency µs  p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}  mean {:.1}  ({} samples)",
            l.p50_us, l.p90_us, l.p99_us, l.max_us, l.mean_us, l.samples
        )?;
        if self.hit_time_cap {
            write!(f, "\n  note: the publish phase hit the hard time cap and was cut short")?;
        }
        if self.drain_timed_out {
            write!(f, "\n  note: the drain time ran out with deliveries still missing")?;
        }
        Ok(())
    }
}

/// What a connect storm (`--connect-storm`) counted. Serialised as its `--json` line; counts and
/// rates cover the measured window (after the warm-up), except `all_attempts`.
#[derive(Debug, Clone, Serialize)]
pub struct StormSummary {
    /// Always `connect-storm`, so scripts can tell the two kinds of line apart.
    pub mode: String,
    /// Concurrent clients.
    pub clients: u32,
    /// Distinct identities (client ids) the clients cycled through.
    pub identities: usize,
    /// Attempts whose CONNACK or failure came inside the measured window.
    pub attempts: u64,
    /// Of those, accepted (CONNACK 0, then DISCONNECT and the broker's close).
    pub accepted: u64,
    /// Of those, refused by a non-zero CONNACK.
    pub refused: u64,
    /// Refusals by CONNACK return code (e.g. `"5"`: not authorized).
    pub refused_by_code: BTreeMap<String, u64>,
    /// Of those, failed: connection error, timeout, or no clean close.
    pub errors: u64,
    /// Accepted connects per second of the measured window.
    pub connects_per_sec: f64,
    /// All attempts per second of the measured window.
    pub attempts_per_sec: f64,
    /// From opening the TCP connection to CONNACK, accepted attempts.
    pub latency: Latency,
    /// The same for refused attempts.
    pub refused_latency: Latency,
    /// Attempts in all, warm-up and the end of the run included.
    pub all_attempts: u64,
    /// Warm-up left out of the counts, seconds.
    pub warmup_secs: f64,
    /// The measured window, seconds.
    pub measured_secs: f64,
    /// The whole run, seconds.
    pub elapsed_secs: f64,
    /// The first failure any client saw, if one did.
    pub first_error: Option<String>,
}

impl StormSummary {
    /// Whether every measured attempt was accepted (what `--verify` checks in a storm).
    pub fn complete(&self) -> bool {
        self.refused == 0 && self.errors == 0 && self.accepted > 0
    }

    /// The one-line JSON form printed by `--json`.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("a summary of numbers and strings always serialises")
    }
}

impl fmt::Display for StormSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "mqtt-loadgen: connect storm, {} clients over {} identities, {:.1} s measured (+{:.1} s warm-up)",
            self.clients, self.identities, self.measured_secs, self.warmup_secs
        )?;
        writeln!(f, "  accepted    {} = {:.0} connects/s", self.accepted, self.connects_per_sec)?;
        let codes: Vec<String> = self.refused_by_code.iter().map(|(c, n)| format!("{n} x CONNACK {c}")).collect();
        writeln!(
            f,
            "  refused     {}{}",
            self.refused,
            if codes.is_empty() { String::new() } else { format!(" ({})", codes.join(", ")) }
        )?;
        writeln!(f, "  errors      {}", self.errors)?;
        let l = &self.latency;
        write!(
            f,
            "  CONNACK µs  p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}  mean {:.1}  ({} samples)",
            l.p50_us, l.p90_us, l.p99_us, l.max_us, l.mean_us, l.samples
        )?;
        if let Some(e) = &self.first_error {
            write!(f, "\n  first error: {e}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_and_are_contiguous() {
        let mut prev_high = None;
        for i in 0..BUCKETS {
            let (low, high) = bucket_range(i);
            assert!(low <= high);
            if let Some(p) = prev_high {
                assert_eq!(low, p + 1, "bucket {i} leaves a gap");
            }
            assert_eq!(bucket_of(low), i);
            assert_eq!(bucket_of(high), i);
            prev_high = Some(high);
        }
        assert_eq!(prev_high, Some(u64::MAX));
    }

    #[test]
    fn quantiles_are_within_one_percent() {
        let mut h = Histogram::default();
        for v in 1..=100_000u64 {
            h.record(v * 1000);
        }
        for (q, exact) in [(0.5, 50_000_000f64), (0.9, 90_000_000.0), (0.99, 99_000_000.0)] {
            let got = h.quantile(q) as f64;
            assert!((got - exact).abs() / exact < 0.01, "q{q}: {got} vs {exact}");
        }
        assert_eq!(h.max(), 100_000_000);
        assert_eq!(h.quantile(1.0), 100_000_000);
        assert!(h.quantile(0.0).abs_diff(1000) <= 10);
    }

    #[test]
    fn small_values_are_exact_and_merge_adds() {
        let mut a = Histogram::default();
        let mut b = Histogram::default();
        for v in [5, 5, 7] {
            a.record(v);
        }
        b.record(200);
        a.merge(&b);
        assert_eq!(a.count(), 4);
        assert_eq!(a.quantile(0.5), 5);
        assert_eq!(a.quantile(0.75), 7);
        assert_eq!(a.max(), 200);
        assert_eq!(Histogram::default().quantile(0.5), 0);
    }
}
