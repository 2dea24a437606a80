package main

import (
	"encoding/json"
	"fmt"
	"runtime/debug"
	"time"
)

// Performer is the job's Perform, whichever of the two signatures it has.
type Performer struct {
	Signature string // "args-kwargs" or "input"
	Call      func(args []interface{}, kwargs map[string]interface{}) (interface{}, error)
}

// Set by the file the perform adapter generates at build time.
var (
	performer        Performer
	docsInputExample func() map[string]interface{}
)

// callError is an answer other than 200, with the message the caller sees.
type callError struct {
	Status  int
	Message string
	Stack   string // a panic's stack: for the job's log, never for the caller
}

func (e *callError) Error() string { return e.Message }

// arguments turns a request body into Perform's arguments: a JSON object is the keyword
// arguments (the input map); a JSON array is the positional arguments (args-kwargs only).
func (p Performer) arguments(body []byte) ([]interface{}, map[string]interface{}, error) {
	args := []interface{}{}
	kwargs := map[string]interface{}{}
	if len(trimSpace(body)) == 0 {
		return args, kwargs, nil
	}
	var payload interface{}
	if err := json.Unmarshal(body, &payload); err != nil {
		return nil, nil, &callError{Status: 400, Message: "request body is not valid JSON: " + err.Error()}
	}
	switch value := payload.(type) {
	case map[string]interface{}:
		return args, value, nil
	case []interface{}:
		if p.Signature == "args-kwargs" {
			return value, kwargs, nil
		}
		return nil, nil, &callError{Status: 400, Message: "request body must be a JSON object (Perform takes an input map)"}
	default:
		if p.Signature == "args-kwargs" {
			return nil, nil, &callError{Status: 400, Message: "request body must be a JSON object of keyword arguments or an array of positional arguments"}
		}
		return nil, nil, &callError{Status: 400, Message: "request body must be a JSON object"}
	}
}

// run calls Perform, turning a returned error or a panic into a 500 and a call past `timeout`
// into a 504. Go cannot stop a goroutine: past the timeout the job's code runs on to its end
// and its result is dropped.
func (p Performer) run(args []interface{}, kwargs map[string]interface{}, timeout time.Duration) ([]byte, error) {
	type outcome struct {
		result []byte
		err    error
	}
	done := make(chan outcome, 1)
	go func() {
		defer func() {
			if recovered := recover(); recovered != nil {
				done <- outcome{nil, &callError{500, fmt.Sprintf("panic: %v", recovered), string(debug.Stack())}}
			}
		}()
		result, err := p.Call(args, kwargs)
		if err != nil {
			done <- outcome{nil, &callError{Status: 500, Message: err.Error()}}
			return
		}
		encoded, err := json.Marshal(result)
		if err != nil {
			done <- outcome{nil, &callError{Status: 500, Message: "result is not JSON-serializable: " + err.Error()}}
			return
		}
		done <- outcome{encoded, nil}
	}()
	var expired <-chan time.Time
	if timeout > 0 {
		timer := time.NewTimer(timeout)
		defer timer.Stop()
		expired = timer.C
	}
	select {
	case answer := <-done:
		return answer.result, answer.err
	case <-expired:
		return nil, &callError{Status: 504, Message: fmt.Sprintf("the job did not answer within its call_timeout of %g s", timeout.Seconds())}
	}
}

func trimSpace(body []byte) []byte {
	start, end := 0, len(body)
	for start < end && isSpace(body[start]) {
		start++
	}
	for end > start && isSpace(body[end-1]) {
		end--
	}
	return body[start:end]
}

func isSpace(b byte) bool { return b == ' ' || b == '\n' || b == '\r' || b == '\t' }
