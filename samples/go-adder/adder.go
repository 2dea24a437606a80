// Package adder is a golang job: racetrackd compiles it with its wrapper and serves Perform at
// /pub/job/go-adder/<version>/api/v1/perform.
package adder

import "fmt"

// Perform adds two numbers, given by name ({"a": 40, "b": 2}) or by position ([40, 2]).
func Perform(args []interface{}, kwargs map[string]interface{}) (interface{}, error) {
	a, b := kwargs["a"], kwargs["b"]
	if len(args) > 0 {
		if len(args) != 2 {
			return nil, fmt.Errorf("give two numbers, not %d", len(args))
		}
		a, b = args[0], args[1]
	}
	x, ok := a.(float64)
	if !ok {
		return nil, fmt.Errorf("a must be a number, not %v", a)
	}
	y, ok := b.(float64)
	if !ok {
		return nil, fmt.Errorf("b must be a number, not %v", b)
	}
	return x + y, nil
}

// DocsInputExample is the request shown on the job's API page (/docs).
func DocsInputExample() map[string]interface{} {
	return map[string]interface{}{"a": 40, "b": 2}
}
