use serde_json::Value;
use std::collections::HashMap;
use std::fmt::Display;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

/// What a job's `perform` may return: a JSON value, or a `Result` whose error (anything that
/// displays) becomes a 500 answer. Chosen at compile time, so both shapes need no adapter.
pub trait IntoOutcome {
    fn into_outcome(self) -> Result<Value, String>;
}

impl IntoOutcome for Value {
    fn into_outcome(self) -> Result<Value, String> {
        Ok(self)
    }
}

impl<E: Display> IntoOutcome for Result<Value, E> {
    fn into_outcome(self) -> Result<Value, String> {
        self.map_err(|error| error.to_string())
    }
}

/// An answer other than 200, with the message the caller sees.
#[derive(Debug, PartialEq)]
pub struct CallError {
    pub status: u16,
    pub message: String,
}

impl CallError {
    pub fn new(status: u16, message: impl Into<String>) -> CallError {
        CallError { status, message: message.into() }
    }
}

type PerformFn = dyn Fn(HashMap<String, Value>) -> Result<Value, String> + Send + Sync;

/// The job's `perform`, whichever of the two return shapes it has.
#[derive(Clone)]
pub struct Performer {
    call: Arc<PerformFn>,
}

impl Performer {
    // A build error pointing here means the job's perform has another shape than these.
    pub fn new<R: IntoOutcome, F>(perform: F) -> Performer // R: Value, or Result<Value, E> with E: Display
    where
        F: Fn(HashMap<String, Value>) -> R + Send + Sync + 'static, // perform: -> Value or Result<Value, E: Display>
    {
        Performer { call: Arc::new(move |input| perform(input).into_outcome()) }
    }

    /// The input map from a request body: a JSON object (an empty body is an empty object).
    pub fn arguments(body: &[u8]) -> Result<HashMap<String, Value>, CallError> {
        if body.iter().all(|byte| byte.is_ascii_whitespace()) {
            return Ok(HashMap::new());
        }
        match serde_json::from_slice::<Value>(body) {
            Err(error) => Err(CallError::new(400, format!("request body is not valid JSON: {}", error))),
            Ok(Value::Object(map)) => Ok(map.into_iter().collect()),
            Ok(_) => Err(CallError::new(400, "request body must be a JSON object")),
        }
    }

    /// Calls perform in its own thread: an error or a panic becomes a 500 (the job serves on), a
    /// call past `timeout` a 504. A thread cannot be stopped: past the timeout the job's code runs
    /// on to its end and its result is dropped.
    pub fn run(&self, input: HashMap<String, Value>, timeout: Option<Duration>) -> Result<Vec<u8>, CallError> {
        let (sender, receiver) = mpsc::channel();
        let call = Arc::clone(&self.call);
        let spawned = std::thread::Builder::new().name("perform".to_string()).spawn(move || {
            let outcome = match catch_unwind(AssertUnwindSafe(|| call(input))) {
                Ok(Ok(value)) => serde_json::to_vec(&value)
                    .map_err(|error| CallError::new(500, format!("result is not JSON-serializable: {}", error))),
                Ok(Err(message)) => Err(CallError::new(500, message)),
                Err(payload) => Err(CallError::new(500, format!("panic: {}", panic_message(payload.as_ref())))),
            };
            let _ = sender.send(outcome); // the caller is gone after a timeout
        });
        if let Err(error) = spawned {
            return Err(CallError::new(503, format!("cannot start a thread for the call: {}", error)));
        }
        match timeout {
            None => receiver
                .recv()
                .unwrap_or_else(|_| Err(CallError::new(500, "perform ended without an answer"))),
            Some(limit) => match receiver.recv_timeout(limit) {
                Ok(outcome) => outcome,
                Err(mpsc::RecvTimeoutError::Timeout) => Err(CallError::new(
                    504,
                    format!("the job did not answer within its call_timeout of {} s", limit.as_secs_f64()),
                )),
                Err(mpsc::RecvTimeoutError::Disconnected) => Err(CallError::new(500, "perform ended without an answer")),
            },
        }
    }
}

/// The text of a panic (`panic!("...")` carries a &str or a String).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        text.to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "(a panic without a message)".to_string()
    }
}
