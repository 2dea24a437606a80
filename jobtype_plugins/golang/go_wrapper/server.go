package main

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"time"
)

// maxBodyBytes is the largest request body Perform is given (as in the python3 wrapper).
const maxBodyBytes = 256 << 20

var pubPrefix = regexp.MustCompile(`^/pub/(?:job|fatman)/[^/]+/[^/]+`)

var probes = map[string]bool{"/live": true, "/ready": true, "/health": true, "/metrics": true}

// Job serves one job: its Perform and the endpoints every Racetrack job has, at `/` and under
// /pub/job/<name>/<version>/ (the gateway forwards the whole path).
type Job struct {
	performer Performer
	example   func() map[string]interface{}
	options   Options
	metrics   *Metrics
	access    *AccessLog
	logger    *Logger
}

func NewJob(performer Performer, example func() map[string]interface{}, options Options) *Job {
	logger := NewLogger(options.Structured)
	return &Job{
		performer: performer,
		example:   example,
		options:   options,
		metrics:   NewMetrics(),
		access:    NewAccessLog(logger),
		logger:    logger,
	}
}

func (j *Job) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	started := time.Now()
	tracingID := r.Header.Get(j.options.TracingHeader)
	if tracingID == "" {
		tracingID = newUUID()
	}
	w.Header().Set(j.options.TracingHeader, tracingID)
	base, path := splitPath(r.URL.Path)
	if j.addressedToAnotherJob(base) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("this is job %s %s, not the one at %s",
			j.options.JobName, j.options.JobVersion, base))
		return
	}
	// Behind the gateway, links and redirects use the path the caller used (e.g. `latest`).
	if forwarded := r.Header.Get("X-Forwarded-Prefix"); forwarded != "" {
		base = forwarded
	}
	base = strings.TrimRight(base, "/")
	endpoint := "other"
	if probes[path] || strings.HasPrefix(path, "/api/") {
		endpoint = path
	}
	isCall := strings.HasPrefix(path, "/api/v1/") && path != "/api/v1/parameters"
	if !probes[path] {
		j.metrics.Started(endpoint)
	}
	recorder := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	j.route(recorder, r, base, path, tracingID)
	elapsed := time.Since(started)
	if !probes[path] {
		j.metrics.Done(endpoint, elapsed, recorder.status, isCall)
	}
	j.access.Write(r.Method, path, recorder.status, elapsed, tracingID)
}

func (j *Job) route(w http.ResponseWriter, r *http.Request, base, path, tracingID string) {
	switch path {
	case "/live":
		writeJSON(w, http.StatusOK, map[string]interface{}{"live": true, "deployment_timestamp": j.options.DeploymentTimestamp})
	case "/ready":
		writeJSON(w, http.StatusOK, map[string]interface{}{"ready": true})
	case "/health":
		writeJSON(w, http.StatusOK, j.health())
	case "/metrics":
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = io.WriteString(w, j.metrics.Render())
	case "/":
		http.Redirect(w, r, base+j.options.HomePage, http.StatusTemporaryRedirect)
	case "/openapi.json":
		writeJSON(w, http.StatusOK, openAPIDocument(j.options, j.performer, j.exampleInput(), base))
	case "/docs":
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, docsPage(j.options, base, j.exampleInput()))
	case "/api/v1/perform":
		if r.Method != http.MethodPost {
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed here; use POST", r.Method))
			return
		}
		j.perform(w, r, tracingID)
	case "/api/v1/parameters":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed here; use GET", r.Method))
			return
		}
		writeJSON(w, http.StatusOK, parameters(j.exampleInput()))
	default:
		writeError(w, http.StatusNotFound, "no endpoint "+path)
	}
}

func (j *Job) perform(w http.ResponseWriter, r *http.Request, tracingID string) {
	if r.ContentLength > maxBodyBytes {
		// Refused by its declared length, before a byte is read: reading 256 MiB to find out would
		// take the job's memory (and growing a buffer that large may take it past its limit).
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", maxBodyBytes))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", maxBodyBytes))
		} else {
			writeError(w, http.StatusBadRequest, "cannot read the request body: "+err.Error())
		}
		return
	}
	args, kwargs, err := j.performer.arguments(body)
	if err == nil {
		var result []byte
		result, err = j.performer.run(args, kwargs, j.options.CallTimeout)
		if err == nil {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(result)
			return
		}
	}
	var failure *callError
	if !errors.As(err, &failure) {
		failure = &callError{Status: http.StatusInternalServerError, Message: err.Error()}
	}
	if failure.Status >= 500 {
		j.logger.Error("Perform failed: "+failure.Message, tracingID, failure.Stack)
	}
	writeError(w, failure.Status, failure.Message)
}

// exampleInput is the job's DocsInputExample(), or nil; a panic in it is logged, not served.
func (j *Job) exampleInput() (example map[string]interface{}) {
	if j.example == nil {
		return nil
	}
	defer func() {
		if recovered := recover(); recovered != nil {
			j.logger.Error(fmt.Sprintf("DocsInputExample panicked: %v", recovered), "", "")
			example = nil
		}
	}()
	return j.example()
}

func (j *Job) health() map[string]interface{} {
	return map[string]interface{}{
		"service":                       "job",
		"job_name":                      j.options.JobName,
		"job_version":                   j.options.JobVersion,
		"git_version":                   j.options.GitVersion,
		"deployed_by_racetrack_version": j.options.RacetrackVersion,
		"job_type_version":              j.options.JobTypeVersion,
		"deployment_timestamp":          j.options.DeploymentTimestamp,
		"live":                          true,
		"ready":                         true,
		"status":                        "pass",
		"error":                         nil,
	}
}

// addressedToAnotherJob: a call for /pub/job/<other>/<version> means a stale address reached this
// container (its predecessor's IP was reused); answering would hand the caller another job's result.
func (j *Job) addressedToAnotherJob(base string) bool {
	if base == "" || j.options.JobName == "" {
		return false
	}
	parts := strings.Split(base, "/") // ["", "pub", "job", name, version]
	if len(parts) != 5 {
		return false
	}
	name, version := parts[3], parts[4]
	if name != j.options.JobName {
		return true
	}
	alias := version == "latest" || strings.ContainsAny(strings.ToLower(version), "x*")
	return !alias && version != j.options.JobVersion
}

// splitPath separates the /pub/job/<name>/<version> prefix (if any) from the job's own path.
func splitPath(raw string) (string, string) {
	base, path := "", raw
	if match := pubPrefix.FindString(raw); match != "" {
		base, path = match, raw[len(match):]
	}
	if path != "/" {
		path = strings.TrimRight(path, "/")
	}
	if path == "" {
		path = "/"
	}
	return base, path
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(status int) {
	s.status = status
	s.ResponseWriter.WriteHeader(status)
}

func writeJSON(w http.ResponseWriter, status int, payload interface{}) {
	data, err := json.Marshal(payload)
	if err != nil {
		status, data = http.StatusInternalServerError, []byte(`{"error": "cannot encode the answer"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(data)
}

func writeError(w http.ResponseWriter, status int, message string) {
	writeJSON(w, status, map[string]string{"error": message})
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
