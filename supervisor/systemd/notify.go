package systemd

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier speaks sd_notify(3) to the service manager that started m3sup.
// Made from the environment (NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID);
// without NOTIFY_SOCKET — m3sup run by hand, or under another init — every
// method is a no-op. The zero value is a disabled Notifier. Methods are safe
// for concurrent use.
type Notifier struct {
	enabled  bool
	watchdog time.Duration // WATCHDOG_USEC; 0: no watchdog
}

// NewNotifier reads the environment once. A malformed WATCHDOG_USEC is
// returned as an error together with a Notifier whose watchdog is off (the
// rest still works): log it, since systemd will then kill the service.
func NewNotifier() (*Notifier, error) {
	n := &Notifier{enabled: os.Getenv("NOTIFY_SOCKET") != ""}
	if !n.enabled {
		return n, nil
	}
	// WATCHDOG_PID other than ours (an inherited environment) yields 0.
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		return n, fmt.Errorf("systemd watchdog: %w", err)
	}
	n.watchdog = d
	return n, nil
}

// Enabled reports whether a service manager listens.
func (n *Notifier) Enabled() bool { return n != nil && n.enabled }

// WatchdogInterval is the manager's watchdog timeout (WatchdogSec), or 0
// when there is no watchdog.
func (n *Notifier) WatchdogInterval() time.Duration {
	if !n.Enabled() {
		return 0
	}
	return n.watchdog
}

// Ready tells the manager that start-up finished (READY=1): systemctl start
// returns and units ordered after m3sup start.
func (n *Notifier) Ready() error { return n.send(daemon.SdNotifyReady) }

// Status sets the one-line status shown by `systemctl status m3sup`.
func (n *Notifier) Status(msg string) error {
	return n.send("STATUS=" + strings.Join(strings.Fields(msg), " "))
}

// Stopping tells the manager that m3sup is shutting down (STOPPING=1).
func (n *Notifier) Stopping() error { return n.send(daemon.SdNotifyStopping) }

// Watchdog keeps the manager's watchdog fed: every half WatchdogSec it sends
// WATCHDOG=1 if alive() reports true, and stays silent otherwise, so a
// daemon that stopped making progress is killed and restarted by systemd.
// It blocks until ctx is done and returns nil — a run.Group actor. Without
// a watchdog it just waits for ctx.
func (n *Notifier) Watchdog(ctx context.Context, alive func() bool) error {
	interval := n.WatchdogInterval() / 2
	if interval <= 0 {
		<-ctx.Done()
		return nil
	}
	ping := func() {
		if alive() {
			_ = n.send(daemon.SdNotifyWatchdog) // the next tick retries
		}
	}
	ping()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			ping()
		}
	}
}

func (n *Notifier) send(state string) error {
	if !n.Enabled() {
		return nil
	}
	if _, err := daemon.SdNotify(false, state); err != nil {
		return fmt.Errorf("sd_notify %s: %w", strings.SplitN(state, "=", 2)[0], err)
	}
	return nil
}
