//go:build unix

package regularfile

import "syscall"

const (
	// oNonBlock makes opening a FIFO return at once instead of waiting for
	// a writer, so that its type can be checked and refused.
	oNonBlock = syscall.O_NONBLOCK
	// oNoFollow makes opening a final symlink fail instead of following it.
	oNoFollow = syscall.O_NOFOLLOW
)
