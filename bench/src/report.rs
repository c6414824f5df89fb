//! What a run measured and how it is shown: tallies of operations, latencies and errors, the
//! [`Report`] built from them, and its table and JSON forms.
//!
//! Pure: the shell records durations it measured; nothing here reads a clock or does IO.

use crate::args::Workload;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// Distinct error messages kept; the rest are counted under [`OTHER_ERRORS`]. A failing server
/// usually repeats a handful of messages, but one that embeds ids or addresses in them must
/// not make the tally grow with every operation.
pub const MAX_DISTINCT_ERRORS: usize = 32;
pub const OTHER_ERRORS: &str = "(other messages)";

/// Largest latency recorded, in microseconds (1 hour); larger ones are clamped. Latencies are
/// kept in microseconds with 3 significant digits: a loopback round trip is tens of µs, and the
/// histogram stays a few hundred KiB.
const HISTOGRAM_MAX_US: u64 = 3_600_000_000;

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3).expect("constant histogram bounds are valid")
}

fn micros(d: Duration) -> u64 {
    // Sub-microsecond latencies count as 1 µs: the histogram's lowest value.
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Error messages and how often each occurred, bounded by [`MAX_DISTINCT_ERRORS`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorTally {
    total: u64,
    /// BTreeMap so that the report lists messages in a stable order.
    messages: BTreeMap<String, u64>,
}

impl ErrorTally {
    pub fn add(&mut self, message: &str) {
        self.total += 1;
        if let Some(count) = self.messages.get_mut(message) {
            *count += 1;
        } else if self.messages.len() < MAX_DISTINCT_ERRORS {
            self.messages.insert(message.to_owned(), 1);
        } else {
            *self.messages.entry(OTHER_ERRORS.to_owned()).or_default() += 1;
        }
    }

    pub fn total(&self) -> u64 {
        self.total
    }
}

/// Operations of a run: how many were sent, how many succeeded and how long those took, and
/// every error the run met (including setup steps such as lease grants, which are not ops).
#[derive(Clone, Debug)]
pub struct Tally {
    pub sent: u64,
    pub ok: u64,
    pub latency: Histogram<u64>,
    pub errors: ErrorTally,
}

impl Default for Tally {
    fn default() -> Self {
        Tally { sent: 0, ok: 0, latency: new_histogram(), errors: ErrorTally::default() }
    }
}

impl Tally {
    /// An operation succeeded after `latency`. Only successes are timed (as etcd's benchmark
    /// does): a fast failure would flatter the percentiles.
    pub fn ok(&mut self, latency: Duration) {
        self.ok += 1;
        self.latency.saturating_record(micros(latency));
    }

    pub fn error(&mut self, message: &str) {
        self.errors.add(message);
    }
}

/// Watch events delivered to the watchers of a `watch` run.
#[derive(Clone, Debug)]
pub struct EventTally {
    pub delivered: u64,
    /// Put sent → event received, on one clock.
    pub latency: Histogram<u64>,
    /// When the last event arrived, on the run's clock.
    pub last: Duration,
}

impl Default for EventTally {
    fn default() -> Self {
        EventTally { delivered: 0, latency: new_histogram(), last: Duration::ZERO }
    }
}

impl EventTally {
    /// An event arrived at `received`, written at `sent` (both on the run's clock).
    pub fn event(&mut self, sent: Duration, received: Duration) {
        self.delivered += 1;
        self.latency.saturating_record(micros(received.saturating_sub(sent)));
        self.last = self.last.max(received);
    }
}

/// Latency percentiles in microseconds; all zero when nothing was recorded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LatencyStats {
    pub min: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl LatencyStats {
    pub fn of(h: &Histogram<u64>) -> LatencyStats {
        if h.is_empty() {
            return LatencyStats::default();
        }
        LatencyStats {
            min: h.min(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ErrorCount {
    pub message: String,
    pub count: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ErrorsReport {
    pub count: u64,
    /// Most frequent first.
    pub messages: Vec<ErrorCount>,
}

/// The `watch` part of a report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WatchReport {
    /// Watchers that were created (and so were expected to see every put).
    pub watchers: u64,
    /// Successful puts × created watchers.
    pub events_expected: u64,
    pub events_delivered: u64,
    /// From the first put sent to the last event received.
    pub elapsed_secs: f64,
    pub events_per_sec: f64,
    /// Put sent → event received, in microseconds.
    pub latency_us: LatencyStats,
}

/// Everything a run reports; `--json` prints it as is.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub workload: Workload,
    pub endpoints: Vec<String>,
    pub conns: usize,
    pub clients: usize,
    /// Requests each client kept in flight.
    pub in_flight: usize,
    /// Operations asked for.
    pub total: u64,
    /// Operations sent (fewer than `total` only if setup failed, e.g. no lease could be granted).
    pub sent: u64,
    /// Operations that succeeded.
    pub ok: u64,
    pub errors: ErrorsReport,
    /// From the first operation sent to the last one answered.
    pub elapsed_secs: f64,
    /// Successful operations per second.
    pub throughput: f64,
    /// Of successful operations, in microseconds.
    pub latency_us: LatencyStats,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch: Option<WatchReport>,
}

/// Who ran: the parts of the plan a report repeats, so that a saved report says what it measured.
#[derive(Clone, Debug)]
pub struct RunInfo {
    pub workload: Workload,
    pub endpoints: Vec<String>,
    pub conns: usize,
    pub clients: usize,
    pub in_flight: usize,
    pub total: u64,
}

/// What a `watch` run adds to its report.
#[derive(Clone, Debug)]
pub struct WatchOutcome {
    pub watchers: u64,
    /// When the writers started, on the run's clock (the one `events` are timed on).
    pub started: Duration,
    pub expected: u64,
    pub events: EventTally,
}

fn per_sec(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

impl Report {
    pub fn build(info: RunInfo, tally: &Tally, elapsed: Duration, watch: Option<&WatchOutcome>) -> Report {
        assert!(tally.ok <= tally.sent, "more successes ({}) than operations sent ({})", tally.ok, tally.sent);
        let mut messages: Vec<ErrorCount> = tally
            .errors
            .messages
            .iter()
            .map(|(message, &count)| ErrorCount { message: message.clone(), count })
            .collect();
        // Stable sort: equal counts stay in the map's (alphabetical) order.
        messages.sort_by_key(|e| std::cmp::Reverse(e.count));
        Report {
            workload: info.workload,
            endpoints: info.endpoints,
            conns: info.conns,
            clients: info.clients,
            in_flight: info.in_flight,
            total: info.total,
            sent: tally.sent,
            ok: tally.ok,
            errors: ErrorsReport { count: tally.errors.total(), messages },
            elapsed_secs: elapsed.as_secs_f64(),
            throughput: per_sec(tally.ok, elapsed),
            latency_us: LatencyStats::of(&tally.latency),
            watch: watch.map(|w| WatchReport {
                watchers: w.watchers,
                events_expected: w.expected,
                events_delivered: w.events.delivered,
                elapsed_secs: w.events.last.saturating_sub(w.started).as_secs_f64(),
                events_per_sec: per_sec(w.events.delivered, w.events.last.saturating_sub(w.started)),
                latency_us: LatencyStats::of(&w.events.latency),
            }),
        }
    }

    /// One line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report always serialises")
    }

    /// The human-readable form, for a terminal.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let workload = serde_json::to_value(self.workload).expect("workload serialises");
        let row = |out: &mut String, name: &str, value: &dyn std::fmt::Display| {
            writeln!(out, "{name:<14} {value}").expect("writing to a String");
        };
        row(&mut out, "Workload", &workload.as_str().unwrap_or_default());
        row(&mut out, "Endpoints", &self.endpoints.join(","));
        row(&mut out, "Connections", &self.conns);
        row(&mut out, "Clients", &self.clients);
        row(&mut out, "In flight", &format_args!("{} per client", self.in_flight));
        row(&mut out, "Operations", &format_args!("{} sent of {}, {} ok", self.sent, self.total, self.ok));
        row(&mut out, "Elapsed", &format_args!("{:.3} s", self.elapsed_secs));
        row(&mut out, "Throughput", &format_args!("{:.1} ops/s", self.throughput));
        latency_table(&mut out, "Latency", &self.latency_us);
        if let Some(w) = &self.watch {
            row(&mut out, "Watchers", &w.watchers);
            row(
                &mut out,
                "Events",
                &format_args!("{} delivered of {} expected", w.events_delivered, w.events_expected),
            );
            row(&mut out, "Events/s", &format_args!("{:.1} (over {:.3} s)", w.events_per_sec, w.elapsed_secs));
            latency_table(&mut out, "Put→event", &w.latency_us);
        }
        row(&mut out, "Errors", &self.errors.count);
        for e in &self.errors.messages {
            writeln!(out, "  {:>10}  {}", e.count, e.message).expect("writing to a String");
        }
        out
    }
}

fn latency_table(out: &mut String, title: &str, l: &LatencyStats) {
    let ms = |us: u64| us as f64 / 1000.0;
    writeln!(out, "{title} (ms):").expect("writing to a String");
    writeln!(
        out,
        "  {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "min", "p50", "p90", "p99", "p99.9", "max", "mean"
    )
    .expect("writing to a String");
    writeln!(
        out,
        "  {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>10.3}",
        ms(l.min),
        ms(l.p50),
        ms(l.p90),
        ms(l.p99),
        ms(l.p999),
        ms(l.max),
        l.mean / 1000.0
    )
    .expect("writing to a String");
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn info() -> RunInfo {
        RunInfo {
            workload: Workload::Put,
            endpoints: vec!["http://e:1".into()],
            conns: 2,
            clients: 4,
            in_flight: 1,
            total: 100,
        }
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut t = Tally::default();
        for ms in 1..=1000u32 {
            t.sent += 1;
            t.ok(ms * MS);
        }
        let l = LatencyStats::of(&t.latency);
        // 3 significant digits: each value is within 0.1% of the exact one.
        let near = |got: u64, want_ms: u64| (got as f64 - (want_ms * 1000) as f64).abs() <= want_ms as f64;
        assert!(near(l.min, 1), "{l:?}");
        assert!(near(l.p50, 500), "{l:?}");
        assert!(near(l.p90, 900), "{l:?}");
        assert!(near(l.p99, 990), "{l:?}");
        assert!(near(l.p999, 999), "{l:?}");
        assert!(near(l.max, 1000), "{l:?}");
        assert!((l.mean - 500_500.0).abs() < 1000.0, "{l:?}");
        assert!(l.min <= l.p50 && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max);
    }

    #[test]
    fn empty_runs_report_zeros() {
        let r = Report::build(info(), &Tally::default(), Duration::ZERO, None);
        assert_eq!(r.latency_us, LatencyStats::default());
        assert_eq!(r.throughput, 0.0);
        assert_eq!((r.sent, r.ok, r.errors.count), (0, 0, 0));
    }

    #[test]
    fn tiny_and_huge_latencies_are_clamped_not_lost() {
        let mut t = Tally { sent: 2, ..Default::default() };
        t.ok(Duration::from_nanos(10));
        t.ok(Duration::from_secs(100_000));
        assert_eq!(t.latency.len(), 2);
        let l = LatencyStats::of(&t.latency);
        assert_eq!(l.min, 1);
        assert!(l.max >= HISTOGRAM_MAX_US);
    }

    #[test]
    fn errors_are_counted_with_bounded_distinct_messages() {
        let mut t = Tally::default();
        for i in 0..100 {
            t.sent += 1;
            t.error(&format!("message {i}"));
        }
        t.error("message 0");
        assert_eq!(t.errors.total(), 101);
        assert_eq!(t.errors.messages.len(), MAX_DISTINCT_ERRORS + 1);
        let r = Report::build(info(), &t, MS, None);
        assert_eq!(r.errors.count, 101);
        assert_eq!(r.errors.messages.iter().map(|e| e.count).sum::<u64>(), 101);
        // Most frequent first: the overflow bucket, then "message 0" (seen twice).
        assert_eq!(r.errors.messages[0], ErrorCount { message: OTHER_ERRORS.into(), count: 100 - 32 });
        assert_eq!(r.errors.messages[1], ErrorCount { message: "message 0".into(), count: 2 });
        assert_eq!(r.ok, 0);
    }

    #[test]
    fn throughput_counts_successes_only() {
        let mut t = Tally::default();
        for _ in 0..50 {
            t.sent += 1;
            t.ok(MS);
        }
        t.sent += 1;
        t.error("boom");
        let r = Report::build(info(), &t, Duration::from_millis(500), None);
        assert_eq!(r.throughput, 100.0);
        assert_eq!((r.sent, r.ok, r.errors.count), (51, 50, 1));
    }

    #[test]
    #[should_panic(expected = "more successes")]
    fn more_successes_than_sends_is_a_bug() {
        let mut t = Tally::default();
        t.ok(MS);
        Report::build(info(), &t, MS, None);
    }

    #[test]
    fn watch_events_per_second_and_latency() {
        let mut events = EventTally::default();
        for i in 0..100u32 {
            // Sent at i ms, received 5 ms later.
            events.event(i * MS, (i + 5) * MS);
        }
        // A receipt stamped before its send (cannot happen on one clock) clamps to 1 µs.
        events.event(10 * MS, 9 * MS);
        // The writers started at 1 ms (all stamps above are later in a real run; no matter).
        let w = WatchOutcome { watchers: 1, started: MS, expected: 101, events };
        let r = Report::build(info(), &Tally::default(), MS, Some(&w));
        let wr = r.watch.unwrap();
        assert_eq!((wr.events_expected, wr.events_delivered), (101, 101));
        // The last event arrived at 104 ms, 103 ms after the start.
        assert!((wr.events_per_sec - 101.0 / 0.103).abs() < 1e-6, "{wr:?}");
        assert_eq!(wr.latency_us.min, 1);
        assert!((5000..=5005).contains(&wr.latency_us.p50), "{wr:?}");
    }

    #[test]
    fn json_has_the_documented_fields() {
        let mut t = Tally { sent: 1, ..Default::default() };
        t.ok(2 * MS);
        let r = Report::build(info(), &t, MS, None);
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["workload"], "put");
        assert_eq!(v["sent"], 1);
        assert_eq!(v["ok"], 1);
        assert_eq!(v["errors"]["count"], 0);
        assert_eq!(v["throughput"], 1000.0);
        assert!(v["latency_us"]["p99"].as_u64().unwrap() >= 2000);
        assert!(v.get("watch").is_none(), "only watch runs have a watch section");
        assert!(!r.to_json().contains('\n'), "one line");
        let mut w = Report::build(info(), &t, MS, None);
        w.workload = Workload::LeaseKeepalive;
        assert!(w.to_json().contains(r#""workload":"lease-keepalive""#));
    }

    #[test]
    fn table_shows_every_number() {
        let mut t = Tally { sent: 2, ..Default::default() };
        t.ok(1500 * Duration::from_micros(1));
        t.error("Unavailable: no leader");
        let events = EventTally::default();
        let w = WatchOutcome { watchers: 3, started: Duration::ZERO, expected: 3, events };
        let table = Report::build(info(), &t, Duration::from_secs(2), Some(&w)).to_table();
        for needle in [
            "put",
            "http://e:1",
            "2 sent of 100, 1 ok",
            "0.5 ops/s",
            "1.500",
            "p99.9",
            "Watchers       3",
            "0 delivered of 3 expected",
            "Put→event (ms)",
            "Errors         1",
            "1  Unavailable: no leader",
        ] {
            assert!(table.contains(needle), "{needle:?} missing from\n{table}");
        }
    }
}
