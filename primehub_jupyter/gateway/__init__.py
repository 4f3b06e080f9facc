"""Local gateway: routes /deployment/<id>/ traffic to model-server replicas (own process)."""
