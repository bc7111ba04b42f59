import pytest


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> str:
    """A tiny random ChatML model directory, built once per test session (offline, ~1 s)."""
    # Imported here so suites that never use the model don't pay for torch.
    from inference.engine.tiny import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-model")))
