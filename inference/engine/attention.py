"""Paged attention plugged into transformers' attention interface.

transformers keeps the model definitions (Llama, Qwen2, Qwen3, Mistral, ...):
projections, norms, rotary embeddings and MLPs all run as written there, on a
packed batch `[1, T]` holding every scheduled token of the step. Only the
attention call is ours: it writes the step's keys and values into the block
KV cache and attends each token to its own sequence's cache.

Decode tokens (one per sequence) are attended together in one batched call;
prefill chunks are attended one sequence at a time, causally.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

ATTN_IMPLEMENTATION = "engine_paged"


@dataclass
class PrefillSegment:
    q_start: int  # first row of this chunk in the packed batch
    q_len: int
    kv_index: torch.Tensor  # [start + q_len] cache slots of positions 0 .. start+q_len-1
    start: int  # positions already cached before this chunk


@dataclass
class StepMetadata:
    """Where each packed token reads and writes in the cache, built once per step for all layers."""

    slot_mapping: torch.Tensor  # [T] cache slot that receives each token's key/value
    num_decode: int  # the first num_decode packed tokens are single-token decodes
    decode_blocks: torch.Tensor | None = None  # [num_decode * nb] each decode sequence's block table, padded to nb
    decode_mask: torch.Tensor | None = None  # [num_decode, 1, 1, nb * block_size] True where a position exists
    prefills: list[PrefillSegment] = field(default_factory=list)


class KVCache:
    """Per layer, keys and values of `num_blocks * block_size` token slots.

    Head-major (`[Hkv, slots, D]`): gathering a batch's blocks then yields each
    head's keys already laid out `[B, L, D]`, in a single copy.
    """

    def __init__(self, *, num_layers: int, num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device):
        self.block_size = block_size
        self.num_blocks = num_blocks
        shape = (num_kv_heads, num_blocks * block_size, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]  # [Hkv, S, D] each
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        # Decode gathers reuse two buffers across layers and steps: allocating tens of
        # megabytes anew each time costs more (page faults) than the copy itself.
        self._gather_buffers: dict[str, torch.Tensor] = {}

    def gather_blocks(self, cache: torch.Tensor, blocks: torch.Tensor, name: str) -> torch.Tensor:
        """cache [Hkv, S, D] → its blocks at `blocks` [N], as [Hkv, N * block_size, D] (a reused buffer)."""
        heads, _, dim = cache.shape
        shape = (heads, blocks.numel(), self.block_size, dim)
        size = heads * blocks.numel() * self.block_size * dim
        buffer = self._gather_buffers.get(name)
        if buffer is None or buffer.numel() < size:
            buffer = self._gather_buffers[name] = torch.empty(int(size * 1.25), dtype=cache.dtype, device=cache.device)
        out = buffer[:size].view(shape)
        torch.index_select(cache.view(heads, self.num_blocks, self.block_size, dim), 1, blocks, out=out)
        return out.view(heads, -1, dim)

    def copy_blocks(self, copies: list[tuple[int, int]]) -> None:
        """Duplicate whole blocks (a forked sequence's partially filled last block)."""
        bs = self.block_size
        for src, dst in copies:
            for cache in (*self.k, *self.v):
                cache[:, dst * bs:(dst + 1) * bs] = cache[:, src * bs:(src + 1) * bs]

    @staticmethod
    def bytes_per_block(*, num_layers: int, block_size: int, num_kv_heads: int, head_dim: int,
                        dtype: torch.dtype) -> int:
        return 2 * num_layers * block_size * num_kv_heads * head_dim * torch.finfo(dtype).bits // 8


def paged_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    # query: [1, Hq, T, D]; key, value: [1, Hkv, T, D] (rotary already applied by the model)
    meta: StepMetadata = kwargs["engine_step"]
    cache: KVCache = kwargs["engine_cache"]
    layer = module.layer_idx
    k_cache, v_cache = cache.k[layer], cache.v[layer]  # [Hkv, S, D]
    k_cache.index_copy_(1, meta.slot_mapping, key[0])
    v_cache.index_copy_(1, meta.slot_mapping, value[0])

    q = query[0].transpose(0, 1)  # [T, Hq, D]
    out = torch.empty_like(q)  # [T, Hq, D]
    nd = meta.num_decode
    if nd:
        out[:nd] = _decode_attention(q[:nd], k_cache, v_cache, meta, cache, scaling)
    for seg in meta.prefills:
        out[seg.q_start:seg.q_start + seg.q_len] = _prefill_attention(
            q[seg.q_start:seg.q_start + seg.q_len], k_cache, v_cache, seg, scaling)
    return out.unsqueeze(0), None  # [1, T, Hq, D]


def _decode_attention(q, k_cache, v_cache, meta: StepMetadata, cache: KVCache, scaling):
    # q: [B, Hq, D]; every sequence attends to its own blocks (padded to the longest table, masked).
    heads, _, dim = k_cache.shape
    batch = q.shape[0]
    keys = cache.gather_blocks(k_cache, meta.decode_blocks, "k").view(heads, batch, -1, dim)  # [Hkv, B, L, D]
    values = cache.gather_blocks(v_cache, meta.decode_blocks, "v").view(heads, batch, -1, dim)
    out = F.scaled_dot_product_attention(q.unsqueeze(2), keys.transpose(0, 1), values.transpose(0, 1),
                                         attn_mask=meta.decode_mask, scale=scaling, enable_gqa=True)  # [B, Hq, 1, D]
    return out.squeeze(2)


def _prefill_attention(q, k_cache, v_cache, seg: PrefillSegment, scaling):
    # q: [t, Hq, D] for positions start .. start+t-1, attending causally to positions 0 .. start+t-1.
    keys = k_cache.index_select(1, seg.kv_index).unsqueeze(0)  # [1, Hkv, start+t, D]
    values = v_cache.index_select(1, seg.kv_index).unsqueeze(0)
    query = q.transpose(0, 1).unsqueeze(0)  # [1, Hq, t, D]
    if seg.start == 0:
        out = F.scaled_dot_product_attention(query, keys, values, is_causal=True, scale=scaling, enable_gqa=True)
    else:
        rows = torch.arange(seg.q_len, device=q.device).unsqueeze(1) + seg.start  # [t, 1]
        cols = torch.arange(seg.start + seg.q_len, device=q.device).unsqueeze(0)  # [1, start+t]
        out = F.scaled_dot_product_attention(query, keys, values, attn_mask=cols <= rows, scale=scaling,
                                             enable_gqa=True)
    return out[0].transpose(0, 1)  # [t, Hq, D]


AttentionInterface.register(ATTN_IMPLEMENTATION, paged_attention_forward)
