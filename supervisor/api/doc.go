// Package api is m3sup's local API: the wire types, the HTTP server on a
// root-only unix socket, and the client the CLI uses to reach the daemon.
package api
