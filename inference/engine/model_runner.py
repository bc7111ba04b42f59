"""Runs one scheduled step of a continuous batch on the model.

A step packs every scheduled token of every sequence into one `[T]` batch,
single-token decodes first, then prefill chunks; logits are computed only for
the rows that are sampled. Llama-family models run the lean decoder
(decoder.py); others run transformers' own modules with our paged attention
plugged in. Step inputs are written into persistent buffers (one host-to-device
copy each); on CUDA, decode-only steps replay a graph captured at start-up for
the smallest bucket that holds the batch (cuda_graphs.py); on the CPU in reduced
precision, a decode-only step of up to 16 sequences (up to 32 where the int4 kernels are timed no slower there:
wide_steps.py) runs as one compiled graph (compiled_decode.py), compiled at start-up, or, with
compile_in_background and nothing cached, by a child process while decode steps run eager (background_compile.py).
"""

from __future__ import annotations

import contextlib
import logging
import time

import numpy as np
import torch
from transformers import AutoModelForCausalLM

from . import background_compile, compiled_decode, host_memory, prompt_logprobs, wide_steps
from .attention import ATTN_IMPLEMENTATION, Attention, StepMetadata, choose_backend
from .block_masks import PrefillMaskBuilder, PrefillSegment, bucket, decode_block_mask
from .config import EngineConfig
from .decoder import LeanDecoder, unsupported_reason
from .kv_cache import KVCache
from .memory import size_kv_cache
from .precision import cpu_has_bf16, dense_copy_dtype, resolve_dtype, resolve_quantization
from .scheduler import SchedulerOutput

log = logging.getLogger(__name__)

# Packed prefill rows per flex_attention query tile: the fastest of 32/64/128 on the CPU.
PREFILL_Q_BLOCK = {"cpu": 32, "cuda": 64}
CPU_KV_CACHE_BYTES = 1 << 30
# The block manager's bookkeeping is per block, in Python: 4M tokens is more than 256 sequences of 16k.
MAX_BLOCKS = 1 << 18
# Decode tables are at least this wide: a width of 1 would be one more specialisation to compile.
MIN_TABLE_WIDTH = 2
# Quantized layers switch to a dense matmul of the same weights above this many rows (bench/linear.py).
QUANTIZED_DENSE_ABOVE = 16


