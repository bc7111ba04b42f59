"""One generation stream (one choice of one request) as the scheduler sees it.

Torch-free on purpose: the scheduler and block manager only do bookkeeping
on token ids and block numbers.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from array import array
from enum import Enum, auto

from .types import SamplingParams


def chain_hash(parent: bytes, token_ids) -> bytes:
    """The key of a full block: its tokens and, through `parent`, everything before them."""
    return hashlib.blake2b(parent + array("q", token_ids).tobytes(), digest_size=16).digest()


def root_hash(salt: str | None) -> bytes:
    """The chain's start: requests with different salts never share a block."""
    return hashlib.blake2b((salt or "").encode(), digest_size=16).digest()


class SequenceStatus(Enum):
    WAITING = auto()
    RUNNING = auto()
    FINISHED = auto()


class Sequence:
    # Process-wide so ids stay unique across schedulers (tests build many).
    _ids = itertools.count()

    def __init__(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams, index: int = 0,
                 cache_salt: str | None = None) -> None:
        self.seq_id: int = next(Sequence._ids)
        self.request_id = request_id
        self.index = index  # choice index within its request (n > 1; prompt i of several has i*n .. i*n + n - 1)
        self.params = params
        # Copied so later appends never alias the caller's list.
        self.token_ids: list[int] = [int(t) for t in prompt_token_ids]
        self.num_prompt_tokens = len(self.token_ids)
        # The two parts kept apart too, so a step reads them without copying (never mutate them).
        self._prompt: list[int] = list(self.token_ids)
        self._output: list[int] = []
        # Positions whose KV is in the cache; reset to 0 on preemption because
        # the blocks holding it are given away.
        self.num_computed_tokens = 0
        self.block_table: list[int] = []
        # Prefix cache: the chain hashes of full blocks (memoised: tokens only ever get appended),
        # how many leading blocks are keyed in the cache, and how many prompt tokens the first
        # admission found there (None until then).
        self.cache_salt = cache_salt
        self._block_hashes: list[bytes] = []
        self.num_registered_blocks = 0
        self.num_cached_tokens: int | None = None
        # Prompt logprobs (params.prompt_logprobs) are the first choice's: how many are computed so far (a sequence
        # preempted mid-prompt recomputes its prefill without computing them twice).
        self.num_prompt_logprobs = 0
        self.status = SequenceStatus.WAITING
        self.arrival = time.monotonic()  # FCFS and preemption order

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def prompt_token_ids(self) -> list[int]:
        return self._prompt

    @property
    def output_token_ids(self) -> list[int]:
        return self._output

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def scores_prompt(self) -> bool:
        """Whether this sequence still owes logprobs of prompt tokens (one per prompt token after the first)."""
        return (self.params.prompt_logprobs is not None and self.first_of_prompt
                and self.num_prompt_logprobs < self.num_prompt_tokens - 1)

    @property
    def first_of_prompt(self) -> bool:
        """The first choice of its prompt: the one that computes the prompt (the others fork from it)."""
        return self.index % self.params.n == 0

    @property
    def last_token_id(self) -> int:
        return self.token_ids[-1]

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    def append_token(self, token_id: int) -> None:
        token_id = int(token_id)
        self.token_ids.append(token_id)
        self._output.append(token_id)

    def block_hashes(self, num_blocks: int, block_size: int) -> list[bytes]:
        """The chain hashes of the first num_blocks full blocks (at most as many as are full)."""
        num_blocks = min(num_blocks, self.num_tokens // block_size)
        hashes = self._block_hashes
        parent = hashes[-1] if hashes else root_hash(self.cache_salt)
        for i in range(len(hashes), num_blocks):
            parent = chain_hash(parent, self.token_ids[i * block_size:(i + 1) * block_size])
            hashes.append(parent)
        return hashes[:num_blocks]

    def __repr__(self) -> str:
        return (
            f"Sequence(id={self.seq_id}, request={self.request_id!r}, index={self.index}, "
            f"status={self.status.name}, tokens={self.num_tokens}, computed={self.num_computed_tokens}, "
            f"blocks={self.block_table})"
        )
