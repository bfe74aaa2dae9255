package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/config"
	"github.com/m3sup/m3sup/supervisor/disk"
)

// outputFlag adds -o/--output to a read command.
func outputFlag(cmd *cobra.Command, formats ...string) *string {
	return cmd.Flags().StringP("output", "o", "table", "output format: "+strings.Join(formats, ", "))
}

func checkOutput(o string, formats ...string) error {
	for _, f := range formats {
		if o == f {
			return nil
		}
	}
	return &exitError{code: 2, err: fmt.Errorf("--output %q: must be one of %s", o, strings.Join(formats, ", "))}
}

func newStatusCmd() *cobra.Command {
	var socket string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the daemon's status: etcd, containerd, components and M3",
		Long: `Show the daemon's status: whether M3 is ready on this host (and, when it is
not, which component keeps it from being ready and why), the data dir's
filesystem (DISK: free space and inodes, LOW or FULL with a warning below the
disk.* thresholds), etcd, containerd, the components with their last exit, M3's
placement and namespaces, and in a multi-host cluster every host.

Exits 0 when the daemon answers, ready or not (READY and -o json say which),
and 3 when no daemon answers, as systemctl status does for a unit that is not
active.`,
		Args: cobra.NoArgs,
	}
	out := outputFlag(cmd, "table", "json")
	cmd.Flags().StringVar(&socket, "socket", config.DefaultSocket, "local API unix socket of the daemon")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := checkOutput(*out, "table", "json"); err != nil {
			return err
		}
		st, err := api.NewClient(socket).Status(cmd.Context())
		if errors.Is(err, api.ErrNotRunning) {
			return &exitError{code: exitNotRunning, err: err}
		}
		if err != nil {
			return err
		}
		if *out == "json" {
			enc := json.NewEncoder(os.Stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(st)
		}
		printStatus(os.Stdout, st, time.Now())
		return nil
	}
	return cmd
}

// exitNotRunning is status's exit code when no daemon answers: systemctl
// status exits 3 for a unit that is not active (LSB: program is not running).
const exitNotRunning = 3

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// diskLevel is the DISK line's verdict: ok, LOW, FULL or unknown.
func diskLevel(d *api.DiskStatus) string {
	switch {
	case d.Error != "":
		return "unknown"
	case d.Level == "ok":
		return "ok"
	}
	return strings.ToUpper(d.Level)
}

// diskLine is the data dir's filesystem in one line, with the warning
// when it is low or nearly full.
func diskLine(d *api.DiskStatus) string {
	if d.Error != "" {
		return d.Path + ": " + d.Error
	}
	pct := 0.0
	if d.SizeBytes > 0 {
		pct = 100 * float64(d.FreeBytes) / float64(d.SizeBytes)
	}
	line := fmt.Sprintf("%s free of %s (%.0f%%), %d of %d inodes free at %s",
		disk.Bytes(d.FreeBytes), disk.Bytes(d.SizeBytes), pct, d.FreeInodes, d.Inodes, d.Path)
	if d.Message != "" {
		line += "; WARNING: " + d.Message
	}
	return line
}

