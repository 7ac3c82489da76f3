"""The deployment's configuration: the policy file's sections, its loader, the settings, YAML with lines."""
