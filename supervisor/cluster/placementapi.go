package cluster

import (
	"context"

	"github.com/m3sup/m3sup/supervisor/m3"
)

// addInstance adds one instance; M3 refuses, 400, unless every shard is
// AVAILABLE.
func addInstance(ctx context.Context, c *m3.Client, in m3.Instance) error {
	return c.AddInstance(ctx, in)
}

// removeInstance removes one instance; its shards move to the others. M3
// answers 404 when the instance is not in the placement.
func removeInstance(ctx context.Context, c *m3.Client, id string) error {
	return c.RemoveInstance(ctx, id)
}
