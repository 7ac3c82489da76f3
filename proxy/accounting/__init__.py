"""What requests use, cost and take: the per-request tally, prices, metrics and the access log."""
