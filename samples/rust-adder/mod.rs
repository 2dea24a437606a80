// rust-adder: adds the numbers `a` and `b`. Racetrack's rust convention: this file (mod.rs)
// holds `pub fn perform`, taking the request's JSON object; an `Err` is answered with a 500.
use serde_json::{json, Value};
use std::collections::HashMap;

pub fn perform(input: HashMap<String, Value>) -> Result<Value, String> {
    let a = number(&input, "a")?;
    let b = number(&input, "b")?;
    // Whole numbers stay whole (40 + 2 is 42, not 42.0).
    match (a.as_i64(), b.as_i64()) {
        (Some(a), Some(b)) => a.checked_add(b).map(Value::from).ok_or_else(|| "a + b overflows".to_string()),
        _ => Ok(json!(a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0))),
    }
}

fn number<'a>(input: &'a HashMap<String, Value>, name: &str) -> Result<&'a Value, String> {
    match input.get(name) {
        Some(value) if value.is_number() => Ok(value),
        Some(other) => Err(format!("{} must be a number, not {}", name, other)),
        None => Err(format!("{} is missing", name)),
    }
}

/// The example on the job's API page (/docs) and in /api/v1/parameters.
pub fn docs_input_example() -> HashMap<String, Value> {
    HashMap::from([("a".to_string(), json!(40)), ("b".to_string(), json!(2))])
}
