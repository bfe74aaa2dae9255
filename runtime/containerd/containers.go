package containerd

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"syscall"
	"time"

	tasksapi "github.com/containerd/containerd/api/services/tasks/v1"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	goruntime "github.com/m3sup/m3sup/runtime"
)

// Run creates the container and its task and starts it. Its stdout and
// stderr are appended to spec.LogPath. A container with the same ID must not
// exist: the error then wraps errdefs.ErrAlreadyExists.
func (r *Runtime) Run(ctx context.Context, spec goruntime.Spec) (_ goruntime.Status, retErr error) {
	ctx = r.nsCtx(ctx)
	if err := validateSpec(spec); err != nil {
		return goruntime.Status{}, fmt.Errorf("run container %q: invalid spec: %w", spec.ID, err)
	}
	if err := checkNoFile(spec.NoFile); err != nil {
		return goruntime.Status{}, fmt.Errorf("run container %q: %w", spec.ID, err)
	}
	c, err := r.current()
	if err != nil {
		return goruntime.Status{}, fmt.Errorf("run container %q: %w", spec.ID, err)
	}
	// Host-directory rootfs (release binaries) or an image's snapshot.
	ctrOpts := []client.NewContainerOpts{client.WithNewSpec(specOpts(spec)...)}
	if spec.Image == "" {
		if err := prepareRootFS(spec.RootFS); err != nil {
			return goruntime.Status{}, fmt.Errorf("run container %q: prepare rootfs: %w", spec.ID, err)
		}
	} else {
		if _, err := c.ContainerService().Get(ctx, spec.ID); err == nil {
			return goruntime.Status{}, fmt.Errorf("create container %q: %w", spec.ID, errdefs.ErrAlreadyExists)
		}
		img, err := imageForRun(ctx, c, spec.Image)
		if err != nil {
			return goruntime.Status{}, fmt.Errorf("run container %q: %w", spec.ID, err)
		}
		if ctrOpts, err = imageContainerOpts(ctx, c, spec, img); err != nil {
			return goruntime.Status{}, fmt.Errorf("run container %q: %w", spec.ID, err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(spec.LogPath), 0o755); err != nil {
		return goruntime.Status{}, fmt.Errorf("run container %q: prepare log dir: %w", spec.ID, err)
	}

	labels := maps.Clone(spec.Labels)
	ctr, err := c.NewContainer(ctx, spec.ID, append(ctrOpts, client.WithContainerLabels(labels))...)
	if err != nil {
		return goruntime.Status{}, fmt.Errorf("create container %q: %w", spec.ID, err)
	}
	// Undo on failure, with a context that outlives a cancelled ctx.
	defer func() {
		if retErr != nil {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if t, err := ctr.Task(cctx, nil); err == nil {
				_, _ = t.Delete(cctx, client.WithProcessKill)
			}
			_ = ctr.Delete(cctx, client.WithSnapshotCleanup)
		}
	}()

	task, err := ctr.NewTask(ctx, cio.LogFile(spec.LogPath))
	if err != nil {
		return goruntime.Status{}, fmt.Errorf("create task of container %q: %w", spec.ID, err)
	}
	if err := task.Start(ctx); err != nil {
		return goruntime.Status{}, fmt.Errorf("start task of container %q: %w", spec.ID, err)
	}
	return goruntime.Status{
		ID:     spec.ID,
		Labels: labels,
		State:  goruntime.StateRunning,
		PID:    task.Pid(),
	}, nil
}

// Wait returns a channel that receives the exit of the container's task, then
// closes. It works for tasks created by an earlier process (adoption) and
// delivers at once if the task has already exited. If the connection to
// containerd is lost it waits for it to come back (Supervise reconnects);
// the Exit carries Err only when ctx is done, the Runtime is closed or the
// task vanished.
func (r *Runtime) Wait(ctx context.Context, id string) (<-chan goruntime.Exit, error) {
	ctx = r.nsCtx(ctx)
	c, err := r.current()
	if err != nil {
		return nil, fmt.Errorf("wait for container %q: %w", id, err)
	}
	// Fail now for a missing container or task rather than through the channel.
	if _, err := r.loadTask(ctx, c, id); err != nil {
		if errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("wait for container %q: %w: %w", id, goruntime.ErrNotFound, err)
		}
		return nil, fmt.Errorf("wait for container %q: %w", id, err)
	}

	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, fmt.Errorf("wait for container %q: %w", id, errClosed)
	}
	r.waiters.Add(1)
	r.mu.Unlock()

	out := make(chan goruntime.Exit, 1)
	go func() {
		defer r.waiters.Done()
		defer close(out)
		out <- r.waitLoop(ctx, id)
	}()
	return out, nil
}

