use crate::options::Options;
use serde_json::{json, Map, Value};

pub type Example = Option<Map<String, Value>>;

/// A JSON value's type the way JSON Schema names it.
fn json_type(value: &Value) -> Option<&'static str> {
    match value {
        Value::Bool(_) => Some("boolean"),
        Value::Number(_) => Some("number"),
        Value::String(_) => Some("string"),
        Value::Array(_) => Some("array"),
        Value::Object(_) => Some("object"),
        Value::Null => None,
    }
}

/// Perform's input for /api/v1/parameters: a rust perform takes a map, so its keys are known
/// only from the job's `docs_input_example` (none without it).
pub fn parameters(example: &Example) -> Value {
    let mut result = Vec::new();
    for (name, value) in example.iter().flatten() {
        let mut item = json!({ "name": name });
        if let Some(kind) = json_type(value) {
            item["type"] = json!(kind);
        }
        result.push(item);
    }
    Value::Array(result)
}

pub fn openapi_document(options: &Options, example: &Example, base: &str) -> Value {
    let mut properties = Map::new();
    for (name, value) in example.iter().flatten() {
        let property = match json_type(value) {
            Some(kind) => json!({ "type": kind }),
            None => json!({}),
        };
        properties.insert(name.clone(), property);
    }
    let mut content = json!({ "schema": { "type": "object", "properties": properties } });
    if let Some(example) = example {
        content["example"] = Value::Object(example.clone());
    }
    let probe = |summary: &str| {
        json!({ "get": { "summary": summary, "security": [], "responses": { "200": { "description": "OK" } } } })
    };
    let name = if options.job_name.is_empty() { "job" } else { options.job_name.as_str() };
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": format!("{} {}", name, options.job_version),
            "version": options.job_version,
            "description": format!("Job {} (rust)", name),
        },
        "servers": [{ "url": if base.is_empty() { "/" } else { base } }],
        "components": { "securitySchemes": {
            "RacetrackAuth": { "type": "apiKey", "in": "header", "name": "X-Racetrack-Auth" },
        } },
        "security": [{ "RacetrackAuth": [] }],
        "paths": {
            "/api/v1/perform": { "post": {
                "summary": "Call the job",
                "requestBody": { "required": false, "content": { "application/json": content } },
                "responses": {
                    "200": { "description": "the result, as JSON" },
                    "400": { "description": "a request body that is not a JSON object" },
                    "500": { "description": "perform returned an error (or panicked)" },
                    "504": { "description": "perform did not answer within the job's call_timeout" },
                },
            } },
            "/api/v1/parameters": { "get": {
                "summary": "perform's parameters, from docs_input_example",
                "responses": { "200": { "description": "list" } },
            } },
            "/health": probe("health"),
            "/live": probe("live"),
            "/ready": probe("ready"),
            "/metrics": probe("metrics"),
        },
    })
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

/// A JavaScript string literal that cannot end the script element.
fn js_string(text: &str) -> String {
    Value::from(text).to_string().replace('<', "\\u003c").replace('>', "\\u003e").replace('&', "\\u0026")
}

/// The job's API page: self-contained (no assets from a CDN), with a form that calls perform from
/// the browser (the X-Racetrack-Auth cookie of a dashboard login, or a token).
pub fn docs_page(options: &Options, base: &str, example: &Example) -> String {
    let title = escape_html(&format!("{} {}", options.job_name, options.job_version));
    let example_json = match example {
        Some(example) => serde_json::to_string_pretty(example).unwrap_or_else(|_| "{}".to_string()),
        None => "{}".to_string(),
    };
    let base_html = escape_html(base);
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>{title} - API</title>
<style>body{{font-family:sans-serif;max-width:50em;margin:2em auto}}textarea,input{{width:100%;font-family:monospace}}pre{{background:#f4f4f4;padding:1em;white-space:pre-wrap}}</style></head>
<body><h1>{title}</h1>
<p>A rust job. <code>POST {base_html}/api/v1/perform</code> with a JSON body; the OpenAPI document is
<a href="{base_html}/openapi.json">openapi.json</a>.</p>
<h2>Try it</h2>
<label>Token (X-Racetrack-Auth, optional with a login cookie)<input id="token" type="password"></label>
<label>Request body<textarea id="body" rows="8">{example}</textarea></label>
<p><button id="call">POST /api/v1/perform</button></p>
<pre id="answer"></pre>
<script>
document.getElementById("call").onclick = async function () {{
  const headers = {{"Content-Type": "application/json"}};
  const token = document.getElementById("token").value;
  if (token) headers["X-Racetrack-Auth"] = token;
  const response = await fetch({perform_url}, {{method: "POST", headers: headers, body: document.getElementById("body").value}});
  document.getElementById("answer").textContent = response.status + "\n" + await response.text();
}};
</script>
</body></html>
"#,
        title = title,
        base_html = base_html,
        example = escape_html(&example_json),
        perform_url = js_string(&format!("{}/api/v1/perform", base)),
    )
}
