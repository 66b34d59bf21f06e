"""The SLMDeployment v1alpha1 API."""
