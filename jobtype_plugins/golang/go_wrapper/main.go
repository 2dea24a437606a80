// The golang job wrapper: serves a job's Perform over HTTP with Racetrack's job conventions.
//
// This directory is copied into the job's module as racetrack_job_wrapper/ and built together
// with the job's code; a file generated at build time (by tools/perform-adapter) sets
// `performer` to the job's Perform. Standard library only, so it never adds a dependency to
// the job's module.
package main

import (
	"context"
	"errors"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

const listenAddress = ":7000"

func main() {
	log.SetFlags(0)
	log.SetOutput(os.Stdout)
	options := OptionsFromEnv(os.Getenv)
	if performer.Call == nil {
		log.Fatal("racetrackd: no Perform was linked into the wrapper (the perform adapter did not run)")
	}
	job := NewJob(performer, docsInputExample, options)
	server := &http.Server{Addr: listenAddress, Handler: job, ReadHeaderTimeout: 30 * time.Second}

	stopped := make(chan struct{})
	go func() {
		signals := make(chan os.Signal, 1)
		signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
		<-signals
		// Calls in flight get JOB_GRACEFUL_TIMEOUT to finish; new ones are refused.
		ctx, cancel := context.WithTimeout(context.Background(), options.GracefulTimeout)
		defer cancel()
		_ = server.Shutdown(ctx)
		close(stopped)
	}()
	listener, err := net.Listen("tcp", listenAddress)
	if err != nil {
		log.Fatalf("racetrackd: cannot listen on %s: %v", listenAddress, err)
	}
	job.logger.Info("job " + options.JobName + " " + options.JobVersion + " is ready, listening on " + listenAddress)
	if err := server.Serve(listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatalf("racetrackd: cannot serve on %s: %v", listenAddress, err)
	}
	<-stopped
	job.access.Flush()
}

// Options are what the daemon tells the job through its environment.
type Options struct {
	JobName             string
	JobVersion          string
	GitVersion          string
	JobTypeVersion      string
	RacetrackVersion    string
	DeploymentTimestamp int64
	CallTimeout         time.Duration // 0: no limit
	GracefulTimeout     time.Duration
	TracingHeader       string
	HomePage            string
	Structured          bool // LOG_STRUCTURED: JSON log lines
}

// OptionsFromEnv reads Options with `getenv` (os.Getenv in the image, a map in tests).
func OptionsFromEnv(getenv func(string) string) Options {
	seconds := func(name string, fallback float64) time.Duration {
		value, err := strconv.ParseFloat(getenv(name), 64)
		if err != nil || value < 0 {
			value = fallback
		}
		return time.Duration(value * float64(time.Second))
	}
	timestamp, _ := strconv.ParseInt(getenv("JOB_DEPLOYMENT_TIMESTAMP"), 10, 64)
	options := Options{
		JobName:             getenv("JOB_NAME"),
		JobVersion:          getenv("JOB_VERSION"),
		GitVersion:          getenv("GIT_VERSION"),
		JobTypeVersion:      getenv("JOB_TYPE_VERSION"),
		RacetrackVersion:    getenv("DEPLOYED_BY_RACETRACK_VERSION"),
		DeploymentTimestamp: timestamp,
		CallTimeout:         seconds("JOB_CALL_TIMEOUT", 0),
		GracefulTimeout:     seconds("JOB_GRACEFUL_TIMEOUT", 30),
		TracingHeader:       getenv("REQUEST_TRACING_HEADER"),
		HomePage:            getenv("JOB_HOME_PAGE"),
		Structured:          isTrue(getenv("LOG_STRUCTURED")),
	}
	if options.TracingHeader == "" {
		options.TracingHeader = "X-Request-Tracing-Id"
	}
	if options.HomePage == "" {
		options.HomePage = "/docs"
	}
	if options.HomePage[0] != '/' {
		options.HomePage = "/" + options.HomePage
	}
	return options
}

func isTrue(value string) bool {
	switch value {
	case "1", "true", "True", "TRUE", "yes":
		return true
	}
	return false
}
