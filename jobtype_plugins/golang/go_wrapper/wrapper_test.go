package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func testOptions() Options {
	return OptionsFromEnv(env{
		"JOB_NAME": "adder", "JOB_VERSION": "1.2.0", "JOB_DEPLOYMENT_TIMESTAMP": "1700000000",
		"JOB_TYPE_VERSION": "golang:1.0.0",
	}.get)
}

type env map[string]string

func (e env) get(name string) string { return e[name] }

func adderJob(signature string, options Options) *Job {
	perform := Performer{Signature: signature, Call: func(args []interface{}, kwargs map[string]interface{}) (interface{}, error) {
		if len(args) == 2 {
			return args[0].(float64) + args[1].(float64), nil
		}
		if kwargs["fail"] == true {
			return nil, errors.New("cannot add: told to fail")
		}
		if kwargs["panic"] == true {
			panic("told to panic")
		}
		if sleep, ok := kwargs["sleep"].(float64); ok {
			time.Sleep(time.Duration(sleep * float64(time.Second)))
		}
		return kwargs["a"].(float64) + kwargs["b"].(float64), nil
	}}
	job := NewJob(perform, func() map[string]interface{} { return map[string]interface{}{"a": 40, "b": 2} }, options)
	job.logger.out = &bytes.Buffer{}
	return job
}

func call(job http.Handler, method, path, body string, headers ...string) *httptest.ResponseRecorder {
	request := httptest.NewRequest(method, path, strings.NewReader(body))
	for i := 0; i+1 < len(headers); i += 2 {
		request.Header.Set(headers[i], headers[i+1])
	}
	recorder := httptest.NewRecorder()
	job.ServeHTTP(recorder, request)
	return recorder
}

func decode(t *testing.T, recorder *httptest.ResponseRecorder) interface{} {
	t.Helper()
	var value interface{}
	if err := json.Unmarshal(recorder.Body.Bytes(), &value); err != nil {
		t.Fatalf("answer is not JSON: %q", recorder.Body.String())
	}
	return value
}

func TestPerformTakesAJSONObjectAtTheRootAndUnderThePubPath(t *testing.T) {
	job := adderJob("input", testOptions())
	for _, path := range []string{"/api/v1/perform", "/pub/job/adder/1.2.0/api/v1/perform", "/pub/job/adder/latest/api/v1/perform/"} {
		answer := call(job, "POST", path, `{"a": 40, "b": 2}`)
		if answer.Code != 200 || strings.TrimSpace(answer.Body.String()) != "42" {
			t.Errorf("%s: %d %s", path, answer.Code, answer.Body.String())
		}
	}
}

func TestArgsKwargsSignatureTakesAnArrayAsArgs(t *testing.T) {
	job := adderJob("args-kwargs", testOptions())
	if answer := call(job, "POST", "/api/v1/perform", `[40, 2]`); answer.Body.String() != "42" {
		t.Errorf("args: %d %s", answer.Code, answer.Body.String())
	}
	if answer := call(job, "POST", "/api/v1/perform", `{"a": 40, "b": 2}`); answer.Body.String() != "42" {
		t.Errorf("kwargs: %d %s", answer.Code, answer.Body.String())
	}
}

func TestBadBodiesAre400(t *testing.T) {
	job := adderJob("input", testOptions())
	cases := map[string]string{
		`{"a": 4`: "request body is not valid JSON",
		`[40, 2]`: "request body must be a JSON object",
		`"text"`:  "request body must be a JSON object",
	}
	for body, message := range cases {
		answer := call(job, "POST", "/api/v1/perform", body)
		if answer.Code != 400 || !strings.Contains(decode(t, answer).(map[string]interface{})["error"].(string), message) {
			t.Errorf("%s: %d %s", body, answer.Code, answer.Body.String())
		}
	}
}

// endlessBody counts what is read of it: a body the job should refuse unread.
type endlessBody struct{ read int }

