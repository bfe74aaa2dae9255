package disk

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"
)

// DefaultInterval is how often Monitor samples by default.
const DefaultInterval = 5 * time.Second

// Sample is one look at the data dir's filesystem.
type Sample struct {
	Usage
	Level   Level     // "" when Err is set
	Message string    // Judge's reason; "" when ok
	Err     error     // the probe failed
	At      time.Time // when it was taken
}

// Monitor is the daemon's actor that watches the data dir's filesystem:
// Run samples it at once and then every Interval until its context ends;
// Last serves status and metrics. A change of verdict (ok → low → full and
// back, or a failing probe) is logged once, not at every sample.
type Monitor struct {
	Path       string
	Thresholds Thresholds
	Interval   time.Duration // 0: DefaultInterval
	Log        *zap.Logger   // nil: none
	// Probe measures Path; nil: the package's Probe. Tests replace it.
	Probe func(path string) (Usage, error)
	// Now is the clock; nil: time.Now.
	Now func() time.Time

	mu   sync.Mutex
	last Sample
	have bool
}

// Run samples until ctx is done; it always returns nil.
func (m *Monitor) Run(ctx context.Context) error {
	interval := m.Interval
	if interval <= 0 {
		interval = DefaultInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		m.Observe()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Last returns the newest sample; ok is false before the first.
func (m *Monitor) Last() (s Sample, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last, m.have
}

// Observe takes one sample, records it and logs a change of verdict.
func (m *Monitor) Observe() Sample {
	probe, now := m.Probe, m.Now
	if probe == nil {
		probe = Probe
	}
	if now == nil {
		now = time.Now
	}
	u, err := probe(m.Path)
	s := Sample{Usage: u, Err: err, At: now()}
	if err == nil {
		s.Level, s.Message = Judge(u, m.Thresholds)
	}
	s.Usage.Path = m.Path
	m.mu.Lock()
	prev, had := m.last, m.have
	m.last, m.have = s, true
	m.mu.Unlock()
	if m.Log != nil {
		logChange(m.Log, prev, had, s)
	}
	return s
}

// Change says what to log when the verdict goes from prev (had: there was
// one) to cur: nothing, a warning, an error or the all-clear.
type Change int

// Changes, see Transition.
const (
	NoChange Change = iota
	ChangeWarn
	ChangeError
	ChangeClear
)

// Transition decides whether a sample is news: only a verdict different
// from the previous one is logged, and a healthy first sample is not.
func Transition(prev Sample, had bool, cur Sample) Change {
	prevKey, curKey := key(prev), key(cur)
	if had && prevKey == curKey {
		return NoChange
	}
	switch {
	case cur.Err != nil:
		return ChangeWarn
	case cur.Level == LevelFull:
		return ChangeError
	case cur.Level == LevelLow:
		return ChangeWarn
	case !had:
		return NoChange
	}
	return ChangeClear
}

func key(s Sample) string {
	if s.Err != nil {
		return "error"
	}
	return string(s.Level)
}

func logChange(log *zap.Logger, prev Sample, had bool, cur Sample) {
	f := []zap.Field{zap.String("path", cur.Path), zap.Uint64("freeBytes", cur.FreeBytes),
		zap.Uint64("sizeBytes", cur.SizeBytes), zap.Uint64("freeInodes", cur.FreeInodes)}
	switch Transition(prev, had, cur) {
	case ChangeWarn:
		if cur.Err != nil {
			log.Warn("cannot measure the data dir's filesystem", zap.String("path", cur.Path), zap.Error(cur.Err))
			return
		}
		log.Warn("data dir filesystem is "+cur.Message, f...)
	case ChangeError:
		log.Error("data dir filesystem is "+cur.Message+"; M3's commit log and m3sup's state writes will fail when it is full", f...)
	case ChangeClear:
		log.Info("data dir filesystem has enough free space again", f...)
	}
}
