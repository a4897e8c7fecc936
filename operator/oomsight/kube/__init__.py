"""Kubernetes adapters: CRD names, event recorder, report writer, pod cache."""
