//! The rust job wrapper: serves a job's `perform` over HTTP with Racetrack's job conventions
//! (the same endpoints, answers and log lines as the golang and python3 wrappers).
//!
//! A library: each job is a small binary crate (written by tools/link-job) whose `main` passes
//! the job's `perform` to `serve`. Compiled once in the image's shared layer, it is not compiled
//! again when only the job's code changes. `perform` may return a `serde_json::Value` or a
//! `Result<Value, E>` with `E: Display`, told apart at compile time by the `IntoOutcome` trait.

mod docs;
mod logs;
mod metrics;
mod options;
mod perform;
mod server;
#[cfg(test)]
mod tests;
// The stand-in job the tests (and the image's shared layer) use.
#[cfg(test)]
#[allow(dead_code)]
#[path = "../../warmup-job/mod.rs"]
mod warmup_job;

pub use perform::{IntoOutcome, Performer};
pub use serde_json;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const LISTEN_ADDRESS: &str = "0.0.0.0:7000";

/// The job's `docs_input_example`, or a function answering None when it has none.
pub type ExampleFn = fn() -> Option<HashMap<String, serde_json::Value>>;

/// Serves the job on port 7000 until SIGTERM; never returns.
pub fn serve(performer: Performer, example: ExampleFn) -> ! {
    // SIGTERM and SIGINT are waited for by one thread (below); blocked here, before any other
    // thread starts, so that every thread inherits the mask and none is interrupted by them.
    let signals = block_stop_signals();
    let options = options::Options::from_env(|name| std::env::var(name).ok());
    let job = Arc::new(server::Job::new(performer, example, options.clone()));
    let http = match tiny_http::Server::http(LISTEN_ADDRESS) {
        Ok(http) => Arc::new(http),
        Err(error) => {
            eprintln!("racetrackd: cannot listen on {}: {}", LISTEN_ADDRESS, error);
            std::process::exit(1);
        }
    };
    {
        let (http, job) = (Arc::clone(&http), Arc::clone(&job));
        std::thread::spawn(move || {
            wait_for(&signals);
            // Calls in flight get JOB_GRACEFUL_TIMEOUT to finish; new ones are refused.
            job.stopping.store(true, Ordering::SeqCst);
            http.unblock();
            let deadline = Instant::now() + options.graceful_timeout;
            while job.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            job.access.flush();
            std::process::exit(0);
        });
    }
    job.logger.info(&format!(
        "job {} {} is ready, listening on {}",
        job.options.job_name, job.options.job_version, LISTEN_ADDRESS
    ));
    // One thread per request, as Go's server has a goroutine per connection: a slow perform
    // never holds up probes or other calls.
    for request in http.incoming_requests() {
        let job = Arc::clone(&job);
        std::thread::spawn(move || job.serve(request));
    }
    // unblock() ended the loop: the signal thread exits the process once calls are done.
    loop {
        std::thread::park();
    }
}

fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: plain libc calls on a local signal set; no handler is installed.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for(signals: &libc::sigset_t) {
    let mut received: libc::c_int = 0;
    // SAFETY: sigwait reads the set and writes the signal number into a local.
    unsafe {
        while libc::sigwait(signals, &mut received) != 0 {}
    }
}