func (b *endlessBody) Read(p []byte) (int, error) {
	b.read += len(p)
	return len(p), nil
}

func (b *endlessBody) Close() error { return nil }

func TestABodyDeclaredOverTheLimitIs413WithoutReadingIt(t *testing.T) {
	job := adderJob("input", testOptions())
	body := &endlessBody{}
	request := httptest.NewRequest("POST", "/api/v1/perform", nil)
	request.Body = body
	request.ContentLength = maxBodyBytes + 1
	answer := httptest.NewRecorder()
	job.ServeHTTP(answer, request)
	if answer.Code != 413 || !strings.Contains(answer.Body.String(), "request body larger than 268435456 bytes") {
		t.Errorf("%d %s", answer.Code, answer.Body.String())
	}
	if body.read != 0 {
		t.Errorf("read %d bytes of a body refused by its length", body.read)
	}
}

func TestAnErrorOrAPanicIs500WithTheMessageAndTheJobKeepsServing(t *testing.T) {
	job := adderJob("input", testOptions())
	log := job.logger.out.(*bytes.Buffer)
	failed := call(job, "POST", "/api/v1/perform", `{"fail": true}`, "X-Request-Tracing-Id", "trace-1")
	panicked := call(job, "POST", "/api/v1/perform", `{"panic": true}`)
	next := call(job, "POST", "/api/v1/perform", `{"a": 1, "b": 2}`)

	if failed.Code != 500 || decode(t, failed).(map[string]interface{})["error"] != "cannot add: told to fail" {
		t.Errorf("error: %d %s", failed.Code, failed.Body.String())
	}
	if panicked.Code != 500 || decode(t, panicked).(map[string]interface{})["error"] != "panic: told to panic" {
		t.Errorf("panic: %d %s", panicked.Code, panicked.Body.String())
	}
	if next.Code != 200 || next.Body.String() != "3" {
		t.Errorf("after the failures: %d %s", next.Code, next.Body.String())
	}
	if !strings.Contains(log.String(), "ERROR Perform failed: cannot add: told to fail, tracing_id=trace-1") {
		t.Errorf("the error is not in the job's log:\n%s", log.String())
	}
	if !strings.Contains(log.String(), "goroutine") {
		t.Errorf("the panic's stack is not in the job's log:\n%s", log.String())
	}
}

func TestACallPastTheCallTimeoutIs504(t *testing.T) {
	options := testOptions()
	options.CallTimeout = 50 * time.Millisecond
	answer := call(adderJob("input", options), "POST", "/api/v1/perform", `{"sleep": 1, "a": 1, "b": 1}`)

	if answer.Code != 504 || !strings.Contains(answer.Body.String(), "call_timeout of 0.05 s") {
		t.Errorf("%d %s", answer.Code, answer.Body.String())
	}
}

func TestAResultJSONCannotExpressIs500SayingSo(t *testing.T) {
	job := NewJob(Performer{Signature: "input", Call: func([]interface{}, map[string]interface{}) (interface{}, error) {
		return make(chan int), nil
	}}, nil, testOptions())
	job.logger.out = &bytes.Buffer{}
	answer := call(job, "POST", "/api/v1/perform", `{}`)

	if answer.Code != 500 || !strings.Contains(answer.Body.String(), "result is not JSON-serializable") {
		t.Errorf("%d %s", answer.Code, answer.Body.String())
	}
}

func TestProbesAndHealthHaveRacetracksFields(t *testing.T) {
	job := adderJob("input", testOptions())
	for _, path := range []string{"/live", "/ready", "/health", "/pub/job/adder/1.2.0/health"} {
		if answer := call(job, "GET", path, ""); answer.Code != 200 {
			t.Errorf("%s: %d", path, answer.Code)
		}
	}
	health := decode(t, call(job, "GET", "/health", "")).(map[string]interface{})
	for key, want := range map[string]interface{}{
		"service": "job", "job_name": "adder", "job_version": "1.2.0", "status": "pass", "live": true, "ready": true,
		"job_type_version": "golang:1.0.0", "deployment_timestamp": float64(1700000000),
	} {
		if health[key] != want {
			t.Errorf("health[%s] = %v, want %v", key, health[key], want)
		}
	}
	live := decode(t, call(job, "GET", "/live", "")).(map[string]interface{})
	if live["live"] != true || live["deployment_timestamp"] != float64(1700000000) {
		t.Errorf("live: %v", live)
	}
}

