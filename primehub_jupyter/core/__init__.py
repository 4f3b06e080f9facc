"""The domain core: the deployment object, configuration, errors and the service layer."""
