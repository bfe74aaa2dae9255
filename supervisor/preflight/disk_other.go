//go:build !linux

package preflight

import "errors"

func freeBytes(string) (uint64, error) { return 0, errors.New("not supported on this OS") }
