// Package regularfile opens a file for reading only if it is a regular file,
// and names what it is when it is not.
//
// Three things make this more than os.Open followed by a check:
//
//   - Opening a FIFO for reading blocks until a writer opens the other end,
//     which may be never: a config file, key or bundle path that names a FIFO
//     would hang the command. The open passes O_NONBLOCK, so it returns at
//     once and the FIFO is then refused by its type.
//   - OpenNoFollow passes O_NOFOLLOW, so a final symlink is refused instead
//     of followed, for callers that must not be redirected by a planted link
//     (the artifact cache). Open follows symlinks, as os.Open does.
//   - The type is checked with Stat on the opened file, never on the path
//     before the open, so the file cannot be swapped between the check and
//     the read.
//
// Every error is an *fs.PathError naming the path; a refusal wraps a
// *NotRegularError, whose message names the type: "open /x: not a regular
// file (a FIFO)". A missing file is fs.ErrNotExist, as with os.Open.
//
// Outside unix there is no O_NONBLOCK or O_NOFOLLOW: OpenNoFollow then
// checks the path with Lstat before opening, which narrows the window for a
// swapped-in symlink but cannot close it.
//
// Import rule: standard library only; any m3sup package may use it.
package regularfile
