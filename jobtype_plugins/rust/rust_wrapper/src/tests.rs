//! The wrapper's own tests, run by `cargo test` in every image build (against the stand-in job in
//! warmup-job/) and by tests/unit/test_rust_wrapper.py.

use crate::warmup_job as job_link;
use crate::logs::Logger;
use crate::options::Options;
use crate::perform::{IntoOutcome, Performer};
use crate::server::{split_path, Answer, Job};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

fn options(extra: &[(&str, &str)]) -> Options {
    let mut env: HashMap<String, String> = [
        ("JOB_NAME", "adder"),
        ("JOB_VERSION", "1.2.0"),
        ("JOB_DEPLOYMENT_TIMESTAMP", "1700000000"),
        ("JOB_TYPE_VERSION", "rust:1.0.0"),
    ]
    .iter()
    .map(|(key, value)| (key.to_string(), value.to_string()))
    .collect();
    for (key, value) in extra {
        env.insert(key.to_string(), value.to_string());
    }
    Options::from_env(|name| env.get(name).cloned())
}

fn adder(extra: &[(&str, &str)]) -> (Job, Captured) {
    let captured = Captured::default();
    let options = options(extra);
    let logger = Arc::new(Logger::to(options.structured, Box::new(captured.clone())));
    let example = || Some(job_link::docs_input_example());
    let job = Job::with_logger(Performer::new(job_link::perform), example, options, logger);
    (job, captured)
}

fn call(job: &Job, method: &str, path: &str, body: &str) -> Answer {
    call_with(job, method, path, body, &[])
}

fn call_with(job: &Job, method: &str, path: &str, body: &str, headers: &[(&str, &str)]) -> Answer {
    let headers: Vec<(String, String)> = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    job.handle(method, path, &headers, &mut body.as_bytes())
}

fn decoded(answer: &Answer) -> Value {
    serde_json::from_slice(&answer.body).unwrap_or_else(|_| panic!("not JSON: {:?}", String::from_utf8_lossy(&answer.body)))
}

