"""The `turnout` command line: serve, simulate, check, explain, test, index.

Nothing in the server imports it.
"""
