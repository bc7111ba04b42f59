"""One generation stream (one choice of one request) as the scheduler sees it.

Torch-free on purpose: the scheduler and block manager only do bookkeeping
on token ids and block numbers.
"""

from __future__ import annotations

import itertools
import time
from enum import Enum, auto

from .types import SamplingParams


class SequenceStatus(Enum):
    WAITING = auto()
    RUNNING = auto()
    FINISHED = auto()


class Sequence:
    # Process-wide so ids stay unique across schedulers (tests build many).
    _ids = itertools.count()

    def __init__(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams, index: int = 0) -> None:
        self.seq_id: int = next(Sequence._ids)
        self.request_id = request_id
        self.index = index  # choice index within its request (n > 1)
        self.params = params
        # Copied so later appends never alias the caller's list.
        self.token_ids: list[int] = [int(t) for t in prompt_token_ids]
        self.num_prompt_tokens = len(self.token_ids)
        # Positions whose KV is in the cache; reset to 0 on preemption because
        # the blocks holding it are given away.
        self.num_computed_tokens = 0
        self.block_table: list[int] = []
        self.status = SequenceStatus.WAITING
        self.arrival = time.monotonic()  # FCFS and preemption order

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def prompt_token_ids(self) -> list[int]:
        return self.token_ids[: self.num_prompt_tokens]

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def last_token_id(self) -> int:
        return self.token_ids[-1]

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    def append_token(self, token_id: int) -> None:
        self.token_ids.append(int(token_id))

    def __repr__(self) -> str:
        return (
            f"Sequence(id={self.seq_id}, request={self.request_id!r}, index={self.index}, "
            f"status={self.status.name}, tokens={self.num_tokens}, computed={self.num_computed_tokens}, "
            f"blocks={self.block_table})"
        )
