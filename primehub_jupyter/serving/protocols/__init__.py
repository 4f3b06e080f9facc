"""Wire protocols spoken by the model server (Seldon v1 today; KServe V2 later)."""
