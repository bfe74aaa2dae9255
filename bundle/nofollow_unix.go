//go:build unix

package bundle

import "syscall"

// noFollow makes opening a symlink fail instead of following it.
const noFollow = syscall.O_NOFOLLOW

// nonBlock makes opening a FIFO return at once instead of waiting for a
// writer, so that its type can be checked and refused.
const nonBlock = syscall.O_NONBLOCK
