"""The engine must stay usable from plain Python: no Django, and cheap types."""

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_types_and_detokenizer_import_neither_torch_nor_django():
    code = (
        "import sys, inference.engine, inference.engine.types, inference.engine.detokenizer;"
        "bad = [m for m in ('torch', 'transformers', 'django') if m in sys.modules];"
        "sys.exit(repr(bad) if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr


def test_no_engine_module_imports_django():
    code = (
        "import sys, inference.engine.engine, inference.engine.convert, inference.engine.tiny;"
        "sys.exit('django imported' if 'django' in sys.modules else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