// waitLoop waits for the task's exit across daemon restarts.
func (r *Runtime) waitLoop(ctx context.Context, id string) goruntime.Exit {
	var delay time.Duration
	for {
		changed := r.infoChanged()
		exit, err := r.waitOnce(ctx, id)
		if err == nil {
			return exit
		}
		switch {
		case ctx.Err() != nil:
			return goruntime.Exit{Err: fmt.Errorf("wait for container %q: %w", id, ctx.Err())}
		case r.isClosed():
			return goruntime.Exit{Err: fmt.Errorf("wait for container %q: %w", id, errClosed)}
		case errdefs.IsNotFound(err):
			return goruntime.Exit{Err: fmt.Errorf("wait for container %q: %w: %w", id, goruntime.ErrNotFound, err)}
		}
		// Connection trouble: retry when the connection changes or after backoff.
		delay = min(max(2*delay, restartMin), pingInterval)
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
		case <-r.done:
		case <-changed:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// waitOnce waits for the exit with the current client.
func (r *Runtime) waitOnce(ctx context.Context, id string) (goruntime.Exit, error) {
	c, err := r.current()
	if err != nil {
		return goruntime.Exit{}, err
	}
	task, err := r.loadTask(ctx, c, id)
	if err != nil {
		return goruntime.Exit{}, err
	}
	ch, err := task.Wait(ctx)
	if err != nil {
		return goruntime.Exit{}, native(err)
	}
	select {
	case st := <-ch:
		code, at, err := st.Result()
		if err != nil {
			return goruntime.Exit{}, native(err)
		}
		return goruntime.Exit{Code: code, At: at}, nil
	case <-ctx.Done():
		return goruntime.Exit{}, ctx.Err()
	}
}

func (r *Runtime) isClosed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

// loadTask loads the container's task without attaching IO (its output goes
// to a file). Missing container or task → error wrapping errdefs.ErrNotFound.
func (r *Runtime) loadTask(ctx context.Context, c *client.Client, id string) (client.Task, error) {
	ctr, err := c.LoadContainer(ctx, id)
	if err != nil {
		return nil, native(err)
	}
	task, err := ctr.Task(ctx, nil)
	if err != nil {
		return nil, native(err)
	}
	return task, nil
}

// Stop sends SIGTERM, waits up to timeout, then SIGKILLs; then deletes the
// task and the container. A missing container is not an error (zero Exit).
func (r *Runtime) Stop(ctx context.Context, id string, timeout time.Duration) (goruntime.Exit, error) {
	ctx = r.nsCtx(ctx)
	c, err := r.current()
	if err != nil {
		return goruntime.Exit{}, fmt.Errorf("stop container %q: %w", id, err)
	}
	ctr, err := c.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return goruntime.Exit{}, nil
	}
	if err != nil {
		return goruntime.Exit{}, fmt.Errorf("stop container %q: load: %w", id, err)
	}
	var exit goruntime.Exit
	task, err := ctr.Task(ctx, nil)
	switch {
	case errdefs.IsNotFound(err):
	case err != nil:
		return goruntime.Exit{}, fmt.Errorf("stop container %q: load task: %w", id, err)
	default:
		if exit, err = stopTask(ctx, task, timeout); err != nil {
			return goruntime.Exit{}, fmt.Errorf("stop container %q: %w", id, err)
		}
		if _, err := task.Delete(ctx); err != nil && !errdefs.IsNotFound(err) {
			return exit, fmt.Errorf("stop container %q: delete task: %w", id, err)
		}
	}
	if err := ctr.Delete(ctx, client.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return exit, fmt.Errorf("stop container %q: delete container: %w", id, err)
	}
	return exit, nil
}

// stopTask signals SIGTERM, then SIGKILL after timeout, and returns the exit.
func stopTask(ctx context.Context, task client.Task, timeout time.Duration) (goruntime.Exit, error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	exitC, err := task.Wait(wctx)
	if err != nil {
		return goruntime.Exit{}, fmt.Errorf("wait for task: %w", err)
	}
	if err := task.Kill(ctx, syscall.SIGTERM); err != nil && !errdefs.IsNotFound(err) && !errdefs.IsFailedPrecondition(err) {
		return goruntime.Exit{}, fmt.Errorf("send SIGTERM: %w", err)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var st client.ExitStatus
	select {
	case st = <-exitC:
	case <-ctx.Done():
		return goruntime.Exit{}, fmt.Errorf("wait for exit after SIGTERM: %w", ctx.Err())
	case <-timer.C:
		if err := task.Kill(ctx, syscall.SIGKILL, client.WithKillAll); err != nil && !errdefs.IsNotFound(err) && !errdefs.IsFailedPrecondition(err) {
			return goruntime.Exit{}, fmt.Errorf("send SIGKILL after %s: %w", timeout, err)
		}
		select {
		case st = <-exitC:
		case <-ctx.Done():
			return goruntime.Exit{}, fmt.Errorf("wait for exit after SIGKILL: %w", ctx.Err())
		}
	}
	code, at, err := st.Result()
	if err != nil {
		return goruntime.Exit{}, fmt.Errorf("wait for task: %w", err)
	}
	return goruntime.Exit{Code: code, At: at}, nil
}

// Remove SIGKILLs the task if it runs and deletes task and container. A
// missing container is not an error.
func (r *Runtime) Remove(ctx context.Context, id string) error {
	ctx = r.nsCtx(ctx)
	c, err := r.current()
	if err != nil {
		return fmt.Errorf("remove container %q: %w", id, err)
	}
	ctr, err := c.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove container %q: load: %w", id, err)
	}
	task, err := ctr.Task(ctx, nil)
	switch {
	case errdefs.IsNotFound(err):
	case err != nil:
		return fmt.Errorf("remove container %q: load task: %w", id, err)
	default:
		if _, err := task.Delete(ctx, client.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("remove container %q: kill and delete task: %w", id, err)
		}
	}
	if err := ctr.Delete(ctx, client.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("remove container %q: delete container: %w", id, err)
	}
	return nil
}

// List returns every container of the namespace with its labels and task state.
func (r *Runtime) List(ctx context.Context) ([]goruntime.Status, error) {
	ctx = r.nsCtx(ctx)
	c, err := r.current()
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	ctrs, err := c.ContainerService().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	resp, err := c.TaskService().List(ctx, &tasksapi.ListTasksRequest{})
	if err != nil {
		return nil, fmt.Errorf("list tasks: %w", native(err))
	}
	tasks := make(map[string]*tasktypes.Process, len(resp.Tasks))
	for _, p := range resp.Tasks {
		id := p.ID
		if id == "" {
			id = p.ContainerID
		}
		tasks[id] = p
	}
	out := make([]goruntime.Status, 0, len(ctrs))
	for _, ctr := range ctrs {
		out = append(out, statusOf(ctr.ID, ctr.Labels, tasks[ctr.ID]))
	}
	return out, nil
}

// Status returns one container's labels and task state; a missing container
// gives an error wrapping runtime.ErrNotFound.
func (r *Runtime) Status(ctx context.Context, id string) (goruntime.Status, error) {
	ctx = r.nsCtx(ctx)
	c, err := r.current()
	if err != nil {
		return goruntime.Status{}, fmt.Errorf("status of container %q: %w", id, err)
	}
	ctr, err := c.ContainerService().Get(ctx, id)
	if errdefs.IsNotFound(err) {
		return goruntime.Status{}, fmt.Errorf("status of container %q: %w", id, goruntime.ErrNotFound)
	}
	if err != nil {
		return goruntime.Status{}, fmt.Errorf("status of container %q: %w", id, err)
	}
	resp, err := c.TaskService().Get(ctx, &tasksapi.GetRequest{ContainerID: id})
	if err = native(err); err != nil && !errdefs.IsNotFound(err) {
		return goruntime.Status{}, fmt.Errorf("status of task %q: %w", id, err)
	}
	var p *tasktypes.Process
	if resp != nil {
		p = resp.Process
	}
	return statusOf(id, ctr.Labels, p), nil
}

// statusOf maps a container and its (possibly nil) task to a Status.
func statusOf(id string, labels map[string]string, p *tasktypes.Process) goruntime.Status {
	st := goruntime.Status{ID: id, Labels: maps.Clone(labels), State: goruntime.StateNoTask}
	if p == nil {
		return st
	}
	st.PID = p.Pid
	switch p.Status {
	case tasktypes.Status_RUNNING:
		st.State = goruntime.StateRunning
	case tasktypes.Status_CREATED:
		st.State = goruntime.StateCreated
	case tasktypes.Status_STOPPED:
		st.State = goruntime.StateStopped
		st.ExitCode = p.ExitStatus
		st.ExitedAt = timeOf(p.ExitedAt)
	case tasktypes.Status_PAUSED, tasktypes.Status_PAUSING:
		st.State = goruntime.StatePaused
	default:
		st.State = goruntime.StateUnknown
	}
	return st
}

func timeOf(ts *timestamppb.Timestamp) time.Time {
	if ts == nil || (ts.Seconds <= 0 && ts.Nanos == 0) {
		return time.Time{}
	}
	return ts.AsTime()
}

// native turns a gRPC error into containerd's error kinds (errdefs); other
// errors, already native, pass unchanged.
func native(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return errgrpc.ToNative(err)
	}
	return err
}

// nsCtx puts the Runtime's namespace on ctx (the client's default namespace
// reaches the daemon but not the client-side spec generation).
func (r *Runtime) nsCtx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, r.opts.Namespace)
}
