// Command m3sup turns a Linux host into a self-running member of an M3
// time-series cluster. Subcommands parse flags and call packages; no logic
// lives here. This is the only place that calls os.Exit.
package main
