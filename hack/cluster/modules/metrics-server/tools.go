//go:build tools

// Package tools pins the metrics-server command that hack/cluster/build-bins.sh builds.
package tools

import (
	_ "sigs.k8s.io/metrics-server/cmd/metrics-server"
)
