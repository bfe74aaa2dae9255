package logrotate

import (
	"reflect"
	"testing"
)

func TestParseFile(t *testing.T) {
	for _, tc := range []struct {
		name string
		want File
		ok   bool
	}{
		{"a.log.1", File{Index: 1}, true},
		{"a.log.12.gz", File{Index: 12, Gzip: true}, true},
		{"a.log", File{}, false},
		{"a.log.0", File{}, false},
		{"a.log.01", File{}, false},
		{"a.log.1.rotating", File{}, false},
		{"a.log.x", File{}, false},
		{"b.log.1", File{}, false},
	} {
		got, ok := ParseFile("a.log", tc.name)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseFile(%q) = %v, %v; want %v, %v", tc.name, got, ok, tc.want, tc.ok)
		}
		if ok && got.Name("a.log") != tc.name {
			t.Errorf("Name round trip: %q != %q", got.Name("a.log"), tc.name)
		}
	}
}

func TestDecide(t *testing.T) {
	f := func(i int) File { return File{Index: i} }
	gz := func(i int) File { return File{Index: i, Gzip: true} }
	pol := Policy{MaxSize: 100, MaxFiles: 3, Compress: true}
	for _, tc := range []struct {
		name    string
		p       Policy
		size    int64
		present []File
		want    Plan
	}{
		{name: "small: nothing", p: pol, size: 99, want: Plan{}},
		{name: "disabled", p: Policy{MaxFiles: 3}, size: 1 << 40, want: Plan{}},
		{name: "first rotation", p: pol, size: 100, want: Plan{Rotate: true, Copy: true}},
		{name: "second: .1 shifts and is compressed", p: pol, size: 150, present: []File{f(1)},
			want: Plan{Rotate: true, Copy: true, Renames: []Rename{{f(1), f(2)}}, Compress: []File{f(2)}}},
		{name: "full: the oldest falls off", p: pol, size: 100, present: []File{gz(2), f(1)},
			want: Plan{Delete: []File{gz(2)}, Rotate: true, Copy: true, Renames: []Rename{{f(1), f(2)}}, Compress: []File{f(2)}}},
		{name: "no compress", p: Policy{MaxSize: 100, MaxFiles: 3}, size: 100, present: []File{f(1)},
			want: Plan{Rotate: true, Copy: true, Renames: []Rename{{f(1), f(2)}}}},
		{name: "count lowered: extras go without a rotation", p: pol, size: 10, present: []File{f(1), gz(2), gz(3), gz(4)},
			want: Plan{Delete: []File{gz(3), gz(4)}}},
		{name: "a compression cut short: the gzipped copy stays", p: pol, size: 10, present: []File{f(2), gz(2), f(1)},
			want: Plan{Delete: []File{f(2)}}},
		{name: "an uncompressed old file is compressed", p: pol, size: 10, present: []File{f(1), f(2)},
			want: Plan{Compress: []File{f(2)}}},
		{name: "one file: truncate only", p: Policy{MaxSize: 100, MaxFiles: 1}, size: 100, present: []File{f(1)},
			want: Plan{Delete: []File{f(1)}, Rotate: true}},
		{name: "gaps shift oldest first", p: Policy{MaxSize: 100, MaxFiles: 5}, size: 100, present: []File{f(1), f(3)},
			want: Plan{Rotate: true, Copy: true, Renames: []Rename{{f(3), f(4)}, {f(1), f(2)}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Decide(tc.p, tc.size, tc.present)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Decide = %+v\nwant     %+v", got, tc.want)
			}
		})
	}
}

// TestDecideSteps rotates again and again with the plan applied to a
// model of the directory: the count never exceeds MaxFiles.
func TestDecideSteps(t *testing.T) {
	p := Policy{MaxSize: 10, MaxFiles: 4, Compress: true}
	var present []File
	for step := 0; step < 10; step++ {
		plan := Decide(p, 10, present)
		if !plan.Rotate || !plan.Copy {
			t.Fatalf("step %d: no rotation: %+v", step, plan)
		}
		set := map[File]bool{}
		for _, f := range present {
			set[f] = true
		}
		for _, f := range plan.Delete {
			delete(set, f)
		}
		for _, r := range plan.Renames {
			if set[r.To] {
				t.Fatalf("step %d: rename %v over an existing file", step, r)
			}
			delete(set, r.From)
			set[r.To] = true
		}
		set[File{Index: 1}] = true
		for _, f := range plan.Compress {
			delete(set, f)
			set[File{Index: f.Index, Gzip: true}] = true
		}
		present = present[:0]
		for f := range set {
			present = append(present, f)
		}
		if want := min(step+1, p.MaxFiles-1); len(present) != want {
			t.Fatalf("step %d: %d rotated files %v, want %d", step, len(present), present, want)
		}
		for _, f := range present {
			if f.Gzip != (f.Index >= 2) {
				t.Fatalf("step %d: %v: only .2 and older are compressed", step, f)
			}
		}
	}
}
