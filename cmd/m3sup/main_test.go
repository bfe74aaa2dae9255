package main

import (
	"os"
	"testing"
)

// TestMain lets the test binary act as the m3sup binary (the way k0s tests
// re-run themselves as the supervised child): with M3SUP_TEST_MAIN=1 it runs
// main() on its arguments instead of the tests. The tests here use it for
// what needs no root and no M3 (broken configs, forged bundles, refused
// flags); the end-to-end tests, in e2e/, run a built m3sup instead.
func TestMain(m *testing.M) {
	if os.Getenv("M3SUP_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}
