// Package atomicfile writes files so that a crash or power loss leaves
// either the old content or the new one, never a torn file, and the new
// name survives a reboot once the call returns.
//
// Every write goes to a temporary file beside the target (same directory,
// so the rename never crosses a filesystem), which is written, chmod'ed and
// fsynced, then renamed over the target; finally the directory is fsynced,
// which is what makes the rename itself durable. google/renameio does the
// first part but leaves the directory unsynced, hence this package.
//
// Import rule: standard library only; any m3sup package may use it.
package atomicfile
