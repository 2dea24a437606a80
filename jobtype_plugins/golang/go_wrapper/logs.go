package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"time"
)

// Logger writes the wrapper's own lines to stdout (the job's `rtd logs`), in the python3
// wrapper's shapes: `[2024-01-02 15:04:05] LEVEL message` or, with LOG_STRUCTURED, JSON lines.
type Logger struct {
	mu         sync.Mutex
	out        io.Writer
	structured bool
}

func NewLogger(structured bool) *Logger { return &Logger{out: os.Stdout, structured: structured} }

func (l *Logger) Info(message string) { l.line("INFO", message, nil, "") }

// Error logs a failure of the job's code: the tracing id of the call, and a panic's stack
// (on the following lines, or as "exception" in a JSON line).
func (l *Logger) Error(message, tracingID, stack string) {
	fields := map[string]interface{}{}
	if tracingID != "" {
		fields["tracing_id"] = tracingID
	}
	l.line("ERROR", message, fields, stack)
}

func (l *Logger) line(level, message string, fields map[string]interface{}, stack string) {
	if stack != "" && l.structured {
		fields["exception"] = stack
		stack = ""
	}
	text := l.format(time.Now(), level, message, fields) + "\n"
	if stack != "" {
		text += stack + "\n"
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = io.WriteString(l.out, text)
}

func (l *Logger) format(now time.Time, level, message string, fields map[string]interface{}) string {
	if l.structured {
		record := map[string]interface{}{"time": now.Format("2006-01-02T15:04:05"), "level": level, "message": message}
		for key, value := range fields {
			record[key] = value
		}
		data, _ := json.Marshal(record)
		return string(data)
	}
	text := fmt.Sprintf("[%s] %s %s", now.Format("2006-01-02 15:04:05"), level, message)
	keys := make([]string, 0, len(fields))
	for key := range fields {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	for _, key := range keys {
		text += fmt.Sprintf(", %s=%v", key, fields[key])
	}
	return text
}

// AccessLog writes one line per request (probes and metrics scrapes left out), buffered and
// flushed every 0.2 s so that logging never holds a call up.
type AccessLog struct {
	logger  *Logger
	mu      sync.Mutex
	pending []string
	once    sync.Once
}

func NewAccessLog(logger *Logger) *AccessLog { return &AccessLog{logger: logger} }

func (a *AccessLog) Write(method, path string, status int, elapsed time.Duration, tracingID string) {
	if probes[path] {
		return
	}
	durationMS := float64(elapsed.Microseconds()) / 1000
	fields := map[string]interface{}{"duration_ms": durationMS, "tracing_id": tracingID}
	if a.logger.structured {
		fields["method"], fields["path"], fields["status"] = method, path, status
	}
	line := a.logger.format(time.Now(), "INFO", fmt.Sprintf("%s %s %d", method, path, status), fields)
	a.mu.Lock()
	a.pending = append(a.pending, line)
	a.mu.Unlock()
	a.once.Do(func() {
		go func() {
			for range time.Tick(200 * time.Millisecond) {
				a.Flush()
			}
		}()
	})
}

func (a *AccessLog) Flush() {
	a.mu.Lock()
	lines := a.pending
	a.pending = nil
	a.mu.Unlock()
	if len(lines) == 0 {
		return
	}
	a.logger.mu.Lock()
	defer a.logger.mu.Unlock()
	for _, line := range lines {
		_, _ = io.WriteString(a.logger.out, line+"\n")
	}
}
