"""The embedded engine: replicas are processes on this machine behind a local gateway."""
