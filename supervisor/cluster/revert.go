package cluster

import (
	"fmt"
	"strings"
	"time"

	"github.com/m3sup/m3sup/supervisor/agent"
)

// The pure decisions of a rollout: when a host has settled, and when a
// restarted m3dbnode has missed the rollout deadline. Rollout acts on them.

// dbnodeSettled reports whether m3dbnode runs the desired spec, healthy
// (bootstrapped), with no planned restart pending: the restart the permit
// was taken for is done as far as this host goes — or it was called off
// because a newer desired state no longer asks for it (the agent then goes
// back from waiting to running on the old, still desired, spec). While the
// restart is pending or under way the agent reports waiting, stopping,
// starting or an unhealthy running process, never a healthy running one.
// An m3dbnode the operator stopped keeps the permit until it runs again:
// its replicas are down, so no other host may restart its own.
func dbnodeSettled(st agent.Status) bool {
	return st.State == agent.StateRunning && st.Healthy && st.DesiredActive && st.SpecHash == st.DesiredHash
}

// componentSettled: a component other than m3dbnode has finished its
// planned restart (or the operator stopped it).
func componentSettled(st agent.Status) bool {
	return !st.DesiredActive || (st.State == agent.StateRunning && st.Healthy && st.SpecHash == st.DesiredHash)
}

// rolloutVerdict is what one observation of m3dbnode means for a rollout.
type rolloutVerdict int

const (
	verdictPending rolloutVerdict = iota // nothing to do (yet)
	verdictSettled                       // healthy on its desired revision
	verdictFailed                        // missed the deadline: revert
)

// rolloutObs is one observation of this host's m3dbnode.
type rolloutObs struct {
	Now      time.Time
	DB       agent.Status
	Desired  string // revision of the dbnode's desired container hash
	LastGood string // last revision this host ran healthy; "" when none
	Failed   bool   // Desired is already known failed
	ShardsOK bool   // every shard is AVAILABLE
}

// revertClock decides, from observations alone, when a restarted m3dbnode
// has missed the rollout deadline. The clock runs from the first
// observation of m3dbnode off its old spec (not waiting for the permit)
// towards a revision other than the last good one; it restarts when that
// revision changes. Pure: the caller supplies the time.
type revertClock struct {
	rev   string
	since time.Time
}

func (c *revertClock) observe(o rolloutObs, deadline time.Duration) rolloutVerdict {
	if dbnodeSettled(o.DB) && o.ShardsOK {
		c.rev = ""
		return verdictSettled
	}
	if o.LastGood == "" || o.Desired == "" || o.Desired == o.LastGood || o.Failed ||
		!o.DB.DesiredActive || o.DB.State == agent.StateWaiting {
		// Nothing to go back to, nothing new, or not under way.
		c.rev = ""
		return verdictPending
	}
	if c.rev != o.Desired {
		c.rev, c.since = o.Desired, o.Now
	}
	if o.Now.Sub(c.since) >= deadline {
		c.rev = ""
		return verdictFailed
	}
	return verdictPending
}

// notHealthyReason says why m3dbnode missed the deadline: its state, last
// exit and last log line.
func notHealthyReason(db agent.Status, version string, deadline time.Duration, shardsOK bool) string {
	var what string
	switch {
	case db.State == agent.StateRunning && db.Healthy && !shardsOK:
		what = "bootstrapped, but not every shard is AVAILABLE"
	case db.State == agent.StateRunning && !db.Healthy:
		what = "running, not bootstrapped"
	default:
		what = string(db.State)
		if db.LastExit != nil && db.LastExit.Reason != "" {
			what += " (" + db.LastExit.Reason + ")"
			if !strings.HasPrefix(db.LastExit.Reason, "exited with code") {
				// A Go crash's own line says more than the log's last one.
				return fmt.Sprintf("m3dbnode %s not healthy within %s: %s", version, deadline, what)
			}
		} else if db.LastExit != nil {
			what += fmt.Sprintf(" (last exit code %d)", db.LastExit.Code)
		}
	}
	if n := len(db.LogTail); n > 0 && db.State != agent.StateRunning {
		line := strings.TrimSpace(db.LogTail[n-1])
		if len(line) > 300 {
			line = line[:300] + "…"
		}
		what += ": " + line
	}
	return fmt.Sprintf("m3dbnode %s not healthy within %s: %s", version, deadline, what)
}

// ReconnectGrace is how long a restarted m3dbnode must have stayed settled
// (bootstrapped, every shard AVAILABLE) before its host gives the restart
// permit back. M3's clients — every coordinator's session and the other
// m3dbnodes' peer sessions — reconnect to a restarted node only from a
// background loop that runs every 4 s plus up to 2 s of stutter (M3 v1.5
// src/dbnode/client: defaultBackgroundConnectInterval and
// defaultBackgroundConnectStutter), and no M3 endpoint says when they have.
// A host that restarts its own m3dbnode sooner can leave a client with one
// replica of a shard connected: its majority writes fail ("connection pool
// has no connections"), and points written in that window miss the
// restarted replica for good (M3 has no hinted handoff).
var ReconnectGrace = 8 * time.Second

// settleClock tells when a host that holds the restart permit has stayed
// settled for ReconnectGrace. The rollout actor owns it.
type settleClock struct{ since time.Time }

// due reports whether the host has been settled for at least grace at now;
// a look where it is not settled starts the wait again.
func (c *settleClock) due(now time.Time, settled bool, grace time.Duration) bool {
	if !settled {
		c.since = time.Time{}
		return false
	}
	if c.since.IsZero() {
		c.since = now
	}
	return now.Sub(c.since) >= grace
}
