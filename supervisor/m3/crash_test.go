package m3

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The fixtures under testdata/crash are real output:
//   - index-out-of-range.log: M3 v1.5.0's m3dbnode on a VM whose RDTSCP
//     misreports CPU ids, on the first write of a new series (no guard);
//   - out-of-memory.log: M3 v1.5.0's m3dbnode under `ulimit -v 2000000`;
//   - exit-1.log: M3 v1.5.0's m3dbnode with an unknown config key;
//   - sigill.log: the Go runtime's SIGILL report from a program whose
//     sync.getCore executes an illegal instruction, as M3's does on a CPU
//     without RDTSCP (M3 issue #3659 shows the same form from m3dbnode);
//   - nil-pointer.log and repanic.log: small Go programs' crashes.
func TestCrashReason(t *testing.T) {
	for _, tc := range []struct {
		file   string
		want   string
		wantOK bool
	}{
		{"index-out-of-range.log", "panic: runtime error: index out of range [66] with length 2 in storage.(*dbShardInsertQueue).Insert", true},
		{"out-of-memory.log", "fatal error: out of memory in block.NewFetchBlockMetadataResultsPool.func1", true},
		{"sigill.log", "SIGILL: illegal instruction in sync.getCore", true},
		{"nil-pointer.log", "panic: runtime error: invalid memory address or nil pointer dereference in main.(*db).write", true},
		{"repanic.log", "panic: unexpected shard state [recovered, repanicked] in main.explicit", true},
		{"exit-1.log", "", false},
	} {
		t.Run(tc.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", "crash", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			got, ok := CrashReason(b)
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("CrashReason = %q, %v\nwant        %q, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

func TestCrashReasonEdges(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"empty", "", ""},
		{"header only", "panic: boom", "panic: boom"},
		{"header and goroutine without frames", "panic: boom\n\ngoroutine 1 [running]:\n", "panic: boom"},
		{"only runtime frames", "fatal error: all goroutines are asleep - deadlock!\n\ngoroutine 1 [chan receive]:\nruntime.gopark(0x0)\n\t/go/src/runtime/proc.go:1\n", "fatal error: all goroutines are asleep - deadlock! in runtime.gopark"},
		{"the last crash wins", "panic: old\n\ngoroutine 1 [running]:\nmain.old()\n\t/x.go:1\n\nstarted again\npanic: new\n\ngoroutine 2 [running]:\nmain.new()\n\t/x.go:2\n", "panic: new in main.new"},
		{"indented panic lines are not headers", "log: \tpanic: not a header\n", ""},
		{"CRLF", "panic: boom\r\n\r\ngoroutine 1 [running]:\r\nmain.f()\r\n\t/x.go:1\r\n", "panic: boom in main.f"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := CrashReason([]byte(tc.in))
			if got != tc.want || ok != (tc.want != "") {
				t.Errorf("CrashReason(%q) = %q, %v; want %q", tc.in, got, ok, tc.want)
			}
		})
	}
}

func FuzzCrashReason(f *testing.F) {
	for _, name := range []string{"index-out-of-range.log", "sigill.log", "repanic.log"} {
		if b, err := os.ReadFile(filepath.Join("testdata", "crash", name)); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("panic: x\n\ngoroutine 1 [running]:\n(((\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, ok := CrashReason(b)
		if ok != (r != "") || strings.Contains(r, "\n") {
			t.Fatalf("CrashReason = %q, %v", r, ok)
		}
	})
}
