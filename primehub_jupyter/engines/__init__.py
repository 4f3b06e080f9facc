"""Engines: where deployments run (the embedded local engine or Kubernetes)."""
