//go:build !linux

package disk

import "errors"

// Probe measures the filesystem holding path; only Linux is supported.
func Probe(string) (Usage, error) {
	return Usage{}, errors.New("disk: statfs not supported on this OS")
}