#[test]
fn perform_takes_a_json_object_at_the_root_and_under_the_pub_path() {
    let (job, _) = adder(&[]);
    for path in ["/api/v1/perform", "/pub/job/adder/1.2.0/api/v1/perform", "/pub/job/adder/latest/api/v1/perform/"] {
        let answer = call(&job, "POST", path, r#"{"a": 40, "b": 2}"#);
        assert_eq!((answer.status, decoded(&answer)), (200, json!(42.0)), "{}", path);
        assert_eq!(answer.header("Content-Type"), Some("application/json"));
    }
}

#[test]
fn both_return_shapes_are_accepted() {
    fn plain(input: HashMap<String, Value>) -> Value {
        json!(input.len())
    }
    fn fallible(input: HashMap<String, Value>) -> Result<Value, std::num::ParseIntError> {
        Ok(json!(input["n"].as_str().unwrap_or("").parse::<i64>()? + 1))
    }
    let one: HashMap<String, Value> = [("n".to_string(), json!("41"))].into_iter().collect();
    assert_eq!(Performer::new(plain).run(one.clone(), None), Ok(b"1".to_vec()));
    assert_eq!(Performer::new(fallible).run(one, None), Ok(b"42".to_vec()));
    let bad: HashMap<String, Value> = [("n".to_string(), json!("x"))].into_iter().collect();
    let error = Performer::new(fallible).run(bad, None).unwrap_err();
    assert_eq!((error.status, error.message.as_str()), (500, "invalid digit found in string"));
    assert_eq!(json!(1).into_outcome(), Ok(json!(1)));
}

#[test]
fn an_empty_body_is_an_empty_input_and_bad_bodies_are_400() {
    let (job, _) = adder(&[]);
    assert_eq!(decoded(&call(&job, "POST", "/api/v1/perform", "")), json!({"error": "a: not a number"}));
    let answer = call(&job, "POST", "/api/v1/perform", "{not json");
    assert_eq!(answer.status, 400);
    assert!(decoded(&answer)["error"].as_str().unwrap().starts_with("request body is not valid JSON: "));
    let answer = call(&job, "POST", "/api/v1/perform", "[40, 2]");
    assert_eq!((answer.status, decoded(&answer)), (400, json!({"error": "request body must be a JSON object"})));
}

#[test]
fn errors_and_panics_are_500_and_the_job_serves_on() {
    let (job, log) = adder(&[]);
    let answer = call_with(&job, "POST", "/api/v1/perform", r#"{"fail": true}"#, &[("X-Request-Tracing-Id", "t-1")]);
    assert_eq!((answer.status, decoded(&answer)), (500, json!({"error": "cannot add: told to fail"})));
    let answer = call(&job, "POST", "/api/v1/perform", r#"{"panic": true}"#);
    assert_eq!((answer.status, decoded(&answer)), (500, json!({"error": "panic: told to panic"})));
    let answer = call(&job, "POST", "/api/v1/perform", r#"{"a": 1, "b": 2}"#);
    assert_eq!((answer.status, decoded(&answer)), (200, json!(3.0)));
    let text = log.text();
    assert!(text.contains("ERROR perform failed: cannot add: told to fail, tracing_id=t-1"), "{}", text);
    assert!(text.contains("ERROR perform failed: panic: told to panic"), "{}", text);
}

#[test]
fn a_call_past_the_call_timeout_is_504_and_probes_still_answer() {
    let (job, _) = adder(&[("JOB_CALL_TIMEOUT", "0.2")]);
    assert_eq!(job.options.call_timeout, Some(Duration::from_millis(200)));
    let answer = call(&job, "POST", "/api/v1/perform", r#"{"sleep": 2, "a": 1, "b": 1}"#);
    assert_eq!(
        (answer.status, decoded(&answer)),
        (504, json!({"error": "the job did not answer within its call_timeout of 0.2 s"}))
    );
    assert_eq!(call(&job, "GET", "/live", "").status, 200);
    assert_eq!(decoded(&call(&job, "POST", "/api/v1/perform", r#"{"a": 1, "b": 1}"#)), json!(2.0));
}

#[test]
fn probes_answer_as_the_other_wrappers_do() {
    let (job, _) = adder(&[]);
    assert_eq!(decoded(&call(&job, "GET", "/live", "")), json!({"live": true, "deployment_timestamp": 1700000000}));
    assert_eq!(decoded(&call(&job, "GET", "/pub/job/adder/1.2.0/ready", "")), json!({"ready": true}));
    let health = decoded(&call(&job, "GET", "/health", ""));
    assert_eq!(health["job_name"], json!("adder"));
    assert_eq!(health["job_type_version"], json!("rust:1.0.0"));
    assert_eq!(health["status"], json!("pass"));
}

#[test]
fn metrics_count_calls_errors_and_durations_but_not_probes() {
    let (job, _) = adder(&[]);
    call(&job, "POST", "/api/v1/perform", r#"{"a": 40, "b": 2}"#);
    call(&job, "POST", "/api/v1/perform", r#"{"fail": true}"#);
    call(&job, "GET", "/live", "");
    let answer = call(&job, "GET", "/metrics", "");
    assert_eq!(answer.header("Content-Type"), Some("text/plain; version=0.0.4"));
    let text = String::from_utf8(answer.body).unwrap();
    for line in [
        "requests_started 2",
        "requests_done 2",
        "endpoint_requests_started{endpoint=\"/api/v1/perform\"} 2",
        "request_internal_errors{endpoint=\"/api/v1/perform\"} 1",
        "request_duration_count{endpoint=\"/api/v1/perform\"} 2",
        "request_duration_bucket{endpoint=\"/api/v1/perform\",le=\"+Inf\"} 2",
    ] {
        assert!(text.lines().any(|l| l == line), "{} not in\n{}", line, text);
    }
    assert!(!text.contains("last_call_timestamp 0\n"), "{}", text);
}

#[test]
fn parameters_openapi_and_docs_come_from_docs_input_example() {
    let (job, _) = adder(&[]);
    assert_eq!(
        decoded(&call(&job, "GET", "/api/v1/parameters", "")),
        json!([{"name": "a", "type": "number"}, {"name": "b", "type": "number"}])
    );
    let openapi = decoded(&call_with(&job, "GET", "/pub/job/adder/1.2.0/openapi.json", "", &[]));
    assert_eq!(openapi["servers"], json!([{"url": "/pub/job/adder/1.2.0"}]));
    let content = &openapi["paths"]["/api/v1/perform"]["post"]["requestBody"]["content"]["application/json"];
    assert_eq!(content["example"], json!({"a": 40, "b": 2}));
    let docs = call_with(&job, "GET", "/pub/job/adder/1.2.0/docs", "", &[("X-Forwarded-Prefix", "/pub/job/adder/latest")]);
    let page = String::from_utf8(docs.body).unwrap();
    assert!(page.contains("fetch(\"/pub/job/adder/latest/api/v1/perform\""), "{}", page);
    assert!(page.contains("&#34;a&#34;: 40"), "{}", page);
}

#[test]
fn the_root_redirects_to_the_home_page_under_the_callers_prefix() {
    let (job, _) = adder(&[]);
    let answer = call(&job, "GET", "/pub/job/adder/1.2.0/", "");
    assert_eq!((answer.status, answer.header("Location")), (307, Some("/pub/job/adder/1.2.0/docs")));
    let (job, _) = adder(&[("JOB_HOME_PAGE", "api/v1/parameters")]);
    assert_eq!(call(&job, "GET", "/", "").header("Location"), Some("/api/v1/parameters"));
}

#[test]
fn calls_for_another_job_or_version_are_404_and_wrong_methods_405() {
    let (job, _) = adder(&[]);
    let answer = call(&job, "POST", "/pub/job/other/1.2.0/api/v1/perform", "{}");
    assert_eq!(answer.status, 404);
    assert_eq!(decoded(&answer), json!({"error": "this is job adder 1.2.0, not the one at /pub/job/other/1.2.0"}));
    assert_eq!(call(&job, "POST", "/pub/job/adder/0.9.0/api/v1/perform", "{}").status, 404);
    assert_eq!(decoded(&call(&job, "POST", "/pub/job/adder/1.x/api/v1/perform", r#"{"a":1,"b":1}"#)), json!(2.0));
    let answer = call(&job, "GET", "/api/v1/perform", "");
    assert_eq!((answer.status, decoded(&answer)), (405, json!({"error": "method GET not allowed here; use POST"})));
    assert_eq!(decoded(&call(&job, "GET", "/nope", "")), json!({"error": "no endpoint /nope"}));
}

#[test]
fn the_tracing_id_is_passed_through_or_made() {
    let (job, _) = adder(&[("REQUEST_TRACING_HEADER", "X-Trace")]);
    let answer = call_with(&job, "GET", "/ready", "", &[("x-trace", "abc")]);
    assert_eq!(answer.header("X-Trace"), Some("abc"));
    let made = call(&job, "GET", "/ready", "").header("X-Trace").unwrap().to_string();
    assert_eq!((made.len(), &made[14..15]), (36, "4"));
}

#[test]
fn access_lines_are_written_for_calls_not_probes_and_can_be_json() {
    let (job, log) = adder(&[("LOG_STRUCTURED", "1")]);
    call_with(&job, "POST", "/api/v1/perform", r#"{"a": 1, "b": 1}"#, &[("X-Request-Tracing-Id", "t-9")]);
    call(&job, "GET", "/live", "");
    job.access.flush();
    let lines: Vec<Value> = log.text().lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(lines.len(), 1, "{:?}", lines);
    assert_eq!(lines[0]["message"], json!("POST /api/v1/perform 200"));
    assert_eq!((lines[0]["status"].clone(), lines[0]["tracing_id"].clone()), (json!(200), json!("t-9")));
}

#[test]
fn paths_split_into_the_pub_prefix_and_the_jobs_own_path() {
    assert_eq!(split_path("/pub/job/a/1.0.0/api/v1/perform/"), ("/pub/job/a/1.0.0".into(), "/api/v1/perform".into()));
    assert_eq!(split_path("/pub/fatman/a/1.0.0"), ("/pub/fatman/a/1.0.0".into(), "/".into()));
    assert_eq!(split_path("/pub/job/a"), ("".into(), "/pub/job/a".into()));
    assert_eq!(split_path("/"), ("".into(), "/".into()));
}

#[test]
fn timestamps_are_utc_calendar_times() {
    let at = std::time::UNIX_EPOCH + Duration::from_secs(1_704_207_845); // 2024-01-02 15:04:05 UTC
    assert_eq!(crate::logs::timestamp(at, ' '), "2024-01-02 15:04:05");
    assert_eq!(crate::logs::timestamp(at, 'T'), "2024-01-02T15:04:05");
}
