package main

import (
	goruntime "runtime"
	"runtime/debug"
)

func buildInfo() map[string]string {
	info := map[string]string{"version": version, "go": goruntime.Version(), "platform": goruntime.GOOS + "/" + goruntime.GOARCH, "revision": "unknown"}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				info["revision"] = s.Value
			case "vcs.modified":
				info["modified"] = s.Value
			}
		}
	}
	return info
}
