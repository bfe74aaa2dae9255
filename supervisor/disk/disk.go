package disk

import (
	"fmt"
	"strings"
)

// Usage is the filesystem holding a path, as statfs reports it. FreeBytes
// is what an unprivileged writer may still use (f_bavail): on ext4 the
// blocks reserved for root are neither free nor used here.
type Usage struct {
	Path       string `json:"path"`
	SizeBytes  uint64 `json:"sizeBytes"`
	UsedBytes  uint64 `json:"usedBytes"`
	FreeBytes  uint64 `json:"freeBytes"`
	Inodes     uint64 `json:"inodes"` // 0: the filesystem has no inode limit (btrfs)
	UsedInodes uint64 `json:"usedInodes"`
	FreeInodes uint64 `json:"freeInodes"`
}

// FreePercent is the share of the filesystem still free, 0-100.
func (u Usage) FreePercent() float64 {
	if u.SizeBytes == 0 {
		return 0
	}
	return 100 * float64(u.FreeBytes) / float64(u.SizeBytes)
}

// FreeInodesPercent is the share of inodes still free, 0-100; 100 when the
// filesystem has no inode limit.
func (u Usage) FreeInodesPercent() float64 {
	if u.Inodes == 0 {
		return 100
	}
	return 100 * float64(u.FreeInodes) / float64(u.Inodes)
}

// Level is Judge's verdict.
type Level string

// Levels, from good to bad.
const (
	LevelOK   Level = "ok"
	LevelLow  Level = "low"  // below the warning threshold
	LevelFull Level = "full" // nearly full: below the failure threshold
)

// Thresholds say when free space is low and when nearly full. Free space
// (or free inodes) below either the percentage or the byte count of a
// level reaches that level; a zero field is off. The byte counts apply to
// bytes only; the percentages to bytes and to inodes.
type Thresholds struct {
	WarnFreePercent float64
	WarnFreeBytes   uint64
	FailFreePercent float64
	FailFreeBytes   uint64
}

// Defaults: warn below 10 % or 2 GiB free, fail below 2 % or 256 MiB.
const (
	DefaultWarnFreePercent = 10
	DefaultWarnFreeBytes   = 2 << 30
	DefaultFailFreePercent = 2
	DefaultFailFreeBytes   = 256 << 20
)

// DefaultThresholds returns the default thresholds.
func DefaultThresholds() Thresholds {
	return Thresholds{WarnFreePercent: DefaultWarnFreePercent, WarnFreeBytes: DefaultWarnFreeBytes,
		FailFreePercent: DefaultFailFreePercent, FailFreeBytes: DefaultFailFreeBytes}
}

// Judge says how full u is and why, in one line ("" when ok).
func Judge(u Usage, t Thresholds) (Level, string) {
	if why := below(u, t.FailFreePercent, t.FailFreeBytes); why != "" {
		return LevelFull, "nearly full: " + why
	}
	if why := below(u, t.WarnFreePercent, t.WarnFreeBytes); why != "" {
		return LevelLow, "low: " + why
	}
	return LevelOK, ""
}

// below names what of u is below pct percent or minBytes ("" when nothing).
func below(u Usage, pct float64, minBytes uint64) string {
	var why []string
	if (pct > 0 && u.SizeBytes > 0 && u.FreePercent() < pct) || u.FreeBytes < minBytes {
		w := fmt.Sprintf("%s free of %s (%.1f%%), threshold", Bytes(u.FreeBytes), Bytes(u.SizeBytes), u.FreePercent())
		if pct > 0 {
			w += fmt.Sprintf(" %g%%", pct)
		}
		if minBytes > 0 {
			if pct > 0 {
				w += " or"
			}
			w += " " + Bytes(minBytes)
		}
		why = append(why, w)
	}
	if pct > 0 && u.Inodes > 0 && u.FreeInodesPercent() < pct {
		why = append(why, fmt.Sprintf("%d of %d inodes free (%.1f%%), threshold %g%%", u.FreeInodes, u.Inodes, u.FreeInodesPercent(), pct))
	}
	return strings.Join(why, "; ")
}

// Bytes formats n in binary units ("1.5 GiB").
func Bytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
