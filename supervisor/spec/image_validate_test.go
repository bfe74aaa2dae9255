package spec_test

import (
	"strings"
	"testing"
)

func TestValidateImages(t *testing.T) {
	c := validCluster()
	c.DBNode.Image = "quay.io/m3db/m3dbnode:v1.5.0"
	c.Coordinator.Image = "127.0.0.1:5000/m3db/m3coordinator@sha256:" + strings.Repeat("ab", 32)
	if err := c.Validate(); err != nil {
		t.Fatalf("valid images rejected: %v", err)
	}
	c.DBNode.Image = "m3dbnode:latest"
	c.Coordinator.Image = "quay.io/m3db/m3coordinator"
	paths, _ := fieldErrors(t, c.Validate())
	if strings.Join(paths, ",") != "dbnode.image,coordinator.image" {
		t.Fatalf("error paths %v", paths)
	}
}
