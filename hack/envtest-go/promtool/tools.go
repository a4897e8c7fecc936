//go:build tools

// Package tools pins the command hack/envtest builds from this module.
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
