"""One CPU decode step at R sequences, eager against the compiled graphs (compiled_decode.py), in one run.

    .venv/bin/python bench/decode_steps.py                      # the default model, rows 1,2,4,8,9,12,16
    .venv/bin/python bench/decode_steps.py --rows 12,16,24 --context 1000

One model runner in the CPU default precision (bf16, int4 weights), its decode graphs compiled at start-up (from
the compile cache once a first run filled it). Every row is a sequence of --context earlier tokens in blocks of
its own, decoding its next token: the step the engine runs between tokens once every sequence is decoding. The
same step runs eager and compiled, alternately (drifts in the machine's speed hit both alike); printed: the
median ms per step of each over --repeat steps, and eager / compiled. Steps of more than 16 rows, which run
compiled only where start-up timed the int4 kernels no slower than the dense copies there (wide_steps.int4_rows),
also run as they would with the int4 limit at 16: eager, in the dense copies (wide steps).
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


def timed(runner: ModelRunner, kernel, rows: int, context: int, int4_rows: int) -> float:
    runner.compiled = kernel
    runner.decoder.set_dense_above(int4_rows)
    meta = stage(runner, rows, context)
    with torch.inference_mode():
        started = time.perf_counter()
        runner._forward(runner._buf[0, :rows], runner._buf[1, :rows], meta, list(range(rows)))
        return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--rows", default="1,2,4,8,9,12,16", help="sequences per step, at most the decoder's int4 "
                                                                  "row limit (16, up to 32 where timed no slower)")
    parser.add_argument("--context", type=int, default=300, help="earlier tokens of each sequence")
    parser.add_argument("--repeat", type=int, default=21, help="steps timed each way per row count")
    args = parser.parse_args()
    levels = [int(r) for r in args.rows.split(",")]
    if not all(1 <= r <= 32 for r in levels):
        parser.error("--rows: each from 1 to 32")
    config = EngineConfig(kv_cache_bytes=None)
    config.num_blocks = (args.context // config.block_size + 1) * max(levels) + 2  # every row's blocks its own
    runner = ModelRunner(str(args.model), config, max_positions=args.context + config.block_size)
    compiled = runner.compiled
    if compiled is None:
        raise SystemExit("this CPU runs no compiled decode step here (float32, or no C++ compiler): nothing to compare")
    if max(levels) > compiled.max_rows:
        raise SystemExit(f"decode steps of more than {compiled.max_rows} rows run eager here (the int4 row limit this "
                         "CPU was timed at, wide_steps.py): lower --rows")
    print(f"{args.model.name}, {runner.dtype} with {runner.quantization} weights, {torch.get_num_threads()} threads; "
          f"int4 kernels up to {compiled.max_rows} rows; one decode step, each row {args.context} tokens of context; "
          f"median of {args.repeat} steps")
    limit = compiled.max_rows
    print(f"{'rows':>5} {'eager ms':>9} {'compiled ms':>12} {'eager/compiled':>15} {'int4 up to 16 ms':>17} "
          f"{'that/compiled':>14}")
    for rows in levels:
        sides = [("eager", None, limit), ("compiled", compiled, limit)]
        if rows > 16:
            sides.append(("narrow", None, 16))
        samples = {name: [] for name, *_ in sides}
        for repeat in range(args.repeat + 1):
            for name, kernel, int4_rows in sides:
                seconds = timed(runner, kernel, rows, args.context, int4_rows)
                if repeat:  # the first of each is a warm-up
                    samples[name].append(seconds * 1e3)
        ms = {name: statistics.median(values) for name, values in samples.items()}
        line = f"{rows:>5} {ms['eager']:>9.1f} {ms['compiled']:>12.1f} {ms['eager'] / ms['compiled']:>14.2f}x"
        if "narrow" in ms:
            line += f" {ms['narrow']:>17.1f} {ms['narrow'] / ms['compiled']:>13.2f}x"
        print(line, flush=True)
    runner.decoder.set_dense_above(limit)


if __name__ == "__main__":
    main()
