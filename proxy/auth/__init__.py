"""Keys, limits and budgets: who may call, how often, and how much they may spend."""
