"""The simulated OpenAI upstream: a real HTTP server on loopback for `turnout serve` without a key and the tests."""
