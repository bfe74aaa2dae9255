//go:build !unix

package atomicfile

// noFollow is unavailable here; Commit also Lstats before opening.
const noFollow = 0
