//go:build tools

// Package tools pins the command hack/envtest builds from this module.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
