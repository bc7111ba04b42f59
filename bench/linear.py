"""The lean decoder's linear layers in each weight format, side by side: what `--quantization auto` and the
switch to a dense matmul above `QUANTIZED_DENSE_ABOVE` rows rest on.

    .venv/bin/python bench/linear.py             # CPU (the quantized kernels are CPU kernels)

For the default model's shapes (SmolLM2-135M: 30 layers of a fused q/k/v, the
output projection, a fused gate/up and down, then the output layer over the
vocabulary), random weights in bf16 (`--dtype float32`: float32, what a CPU without
bf16 instructions runs), every layer with weights of its own: the time of the linear
layers of one forward step at M rows (M=1 is one sequence decoding), medians over
steps, as dense weights, int8 and int4 weight-only (groups of 32; the output layer as
RefinedHead), each with its ratio to dense. A ratio above 1 at many rows is why
quantized layers multiply by a dense copy there. `--head-dtype float32` times the
dense output layer as the int4 one's float32 copy, what steps of more than 8 rows
multiply by on a CPU without bf16 instructions.
"""
import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from inference.engine.linear import RefinedHead, make_linear  # noqa: E402

HIDDEN, INTERMEDIATE, HEADS, KV_HEADS, HEAD_DIM, LAYERS, VOCAB = 576, 1536, 9, 3, 64, 30, 49152
# (name, out features, in features, how many per step)
SHAPES = [("qkv", (HEADS + 2 * KV_HEADS) * HEAD_DIM, HIDDEN, LAYERS), ("o", HIDDEN, HEADS * HEAD_DIM, LAYERS),
          ("gate_up", 2 * INTERMEDIATE, HIDDEN, LAYERS), ("down", HIDDEN, INTERMEDIATE, LAYERS),
          ("lm_head", VOCAB, HIDDEN, 1)]
FORMATS = ("none", "int8", "int4")
LABELS = {"none": "dense", "int8": "int8", "int4": "int4"}


def build(fmt: str, rng: torch.Generator, dtype: torch.dtype,
          head_dtype: torch.dtype | None = None) -> list[tuple[str, object]]:
    """One step's layers in order, each with weights of its own (a step streams them all from memory, as the
    engine's does; one layer called again and again would sit in the CPU's cache and flatter dense weights)."""
    step = []
    for layer in range(LAYERS + 1):
        for name, n, k, count in SHAPES:
            if (count == 1) != (layer == LAYERS):
                continue
            weight = (torch.randn(n, k, generator=rng) * k ** -0.5).to(dtype)
            head = name == "lm_head"
            # Each format's own kernel at every row count (the output layer's past every count: None is dense).
            if head and fmt == "none" and head_dtype not in (None, dtype):  # the int4 head's dense copy
                step.append((name, RefinedHead(weight, None, dense_above=0, dense_dtype=head_dtype)))
                continue
            step.append((name, make_linear(weight, None, fmt, 1 << 30 if head else None, output=head)))
    return step


def run_step(step, inputs: dict, spent: dict) -> None:
    for name, layer in step:
        start = time.perf_counter()
        layer(inputs[name])
        spent[name] += time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="1,2,4,8,16,64", help="rows per step (comma-separated)")
    parser.add_argument("--repeat", type=int, default=15, help="steps timed per format and row count")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16",
                        help="the weights' and activations' dtype")
    parser.add_argument("--head-dtype", choices=("bfloat16", "float32"), default=None,
                        help="the dense output layer's weights in this dtype (default: --dtype's): what the int4 "
                             "output layer multiplies steps of more than 8 rows by (float32 on a CPU without bf16 "
                             "instructions, precision.dense_copy_dtype)")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    head_dtype = getattr(torch, args.head_dtype) if args.head_dtype else None
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = {fmt: build(fmt, torch.Generator().manual_seed(0), dtype, head_dtype) for fmt in FORMATS}
    names = [name for name, *_ in SHAPES]
    print(f"CPU ({torch.backends.cpu.get_cpu_capability()}), {args.dtype} activations, torch threads "
          f"{torch.get_num_threads()}; the linear layers of one forward step "
          f"({LAYERS} layers, then the output layer), median ms per step over {args.repeat} steps, per kind of "
          f"layer and in all; ratio to {args.dtype} dense (below 1 is faster)"
          + (f"; the dense output layer in {args.head_dtype}" if head_dtype not in (None, dtype) else ""))
    print(f"{'rows':>5} {'layers':>8} " + " ".join(f"{LABELS[f]:>20}" for f in FORMATS))
    with torch.inference_mode():
        for rows in map(int, args.rows.split(",")):
            inputs = {name: torch.randn(rows, k).to(dtype) for name, _, k, _ in SHAPES}
            samples = {f: {name: [] for name in names + ["step"]} for f in FORMATS}
            for repeat in range(args.repeat + 1):
                for fmt in FORMATS:  # interleaved, so that drifts in the machine's speed hit every format alike
                    spent = dict.fromkeys(names, 0.0)
                    run_step(steps[fmt], inputs, spent)
                    if repeat:  # the first is a warm-up
                        for name in names:
                            samples[fmt][name].append(spent[name] * 1e3)
                        samples[fmt]["step"].append(sum(spent.values()) * 1e3)
            for name in names + ["step"]:
                ms = {f: statistics.median(samples[f][name]) for f in FORMATS}
                print(f"{rows:>5} {name:>8} " + " ".join(
                    f"{ms[f]:>10.2f} ms ({ms[f] / ms['none']:>4.2f}x)" for f in FORMATS), flush=True)


if __name__ == "__main__":
    main()
