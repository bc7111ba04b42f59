"""The paged KV cache: per layer, keys and values of `num_blocks * block_size` token slots.

Head-major (`[Hkv, slots, D]`), the layout flex_attention reads as one long key
sequence. Position p of a sequence lives at slot `table[p // bs] * bs + p % bs`.
One extra block at the end, the sink, is never handed out: padded rows of a
CUDA-graph batch write there, and padded block-table entries point there.
"""

from __future__ import annotations

import torch

# flex_attention skips its bounds checks when the key length is a multiple of this.
_SLOT_ALIGNMENT = 128


class KVCache:
    def __init__(self, *, num_layers: int, num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device):
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.sink_block = num_blocks
        slots = (num_blocks + 1) * block_size
        slots += -slots % _SLOT_ALIGNMENT
        self.num_slots = slots
        # One allocation for everything: [2, layers, Hkv, slots, D].
        self._storage = torch.zeros((2, num_layers, num_kv_heads, slots, head_dim), dtype=dtype, device=device)
        self.k = list(self._storage[0].unbind(0))  # [Hkv, slots, D] each
        self.v = list(self._storage[1].unbind(0))

    def write(self, layer: int, kv: torch.Tensor, slots: torch.Tensor) -> None:
        """Store a step's keys and values, kv [T, 2, Hkv, D], at their slots [T]: one copy for both."""
        store(self._storage, layer, kv, slots)

    def copy_blocks(self, copies: list[tuple[int, int]]) -> None:
        """Duplicate whole blocks (a forked sequence's partially filled last block)."""
        bs = self.block_size
        for src, dst in copies:
            # All layers, keys and values at once: [2, layers, Hkv, bs, D].
            self._storage[:, :, :, dst * bs:(dst + 1) * bs] = self._storage[:, :, :, src * bs:(src + 1) * bs]

    @staticmethod
    def bytes_per_block(*, num_layers: int, block_size: int, num_kv_heads: int, head_dim: int,
                        dtype: torch.dtype) -> int:
        return 2 * num_layers * block_size * num_kv_heads * head_dim * torch.finfo(dtype).bits // 8


def store(storage: torch.Tensor, layer: int, kv: torch.Tensor, slots: torch.Tensor) -> None:
    """KVCache.write on a cache's storage [2, layers, Hkv, slots, D] (also what compiled_decode.py's op runs)."""
    storage[:, layer].index_copy_(2, slots, kv.permute(1, 2, 0, 3).to(storage.dtype))
