"""Fixtures the security suite shares with the integration suite."""

from integration.test_limits import limited  # noqa: F401  (a fixture: pytest finds it here)
