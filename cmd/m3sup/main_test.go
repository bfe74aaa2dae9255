package main

import (
	"os"
	"testing"
)

// TestMain lets the test binary act as the m3sup binary (the way k0s tests
// re-run themselves as the supervised child): with M3SUP_TEST_MAIN=1 it runs
// main() on its arguments instead of the tests.
func TestMain(m *testing.M) {
	if os.Getenv("M3SUP_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}
