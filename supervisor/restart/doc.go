// Package restart decides when a crashed component runs again: exponential
// backoff with jitter, reset after a stable run, and a crash-loop verdict.
// It is pure: callers pass the time and the exit; nothing here sleeps.
package restart
