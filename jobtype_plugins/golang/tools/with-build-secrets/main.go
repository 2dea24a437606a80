// Command with-build-secrets runs a command with the job's secret build env, fetched from
// racetrackd while the build runs; the Go counterpart of builders/with_build_secrets.py, for
// build images that have no Python:
//
//	with-build-secrets URL COMMAND [ARG...]
//
// The values live only in this process's environment and its child's: nothing is written to
// the image, and the URL in `docker history` stops working once the build is over.
package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: with-build-secrets URL COMMAND [ARG...]")
		os.Exit(2)
	}
	secrets, err := fetch(os.Args[1])
	if err != nil {
		fmt.Fprintf(os.Stderr, "racetrackd: cannot fetch the secret build env (%v)\n", err)
		os.Exit(1)
	}
	env := os.Environ()
	for key, value := range secrets {
		env = append(env, key+"="+value)
	}
	path, err := exec.LookPath(os.Args[2])
	if err != nil {
		fmt.Fprintf(os.Stderr, "racetrackd: %v\n", err)
		os.Exit(127)
	}
	err = syscall.Exec(path, os.Args[2:], env)
	fmt.Fprintf(os.Stderr, "racetrackd: cannot run %s: %v\n", os.Args[2], err)
	os.Exit(126)
}

// fetch reads {"env": {NAME: VALUE}} from the daemon, never through a proxy (the daemon is local).
func fetch(url string) (map[string]string, error) {
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil}}
	response, err := client.Get(url)
	if err != nil {
		return nil, err
	}
	defer response.Body.Close()
	if response.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d", response.StatusCode)
	}
	var payload struct {
		Env map[string]interface{} `json:"env"`
	}
	if err := json.NewDecoder(response.Body).Decode(&payload); err != nil {
		return nil, err
	}
	secrets := make(map[string]string, len(payload.Env))
	for key, value := range payload.Env {
		if text, ok := value.(string); ok {
			secrets[key] = text
		} else {
			secrets[key] = fmt.Sprint(value)
		}
	}
	return secrets, nil
}
