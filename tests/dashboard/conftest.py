import pytest

from core.counters import get_counters


@pytest.fixture
def tiny_models(settings, models_file):
    """The playground tests: the tiny models listed for the test (MODELS_FILE), the rate-limit windows emptied
    before and after it (organization ids repeat from one test to the next)."""
    settings.MODELS_FILE = models_file
    get_counters().clear()
    yield
    get_counters().clear()
