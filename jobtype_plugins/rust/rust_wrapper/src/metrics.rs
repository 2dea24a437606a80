use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Racetrack's metric names (as the python3 and golang wrappers'), so dashboards work for every job type.
const BUCKETS: [f64; 17] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1000.0,
];

#[derive(Default)]
struct Counts {
    requests_started: u64,
    requests_done: u64,
    last_call: f64,
    endpoint_started: BTreeMap<String, u64>,
    internal_errors: BTreeMap<String, u64>,
    durations: BTreeMap<String, (Vec<u64>, f64)>, // per bucket (the last one is +Inf), and the sum
}

/// One job process's requests, for /metrics in Prometheus' text format.
#[derive(Default)]
pub struct Metrics {
    counts: Mutex<Counts>,
}

impl Metrics {
    pub fn started(&self, endpoint: &str) {
        let mut counts = self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        counts.requests_started += 1;
        *counts.endpoint_started.entry(endpoint.to_string()).or_insert(0) += 1;
    }

    pub fn done(&self, endpoint: &str, elapsed: Duration, status: u16, is_call: bool) {
        let seconds = elapsed.as_secs_f64();
        let mut counts = self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        counts.requests_done += 1;
        let (buckets, sum) = counts
            .durations
            .entry(endpoint.to_string())
            .or_insert_with(|| (vec![0; BUCKETS.len() + 1], 0.0));
        buckets[BUCKETS.iter().position(|bound| seconds <= *bound).unwrap_or(BUCKETS.len())] += 1;
        *sum += seconds;
        if status >= 500 {
            *counts.internal_errors.entry(endpoint.to_string()).or_insert(0) += 1;
        }
        if is_call {
            counts.last_call = SystemTime::now().duration_since(UNIX_EPOCH).map(|now| now.as_secs_f64()).unwrap_or(0.0);
        }
    }

    pub fn render(&self) -> String {
        let counts = self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str| {
            let _ = write!(out, "# HELP {} {}\n# TYPE {} counter\n", name, help, name);
        };
        counter(&mut out, "requests_started", "Requests started");
        let _ = writeln!(out, "requests_started {}", counts.requests_started);
        counter(&mut out, "requests_done", "Requests finished");
        let _ = writeln!(out, "requests_done {}", counts.requests_done);
        counter(&mut out, "endpoint_requests_started", "Requests started per endpoint");
        for (endpoint, count) in &counts.endpoint_started {
            let _ = writeln!(out, "endpoint_requests_started{{endpoint=\"{}\"}} {}", escape(endpoint), count);
        }
        counter(&mut out, "request_internal_errors", "Requests answered with a 5xx status");
        for (endpoint, count) in &counts.internal_errors {
            let _ = writeln!(out, "request_internal_errors{{endpoint=\"{}\"}} {}", escape(endpoint), count);
        }
        out.push_str("# HELP request_duration Request duration in seconds\n# TYPE request_duration histogram\n");
        for (endpoint, (buckets, sum)) in &counts.durations {
            let label = escape(endpoint);
            let mut cumulative = 0;
            for (index, count) in buckets.iter().enumerate() {
                cumulative += count;
                let le = BUCKETS.get(index).map(|bound| bound.to_string()).unwrap_or_else(|| "+Inf".to_string());
                let _ = writeln!(out, "request_duration_bucket{{endpoint=\"{}\",le=\"{}\"}} {}", label, le, cumulative);
            }
            let _ = writeln!(out, "request_duration_sum{{endpoint=\"{}\"}} {}", label, sum);
            let _ = writeln!(out, "request_duration_count{{endpoint=\"{}\"}} {}", label, cumulative);
        }
        out.push_str(
            "# HELP last_call_timestamp Unix time of the last call to the job's API\n# TYPE last_call_timestamp gauge\n",
        );
        let _ = writeln!(out, "last_call_timestamp {}", counts.last_call);
        out
    }
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\n', "\\n").replace('"', "\\\"")
}