class ModelRunner:
    def __init__(self, model_path: str, config: EngineConfig, *, device: str = "cpu", dtype: str = "auto",
                 quantization: str = "auto", attention_backend: str = "auto", enforce_eager: bool = False,
                 gpu_memory_utilization: float = 0.9, max_positions: int | None = None,
                 compile_in_background: bool = False, compile_only: bool = False, int4_rows: int | None = None):
        """int4_rows: how many rows a step may have for the int4 kernels, where not timed here (a background
        compile's child takes its engine's: wide_steps.int4_rows)."""
        self.model_path = str(model_path)
        self.device = torch.device(device)
        if self.device.type == "cpu":
            host_memory.keep_freed_memory()  # eager steps' temporaries without a page fault per page per step
        self.dtype = resolve_dtype(dtype, self.device)
        self.quantization = resolve_quantization(quantization, self.device, self.dtype)
        self.config = config
        self.model = self._load(model_path)
        if (dtype == "auto" and self.device.type == "cpu" and self.dtype == torch.bfloat16 and not cpu_has_bf16()
                and unsupported_reason(self.model) is not None):
            # bf16 without bf16 instructions pays only through the lean decoder's int4 kernels (precision.py);
            # transformers' own modules multiply dense weights, faster in float32 there.
            self.dtype, self.quantization = torch.float32, "none"
            self.model = self._load(model_path)
        self.cache_dtype = dense_copy_dtype(self.device, self.dtype)
        text_config = self.model.config.get_text_config()
        self.num_layers = text_config.num_hidden_layers
        self.vocab_size = int(self.model.get_output_embeddings().weight.shape[0])
        # Our attention is full-context; a sliding-window model is exact only within its window.
        window = getattr(text_config, "sliding_window", None)
        if getattr(text_config, "use_sliding_window", True) is False or not isinstance(window, int) or window <= 0:
            window = None
        self.sliding_window = window
        self.num_kv_heads = getattr(text_config, "num_key_value_heads", None) or text_config.num_attention_heads
        self.head_dim = getattr(text_config, "head_dim", None) or \
            text_config.hidden_size // text_config.num_attention_heads
        self.block_size = config.block_size
        self.max_positions = max_positions or config.max_model_len
        self.backend = choose_backend(attention_backend, self.device)
        reason = unsupported_reason(self.model)
        if reason is not None and self.quantization != "none":
            log.warning("quantized weights need the lean decoder, which does not run %s: dense weights", reason)
            self.quantization = "none"
        self.lean_reason = reason
        self._int4_rows = int4_rows

        # A small cache first: the profiling step (CUDA) runs on it; then the real one.
        self._build(num_blocks=config.max_num_batched_tokens // config.block_size + 2)
        if config.num_blocks <= 0:
            per_block = KVCache.bytes_per_block(num_layers=self.num_layers, block_size=config.block_size,
                                                num_kv_heads=self.num_kv_heads, head_dim=self.head_dim,
                                                dtype=self.cache_dtype)
            if config.kv_cache_bytes is not None:
                budget = config.kv_cache_bytes
            elif self.device.type == "cuda":
                budget = size_kv_cache(self, gpu_memory_utilization)
            else:
                budget = CPU_KV_CACHE_BYTES
            config.num_blocks = max(1, min(budget // per_block, MAX_BLOCKS))
        self._build(num_blocks=config.num_blocks)
        log.info("KV cache: %d blocks of %d tokens = %d tokens (%.2f GiB, %s); weights %s%s; attention %s; %s",
                 config.num_blocks, config.block_size, config.num_blocks * config.block_size,
                 self.cache._storage.numel() * self.cache._storage.element_size() / 2**30, self.cache_dtype,
                 self.dtype, "" if self.quantization == "none" else f" {self.quantization}", self.backend,
                 "lean decoder" if reason is None else f"transformers modules ({reason})")
        self.compiled = None  # CPU decode steps of up to 16 (or 32) sequences as one graph (compiled_decode.py)
        self.prompt_scores: dict[int, list[prompt_logprobs.PromptScore]] = {}  # the last step's (run())
        self.compile_in_background = compile_in_background
        self.compile_only = compile_only  # warm up the compiled decode graphs alone (the background compile's child)
        self.pending_compile: background_compile.BackgroundCompile | None = None
        self._threads = torch.get_num_threads()  # this (the engine's) thread's, restored once a background compile ends
        if compiled_decode.applies(self.device, self.dtype, self.backend, self.decoder, enforce_eager):
            self.compiled = compiled_decode.CompiledDecode(self.decoder, self.cache)
        self.graphs = None
        if self.device.type == "cuda" and not enforce_eager:
            from .cuda_graphs import DecodeGraphs

            self.graphs = DecodeGraphs(self, max_batch=config.max_num_seqs)
        self.warm_up()

    # -- construction -------------------------------------------------------------------------

    def _load(self, model_path) -> torch.nn.Module:
        model = AutoModelForCausalLM.from_pretrained(str(model_path), local_files_only=True, dtype=self.dtype,
                                                     attn_implementation=ATTN_IMPLEMENTATION)
        return model.to(self.device).eval()

    def _build(self, *, num_blocks: int) -> None:
        """(Re)allocate the cache, the attention over it and the step buffers."""
        self.cache = None  # free the old one first
        self.cache = KVCache(num_layers=self.num_layers, num_blocks=num_blocks, block_size=self.block_size,
                             num_kv_heads=self.num_kv_heads, head_dim=self.head_dim, dtype=self.cache_dtype,
                             device=self.device)
        self.attention = Attention(self.backend, self.cache)
        if self.lean_reason is None:
            if getattr(self, "decoder", None) is None:
                dense_above = QUANTIZED_DENSE_ABOVE if self.quantization != "none" else None
                self.decoder = LeanDecoder(self.model, self.attention, quantization=self.quantization,
                                           max_positions=self.max_positions, dense_above=dense_above,
                                           wide_dtype=self._wide_dtype(dense_above),
                                           head_dtype=dense_copy_dtype(self.device, self.dtype))
                if self.quantization == "int4" and self.device.type == "cpu":
                    self.decoder.set_dense_above(self._int4_rows or wide_steps.remembered_int4_rows(self.decoder))
            self.decoder.attention = self.attention
        else:
            self.decoder = None
        tokens = self.config.max_num_batched_tokens
        self.max_table = -(-self.max_positions // self.block_size)
        pad_width = self.device.type == "cpu"  # the CPU flex kernel wants index rows spanning the cache
        self.prefill_masks = PrefillMaskBuilder(num_blocks=num_blocks, block_size=self.block_size,
                                                num_slots=self.cache.num_slots,
                                                q_block=PREFILL_Q_BLOCK.get(self.device.type, 64),
                                                max_tokens=tokens, max_seqs=self.config.max_num_seqs,
                                                max_table=self.max_table, device=self.device, pad_width=pad_width)
        pinned = self.device.type == "cuda"
        # Persistent step inputs: [ids, positions, slots, decode lengths] in one host buffer and
        # one device buffer, so a step costs one copy; decode tables in a second pair.
        tokens = max(tokens, bucket(self.config.max_num_seqs, 1))
        self._host = torch.zeros(4, tokens, dtype=torch.long, pin_memory=pinned)
        self._buf = torch.zeros(4, tokens, dtype=torch.long, device=self.device)
        self._host_tables = torch.zeros(tokens, self.max_table, dtype=torch.long, pin_memory=pinned)
        self._tables = torch.zeros(tokens, self.max_table, dtype=torch.long, device=self.device)

    def _own_shapes(self):
        """On the CPU, compiles that make a model's kernels the same in every process: dynamo's automatic dynamic
        shapes would make every size that differs from an earlier compile of the same code symbolic, so a process
        that compiled another model's graphs first (a test run, a server with several models) would compile this
        one's with its sizes symbolic: several times slower to compile, and unlike the graphs a fresh process
        compiles and looks up in torch's cache (the worker of an engine that recorded them would compile them
        again at start-up, minutes). What varies between steps is marked dynamic explicitly."""
        if self.device.type != "cpu":
            return contextlib.nullcontext()
        return torch._dynamo.config.patch(automatic_dynamic_shapes=False)

    def warm_up(self) -> None:
        with self._own_shapes():
            self._warm_up()

    def _warm_up(self) -> None:
        """Compile the kernels before the first request needs them: a prefill, decodes of 1 and of 2 rows, then
        the decode step compiled whole for one row, 2..8 and 9..max_rows rows (CPU: compiled_decode.py). The eager
        decodes are warmed too: a step that mixes decodes with prefill chunks runs them.

        Attention kernels that do not compile here (a compiler missing, a torch too old for flex_attention on this
        device) give way to the eager sdpa backend rather than an engine that cannot start; a decode step that
        does not compile leaves decode steps eager.
        """
        sink = self.cache.sink_block
        compiled, self.compiled = self.compiled, None
        try:
            for rows, length in () if self.compile_only else ((0, 3), (1, 1), (2, 1)):
                self._forward_dummy(rows, length, sink)
        except Exception:
            if self.backend == "sdpa":
                raise
            log.exception("the %s attention kernels failed to compile: falling back to sdpa", self.backend)
            self.backend, compiled = "sdpa", None
            self._build(num_blocks=self.config.num_blocks)
            for rows, length in ((0, 3), (1, 1), (2, 1)):
                self._forward_dummy(rows, length, sink)
        if compiled is not None:
            spec = self._compile_spec()
            if self.compile_in_background and not background_compile.recorded(spec):
                try:
                    self.pending_compile = background_compile.BackgroundCompile(spec, compiled)
                except OSError:
                    log.exception("could not start the background compile: compiling the decode step now")
            if self.pending_compile is not None:
                # One core left to the child: eager steps on every core would stall on the one it takes.
                torch.set_num_threads(max(1, self._threads - 1))
                log.info("decode steps run eager on %d thread(s) until their compiled graphs are ready: compiling "
                         "them in a child process (pid %d; once per machine, about 6 minutes on 2 cores for the "
                         "default model)", torch.get_num_threads(), self.pending_compile.process.pid)
            else:
                seconds = self._compile_decode(compiled)
                log.info("decode steps compiled at start-up in %.1f s (from torch's compile cache when an earlier "
                         "start compiled them)", seconds)
        if self.graphs is not None:
            self.graphs.capture()

    def _compile_decode(self, compiled: compiled_decode.CompiledDecode) -> float:
        """Compile (or load from torch's cache) the decode graphs (compiled_decode.GRAPH_ROWS), and use them;
        the seconds it took."""
        started = time.monotonic()
        self.compiled = compiled
        try:
            with self._own_shapes():
                for rows in compiled_decode.GRAPH_ROWS:
                    if rows <= self.config.max_num_seqs:
                        self._forward_dummy(rows, 1, self.cache.sink_block)
        except Exception:
            log.exception("the compiled decode step failed to compile: decode steps run eager")
            self.compiled = None
        else:
            background_compile.record(self._compile_spec(), time.monotonic() - started)
        return time.monotonic() - started

    def _wide_dtype(self, dense_above: int | None) -> torch.dtype | None:
        """float32 for steps past dense_above rows where this CPU multiplies it faster (wide_steps.py)."""
        if dense_above is None or self.device.type != "cpu" or self.backend == "flex":
            return None
        text = self.model.config.get_text_config()
        hidden, inner = text.hidden_size, text.intermediate_size
        heads = text.num_attention_heads
        shapes = [((heads + 2 * self.num_kv_heads) * self.head_dim, hidden), (hidden, heads * self.head_dim),
                  (2 * inner, hidden), (hidden, inner)]
        return wide_steps.remembered_choice(shapes, self.dtype, self.config.wide_steps)

    def _compile_spec(self) -> dict:
        """What a child process needs to build this runner's decode graphs (background_compile.py)."""
        config = self.config
        return {"model_path": self.model_path, "dtype": str(self.dtype).removeprefix("torch."),
                "quantization": self.quantization, "attention_backend": self.backend,
                "max_positions": self.max_positions,
                "int4_rows": self.decoder.dense_above if self.quantization == "int4" else None,
                # The KV cache's dtype where it is not the model's; the int4 output layer's dense copy follows the
                # same rule (precision.dense_copy_dtype), so this names both.
                "kv_dtype": None if self.cache_dtype == self.dtype else str(self.cache_dtype).removeprefix("torch."),
                "threads": self._threads,  # torch's compile cache keys CPU kernels by the thread count too
                "config": {"block_size": config.block_size, "max_num_seqs": config.max_num_seqs,
                           "max_num_batched_tokens": config.max_num_batched_tokens}}

    def poll_compile(self) -> bool:
        """Between steps: once the child compiling the decode graphs has exited, compile them here from the cache
        it filled (seconds) and use them, or stay eager if it failed. True while it still runs."""
        pending = self.pending_compile
        if pending is None:
            return False
        status = pending.poll()
        if status is None:
            return True
        torch.set_num_threads(self._threads)  # the compiled graphs' loops are made for every core
        if status == 0:
            seconds = self._compile_decode(pending.compiled)
            log.info("compiled decode step %s after %.0f s in the background (%.1f s here, from the cache)",
                     "ready" if self.compiled else "failed", time.monotonic() - pending.started, seconds)
        else:
            log.error("compiling the decode step in the background failed (exit status %s): decode steps stay "
                      "eager. Its output:\n%s", status, pending.output())
        self.pending_compile = None
        pending.stop()
        return False

    def stop_compile(self) -> None:
        """Stop a background compile still running (the engine is shutting down)."""
        pending, self.pending_compile = self.pending_compile, None
        if pending is not None:
            pending.stop()
            torch.set_num_threads(self._threads)

    @torch.inference_mode()
    def _forward_dummy(self, decodes: int, prefill: int, sink: int) -> None:
        bs = self.block_size
        n = decodes or prefill
        host = self._host.numpy()
        host[0, :n] = 0
        host[1, :n] = np.arange(n) if not decodes else 0
        host[2, :n] = sink * bs + host[1, :n]
        host[3, :n] = 1
        self._host_tables[:n, :MIN_TABLE_WIDTH] = sink
        meta = self._upload(n, decodes, self.max_table if self.attention.backend == "flex" else MIN_TABLE_WIDTH)
        if not decodes:
            self._add_prefills(meta, [PrefillSegment(table=[sink], start=0, num=n)])
        self._forward(self._buf[0, :n], self._buf[1, :n], meta)

    @torch.inference_mode()
    def profile_step(self) -> None:
        """The largest step: one prefill of max_num_batched_tokens, logits for max_num_seqs rows."""
        tokens = min(self.config.max_num_batched_tokens, self.max_positions)
        table = list(range(-(-tokens // self.block_size)))
        host = self._host.numpy()
        host[0, :tokens] = 0
        host[1, :tokens] = np.arange(tokens)
        host[2, :tokens] = np.arange(tokens)  # blocks 0.. in order: slot == position
        meta = self._upload(tokens, 0, 1)
        self._add_prefills(meta, [PrefillSegment(table=table, start=0, num=tokens)])
        rows = list(range(max(0, tokens - self.config.max_num_seqs), tokens))
        self._forward(self._buf[0, :tokens], self._buf[1, :tokens], meta, rows)

    # -- a step -------------------------------------------------------------------------------

    @torch.inference_mode()
    def run(self, output: SchedulerOutput) -> torch.Tensor:
        """Logits `[S, V]` for the scheduled sequences that sample, in scheduling order. The logprobs of the
        prompt tokens this step computes for sequences that ask for them are left in `prompt_scores`."""
        self.prompt_scores: dict[int, list[prompt_logprobs.PromptScore]] = {}
        if output.block_copies:
            self.cache.copy_blocks(output.block_copies)
        # Single-token items go first so they form the decode batch.
        items = sorted(output.scheduled, key=lambda s: s.num_new_tokens != 1)
        num_decode = sum(1 for s in items if s.num_new_tokens == 1)
        if num_decode == len(items) and self.graphs is not None and self.graphs.fits(num_decode):
            self._stage_decodes(items)
            logits = self.graphs.replay(num_decode)
            return self._in_schedule_order(logits, items, output)
        total, width = self._stage(items, num_decode)
        meta = self._upload(total, num_decode, width)
        if num_decode < len(items):
            self._add_prefills(meta, [PrefillSegment(table=s.seq.block_table, start=s.start, num=s.num_new_tokens)
                                      for s in items[num_decode:]])
        rows = self._sample_rows(items)
        logits = self._forward(self._buf[0, :total], self._buf[1, :total], meta, rows, prompt_logprobs.plan(items))
        return self._in_schedule_order(logits, items, output)

    def _stage_decodes(self, items) -> None:
        """Write a decode batch's inputs into the host buffers (no upload)."""
        self._stage(items, len(items), width=self.max_table)

    def _stage(self, items, num_decode: int, width: int | None = None) -> tuple[int, int]:
        bs = self.block_size
        host = self._host.numpy()
        tables = self._host_tables.numpy()
        if width is None:  # flex compiles per shape: its tables are always full width
            width = self.max_table if self.attention.backend == "flex" else \
                max(MIN_TABLE_WIDTH, max((len(s.seq.block_table) for s in items[:num_decode]), default=1))
        row = 0
        for i, item in enumerate(items):
            seq, start, n = item.seq, item.start, item.num_new_tokens
            table = seq.block_table
            if n == 1:
                host[0, row] = seq.token_ids[start]
                host[1, row] = start
                host[2, row] = table[start // bs] * bs + start % bs
                host[3, i] = start + 1
                tables[i, :len(table)] = table
                tables[i, len(table):width] = self.cache.sink_block
            else:
                span = np.arange(start, start + n)
                host[0, row:row + n] = seq.token_ids[start:start + n]
                host[1, row:row + n] = span
                host[2, row:row + n] = np.asarray(table)[span // bs] * bs + span % bs
            row += n
        return row, width

    def _upload(self, total: int, num_decode: int, width: int) -> StepMetadata:
        rows = num_decode
        if num_decode and self.attention.backend == "flex":
            # flex compiles per shape: the decode batch is padded to a power of two with
            # one-token rows in the sink block.
            rows = bucket(num_decode, 1)
            self._host[3, num_decode:rows] = 1
            self._host_tables[num_decode:rows, :width] = self.cache.sink_block
        cols = max(total, rows)
        self._buf[:, :cols].copy_(self._host[:, :cols], non_blocking=True)
        meta = StepMetadata(slot_mapping=self._buf[2, :total], num_decode=num_decode)
        if num_decode:
            self._tables[:rows, :width].copy_(self._host_tables[:rows, :width], non_blocking=True)
            meta.decode_tables = self._tables[:rows, :width]
            meta.decode_lens = self._buf[3, :rows]
            if self.attention.backend == "flex":
                meta.decode_mask = decode_block_mask(meta.decode_tables, meta.decode_lens, block_size=self.block_size,
                                                     num_slots=self.cache.num_slots,
                                                     pad_width=self.device.type == "cpu")
        return meta

    def _add_prefills(self, meta: StepMetadata, segments: list[PrefillSegment]) -> None:
        meta.prefills = segments
        if self.attention.uses_flex:
            meta.prefill_mask, meta.prefill_rows = self.prefill_masks.build(segments)

    def _sample_rows(self, items) -> list[int]:
        rows, row = [], 0
        for item in items:
            row += item.num_new_tokens
            if item.samples:
                rows.append(row - 1)
        return rows

    def _forward(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: StepMetadata,
                 rows: list[int] | None = None, scored: list[prompt_logprobs.Span] = ()) -> torch.Tensor:
        """Logits [S, V] of the packed rows `rows` (all rows when None); the prompt logprobs of `scored` go to
        `prompt_scores`."""
        if self.compiled is not None and not scored and self.compiled.fits(meta, input_ids.shape[0], rows):
            return self.compiled(input_ids, positions, meta)
        if self.decoder is not None:
            hidden = self.decoder.forward(input_ids, positions, meta)  # [T, H]
        else:
            hidden = self.model.get_decoder()(input_ids=input_ids.unsqueeze(0), position_ids=positions.unsqueeze(0),
                                              use_cache=False, engine_step=meta,
                                              engine_attention=self.attention).last_hidden_state[0]
        if scored:
            self.prompt_scores = prompt_logprobs.score(hidden, self._exact_logits, scored)
        if rows is not None and len(rows) != hidden.shape[0]:
            hidden = hidden[torch.tensor(rows, dtype=torch.long, device=hidden.device)]
        return self._logits(hidden)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.decoder is not None:
            return self.decoder.logits(hidden).float()
        return self.model.get_output_embeddings()(hidden).float()

    def _exact_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Every token's logit as the dense output layer gives it: what a prompt token's logprob is scored with."""
        if self.decoder is not None:
            return self.decoder.logits(hidden, exact=True).float()
        return self._logits(hidden)

    def _in_schedule_order(self, logits: torch.Tensor, items, output: SchedulerOutput) -> torch.Tensor:
        """Rows come out in packed order; the engine reads them in the scheduler's."""
        packed = [id(s) for s in items if s.samples]
        wanted = [id(s) for s in output.scheduled if s.samples]
        if packed == wanted:
            return logits
        where = {key: i for i, key in enumerate(packed)}
        return logits[torch.tensor([where[key] for key in wanted], dtype=torch.long, device=logits.device)]
