"""Deployment fixtures: `test_deploy.py` runs `turnout serve` in front of `turnout simulate`, as tests/e2e does."""

from tests.e2e.conftest import simulator, turnout

__all__ = ["simulator", "turnout"]