func TestMetricsCountCallsErrorsAndDurationsButNotProbes(t *testing.T) {
	job := adderJob("input", testOptions())
	call(job, "POST", "/api/v1/perform", `{"a": 1, "b": 2}`)
	call(job, "POST", "/api/v1/perform", `{"fail": true}`)
	call(job, "GET", "/live", "")
	text := call(job, "GET", "/metrics", "").Body.String()

	for _, line := range []string{
		"requests_started 2", "requests_done 2",
		`endpoint_requests_started{endpoint="/api/v1/perform"} 2`,
		`request_internal_errors{endpoint="/api/v1/perform"} 1`,
		`request_duration_bucket{endpoint="/api/v1/perform",le="+Inf"} 2`,
		`request_duration_count{endpoint="/api/v1/perform"} 2`,
		"# TYPE last_call_timestamp gauge",
	} {
		if !strings.Contains(text, line+"\n") {
			t.Errorf("metrics lack %q:\n%s", line, text)
		}
	}
	if strings.Contains(text, "last_call_timestamp 0\n") {
		t.Errorf("last_call_timestamp not set:\n%s", text)
	}
}

func TestDocsOpenAPIAndParametersUseTheExampleAndTheCallersPrefix(t *testing.T) {
	job := adderJob("input", testOptions())
	redirect := call(job, "GET", "/pub/job/adder/latest/", "", "X-Forwarded-Prefix", "/pub/job/adder/latest")
	openapi := decode(t, call(job, "GET", "/pub/job/adder/1.2.0/openapi.json", "")).(map[string]interface{})
	page := call(job, "GET", "/pub/job/adder/1.2.0/docs", "")
	params := decode(t, call(job, "GET", "/api/v1/parameters", ""))

	if redirect.Code != 307 || redirect.Header().Get("Location") != "/pub/job/adder/latest/docs" {
		t.Errorf("redirect: %d %v", redirect.Code, redirect.Header())
	}
	server := openapi["servers"].([]interface{})[0].(map[string]interface{})["url"]
	perform := openapi["paths"].(map[string]interface{})["/api/v1/perform"].(map[string]interface{})["post"]
	example := perform.(map[string]interface{})["requestBody"].(map[string]interface{})["content"].(map[string]interface{})["application/json"].(map[string]interface{})["example"]
	if server != "/pub/job/adder/1.2.0" || example.(map[string]interface{})["a"] != float64(40) {
		t.Errorf("openapi: server %v, example %v", server, example)
	}
	if page.Code != 200 || !strings.Contains(page.Body.String(), `"/pub/job/adder/1.2.0/api/v1/perform"`) ||
		!strings.Contains(page.Body.String(), "&#34;a&#34;: 40") {
		t.Errorf("docs page: %d %s", page.Code, page.Body.String())
	}
	want := []interface{}{
		map[string]interface{}{"name": "a", "type": "number"}, map[string]interface{}{"name": "b", "type": "number"},
	}
	if got, _ := json.Marshal(params); string(got) != string(mustJSON(want)) {
		t.Errorf("parameters: %s", got)
	}
}

// Swagger UI's Authorize (and the curl it shows) sends the token only when the document declares it.
func TestOpenAPIDeclaresTheRacetrackAuthHeader(t *testing.T) {
	job := adderJob("input", testOptions())
	openapi := decode(t, call(job, "GET", "/pub/job/adder/1.2.0/openapi.json", "")).(map[string]interface{})

	schemes, _ := json.Marshal(openapi["components"].(map[string]interface{})["securitySchemes"])
	security, _ := json.Marshal(openapi["security"])
	if string(schemes) != `{"RacetrackAuth":{"in":"header","name":"X-Racetrack-Auth","type":"apiKey"}}` ||
		string(security) != `[{"RacetrackAuth":[]}]` {
		t.Errorf("security: schemes %s, requirement %s", schemes, security)
	}
}

