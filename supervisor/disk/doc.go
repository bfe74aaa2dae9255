// Package disk measures the filesystem that holds m3sup's data dir and
// judges it against thresholds: Usage is what statfs says, Judge is a pure
// verdict (ok, low, full), and Monitor is the daemon's actor that samples
// the data dir every few seconds, keeps the last sample for status and
// metrics, and logs each change of verdict once.
//
// It imports the standard library, golang.org/x/sys/unix and zap only.
package disk
