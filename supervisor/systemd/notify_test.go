package systemd

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// listenNotify creates a real unix datagram socket, points NOTIFY_SOCKET at
// it and returns the datagrams as they arrive.
func listenNotify(t *testing.T) (*net.UnixConn, <-chan datagram) {
	t.Helper()
	dir, err := os.MkdirTemp("", "sdn") // short: sun_path holds 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("NOTIFY_SOCKET", path)
	ch := make(chan datagram, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(ch)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			ch <- datagram{msg: string(buf[:n]), at: time.Now()}
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return conn, ch
}

type datagram struct {
	msg string
	at  time.Time
}

func next(t *testing.T, ch <-chan datagram, within time.Duration) datagram {
	t.Helper()
	select {
	case d := <-ch:
		return d
	case <-time.After(within):
		t.Fatalf("no datagram within %s", within)
		return datagram{}
	}
}

func TestNotifierMessages(t *testing.T) {
	_, ch := listenNotify(t)
	t.Setenv("WATCHDOG_USEC", "")
	n, err := NewNotifier()
	if err != nil || !n.Enabled() || n.WatchdogInterval() != 0 {
		t.Fatalf("notifier %+v err %v", n, err)
	}
	steps := []struct {
		send func() error
		want string
	}{
		{func() error { return n.Status("starting-etcd: http://127.0.0.1:2379") }, "STATUS=starting-etcd: http://127.0.0.1:2379"},
		{func() error { return n.Status("two\nlines") }, "STATUS=two lines"},
		{n.Ready, "READY=1"},
		{n.Stopping, "STOPPING=1"},
	}
	for _, s := range steps {
		if err := s.send(); err != nil {
			t.Fatal(err)
		}
		if got := next(t, ch, 5*time.Second).msg; got != s.want {
			t.Errorf("got %q, want %q", got, s.want)
		}
	}
}

func TestNotifierDisabled(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "200000")
	for name, n := range map[string]*Notifier{"env": must(NewNotifier()), "zero": {}, "nil": nil} {
		t.Run(name, func(t *testing.T) {
			if n.Enabled() || n.WatchdogInterval() != 0 {
				t.Error("enabled without NOTIFY_SOCKET")
			}
			if err := errors.Join(n.Ready(), n.Status("x"), n.Stopping()); err != nil {
				t.Error(err)
			}
			assertWatchdogWaits(t, n)
		})
	}
}

func must(n *Notifier, err error) *Notifier {
	if err != nil {
		panic(err)
	}
	return n
}

// assertWatchdogWaits checks that Watchdog blocks until ctx is done, then
// returns nil, and never asks alive.
func assertWatchdogWaits(t *testing.T, n *Notifier) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ret := make(chan error, 1)
	var asked atomic.Bool
	go func() { ret <- n.Watchdog(ctx, func() bool { asked.Store(true); return true }) }()
	select {
	case err := <-ret:
		t.Fatalf("Watchdog returned before ctx was done: %v", err)
	case <-time.After(50 * time.Millisecond): // a bounded check that it blocks
	}
	cancel()
	select {
	case err := <-ret:
		if err != nil {
			t.Errorf("Watchdog: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Watchdog did not return after cancel")
	}
	if asked.Load() {
		t.Error("alive consulted with no watchdog")
	}
}

func TestWatchdogEnv(t *testing.T) {
	tests := []struct {
		usec, pid string
		want      time.Duration
		wantErr   bool
	}{
		{"", "", 0, false},
		{"200000", "", 200 * time.Millisecond, false},
		{"60000000", strconv.Itoa(os.Getpid()), time.Minute, false},
		{"200000", strconv.Itoa(os.Getpid() + 1), 0, false}, // someone else's watchdog
		{"soon", "", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.usec+"/"+tt.pid, func(t *testing.T) {
			listenNotify(t)
			t.Setenv("WATCHDOG_USEC", tt.usec)
			t.Setenv("WATCHDOG_PID", tt.pid)
			n, err := NewNotifier()
			if (err != nil) != tt.wantErr || n == nil || n.WatchdogInterval() != tt.want {
				t.Errorf("interval %v err %v; want %v err=%v", n.WatchdogInterval(), err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestWatchdogPingsOnlyWhileAlive(t *testing.T) {
	conn, ch := listenNotify(t)
	t.Setenv("WATCHDOG_USEC", "200000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	n, err := NewNotifier()
	if err != nil || n.WatchdogInterval() != 200*time.Millisecond {
		t.Fatalf("interval %v err %v", n.WatchdogInterval(), err)
	}
	const interval = 100 * time.Millisecond

	var alive atomic.Bool
	alive.Store(true)
	wentQuiet := make(chan struct{}) // closed the first time alive() says false
	var quiet atomic.Bool
	aliveFn := func() bool {
		if alive.Load() {
			return true
		}
		if quiet.CompareAndSwap(false, true) {
			close(wentQuiet)
		}
		return false
	}
	ctx, cancel := context.WithCancel(context.Background())
	ret := make(chan error, 1)
	go func() { ret <- n.Watchdog(ctx, aliveFn) }()

	// While alive: pings about every interval.
	var times []time.Time
	for len(times) < 6 {
		d := next(t, ch, 10*interval)
		if d.msg != "WATCHDOG=1" {
			t.Fatalf("got %q", d.msg)
		}
		times = append(times, d.at)
	}
	for i := 1; i < len(times); i++ {
		if gap := times[i].Sub(times[i-1]); gap < interval/2 || gap > 5*interval {
			t.Errorf("ping %d came %v after the previous; want about %v", i, gap, interval)
		}
	}
	if avg := times[len(times)-1].Sub(times[0]) / time.Duration(len(times)-1); avg < 3*interval/4 || avg > 2*interval {
		t.Errorf("average gap %v; want about %v", avg, interval)
	}

	// Not alive: once the watchdog has seen it, no more pings. A marker
	// datagram sent after that point orders the queue: anything before it
	// was sent while still alive.
	alive.Store(false)
	select {
	case <-wentQuiet:
	case <-time.After(10 * interval):
		t.Fatal("alive() not consulted after it flipped")
	}
	if _, err := conn.WriteToUnix([]byte("MARK"), conn.LocalAddr().(*net.UnixAddr)); err != nil {
		t.Fatal(err)
	}
	for next(t, ch, 10*interval).msg != "MARK" {
	}
	select {
	case d := <-ch:
		t.Fatalf("got %q after alive() turned false", d.msg)
	case <-time.After(3*interval + interval/2):
	}

	// Alive again: pings resume.
	alive.Store(true)
	if d := next(t, ch, 10*interval); d.msg != "WATCHDOG=1" {
		t.Fatalf("got %q", d.msg)
	}

	cancel()
	select {
	case err := <-ret:
		if err != nil {
			t.Errorf("Watchdog: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Watchdog did not return after cancel")
	}
}
