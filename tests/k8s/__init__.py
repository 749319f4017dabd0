"""Tests on a real single-node Kubernetes cluster (make k8s-up; make k8s-e2e)."""
