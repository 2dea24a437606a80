package main

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Racetrack's metric names (as the python3 wrapper's), so dashboards work for every job type.
var buckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1000}

// Metrics counts one job process's requests, for /metrics in Prometheus' text format.
type Metrics struct {
	mu               sync.Mutex
	requestsStarted  int64
	requestsDone     int64
	lastCall         float64
	endpointStarted  map[string]int64
	internalErrors   map[string]int64
	durationCounts   map[string][]int64 // per bucket, the last one is +Inf
	durationSums     map[string]float64
	durationTotalsOf map[string]int64
}

func NewMetrics() *Metrics {
	return &Metrics{
		endpointStarted:  map[string]int64{},
		internalErrors:   map[string]int64{},
		durationCounts:   map[string][]int64{},
		durationSums:     map[string]float64{},
		durationTotalsOf: map[string]int64{},
	}
}

func (m *Metrics) Started(endpoint string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.requestsStarted++
	m.endpointStarted[endpoint]++
}

func (m *Metrics) Done(endpoint string, elapsed time.Duration, status int, isCall bool) {
	seconds := elapsed.Seconds()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.requestsDone++
	counts := m.durationCounts[endpoint]
	if counts == nil {
		counts = make([]int64, len(buckets)+1)
		m.durationCounts[endpoint] = counts
	}
	counts[sort.SearchFloat64s(buckets, seconds)]++
	m.durationSums[endpoint] += seconds
	m.durationTotalsOf[endpoint]++
	if status >= 500 {
		m.internalErrors[endpoint]++
	}
	if isCall {
		m.lastCall = float64(time.Now().UnixNano()) / 1e9
	}
}

func (m *Metrics) Render() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out strings.Builder
	counter := func(name, help string) {
		fmt.Fprintf(&out, "# HELP %s %s\n# TYPE %s counter\n", name, help, name)
	}
	counter("requests_started", "Requests started")
	fmt.Fprintf(&out, "requests_started %d\n", m.requestsStarted)
	counter("requests_done", "Requests finished")
	fmt.Fprintf(&out, "requests_done %d\n", m.requestsDone)
	counter("endpoint_requests_started", "Requests started per endpoint")
	for _, endpoint := range sortedKeys(m.endpointStarted) {
		fmt.Fprintf(&out, "endpoint_requests_started{endpoint=\"%s\"} %d\n", escape(endpoint), m.endpointStarted[endpoint])
	}
	counter("request_internal_errors", "Requests answered with a 5xx status")
	for _, endpoint := range sortedKeys(m.internalErrors) {
		fmt.Fprintf(&out, "request_internal_errors{endpoint=\"%s\"} %d\n", escape(endpoint), m.internalErrors[endpoint])
	}
	out.WriteString("# HELP request_duration Request duration in seconds\n# TYPE request_duration histogram\n")
	for _, endpoint := range sortedKeys(m.durationTotalsOf) {
		label := escape(endpoint)
		var cumulative int64
		for i, count := range m.durationCounts[endpoint] {
			cumulative += count
			le := "+Inf"
			if i < len(buckets) {
				le = strconv.FormatFloat(buckets[i], 'g', -1, 64)
			}
			fmt.Fprintf(&out, "request_duration_bucket{endpoint=\"%s\",le=\"%s\"} %d\n", label, le, cumulative)
		}
		fmt.Fprintf(&out, "request_duration_sum{endpoint=\"%s\"} %s\n", label, formatFloat(m.durationSums[endpoint]))
		fmt.Fprintf(&out, "request_duration_count{endpoint=\"%s\"} %d\n", label, cumulative)
	}
	out.WriteString("# HELP last_call_timestamp Unix time of the last call to the job's API\n# TYPE last_call_timestamp gauge\n")
	fmt.Fprintf(&out, "last_call_timestamp %s\n", formatFloat(m.lastCall))
	return out.String()
}

// sortedKeys without generics: the wrapper compiles under the job's go.mod, whose go version may predate them.
func sortedKeys(values map[string]int64) []string {
	keys := make([]string, 0, len(values))
	for key := range values {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	return keys
}

func formatFloat(value float64) string {
	if math.IsInf(value, 0) || math.IsNaN(value) {
		return "0"
	}
	return strconv.FormatFloat(value, 'f', -1, 64)
}

func escape(value string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`).Replace(value)
}
