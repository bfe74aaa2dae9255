package logrotate

import (
	"slices"
	"strconv"
	"strings"
)

// Policy is how much of one component's log is kept.
type Policy struct {
	// MaxSize is the size in bytes at which the live file is rotated; 0
	// never rotates (the file grows without bound).
	MaxSize int64
	// MaxFiles is how many files are kept, the live one included (at least 1).
	MaxFiles int
	// Compress gzips rotated files from NAME.2 on.
	Compress bool
}

// File is one rotated file: NAME.<Index>, or NAME.<Index>.gz when Gzip.
type File struct {
	Index int
	Gzip  bool
}

// Name is f's file name beside the live file base.
func (f File) Name(base string) string {
	n := base + "." + strconv.Itoa(f.Index)
	if f.Gzip {
		n += ".gz"
	}
	return n
}

// ParseFile reports whether name is a rotated file of the live file base,
// and which.
func ParseFile(base, name string) (File, bool) {
	rest, ok := strings.CutPrefix(name, base+".")
	if !ok {
		return File{}, false
	}
	rest, gz := strings.CutSuffix(rest, ".gz")
	i, err := strconv.Atoi(rest)
	if err != nil || i < 1 || strconv.Itoa(i) != rest {
		return File{}, false
	}
	return File{Index: i, Gzip: gz}, true
}

// Rename moves rotated file From to To.
type Rename struct{ From, To File }

// Plan is what one check does, in order: Delete, Renames, then (when
// Rotate) copy the live file to NAME.1 and truncate it, then Compress.
type Plan struct {
	Delete   []File
	Renames  []Rename
	Rotate   bool
	Copy     bool   // keep the rotated content as NAME.1 (false: MaxFiles is 1)
	Compress []File // named as they are after the renames
}

// Empty reports whether the plan does nothing.
func (p Plan) Empty() bool {
	return !p.Rotate && len(p.Delete) == 0 && len(p.Renames) == 0 && len(p.Compress) == 0
}

// Decide plans one check of a live file of size bytes with the rotated
// files present. Files beyond the policy's count are deleted even without a
// rotation (the count was lowered); a file present both plain and gzipped
// (a compression cut short after its rename) keeps the gzipped one, which is
// complete. It is pure.
func Decide(p Policy, size int64, present []File) Plan {
	var plan Plan
	keep := max(p.MaxFiles, 1) - 1 // rotated files kept
	plan.Rotate = p.MaxSize > 0 && size >= p.MaxSize
	plan.Copy = plan.Rotate && keep > 0

	byIndex := map[int]File{}
	for _, f := range present {
		if old, dup := byIndex[f.Index]; dup {
			plain := f
			if !old.Gzip {
				plain = old
			}
			if !plain.Gzip { // one is plain, the other gzipped
				plan.Delete = append(plan.Delete, plain)
				byIndex[f.Index] = File{Index: f.Index, Gzip: true}
				continue
			}
		}
		byIndex[f.Index] = f
	}
	indexes := make([]int, 0, len(byIndex))
	for i := range byIndex {
		indexes = append(indexes, i)
	}
	slices.Sort(indexes)

	last := keep // highest index that may exist after this check
	if plan.Rotate {
		last = keep - 1 // everything shifts up by one
	}
	var kept []File
	for _, i := range indexes {
		f := byIndex[i]
		if i > last {
			plan.Delete = append(plan.Delete, f)
		} else {
			kept = append(kept, f)
		}
	}
	after := kept
	if plan.Rotate {
		after = nil
		for j := len(kept) - 1; j >= 0; j-- { // oldest first, so nothing is overwritten
			to := File{Index: kept[j].Index + 1, Gzip: kept[j].Gzip}
			plan.Renames = append(plan.Renames, Rename{From: kept[j], To: to})
			after = append(after, to)
		}
		slices.Reverse(after)
		if plan.Copy {
			after = append([]File{{Index: 1}}, after...)
		}
	}
	if p.Compress {
		for _, f := range after {
			if f.Index >= 2 && !f.Gzip {
				plan.Compress = append(plan.Compress, f)
			}
		}
	}
	return plan
}
