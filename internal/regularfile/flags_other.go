//go:build !unix

package regularfile

// Neither flag exists here; open checks a symlink with Lstat instead of
// oNoFollow.
const (
	oNonBlock = 0
	oNoFollow = 0
)
