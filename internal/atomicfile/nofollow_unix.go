//go:build unix

package atomicfile

import "syscall"

// noFollow makes opening a symlink fail instead of following it.
const noFollow = syscall.O_NOFOLLOW