func printStatus(w io.Writer, st api.Status, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	msg := st.Phase
	if st.Message != "" {
		msg += " (" + st.Message + ")"
	}
	fmt.Fprintf(tw, "NODE\t%s\tm3sup %s\n", st.Node, st.Version)
	if !st.Ready && st.Readiness.Reason != "" {
		msg = st.Readiness.Reason
	}
	fmt.Fprintf(tw, "READY\t%s\t%s\n", yesNo(st.Ready), msg)
	if g := st.CPUCoreGuard; g != nil {
		fmt.Fprintf(tw, "CPU GUARD\t%s\t%s\n", onOff(g.Guard), g.Detail())
	}
	if d := st.Disk; d != nil {
		fmt.Fprintf(tw, "DISK\t%s\t%s\n", diskLevel(d), diskLine(d))
	}
	role := "follower"
	if st.Etcd.Leader {
		role = "leader"
	}
	if st.Etcd.Role == "client" {
		role = "client only (no local member)"
	}
	etcdLine := fmt.Sprintf("%s\t%s, %s, %d member(s)", st.Etcd.State, st.Etcd.Endpoint, role, st.Etcd.Members)
	if st.Etcd.Error != "" {
		etcdLine += ", error: " + st.Etcd.Error
	}
	fmt.Fprintf(tw, "ETCD\t%s\n", etcdLine)
	conn := "disconnected"
	if st.Containerd.Connected {
		conn = "connected"
	}
	ctd := fmt.Sprintf("%s\t%s, %s, containerd %s, namespace %s", st.Containerd.Mode, st.Containerd.Address, conn, st.Containerd.Version, st.Containerd.Namespace)
	if st.Containerd.PID > 0 {
		ctd += fmt.Sprintf(", pid %d", st.Containerd.PID)
	}
	fmt.Fprintf(tw, "CONTAINERD\t%s\n", ctd)
	if c := st.Certs; c != nil {
		fmt.Fprintf(tw, "CERTS\t%s\n", certsLine(c, now))
		if c.Warning != "" {
			fmt.Fprintf(tw, "WARNING\t%s\n", c.Warning)
		}
	}
	tw.Flush()

	if c := st.Cluster; c != nil {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "HOST\tETCD\tROLES\tGROUP/WEIGHT\tENDPOINT\tDBNODE SPEC\tCOMPONENTS\tNOTE")
		for _, h := range c.Hosts {
			var notes []string
			if h.Name == c.ControllerLeader {
				notes = append(notes, "controller leader")
			}
			if c.PermitHeld && h.Name == c.PermitHolder {
				notes = append(notes, "holds the restart permit")
			}
			switch {
			case h.JoinURL != "":
				notes = append(notes, "serves joins at "+h.JoinURL)
			case h.HoldsCA:
				notes = append(notes, "holds the CA")
			}
			switch {
			case h.RemovedBy != "":
				notes = append(notes, "leaving: gone, removed by "+h.RemovedBy)
			case h.Leaving:
				notes = append(notes, "leaving")
			}
			ep := h.Endpoint
			if ep == "" {
				ep = "-"
			}
			group := h.IsolationGroup
			if group == "" {
				group = "-"
			}
			if h.Weight > 0 {
				group += "/" + strconv.FormatUint(uint64(h.Weight), 10)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.Name, h.EtcdRole, strings.Join(h.Roles, ","), group, ep,
				hostDBNode(h.DBNode), hostComponents(h.Components), strings.Join(notes, "; "))
		}
		tw.Flush()
		permit := "none"
		if c.PermitHeld {
			permit = c.PermitHolder
			if permit == "" {
				permit = "(unnamed holder)"
			}
		}
		fmt.Fprintf(w, "permit: %s\n", permit)
		if c.Error != "" {
			fmt.Fprintf(w, "cluster error: %s\n", c.Error)
		}
	}
	if r := st.Rollout; r != nil {
		if st.Cluster == nil {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "rollout: %s\n", r.Message)
	}
	if len(st.StateErrors) > 0 {
		fmt.Fprintln(w)
		for _, e := range st.StateErrors {
			fmt.Fprintf(w, "bad value in etcd: %s (revision %d): %s; running the last good value\n", e.Key, e.Revision, e.Error)
		}
	}

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "COMPONENT\tSTATE\tHEALTHY\tPID\tUPTIME\tRESTARTS\tVERSION\tNOTE")
	for _, c := range st.Components {
		pid, up := "-", "-"
		if c.PID > 0 {
			pid = fmt.Sprint(c.PID)
		}
		if c.State == "running" && !c.StartedAt.IsZero() {
			up = now.Sub(c.StartedAt).Round(time.Second).String()
		}
		note := c.Message
		if c.Adopted {
			note = "adopted"
		}
		switch {
		case c.LastExit != nil && c.State != "running":
			note = fmt.Sprintf("last exit %d; %s", c.LastExit.Code, c.Message)
		case c.LastExit != nil && c.LastReason == "crash" && c.LastExit.Reason != "":
			// Running again: how the last run ended still matters.
			note = fmt.Sprintf("last crash %s ago: %s", now.Sub(c.LastExit.At).Round(time.Second), c.LastExit.Reason)
		}
		if c.State == "crash-loop" || c.State == "backoff" {
			note = fmt.Sprintf("%s; next try in %s", note, c.BackoffDelay)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", c.Name, c.State, yesNo(c.Healthy), pid, up, c.Restarts, c.Version, note)
	}
	tw.Flush()

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	placement := "none"
	if st.M3.PlacementExists {
		placement = fmt.Sprintf("%d instance(s)", st.M3.Instances)
	}
	fmt.Fprintf(tw, "M3\t%s\tplacement: %s, nodes bootstrapped: %s\n", st.M3.Phase, placement, yesNo(st.M3.NodesBootstrapped))
	if len(st.M3.Shards) > 0 {
		states := make([]string, 0, len(st.M3.Shards))
		for s, n := range st.M3.Shards {
			states = append(states, fmt.Sprintf("%s=%d", s, n))
		}
		sort.Strings(states)
		fmt.Fprintf(tw, "SHARDS\t%s\n", strings.Join(states, " "))
	}
	if st.M3.Error != "" {
		fmt.Fprintf(tw, "M3 ERROR\t%s\n", st.M3.Error)
	}
	tw.Flush()
	if len(st.M3.Namespaces) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAMESPACE\tREADY")
		for _, ns := range st.M3.Namespaces {
			fmt.Fprintf(tw, "%s\t%s\n", ns.Name, yesNo(ns.Ready))
		}
		tw.Flush()
	}
}

// hostDBNode is a host's m3dbnode spec: version and revision, marked when
// it is the desired one.
func hostDBNode(d *api.HostDBNode) string {
	if d == nil || d.Revision == "" {
		return "-"
	}
	out := d.Version + " " + d.Revision
	if d.OnDesired {
		out += " (desired)"
	}
	return out
}

// hostComponents is a host's components: name, state and health.
func hostComponents(cs []api.HostComponent) string {
	if len(cs) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(cs))
	for _, c := range cs {
		h := "unhealthy"
		if c.Healthy {
			h = "healthy"
		}
		parts = append(parts, fmt.Sprintf("%s %s %s", c.Name, c.State, h))
	}
	return strings.Join(parts, ", ")
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// certsLine is the CERTS line of status: when the first of the host's
// certificates expires, and which.
func certsLine(c *api.CertsStatus, now time.Time) string {
	if c.EarliestExpiry.IsZero() {
		return "unknown, error: " + c.Error
	}
	line := fmt.Sprintf("earliest expiry %s (in %s)\t%s, %s, %d certificate(s)",
		c.EarliestExpiry.UTC().Format(time.RFC3339), c.EarliestExpiry.Sub(now).Round(time.Second), c.Path, c.CommonName, c.Count)
	if c.Error != "" {
		line += ", error: " + c.Error
	}
	return line
}
