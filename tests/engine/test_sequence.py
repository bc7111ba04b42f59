"""Sequence bookkeeping and the torch-free promise of the scheduler core."""

import subprocess
import sys
from pathlib import Path

import pytest

from inference.engine.config import EngineConfig
from inference.engine.sequence import Sequence, SequenceStatus
from inference.engine.types import SamplingParams

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_new_sequence_state():
    prompt = [5, 6, 7]
    seq = Sequence("req-1", prompt, SamplingParams(), index=2)
    assert seq.request_id == "req-1"
    assert seq.index == 2
    assert seq.status is SequenceStatus.WAITING
    assert not seq.is_finished
    assert seq.token_ids == [5, 6, 7]
    assert seq.num_tokens == 3
    assert seq.num_prompt_tokens == 3
    assert seq.prompt_token_ids == [5, 6, 7]
    assert seq.output_token_ids == []
    assert seq.num_output_tokens == 0
    assert seq.num_computed_tokens == 0
    assert seq.block_table == []
    assert seq.last_token_id == 7
    prompt.append(99)  # the caller's list is not aliased
    assert seq.token_ids == [5, 6, 7]


def test_append_token_grows_output_only():
    seq = Sequence("r", [1, 2], SamplingParams())
    seq.append_token(10)
    seq.append_token(11)
    assert seq.token_ids == [1, 2, 10, 11]
    assert seq.prompt_token_ids == [1, 2]
    assert seq.output_token_ids == [10, 11]
    assert seq.num_output_tokens == 2
    assert seq.num_tokens == 4
    assert seq.last_token_id == 11


def test_ids_unique_and_arrival_monotonic():
    seqs = [Sequence("r", [1], SamplingParams()) for _ in range(50)]
    assert len({s.seq_id for s in seqs}) == 50
    assert all(a.arrival <= b.arrival for a, b in zip(seqs, seqs[1:]))
    assert all(a.seq_id < b.seq_id for a, b in zip(seqs, seqs[1:]))


def test_is_finished_follows_status():
    seq = Sequence("r", [1], SamplingParams())
    seq.status = SequenceStatus.FINISHED
    assert seq.is_finished


def test_engine_config_defaults_and_validation():
    cfg = EngineConfig()
    assert (cfg.block_size, cfg.num_blocks, cfg.max_num_seqs) == (16, 0, 64)
    # No cache size: the runner sizes it (1 GiB on the CPU, free memory on a GPU). Prefix caching is on.
    assert cfg.max_num_batched_tokens == 1024 and cfg.max_model_len is None and cfg.kv_cache_bytes is None
    assert cfg.enable_prefix_caching
    with pytest.raises(ValueError):
        EngineConfig(block_size=0)
    with pytest.raises(ValueError):
        EngineConfig(num_blocks=-1)


def test_core_modules_import_no_torch_transformers_or_django():
    code = (
        "import sys, inference.engine.config, inference.engine.sequence,"
        " inference.engine.block_manager, inference.engine.scheduler;"
        "bad = [m for m in ('torch', 'transformers', 'django') if m in sys.modules];"
        "sys.exit(repr(bad) if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
