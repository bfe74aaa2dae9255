//go:build !unix

package bundle

// noFollow is unavailable here; callers also Lstat before opening.
const noFollow = 0
