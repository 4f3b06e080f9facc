"""The Jupyter server extension: REST handlers over the service layer."""
