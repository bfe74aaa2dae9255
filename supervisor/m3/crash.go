package m3

import (
	"bytes"
	"regexp"
	"strings"
)

// crashHeader matches the first line the Go runtime prints when a program
// dies: a panic, a fatal error, or a signal it did not handle.
var crashHeader = regexp.MustCompile(`^(panic: |fatal error: |SIG[A-Z]+: )`)

// CrashReason reads the output of one run of a Go program (M3's components
// are Go) and, when it ended in a Go crash, returns one line a person can
// act on: the runtime's header line plus the first frame of the goroutine
// that crashed, for example
//
//	panic: runtime error: index out of range [61] with length 2 in storage.(*dbShardInsertQueue).Insert
//
// The frame is the first one that is not the runtime's own, or, after a
// re-panic, the one that called panic. ok is false when output holds no Go
// crash (a plain exit, a log.Fatal, a kill).
func CrashReason(output []byte) (reason string, ok bool) {
	lines := strings.Split(string(bytes.ReplaceAll(output, []byte("\r\n"), []byte("\n"))), "\n")
	h := -1
	for i := len(lines) - 1; i >= 0; i-- {
		if crashHeader.MatchString(lines[i]) {
			h = i
			break
		}
	}
	if h < 0 {
		return "", false
	}
	// "panic: …" followed by "fatal error: …" (a panic while panicking):
	// the first header of the block says what happened.
	for h > 0 && crashHeader.MatchString(lines[h-1]) {
		h--
	}
	header := strings.TrimSpace(lines[h])
	frames := crashFrames(lines[h+1:])
	if f := blameFrame(frames); f != "" {
		return header + " in " + f, true
	}
	return header, true
}

// crashFrames returns the function names of the first goroutine's stack
// after a crash header, shortened to their last path element.
func crashFrames(lines []string) []string {
	start := -1
	for i, l := range lines {
		if strings.HasPrefix(l, "goroutine ") && strings.HasSuffix(strings.TrimSpace(l), ":") {
			start = i + 1
			break
		}
		if i > 50 { // the goroutine header follows the crash header closely
			break
		}
	}
	if start < 0 {
		return nil
	}
	var out []string
	for _, l := range lines[start:] {
		if strings.TrimSpace(l) == "" || strings.HasPrefix(l, "goroutine ") {
			break
		}
		if strings.HasPrefix(l, "\t") || strings.HasPrefix(l, " ") || strings.HasPrefix(l, "created by ") || strings.HasPrefix(l, "...") {
			continue // a file:line, the creator, or elided frames
		}
		if name := funcName(l); name != "" {
			out = append(out, name)
		}
	}
	return out
}

// funcName turns a traceback line such as
// "github.com/m3db/m3/src/dbnode/storage.(*dbShard).Write(_, {…})" into
// "storage.(*dbShard).Write".
func funcName(line string) string {
	name := line
	for i := 0; i < len(line); i++ {
		if line[i] == '(' && (i+1 >= len(line) || line[i+1] != '*') {
			name = line[:i]
			break
		}
	}
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	return strings.TrimSpace(name)
}

// blameFrame picks the frame to name: after a re-panic the caller of the
// last panic, else the first frame outside the runtime, else the first.
func blameFrame(frames []string) string {
	if len(frames) == 0 {
		return ""
	}
	for i := len(frames) - 1; i >= 0; i-- {
		if frames[i] == "panic" && i+1 < len(frames) {
			return frames[i+1]
		}
	}
	for _, f := range frames {
		if !strings.HasPrefix(f, "runtime.") && f != "panic" {
			return f
		}
	}
	return frames[0]
}
