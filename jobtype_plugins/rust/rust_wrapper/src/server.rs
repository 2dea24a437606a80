use crate::docs::{self, Example};
use crate::logs::{AccessLog, Logger};
use crate::metrics::Metrics;
use crate::options::Options;
use crate::perform::{panic_message, CallError, Performer};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The largest request body perform is given (as in the python3 and golang wrappers).
pub const MAX_BODY_BYTES: u64 = 256 << 20;

const PROBES: [&str; 4] = ["/live", "/ready", "/health", "/metrics"];

/// An HTTP answer, before it is written to the connection.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    fn json(status: u16, payload: &Value) -> Answer {
        Answer::with_type(status, "application/json", payload.to_string().into_bytes())
    }

    fn error(status: u16, message: &str) -> Answer {
        Answer::json(status, &json!({ "error": message }))
    }

    fn with_type(status: u16, content_type: &str, body: Vec<u8>) -> Answer {
        Answer { status, headers: vec![("Content-Type".to_string(), content_type.to_string())], body }
    }

    #[cfg(test)]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }
}

/// One job: its perform and the endpoints every Racetrack job has, at `/` and under
/// /pub/job/<name>/<version>/ (the gateway forwards the whole path).
pub struct Job {
    performer: Performer,
    example: fn() -> Option<HashMap<String, Value>>,
    pub options: Options,
    pub metrics: Metrics,
    pub logger: Arc<Logger>,
    pub access: Arc<AccessLog>,
    pub stopping: AtomicBool,
    pub in_flight: AtomicUsize,
}

impl Job {
    pub fn new(performer: Performer, example: fn() -> Option<HashMap<String, Value>>, options: Options) -> Job {
        Job::with_logger(performer, example, options.clone(), Arc::new(Logger::new(options.structured)))
    }

    pub fn with_logger(
        performer: Performer,
        example: fn() -> Option<HashMap<String, Value>>,
        options: Options,
        logger: Arc<Logger>,
    ) -> Job {
        Job {
            performer,
            example,
            options,
            metrics: Metrics::default(),
            access: AccessLog::new(Arc::clone(&logger)),
            logger,
            stopping: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
        }
    }

