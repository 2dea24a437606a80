use std::time::Duration;

/// What the daemon tells the job through its environment.
#[derive(Clone, Debug)]
pub struct Options {
    pub job_name: String,
    pub job_version: String,
    pub git_version: String,
    pub job_type_version: String,
    pub racetrack_version: String,
    pub deployment_timestamp: i64,
    pub call_timeout: Option<Duration>, // None: no limit
    pub graceful_timeout: Duration,
    pub tracing_header: String,
    pub home_page: String,
    pub structured: bool, // LOG_STRUCTURED: JSON log lines
}

impl Options {
    /// Options read with `getenv` (the process environment in the image, a map in tests).
    pub fn from_env(getenv: impl Fn(&str) -> Option<String>) -> Options {
        let text = |name: &str| getenv(name).unwrap_or_default();
        let seconds = |name: &str| {
            text(name)
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|value| value.is_finite() && *value >= 0.0)
        };
        let mut tracing_header = text("REQUEST_TRACING_HEADER");
        if tracing_header.is_empty() {
            tracing_header = "X-Request-Tracing-Id".to_string();
        }
        let mut home_page = text("JOB_HOME_PAGE");
        if home_page.is_empty() {
            home_page = "/docs".to_string();
        }
        if !home_page.starts_with('/') {
            home_page.insert(0, '/');
        }
        Options {
            job_name: text("JOB_NAME"),
            job_version: text("JOB_VERSION"),
            git_version: text("GIT_VERSION"),
            job_type_version: text("JOB_TYPE_VERSION"),
            racetrack_version: text("DEPLOYED_BY_RACETRACK_VERSION"),
            deployment_timestamp: text("JOB_DEPLOYMENT_TIMESTAMP").trim().parse().unwrap_or(0),
            call_timeout: seconds("JOB_CALL_TIMEOUT")
                .filter(|value| *value > 0.0)
                .map(Duration::from_secs_f64),
            graceful_timeout: Duration::from_secs_f64(seconds("JOB_GRACEFUL_TIMEOUT").unwrap_or(30.0)),
            tracing_header,
            home_page,
            structured: matches!(text("LOG_STRUCTURED").as_str(), "1" | "true" | "True" | "TRUE" | "yes"),
        }
    }
}
