// A stand-in job: the image build compiles and tests the wrapper against it once, so the
// compiled dependencies are cached in a layer shared by every rust job.
use serde_json::{json, Value};
use std::collections::HashMap;

pub fn perform(input: HashMap<String, Value>) -> Result<Value, String> {
    if input.get("fail") == Some(&Value::Bool(true)) {
        return Err("cannot add: told to fail".to_string());
    }
    if input.get("panic") == Some(&Value::Bool(true)) {
        panic!("told to panic");
    }
    if let Some(seconds) = input.get("sleep").and_then(Value::as_f64) {
        std::thread::sleep(std::time::Duration::from_secs_f64(seconds));
    }
    let a = input.get("a").and_then(Value::as_f64).ok_or("a: not a number")?;
    let b = input.get("b").and_then(Value::as_f64).ok_or("b: not a number")?;
    Ok(json!(a + b))
}

pub fn docs_input_example() -> HashMap<String, Value> {
    let mut example = HashMap::new();
    example.insert("a".to_string(), json!(40));
    example.insert("b".to_string(), json!(2));
    example
}