func mustJSON(value interface{}) []byte {
	data, _ := json.Marshal(value)
	return data
}

func TestWrongMethodsAndUnknownPathsAnswerWithJSONErrors(t *testing.T) {
	job := adderJob("input", testOptions())
	if answer := call(job, "GET", "/api/v1/perform", ""); answer.Code != 405 {
		t.Errorf("GET perform: %d", answer.Code)
	}
	answer := call(job, "GET", "/api/v1/nothing", "")
	if answer.Code != 404 || decode(t, answer).(map[string]interface{})["error"] != "no endpoint /api/v1/nothing" {
		t.Errorf("unknown: %d %s", answer.Code, answer.Body.String())
	}
}

func TestACallForAnotherJobOrVersionIsRefused(t *testing.T) {
	job := adderJob("input", testOptions())
	for _, path := range []string{"/pub/job/other/1.2.0/api/v1/perform", "/pub/job/adder/9.9.9/api/v1/perform"} {
		if answer := call(job, "POST", path, `{"a": 1, "b": 1}`); answer.Code != 404 {
			t.Errorf("%s: %d", path, answer.Code)
		}
	}
	if answer := call(job, "POST", "/pub/job/adder/1.x/api/v1/perform", `{"a": 1, "b": 1}`); answer.Code != 200 {
		t.Errorf("alias: %d", answer.Code)
	}
}

func TestTheTracingIDIsEchoedOrGenerated(t *testing.T) {
	job := adderJob("input", testOptions())
	if got := call(job, "GET", "/live", "", "X-Request-Tracing-Id", "echo-me").Header().Get("X-Request-Tracing-Id"); got != "echo-me" {
		t.Errorf("echoed: %q", got)
	}
	if got := call(job, "GET", "/live", "").Header().Get("X-Request-Tracing-Id"); len(got) != 36 {
		t.Errorf("generated: %q", got)
	}
}

func TestAccessLogHasOneLinePerCallAndLeavesProbesOut(t *testing.T) {
	for _, structured := range []bool{false, true} {
		options := testOptions()
		options.Structured = structured
		job := adderJob("input", options)
		call(job, "POST", "/api/v1/perform", `{"a": 1, "b": 2}`, "X-Request-Tracing-Id", "access-1")
		call(job, "GET", "/health", "", "X-Request-Tracing-Id", "probe-1")
		job.access.Flush()
		text := job.logger.out.(*bytes.Buffer).String()

		if strings.Count(text, "access-1") != 1 || strings.Contains(text, "probe-1") {
			t.Errorf("structured=%v:\n%s", structured, text)
		}
		if structured {
			var record map[string]interface{}
			if err := json.Unmarshal([]byte(strings.TrimSpace(text)), &record); err != nil || record["status"] != float64(200) ||
				record["path"] != "/api/v1/perform" || record["duration_ms"] == nil {
				t.Errorf("not a JSON access line: %s", text)
			}
		} else if !strings.Contains(text, "INFO POST /api/v1/perform 200, duration_ms=") {
			t.Errorf("text access line: %s", text)
		}
	}
}

func TestOptionsFromEnvDefaults(t *testing.T) {
	options := OptionsFromEnv(env{"JOB_CALL_TIMEOUT": "2.5", "LOG_STRUCTURED": "true"}.get)
	if options.CallTimeout != 2500*time.Millisecond || !options.Structured || options.HomePage != "/docs" ||
		options.TracingHeader != "X-Request-Tracing-Id" || options.GracefulTimeout != 30*time.Second {
		t.Errorf("%+v", options)
	}
}
