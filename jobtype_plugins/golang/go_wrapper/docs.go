package main

import (
	"encoding/json"
	"html"
	"sort"
)

// jsonType names a decoded JSON value's type the way JSON Schema does.
func jsonType(value interface{}) string {
	switch value.(type) {
	case bool:
		return "boolean"
	case float64, float32, int, int64, int32:
		return "number"
	case string:
		return "string"
	case []interface{}:
		return "array"
	case map[string]interface{}:
		return "object"
	}
	return ""
}

// parameters describes Perform's input for /api/v1/parameters: a Go Perform takes a map, so
// its keys are known only from DocsInputExample (none without it).
func parameters(example map[string]interface{}) []map[string]interface{} {
	result := []map[string]interface{}{}
	for _, name := range sortedNames(example) {
		item := map[string]interface{}{"name": name}
		if kind := jsonType(normalised(example[name])); kind != "" {
			item["type"] = kind
		}
		result = append(result, item)
	}
	return result
}

// normalised is a value as the job would receive it from JSON (ints become float64...).
func normalised(value interface{}) interface{} {
	data, err := json.Marshal(value)
	if err != nil {
		return value
	}
	var decoded interface{}
	if json.Unmarshal(data, &decoded) != nil {
		return value
	}
	return decoded
}

func sortedNames(values map[string]interface{}) []string {
	names := make([]string, 0, len(values))
	for name := range values {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

func openAPIDocument(options Options, performer Performer, example map[string]interface{}, base string) map[string]interface{} {
	properties := map[string]interface{}{}
	for _, name := range sortedNames(example) {
		property := map[string]interface{}{}
		if kind := jsonType(normalised(example[name])); kind != "" {
			property["type"] = kind
		}
		properties[name] = property
	}
	var schema map[string]interface{}
	if performer.Signature == "args-kwargs" {
		schema = map[string]interface{}{"oneOf": []interface{}{
			map[string]interface{}{"type": "object", "properties": properties, "description": "keyword arguments (kwargs)"},
			map[string]interface{}{"type": "array", "description": "positional arguments (args)"},
		}}
	} else {
		schema = map[string]interface{}{"type": "object", "properties": properties}
	}
	content := map[string]interface{}{"schema": schema}
	if example != nil {
		content["example"] = example
	}
	probe := func(summary string) map[string]interface{} {
		return map[string]interface{}{"get": map[string]interface{}{
			"summary": summary, "security": []interface{}{},
			"responses": map[string]interface{}{"200": map[string]interface{}{"description": "OK"}},
		}}
	}
	server := base
	if server == "" {
		server = "/"
	}
	name := options.JobName
	if name == "" {
		name = "job"
	}
	return map[string]interface{}{
		"openapi": "3.0.3",
		"info": map[string]interface{}{
			"title":       name + " " + options.JobVersion,
			"version":     options.JobVersion,
			"description": "Job " + name + " (golang)",
		},
		"servers": []interface{}{map[string]interface{}{"url": server}},
		"components": map[string]interface{}{"securitySchemes": map[string]interface{}{
			"RacetrackAuth": map[string]interface{}{"type": "apiKey", "in": "header", "name": "X-Racetrack-Auth"},
		}},
		"security": []interface{}{map[string]interface{}{"RacetrackAuth": []interface{}{}}},
		"paths": map[string]interface{}{
			"/api/v1/perform": map[string]interface{}{"post": map[string]interface{}{
				"summary":     "Call the job",
				"requestBody": map[string]interface{}{"required": false, "content": map[string]interface{}{"application/json": content}},
				"responses": map[string]interface{}{
					"200": map[string]interface{}{"description": "the result, as JSON"},
					"400": map[string]interface{}{"description": "a request body that is not a JSON object (or array, for args)"},
					"500": map[string]interface{}{"description": "Perform returned an error (or panicked)"},
				},
			}},
			"/api/v1/parameters": map[string]interface{}{"get": map[string]interface{}{
				"summary":   "Perform's parameters, from DocsInputExample",
				"responses": map[string]interface{}{"200": map[string]interface{}{"description": "list"}},
			}},
			"/health":  probe("health"),
			"/live":    probe("live"),
			"/ready":   probe("ready"),
			"/metrics": probe("metrics"),
		},
	}
}

// docsPage is the job's API page: self-contained (no assets from a CDN), with a form that
// calls Perform from the browser (the X-Racetrack-Auth cookie of a dashboard login, or a token).
func docsPage(options Options, base string, example map[string]interface{}) string {
	title := html.EscapeString(options.JobName + " " + options.JobVersion)
	exampleJSON := "{}"
	if example != nil {
		if data, err := json.MarshalIndent(example, "", "  "); err == nil {
			exampleJSON = string(data)
		}
	}
	return `<!doctype html>
<html><head><meta charset="utf-8"><title>` + title + ` - API</title>
<style>body{font-family:sans-serif;max-width:50em;margin:2em auto}textarea,input{width:100%;font-family:monospace}pre{background:#f4f4f4;padding:1em;white-space:pre-wrap}</style></head>
<body><h1>` + title + `</h1>
<p>A golang job. <code>POST ` + html.EscapeString(base) + `/api/v1/perform</code> with a JSON body; the OpenAPI document is
<a href="` + html.EscapeString(base) + `/openapi.json">openapi.json</a>.</p>
<h2>Try it</h2>
<label>Token (X-Racetrack-Auth, optional with a login cookie)<input id="token" type="password"></label>
<label>Request body<textarea id="body" rows="8">` + html.EscapeString(exampleJSON) + `</textarea></label>
<p><button id="call">POST /api/v1/perform</button></p>
<pre id="answer"></pre>
<script>
document.getElementById("call").onclick = async function () {
  const headers = {"Content-Type": "application/json"};
  const token = document.getElementById("token").value;
  if (token) headers["X-Racetrack-Auth"] = token;
  const response = await fetch(` + jsString(base+"/api/v1/perform") + `, {method: "POST", headers: headers, body: document.getElementById("body").value});
  document.getElementById("answer").textContent = response.status + "\n" + await response.text();
};
</script>
</body></html>
`
}

// jsString is a JavaScript string literal; json.Marshal escapes <, > and & so it cannot end the script.
func jsString(value string) string {
	data, _ := json.Marshal(value)
	return string(data)
}
