"""Fuzzing through the real server: OpenAI's spec (schemathesis), malformed HTTP on raw sockets, hostile bodies."""
