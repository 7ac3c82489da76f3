"""The response cache: the store protocol and its backends, keys, locks, the semantic match, the lookup."""
