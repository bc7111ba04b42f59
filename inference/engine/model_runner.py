"""Runs one scheduled step of a continuous batch on the model.

The model is transformers' own definition, loaded with our paged attention
(see attention.py). A step packs every scheduled token of every sequence into
one `[1, T]` forward; logits are computed only for the rows that are sampled.
"""

from __future__ import annotations

import logging

import torch
from transformers import AutoModelForCausalLM

from .attention import ATTN_IMPLEMENTATION, KVCache, PrefillSegment, StepMetadata
from .config import EngineConfig
from .scheduler import SchedulerOutput

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


class ModelRunner:
    def __init__(self, model_path: str, config: EngineConfig, *, device: str = "cpu", dtype: str = "float32"):
        if dtype not in DTYPES:
            raise ValueError(f"unsupported dtype {dtype!r}; expected one of {sorted(DTYPES)}")
        self.device = torch.device(device)
        self.dtype = DTYPES[dtype]
        model = AutoModelForCausalLM.from_pretrained(str(model_path), local_files_only=True, dtype=self.dtype,
                                                     attn_implementation=ATTN_IMPLEMENTATION)
        self.model = model.to(self.device).eval()
        self.decoder = self.model.get_decoder()
        self.lm_head = self.model.get_output_embeddings()
        self.vocab_size = int(self.lm_head.weight.shape[0])
        text_config = self.model.config.get_text_config()
        self.num_layers = text_config.num_hidden_layers
        # Our attention is full-context; a sliding-window model is exact only within its window.
        window = getattr(text_config, "sliding_window", None)
        if getattr(text_config, "use_sliding_window", True) is False or not isinstance(window, int) or window <= 0:
            window = None
        self.sliding_window = window
        num_kv_heads = getattr(text_config, "num_key_value_heads", None) or text_config.num_attention_heads
        head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads
        per_block = KVCache.bytes_per_block(num_layers=self.num_layers, block_size=config.block_size,
                                            num_kv_heads=num_kv_heads, head_dim=head_dim, dtype=self.dtype)
        if config.num_blocks <= 0:
            config.num_blocks = max(1, config.kv_cache_bytes // per_block)
        self.block_size = config.block_size
        self.cache = KVCache(num_layers=self.num_layers, num_blocks=config.num_blocks, block_size=config.block_size,
                             num_kv_heads=num_kv_heads, head_dim=head_dim, dtype=self.dtype, device=self.device)
        log.info("KV cache: %d blocks of %d tokens (%.2f GiB)", config.num_blocks, config.block_size,
                 config.num_blocks * per_block / 2**30)

    @torch.inference_mode()
    def run(self, output: SchedulerOutput) -> torch.Tensor:
        """Logits `[S, V]` for the scheduled sequences that sample, in scheduling order."""
        if output.block_copies:
            self.cache.copy_blocks(output.block_copies)
        input_ids, positions, meta, sample_rows = self._prepare(output)
        hidden = self.decoder(input_ids=input_ids.unsqueeze(0), position_ids=positions.unsqueeze(0),
                              use_cache=False, engine_step=meta, engine_cache=self.cache).last_hidden_state  # [1, T, H]
        return self.lm_head(hidden[0, sample_rows]).float()  # [S, V]

    def _prepare(self, output: SchedulerOutput):
        # Single-token steps (decodes) go first so they form one batched attention call.
        items = sorted(output.scheduled, key=lambda s: s.num_new_tokens != 1)
        bs = self.block_size
        ids, positions, slots = [], [], []
        sample_row = {}  # id(item) -> its last packed row
        decode_starts, decode_tables, prefills = [], [], []
        row = 0
        for item in items:
            seq, start, n = item.seq, item.start, item.num_new_tokens
            table = seq.block_table
            ids.extend(seq.token_ids[start:start + n])
            span = range(start, start + n)
            positions.extend(span)
            slots.extend(table[p // bs] * bs + p % bs for p in span)
            if n == 1:
                decode_starts.append(start)
                decode_tables.append(table)
            else:
                kv = torch.tensor([table[p // bs] * bs + p % bs for p in range(start + n)], dtype=torch.long)
                prefills.append(PrefillSegment(q_start=row, q_len=n, kv_index=kv.to(self.device), start=start))
            row += n
            if item.samples:
                sample_row[id(item)] = row - 1
        meta = StepMetadata(slot_mapping=self._tensor(slots), num_decode=len(decode_starts), prefills=prefills)
        if decode_starts:
            meta.decode_blocks, meta.decode_mask = self._decode_index(decode_starts, decode_tables)
        # The sampled rows come back in the scheduler's order, not the packed order.
        rows = [sample_row[id(item)] for item in output.scheduled if item.samples]
        return self._tensor(ids), self._tensor(positions), meta, self._tensor(rows)

    def _decode_index(self, starts: list[int], tables: list[list[int]]):
        width = max(len(t) for t in tables)
        # Padding blocks point at block 0; the mask hides them.
        blocks = torch.tensor([b for t in tables for b in t + [0] * (width - len(t))], dtype=torch.long)  # [B*nb]
        pos = torch.arange(width * self.block_size)  # [L]
        mask = pos.unsqueeze(0) <= torch.tensor(starts).unsqueeze(1)  # [B, L]
        return blocks.to(self.device), mask[:, None, None, :].to(self.device)  # [B*nb], [B, 1, 1, L]

    def _tensor(self, values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long, device=self.device)
