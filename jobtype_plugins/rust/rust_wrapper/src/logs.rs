use serde_json::{Map, Value};
use std::io::Write;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The wrapper's own lines on stdout (the job's `rtd logs`), in the python3 wrapper's shapes:
/// `[2024-01-02 15:04:05] LEVEL message` or, with LOG_STRUCTURED, JSON lines.
pub struct Logger {
    pub structured: bool,
    out: Mutex<Box<dyn Write + Send>>,
}

impl Logger {
    pub fn new(structured: bool) -> Logger {
        Logger { structured, out: Mutex::new(Box::new(std::io::stdout())) }
    }

    #[cfg(test)]
    pub fn to(structured: bool, out: Box<dyn Write + Send>) -> Logger {
        Logger { structured, out: Mutex::new(out) }
    }

    pub fn info(&self, message: &str) {
        self.write(&self.format(SystemTime::now(), "INFO", message, Map::new()));
    }

    /// A failure of the job's code, with the tracing id of the call.
    pub fn error(&self, message: &str, tracing_id: &str) {
        let mut fields = Map::new();
        if !tracing_id.is_empty() {
            fields.insert("tracing_id".to_string(), Value::from(tracing_id));
        }
        self.write(&self.format(SystemTime::now(), "ERROR", message, fields));
    }

    pub fn write(&self, lines: &str) {
        let mut out = self.out.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let _ = out.write_all(lines.as_bytes());
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    }

    pub fn format(&self, now: SystemTime, level: &str, message: &str, fields: Map<String, Value>) -> String {
        if self.structured {
            let mut record = Map::new();
            record.insert("time".to_string(), Value::from(timestamp(now, 'T')));
            record.insert("level".to_string(), Value::from(level));
            record.insert("message".to_string(), Value::from(message));
            record.extend(fields);
            return Value::Object(record).to_string();
        }
        let mut text = format!("[{}] {} {}", timestamp(now, ' '), level, message);
        for (key, value) in fields {
            match value {
                Value::String(value) => text.push_str(&format!(", {}={}", key, value)),
                value => text.push_str(&format!(", {}={}", key, value)),
            }
        }
        text
    }
}

/// UTC `2024-01-02 15:04:05` (with `T` between date and time for JSON lines).
pub fn timestamp(now: SystemTime, separator: char) -> String {
    let seconds = now.duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_secs()).unwrap_or(0) as i64;
    let (days, of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + if month <= 2 { 1 } else { 0 };
    format!(
        "{:04}-{:02}-{:02}{}{:02}:{:02}:{:02}",
        year,
        month,
        day,
        separator,
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// One line per request (probes and metrics scrapes left out), buffered and flushed every 0.2 s
/// so that logging never holds a call up.
pub struct AccessLog {
    logger: Arc<Logger>,
    pending: Mutex<Vec<String>>,
    flusher: Once,
}

impl AccessLog {
    pub fn new(logger: Arc<Logger>) -> Arc<AccessLog> {
        Arc::new(AccessLog { logger, pending: Mutex::new(Vec::new()), flusher: Once::new() })
    }

    pub fn record(self: &Arc<Self>, method: &str, path: &str, status: u16, elapsed: Duration, tracing_id: &str) {
        let mut fields = Map::new();
        let duration_ms = (elapsed.as_micros() as f64) / 1000.0;
        fields.insert("duration_ms".to_string(), Value::from(duration_ms));
        fields.insert("tracing_id".to_string(), Value::from(tracing_id));
        if self.logger.structured {
            fields.insert("method".to_string(), Value::from(method));
            fields.insert("path".to_string(), Value::from(path));
            fields.insert("status".to_string(), Value::from(status));
        }
        let line = self.logger.format(SystemTime::now(), "INFO", &format!("{} {} {}", method, path, status), fields);
        self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(line);
        let log = Arc::clone(self);
        self.flusher.call_once(move || {
            std::thread::spawn(move || loop {
                std::thread::sleep(Duration::from_millis(200));
                log.flush();
            });
        });
    }

    pub fn flush(&self) {
        let lines = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        if !lines.is_empty() {
            self.logger.write(&lines.join("\n"));
        }
    }
}
