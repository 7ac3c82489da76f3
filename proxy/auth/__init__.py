"""keys, limits, budgets."""
