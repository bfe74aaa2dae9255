//go:build race

package e2etest

// Race is true when this binary was built with -race; the e2e suite then
// builds m3sup with -race too.
const Race = true
