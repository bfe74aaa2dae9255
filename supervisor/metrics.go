package supervisor

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/m3sup/m3sup/supervisor/agent"
)

// metrics are m3sup's own Prometheus metrics (documented in the README).
type metrics struct {
	registry   *prometheus.Registry
	state      *prometheus.GaugeVec
	restarts   *prometheus.CounterVec
	reconcile  prometheus.Histogram
	lastExit   *prometheus.GaugeVec
	fetchBytes prometheus.Counter
	fetchTime  prometheus.Histogram
}

func newMetrics(h *hostStatus) *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "m3sup_component_state", Help: "1 for the component's current lifecycle state, 0 for the others.",
		}, []string{"component", "state"}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "m3sup_component_restarts_total", Help: "Restarts of a component by reason (crash, unhealthy, spec-change, manual).",
		}, []string{"component", "reason"}),
		reconcile: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "m3sup_reconcile_duration_seconds", Help: "Time to apply one desired-state change on this host.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8),
		}),
		lastExit: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "m3sup_component_last_exit_code", Help: "Exit code of the component's last exit.",
		}, []string{"component"}),
		fetchBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "m3sup_fetch_bytes_total", Help: "Bytes downloaded for artifacts.",
		}),
		fetchTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "m3sup_fetch_duration_seconds", Help: "Time to fetch and verify an artifact (cache hits included).",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 8),
		}),
	}
	m.registry.MustRegister(m.state, m.restarts, m.reconcile, m.lastExit, m.fetchBytes, m.fetchTime,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Readiness is judged at scrape time, so it is never older than the
	// components' own status.
	m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "m3sup_cluster_ready", Help: "1 while M3 accepts writes through this host: cluster set-up done and every local component running and healthy.",
	}, func() float64 { return boolGauge(h.verdict().Ready) }))
	m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "m3sup_degraded", Help: "1 while M3 was ready on this host and a local component is not running and healthy now.",
	}, func() float64 { return boolGauge(h.verdict().Degraded) }))
	m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "m3sup_cpu_core_guard", Help: "1 while m3dbnode runs with a one-processor /proc/cpuinfo (M3 v1.5 CPU-id defect guard).",
	}, func() float64 {
		g := h.sources().cpuGuard
		return boolGauge(g != nil && g.Guard)
	}))
	m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "m3sup_etcd_is_leader", Help: "1 when the embedded etcd member is the raft leader.",
	}, func() float64 {
		e := h.sources().etcd
		if e != nil && e.IsLeader() {
			return 1
		}
		return 0
	}))
	m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "m3sup_cert_earliest_expiry_timestamp_seconds",
		Help: "When the first of this host's certificates (etcd's, M3's, the join endpoint's) expires, in Unix seconds; 0 before they exist. m3sup renews each between 2/3 and 3/4 of its lifetime.",
	}, h.earliestCertExpiry))
	m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "m3sup_containerd_connected", Help: "1 while m3sup is connected to containerd.",
	}, func() float64 {
		rt := h.sources().runtime
		if rt != nil && rt.Info().Connected {
			return 1
		}
		return 0
	}))
	m.registry.MustRegister(m3Shards{h: h, desc: prometheus.NewDesc("m3sup_m3_shards",
		"Shard replicas in M3's placement by state, as last observed.", []string{"state"}, nil)})
	m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "m3sup_etcd_healthy", Help: "1 when the embedded etcd answers a status request.",
	}, func() float64 {
		e := h.sources().etcd
		if e == nil {
			return 0
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, err := e.Client().Status(ctx, e.Endpoint()); err != nil {
			return 0
		}
		return 1
	}))
	m.registry.MustRegister(newDiskCollector(h))
	m.registry.MustRegister(stateAge{h: h, desc: prometheus.NewDesc("m3sup_component_state_seconds",
		"Seconds the component has been in its current state.", []string{"component", "state"}, nil)})
	return m
}

// componentChanged is the agent's OnChange hook.
func (m *metrics) componentChanged(st agent.Status) {
	for _, s := range agent.States {
		v := 0.0
		if s == st.State {
			v = 1
		}
		m.state.WithLabelValues(st.Name, string(s)).Set(v)
	}
	if st.LastExit != nil {
		m.lastExit.WithLabelValues(st.Name).Set(float64(st.LastExit.Code))
	}
}

// restarted is the agent's OnRestart hook.
func (m *metrics) restarted(component, reason string) {
	m.restarts.WithLabelValues(component, reason).Inc()
}

// stateAge exports how long each component has been in its current state,
// read from the agent at scrape time.
type stateAge struct {
	h    *hostStatus
	desc *prometheus.Desc
}

func (c stateAge) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c stateAge) Collect(ch chan<- prometheus.Metric) {
	ag := c.h.sources().agent
	if ag == nil {
		return
	}
	now := time.Now()
	for _, st := range ag.Statuses() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, now.Sub(st.StateSince).Seconds(), st.Name, string(st.State))
	}
}

// m3Shards exports the shard states of M3's placement, observed at scrape
// time (briefly) or, when M3 is slow, as last observed.
type m3Shards struct {
	h    *hostStatus
	desc *prometheus.Desc
}

func (c m3Shards) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c m3Shards) Collect(ch chan<- prometheus.Metric) {
	p, ok := c.h.observeM3(context.Background())
	if !ok {
		return
	}
	for state, n := range p.ShardStates {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), state)
	}
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
