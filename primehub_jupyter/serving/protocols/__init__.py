"""Wire protocols of the model server: Seldon v1 (`seldon`) and KServe V2 (`v2`)."""
