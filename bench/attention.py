"""Paged attention, one layer: each backend side by side, what `--attention-backend auto` rests on.

    .venv/bin/python bench/attention.py                  # CPU, the default model's shapes, bf16
    .venv/bin/python bench/attention.py --device cuda    # a GPU

Decode: B sequences of L cached tokens each attend with one query (their blocks
scattered over the cache, as after a while of serving). Per call, the cache
write included, as a layer of the engine runs it; medians of many calls, and
each backend's time as a ratio of sdpa's (the eager reference). `inductor
(dynamic)` is the same kernel compiled with every size symbolic, which the
engine no longer does: it shows what marking only the batch and the table width
as dynamic saves.

Prefill: one chunk of new tokens after a cached prefix (the next turn of a
session), through sdpa (SDPA's own kernel on the gathered keys) and flex
(flex_attention over a paged block mask).
"""
import argparse
import functools
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from inference.engine import attention as A  # noqa: E402
from inference.engine.block_masks import PrefillMaskBuilder, PrefillSegment, bucket, decode_block_mask  # noqa: E402
from inference.engine.model_runner import MIN_TABLE_WIDTH, PREFILL_Q_BLOCK  # noqa: E402
from inference.engine.kv_cache import KVCache  # noqa: E402

# SmolLM2-135M-Instruct: 9 query heads, 3 key/value heads of 64; a 1 GiB cache of its 30 layers in bf16.
HEADS, KV_HEADS, HEAD_DIM, BLOCK, CACHE_BLOCKS = 9, 3, 64, 16, 2912


def timed(fn, *, warmup: int, repeat: int) -> float:
    """Median microseconds per call."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        samples.append((time.perf_counter() - start) * 1e6)
    return statistics.median(samples)


@functools.cache
def _dynamic_kernel():
    """The engine's decode kernel compiled with every size symbolic (once for the whole run)."""
    return torch.compile(A.decode_math, dynamic=True, fullgraph=True)


def decode_case(cache: KVCache, backend: str, batch: int, length: int, device, dtype, rng) -> float:
    width = max(MIN_TABLE_WIDTH, -(-length // BLOCK))
    rows = bucket(batch, 1) if backend == "flex" else batch  # flex's batch is padded as the engine pads it
    tables = torch.randint(0, cache.num_blocks, (rows, width), generator=rng).to(device)
    lens = torch.full((rows,), length, dtype=torch.long, device=device)
    tables[batch:], lens[batch:] = cache.sink_block, 1  # padding rows: one token in the sink block
    last = (lens - 1)
    slots = tables.gather(1, (last // BLOCK).unsqueeze(1)).squeeze(1)[:batch] * BLOCK + last[:batch] % BLOCK
    meta = A.StepMetadata(slot_mapping=slots, num_decode=batch, decode_tables=tables, decode_lens=lens)
    if backend == "flex":
        meta.decode_mask = decode_block_mask(tables, lens, block_size=BLOCK, num_slots=cache.num_slots,
                                             pad_width=device.type == "cpu")
    attention = A.Attention("inductor" if backend == "inductor (dynamic)" else backend, cache)
    if backend == "inductor (dynamic)":
        kernel = _dynamic_kernel()
        attention._decode = lambda q, k, v, m, scale, bs: kernel(q, k, v, m.decode_tables, m.decode_lens, scale, bs)
    q = torch.randn(batch, HEADS, HEAD_DIM, generator=rng).to(device, dtype)
    kv = torch.randn(batch, 2, KV_HEADS, HEAD_DIM, generator=rng).to(device, dtype)
    with torch.inference_mode():
        return timed(lambda: attention(q, kv, 0, meta, HEAD_DIM ** -0.5), warmup=5, repeat=60)


def prefill_case(cache: KVCache, backend: str, cached: int, new: int, device, dtype, rng) -> float:
    blocks = -(-(cached + new) // BLOCK)
    table = torch.randperm(cache.num_blocks, generator=rng)[:blocks].tolist()
    segment = PrefillSegment(table=table, start=cached, num=new)
    positions = torch.arange(cached, cached + new)
    slots = (torch.tensor(table)[positions // BLOCK] * BLOCK + positions % BLOCK).to(device)
    meta = A.StepMetadata(slot_mapping=slots, num_decode=0, prefills=[segment])
    if backend == "flex":
        builder = PrefillMaskBuilder(num_blocks=cache.num_blocks, block_size=BLOCK, num_slots=cache.num_slots,
                                     q_block=PREFILL_Q_BLOCK[device.type], max_tokens=512, max_seqs=4,
                                     max_table=cache.num_blocks, device=device, pad_width=device.type == "cpu")
        meta.prefill_mask, meta.prefill_rows = builder.build([segment])
    attention = A.Attention(backend, cache)
    q = torch.randn(new, HEADS, HEAD_DIM, generator=rng).to(device, dtype)
    kv = torch.randn(new, 2, KV_HEADS, HEAD_DIM, generator=rng).to(device, dtype)
    with torch.inference_mode():
        return timed(lambda: attention(q, kv, 0, meta, HEAD_DIM ** -0.5), warmup=3, repeat=15)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    parser.add_argument("--batches", default="1,16,64")
    parser.add_argument("--lengths", default="64,256,1024")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    rng = torch.Generator().manual_seed(0)
    cache = KVCache(num_layers=1, num_blocks=CACHE_BLOCKS, block_size=BLOCK, num_kv_heads=KV_HEADS,
                    head_dim=HEAD_DIM, dtype=dtype, device=device)
    cache.k[0].normal_()
    cache.v[0].normal_()
    decoders = ["sdpa", "inductor", "inductor (dynamic)", "flex"] if A.compiler_available() else ["sdpa"]
    print(f"device {device}, {args.dtype}, torch threads {torch.get_num_threads()}; one layer, {HEADS} query and "
          f"{KV_HEADS} key/value heads of {HEAD_DIM}, blocks of {BLOCK}")
    print("\ndecode: median us per call (ratio to sdpa; below 1 is faster)")
    print(f"{'batch':>6} {'tokens':>7} " + " ".join(f"{name:>24}" for name in decoders))
    for batch in map(int, args.batches.split(",")):
        for length in map(int, args.lengths.split(",")):
            times = {name: decode_case(cache, name, batch, length, device, dtype, rng) for name in decoders}
            cells = [f"{times[n]:>12.0f} ({times[n] / times['sdpa']:>5.2f}x)".rjust(24) for n in decoders]
            print(f"{batch:>6} {length:>7} " + " ".join(cells), flush=True)
    prefillers = ["sdpa", "flex"] if A.compiler_available() else ["sdpa"]
    print("\nprefill of one chunk after a cached prefix: median us per call (ratio to sdpa)")
    print(f"{'cached':>7} {'new':>5} " + " ".join(f"{name:>24}" for name in prefillers))
    for cached, new in ((0, 128), (1216, 299)):
        times = {name: prefill_case(cache, name, cached, new, device, dtype, rng) for name in prefillers}
        cells = [f"{times[n]:>12.0f} ({times[n] / times['sdpa']:>5.2f}x)".rjust(24) for n in prefillers]
        print(f"{cached:>7} {new:>5} " + " ".join(cells), flush=True)


if __name__ == "__main__":
    main()
