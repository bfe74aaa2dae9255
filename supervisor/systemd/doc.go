// Package systemd makes m3sup a systemd service: it renders and installs the
// m3sup.service unit and the default config, and speaks the sd_notify
// protocol (READY, STATUS, STOPPING, the watchdog) from inside the daemon.
// Everything here works, or is a clear no-op, on a host without systemd.
package systemd
