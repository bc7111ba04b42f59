"""Fixtures shared across test folders, registered once per run by tests/conftest.py (pytest_plugins).

A fixture imported into a test module or conftest is registered again there, and a session-scoped one then
runs once per import: import the helpers of these modules if needed, never their fixtures. Nothing here
imports Django at module level: bench/gpu.sh runs the engine's tests with `-p no:django`.
"""
