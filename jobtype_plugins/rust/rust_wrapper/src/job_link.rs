// Links the job's module into the wrapper. This checked-in copy links the stand-in job the wrapper
// is tested with; an image build rewrites it (tools/link-job) to link the job's own file.
#[allow(dead_code)]
#[path = "../../warmup-job/mod.rs"]
mod job;

pub use self::job::perform;

pub fn docs_input_example() -> Option<std::collections::HashMap<String, serde_json::Value>> {
    Some(job::docs_input_example())
}
