"""One CPU decode step at R sequences, eager against the compiled graphs (compiled_decode.py), in one run.

    .venv/bin/python bench/decode_steps.py                      # the default model, rows 1,2,4,8,9,12,16
    .venv/bin/python bench/decode_steps.py --rows 12,16 --context 1000

One model runner in the CPU default precision (bf16, int4 weights), its decode graphs compiled at start-up (from
the compile cache once a first run filled it). Every row is a sequence of --context earlier tokens in blocks of
its own, decoding its next token: the step the engine runs between tokens once every sequence is decoding. The
same step runs eager and compiled, alternately (drifts in the machine's speed hit both alike); printed: the
median ms per step of each over --repeat steps, and eager / compiled.
"""
import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from inference.engine.compiled_decode import MAX_ROWS  # noqa: E402
from inference.engine.config import EngineConfig  # noqa: E402
from inference.engine.model_runner import ModelRunner  # noqa: E402

DEFAULT_MODEL = ROOT / "var" / "models" / "smollm2-135m-instruct"


def stage(runner: ModelRunner, rows: int, context: int):
    """The step's inputs in the runner's buffers: rows sequences of `context` tokens, each decoding one more."""
    bs = runner.block_size
    blocks = context // bs + 1
    host, tables = runner._host.numpy(), runner._host_tables.numpy()
    for row in range(rows):
        table = [row * blocks + j for j in range(blocks)]
        host[:, row] = (11 + row, context, table[context // bs] * bs + context % bs, context + 1)
        tables[row, :blocks] = table
    return runner._upload(rows, rows, blocks)


def timed(runner: ModelRunner, kernel, rows: int, context: int) -> float:
    runner.compiled = kernel
    meta = stage(runner, rows, context)
    with torch.inference_mode():
        started = time.perf_counter()
        runner._forward(runner._buf[0, :rows], runner._buf[1, :rows], meta, list(range(rows)))
        return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--rows", default="1,2,4,8,9,12,16", help=f"sequences per step, at most {MAX_ROWS}")
    parser.add_argument("--context", type=int, default=300, help="earlier tokens of each sequence")
    parser.add_argument("--repeat", type=int, default=21, help="steps timed each way per row count")
    args = parser.parse_args()
    levels = [int(r) for r in args.rows.split(",")]
    if not all(1 <= r <= MAX_ROWS for r in levels):
        parser.error(f"--rows: each from 1 to {MAX_ROWS} (larger decode steps run eager)")
    config = EngineConfig(kv_cache_bytes=None)
    config.num_blocks = (args.context // config.block_size + 1) * max(levels) + 2  # every row's blocks its own
    runner = ModelRunner(str(args.model), config, max_positions=args.context + config.block_size)
    compiled = runner.compiled
    if compiled is None:
        raise SystemExit("this CPU runs no compiled decode step here (float32, or no C++ compiler): nothing to compare")
    print(f"{args.model.name}, {runner.dtype} with {runner.quantization} weights, {torch.get_num_threads()} threads; "
          f"one decode step, each row {args.context} tokens of context; median of {args.repeat} steps")
    print(f"{'rows':>5} {'eager ms':>9} {'compiled ms':>12} {'eager/compiled':>15}")
    for rows in levels:
        samples = {"eager": [], "compiled": []}
        for repeat in range(args.repeat + 1):
            for name, kernel in (("eager", None), ("compiled", compiled)):
                seconds = timed(runner, kernel, rows, args.context)
                if repeat:  # the first of each is a warm-up
                    samples[name].append(seconds * 1e3)
        eager, graph = (statistics.median(samples[name]) for name in ("eager", "compiled"))
        print(f"{rows:>5} {eager:>9.1f} {graph:>12.1f} {eager / graph:>14.2f}x", flush=True)


if __name__ == "__main__":
    main()