    /// Answers one request of the HTTP server.
    pub fn serve(&self, mut request: tiny_http::Request) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let headers: Vec<(String, String)> = request
            .headers()
            .iter()
            .map(|header| (header.field.as_str().as_str().to_string(), header.value.as_str().to_string()))
            .collect();
        let method = request.method().as_str().to_string();
        let url = request.url().to_string();
        let answer = self.handle(&method, &url, &headers, request.as_reader());
        let mut response = tiny_http::Response::from_data(answer.body).with_status_code(answer.status);
        for (name, value) in answer.headers {
            if let Ok(header) = tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()) {
                response.add_header(header);
            }
        }
        let _ = request.respond(response); // the caller may have gone
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    /// The answer to `method url` with `headers` and a body to read: the whole job, without the network.
    pub fn handle(&self, method: &str, url: &str, headers: &[(String, String)], body: &mut dyn Read) -> Answer {
        let started = Instant::now();
        let header = |name: &str| {
            headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.clone())
        };
        let tracing_id = header(&self.options.tracing_header).filter(|id| !id.is_empty()).unwrap_or_else(new_uuid);
        let raw_path = url.split('?').next().unwrap_or("/");
        let (mut base, path) = split_path(raw_path);
        let mut answer = if self.addressed_to_another_job(&base) {
            Answer::error(
                404,
                &format!("this is job {} {}, not the one at {}", self.options.job_name, self.options.job_version, base),
            )
        } else {
            // Behind the gateway, links and redirects use the path the caller used (e.g. `latest`).
            if let Some(forwarded) = header("X-Forwarded-Prefix").filter(|prefix| !prefix.is_empty()) {
                base = forwarded;
            }
            let base = base.trim_end_matches('/').to_string();
            let is_probe = PROBES.contains(&path.as_str());
            let endpoint = if is_probe || path.starts_with("/api/") { path.as_str() } else { "other" };
            let is_call = path.starts_with("/api/v1/") && path != "/api/v1/parameters";
            if !is_probe {
                self.metrics.started(endpoint);
            }
            let answer = self.route(method, &base, &path, body, &tracing_id);
            if !is_probe {
                self.metrics.done(endpoint, started.elapsed(), answer.status, is_call);
            }
            answer
        };
        if !PROBES.contains(&path.as_str()) {
            self.access.record(method, &path, answer.status, started.elapsed(), &tracing_id);
        }
        answer.headers.push((self.options.tracing_header.clone(), tracing_id));
        answer
    }

    fn route(&self, method: &str, base: &str, path: &str, body: &mut dyn Read, tracing_id: &str) -> Answer {
        match path {
            "/live" => Answer::json(
                200,
                &json!({ "live": true, "deployment_timestamp": self.options.deployment_timestamp }),
            ),
            "/ready" => Answer::json(200, &json!({ "ready": true })),
            "/health" => Answer::json(200, &self.health()),
            "/metrics" => Answer::with_type(200, "text/plain; version=0.0.4", self.metrics.render().into_bytes()),
            "/" => {
                let mut answer = Answer::with_type(307, "text/plain; charset=utf-8", Vec::new());
                answer.headers.push(("Location".to_string(), format!("{}{}", base, self.options.home_page)));
                answer
            }
            "/openapi.json" => Answer::json(200, &docs::openapi_document(&self.options, &self.example_input(), base)),
            "/docs" => Answer::with_type(
                200,
                "text/html; charset=utf-8",
                docs::docs_page(&self.options, base, &self.example_input()).into_bytes(),
            ),
            "/api/v1/perform" => {
                if method != "POST" {
                    return Answer::error(405, &format!("method {} not allowed here; use POST", method));
                }
                self.perform(body, tracing_id)
            }
            "/api/v1/parameters" => {
                if method != "GET" && method != "HEAD" {
                    return Answer::error(405, &format!("method {} not allowed here; use GET", method));
                }
                Answer::json(200, &docs::parameters(&self.example_input()))
            }
            _ => Answer::error(404, &format!("no endpoint {}", path)),
        }
    }

    fn perform(&self, body: &mut dyn Read, tracing_id: &str) -> Answer {
        let mut data = Vec::new();
        if let Err(error) = body.take(MAX_BODY_BYTES + 1).read_to_end(&mut data) {
            return Answer::error(400, &format!("cannot read the request body: {}", error));
        }
        if data.len() as u64 > MAX_BODY_BYTES {
            return Answer::error(413, &format!("request body larger than {} bytes", MAX_BODY_BYTES));
        }
        let outcome = Performer::arguments(&data).and_then(|input| self.performer.run(input, self.options.call_timeout));
        match outcome {
            Ok(result) => Answer::with_type(200, "application/json", result),
            Err(CallError { status, message }) => {
                if status >= 500 {
                    self.logger.error(&format!("perform failed: {}", message), tracing_id);
                }
                Answer::error(status, &message)
            }
        }
    }

    /// The job's docs_input_example(), or None; a panic in it is logged, not served.
    fn example_input(&self) -> Example {
        match catch_unwind(AssertUnwindSafe(self.example)) {
            Ok(example) => example.map(|map| map.into_iter().collect::<Map<String, Value>>()),
            Err(payload) => {
                self.logger.error(&format!("docs_input_example panicked: {}", panic_message(payload.as_ref())), "");
                None
            }
        }
    }

    fn health(&self) -> Value {
        let options = &self.options;
        json!({
            "service": "job",
            "job_name": options.job_name,
            "job_version": options.job_version,
            "git_version": options.git_version,
            "deployed_by_racetrack_version": options.racetrack_version,
            "job_type_version": options.job_type_version,
            "deployment_timestamp": options.deployment_timestamp,
            "live": true,
            "ready": true,
            "status": "pass",
            "error": null,
        })
    }

    /// A call for /pub/job/<other>/<version> means a stale address reached this container (its
    /// predecessor's IP was reused); answering would hand the caller another job's result.
    fn addressed_to_another_job(&self, base: &str) -> bool {
        if base.is_empty() || self.options.job_name.is_empty() {
            return false;
        }
        let parts: Vec<&str> = base.split('/').collect(); // ["", "pub", "job", name, version]
        if parts.len() != 5 {
            return false;
        }
        let (name, version) = (parts[3], parts[4]);
        if name != self.options.job_name {
            return true;
        }
        let alias = version == "latest" || version.to_lowercase().contains(|c| c == 'x' || c == '*');
        !alias && version != self.options.job_version
    }
}

/// The /pub/job/<name>/<version> prefix (if any) and the job's own path.
pub fn split_path(raw: &str) -> (String, String) {
    let mut base = String::new();
    let mut path = raw.to_string();
    for kind in ["/pub/job/", "/pub/fatman/"] {
        if let Some(rest) = raw.strip_prefix(kind) {
            let mut parts = rest.splitn(3, '/');
            let (name, version) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            if !name.is_empty() && !version.is_empty() {
                base = format!("{}{}/{}", kind, name, version);
                path = raw[base.len()..].to_string();
            }
            break;
        }
    }
    if path != "/" {
        path = path.trim_end_matches('/').to_string();
    }
    if path.is_empty() {
        path = "/".to_string();
    }
    (base, path)
}

fn new_uuid() -> String {
    let mut bytes = [0u8; 16];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut file| file.read_exact(&mut bytes));
    if random.is_err() {
        // No /dev/urandom: the clock and a counter still make ids unique within this process.
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        bytes[..8].copy_from_slice(&(now.as_nanos() as u64).to_le_bytes());
        bytes[8..].copy_from_slice(&(COUNTER.fetch_add(1, Ordering::Relaxed) as u64).to_le_bytes());
    }
    bytes[6] = bytes[6] & 0x0f | 0x40;
    bytes[8] = bytes[8] & 0x3f | 0x80;
    let hex: String = bytes.iter().map(|byte| format!("{:02x}", byte)).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}
