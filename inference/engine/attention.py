"""Paged attention for one packed step: decodes first, then prefill chunks, all layers alike.

Per layer: the step's new keys and values are written at their cache slots
(one index_copy_ each), then the queries attend, reading every sequence's KV
blocks where they lie.

Backends (chosen once per engine, see `choose_backend`):
  flex      flex_attention for both parts: decodes as a batch of one-query
            sequences, prefill chunks as one packed variable-length call, both
            through block masks built from the block tables (block_masks.py).
            The GPU default.
  inductor  decodes through a kernel that torch.compile generates from
            `decode_math`: the block-table lookup happens inside its
            reduction loops, so blocks are read in place and lengths bound the
            loop (no gathered copy, no mask tensor); prefill chunks as in sdpa.
            The CPU default: for one-query rows 2-9x faster than SDPA on
            gathered blocks and 1.5-3x faster than flex there, and SDPA's CPU
            flash kernel is 2-3x faster than flex's CPU template for prefill
            chunks (bench/attention.py; a 299-token chunk after 1,216 cached
            tokens: 11.8 against 34 ms per layer on 2 cores).
  sdpa      the eager reference: each decode sequence's blocks gathered into a
            buffer and attended with a padding mask, one SDPA call per prefill
            chunk (its keys gathered once per step, for all layers). No
            compiler needed; the tests check the others against it.

The model definitions stay transformers' own: `paged_attention_forward` is
registered as an attention implementation for models the lean decoder
(decoder.py) does not cover.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch._dynamo import maybe_mark_dynamic
from transformers import AttentionInterface

from .block_masks import PrefillSegment
from .kv_cache import KVCache

log = logging.getLogger(__name__)

ATTN_IMPLEMENTATION = "engine_paged"
BACKENDS = ("auto", "flex", "inductor", "sdpa")


@dataclass
class StepMetadata:
    """Where each packed token reads and writes in the cache, built once per step for all layers."""

    slot_mapping: torch.Tensor  # [T] cache slot that receives each token's key/value
    num_decode: int  # the first num_decode packed tokens are single-token decodes
    decode_tables: torch.Tensor | None = None  # [nd, W] long, each decode sequence's blocks, padded with the sink
    decode_lens: torch.Tensor | None = None  # [nd] long, its length including this step's token
    decode_mask: object | None = None  # flex BlockMask over decode_tables
    prefill_mask: object | None = None  # flex BlockMask of the packed prefill rows
    prefill_rows: int = 0  # flex: the prefill rows padded to the mask's fixed size
    prefills: list[PrefillSegment] = field(default_factory=list)  # the same chunks, for the sdpa backend
    _gathers: list | None = None  # per chunk: (its keys' cache slots, its mask or None), built by the first layer

    def prefill_gathers(self, block_size: int, device: torch.device) -> list:
        """Per prefill chunk, the slots of every key it attends to and its causal mask (None: from 0)."""
        if self._gathers is None:
            offsets = torch.arange(block_size, device=device)
            self._gathers = []
            for seg in self.prefills:
                n, start = seg.num, seg.start
                table = torch.tensor(seg.table, dtype=torch.long, device=device)
                slots = (table.unsqueeze(1) * block_size + offsets).view(-1)[:start + n]
                mask = None
                if start:  # rows at positions start.. see keys up to their own position
                    rows = torch.arange(n, device=device).unsqueeze(1) + start
                    mask = torch.arange(start + n, device=device).unsqueeze(0) <= rows
                self._gathers.append((slots, mask))
        return self._gathers


class Attention:
    """One backend's kernels; `__call__` runs a layer's attention for the step."""

    def __init__(self, backend: str, cache: KVCache):
        if backend not in BACKENDS[1:]:
            raise ValueError(f"unknown attention backend {backend!r}; expected one of {BACKENDS}")
        self.backend = backend
        self.cache = cache
        self.block_size = cache.block_size
        if backend == "sdpa":
            self._decode, self._prefill = _decode_sdpa, _prefill_sdpa
        else:
            _allow_recompiles()  # dynamo's settings are per thread: set them on the one that runs the engine
            if backend == "flex":
                flex = _compiled_flex()
                self._prefill = lambda q, k, v, meta, scale, bs: _prefill_flex(flex, q, k, v, meta, scale, bs)
                self._decode = lambda q, k, v, meta, scale, bs: _decode_flex(flex, q, k, v, meta, scale)
            else:
                self._decode, self._prefill = _compiled_decode(), _prefill_sdpa

    @property
    def uses_flex(self) -> bool:
        """Whether prefill chunks need a flex block mask."""
        return self.backend == "flex"

    def __call__(self, q: torch.Tensor, kv: torch.Tensor, layer: int, meta: StepMetadata,
                 scale: float) -> torch.Tensor:
        """q [T, Hq, D], kv [T, 2, Hkv, D] (the step's keys and values, rotary applied) -> [T, Hq, D].

        A step in a wider dtype than the cache's (decoder.py's wide steps) stores its keys and values in the
        cache's; its decodes attend in the cache's dtype, its prefill chunks in the step's (sdpa backend)."""
        k_cache, v_cache = self.cache.k[layer], self.cache.v[layer]  # [Hkv, S, D]
        self.cache.write(layer, kv.to(k_cache.dtype), meta.slot_mapping)
        nd = meta.num_decode
        if nd == 0:
            return self._prefill(q, k_cache, v_cache, meta, scale, self.block_size)
        # Contiguous either way: a wide step's queries arrive as a converted copy, the others' as a view of the
        # step's q/k/v rows, and the compiled decode kernel is specialised on their layout (a recompile mid-serving).
        decoded = self._decode(q[:nd].to(k_cache.dtype).contiguous(), k_cache, v_cache, meta, scale,
                               self.block_size).to(q.dtype)
        if nd == q.shape[0]:
            return decoded
        return torch.cat([decoded, self._prefill(q[nd:], k_cache, v_cache, meta, scale, self.block_size)])


def choose_backend(name: str, device: torch.device) -> str:
    if name == "auto":
        name = "flex" if device.type == "cuda" else "inductor"
    if name != "sdpa" and not compiler_available():
        log.warning("torch.compile is unavailable here: attention falls back to the eager sdpa backend")
        return "sdpa"
    return name


def compiler_available() -> bool:
    try:
        from torch._inductor import cpp_builder  # noqa: F401  (a C++ compiler is found lazily)
    except Exception:
        return False
    return True


# -- decode -------------------------------------------------------------------------------------


def decode_math(q, k_cache, v_cache, tables, lens, scale: float, block_size: int):
    # q [B, Hq, D]; k_cache, v_cache [Hkv, S, D]; tables [B, W]; lens [B]
    batch, width = tables.shape
    kv_heads, _, dim = k_cache.shape
    group = q.shape[1] // kv_heads
    pos = torch.arange(width * block_size, device=q.device)  # [L]
    slots = tables[:, pos // block_size] * block_size + pos % block_size  # [B, L]
    keys = k_cache[:, slots].float()  # [Hkv, B, L, D]: compiled, an index inside the loop, never a buffer
    values = v_cache[:, slots].float()
    qg = q.view(batch, kv_heads, group, dim).transpose(0, 1).float()  # [Hkv, B, G, D]
    scores = (qg.unsqueeze(3) * keys.unsqueeze(2)).sum(-1) * scale  # [Hkv, B, G, L]
    scores = scores.masked_fill((pos.unsqueeze(0) >= lens.unsqueeze(1))[None, :, None, :], float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    out = (probs.unsqueeze(-1) * values.unsqueeze(2)).sum(3)  # [Hkv, B, G, D]
    return out.transpose(0, 1).reshape(batch, kv_heads * group, dim).to(q.dtype)


_compiled: dict[str, object] = {}
# Shapes a compiled kernel may be specialised for before dynamo gives up: one per padded batch size,
# per cache size and per model in this process (tests build many engines).
RECOMPILE_LIMIT = 256


def _allow_recompiles() -> None:
    import torch._dynamo
    import torch.fx.experimental._config as fx_config

    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, RECOMPILE_LIMIT)
    config.accumulated_recompile_limit = max(config.accumulated_recompile_limit, 4 * RECOMPILE_LIMIT)
    # Sizes that happen to be equal at the first call (a table width of 2 and the cache's k/v
    # axis) must not be assumed equal forever: each such guess costs a recompile mid-request.
    fx_config.use_duck_shape = False


def _compiled_decode():
    if "decode" not in _compiled:
        # Only the batch and the table width vary: the cache's shape, the scale and the block size are constants
        # of the kernel. Marking those two dimensions, rather than compiling with dynamic=True, makes every call
        # 20-40% cheaper (fewer symbolic sizes to guard and compute; bench/attention.py, a layer's call with its
        # cache write: 47 against 78 us for one sequence of 64 tokens, 89 against 138 at 256, 338 against 511
        # for 64 of 64), and still compiles only twice: a batch of one, and any other.
        kernel = torch.compile(decode_math, fullgraph=True)

        def decode(q, k, v, meta, scale, bs):
            tables, lens = meta.decode_tables, meta.decode_lens
            for tensor, dims in ((q, (0,)), (tables, (0, 1)), (lens, (0,))):
                for dim in dims:
                    maybe_mark_dynamic(tensor, dim)
            return kernel(q, k, v, tables, lens, scale, bs)

        _compiled["decode"] = decode
    return _compiled["decode"]


def _compiled_flex():
    if "flex" not in _compiled:
        from torch.nn.attention.flex_attention import flex_attention

        # Static shapes: the callers pad to a few sizes (inductor's CPU template miscompiles dynamic ones).
        _compiled["flex"] = torch.compile(flex_attention, dynamic=False, fullgraph=True)
    return _compiled["flex"]


def _decode_flex(flex, q, k_cache, v_cache, meta: StepMetadata, scale):
    batch, padded = q.shape[0], meta.decode_tables.shape[0]  # the tables are padded to a bucket
    keys = k_cache.unsqueeze(0).expand(padded, -1, -1, -1)  # [B', Hkv, S, D], a view
    values = v_cache.unsqueeze(0).expand(padded, -1, -1, -1)
    out = flex(_pad_rows(q, padded).unsqueeze(2), keys, values, block_mask=meta.decode_mask, scale=scale,
               enable_gqa=True)
    return out[:batch].squeeze(2)  # [B, Hq, D]


def _pad_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    if x.shape[0] == rows:
        return x
    out = x.new_zeros((rows, *x.shape[1:]))
    out[:x.shape[0]] = x
    return out


def _decode_sdpa(q, k_cache, v_cache, meta: StepMetadata, scale, block_size):
    tables, lens = meta.decode_tables, meta.decode_lens
    batch, width = tables.shape
    heads, _, dim = k_cache.shape
    slots = (tables.unsqueeze(2) * block_size + torch.arange(block_size, device=q.device)).view(-1)  # [B*L]
    keys = k_cache.index_select(1, slots).view(heads, batch, -1, dim).transpose(0, 1)  # [B, Hkv, L, D]
    values = v_cache.index_select(1, slots).view(heads, batch, -1, dim).transpose(0, 1)
    mask = torch.arange(width * block_size, device=q.device).unsqueeze(0) < lens.unsqueeze(1)  # [B, L]
    out = F.scaled_dot_product_attention(q.unsqueeze(2), keys, values, attn_mask=mask[:, None, None, :],
                                         scale=scale, enable_gqa=True)  # [B, Hq, 1, D]
    return out.squeeze(2)


# -- prefill ------------------------------------------------------------------------------------


def _prefill_flex(flex, q, k_cache, v_cache, meta: StepMetadata, scale, block_size):
    rows = q.shape[0]
    query = _pad_rows(q, meta.prefill_rows).transpose(0, 1).unsqueeze(0)  # [1, Hq, P, D]
    # On a GPU the kernel's key tile must fit in a cache block (the block mask's granularity).
    options = {"BLOCK_M": 64, "BLOCK_N": block_size} if q.is_cuda else None
    out = flex(query, k_cache.unsqueeze(0), v_cache.unsqueeze(0), block_mask=meta.prefill_mask, scale=scale,
               enable_gqa=True, kernel_options=options)
    return out[0, :, :rows].transpose(0, 1)  # [Tp, Hq, D]


def _prefill_sdpa(q, k_cache, v_cache, meta: StepMetadata, scale, block_size):
    out, row = [], 0
    for seg, (slots, mask) in zip(meta.prefills, meta.prefill_gathers(block_size, q.device)):
        n = seg.num
        keys = k_cache.index_select(1, slots).unsqueeze(0).to(q.dtype)  # [1, Hkv, start+n, D]
        values = v_cache.index_select(1, slots).unsqueeze(0).to(q.dtype)
        query = q[row:row + n].transpose(0, 1).unsqueeze(0)  # [1, Hq, n, D]
        o = F.scaled_dot_product_attention(query, keys, values, attn_mask=mask, is_causal=mask is None, scale=scale,
                                           enable_gqa=True)
        out.append(o[0].transpose(0, 1))
        row += n
    return torch.cat(out)


# -- transformers' attention interface ----------------------------------------------------------


def paged_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    # query: [1, Hq, T, D]; key, value: [1, Hkv, T, D] (rotary already applied by the model)
    attention: Attention = kwargs["engine_attention"]
    meta: StepMetadata = kwargs["engine_step"]
    kv = torch.stack((key[0], value[0]), dim=1).transpose(0, 2)  # [T, 2, Hkv, D]
    out = attention(query[0].transpose(0, 1), kv, module.layer_idx, meta, scaling)
    return out.unsqueeze(0), None  # [1, T, Hq, D]


AttentionInterface.register(ATTN_IMPLEMENTATION, paged_attention_forward)
