"""Engine throughput and latency against transformers' continuous batching, at several concurrencies, in one run.

    .venv/bin/python bench/engine.py                      # CPU, the default model (make run prepares it)
    .venv/bin/python bench/engine.py --device cuda --qwen05b   # GPU: Qwen2.5-0.5B's configuration, random weights

For each concurrency N (default 1, 16 and 64; 256 too on a GPU), N requests with
random prompt lengths and a fixed output length (EOS ignored) arrive at t=0 and
run through (a) transformers' continuous batching (`generate_batch`), in its
fastest dtype here (float32 on the CPU, where its bfloat16 matmuls repack the
weights on every call), and (b) this engine in its default precision (`auto`:
bfloat16 with int4 weights on a CPU with AVX2, AVX-512 or bf16 instructions, bfloat16 on a GPU),
plus (c) this engine in float32 for a like-for-like row on the CPU (and, with --sides ...,ours-eager, (d)
the default precision with enforce_eager: no CUDA graphs, no compiled CPU decode step; with ...,ours-narrow,
(e) the default precision with wide steps off: prefills and large batches in bf16, wide_steps.py). Each runs in
a fresh process. Printed: output tokens/s, time to first token p50/p99,
inter-token latency p50, and our ratio to (a).
"""
import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig  # noqa: E402

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "var" / "models" / "smollm2-135m-instruct"
QWEN25_05B = dict(  # Qwen2.5-0.5B-Instruct's config.json, weights random
    architectures=["Qwen2ForCausalLM"], hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
    num_attention_heads=14, num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768,
    rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, hidden_act="silu", sliding_window=None,
    use_sliding_window=False, bos_token_id=151643, eos_token_id=151645)
SIDES = {"hf": "transformers continuous batching", "ours": "this engine", "ours-fp32": "this engine, float32",
         "ours-eager": "this engine, enforce_eager", "ours-narrow": "this engine, wide steps off"}


def percentile(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def summary(name, tokens, seconds, ttfts, itls, **extra):
    return {"name": name, "tokens": tokens, "seconds": seconds, "tok_s": tokens / seconds,
            "ttft_p50": percentile(ttfts, 50), "ttft_p99": percentile(ttfts, 99),
            "itl_p50": statistics.median(itls) if itls else float("nan"), **extra}


def run_generate_batch(model, prompts, new_tokens):
    config = GenerationConfig(max_new_tokens=new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0)
    model.generate_batch(prompts[:1], generation_config=GenerationConfig(max_new_tokens=2, do_sample=False,
                                                                         eos_token_id=None, pad_token_id=0))
    start = time.perf_counter()
    outputs = model.generate_batch(prompts, generation_config=config, record_timestamps=True)
    seconds = time.perf_counter() - start
    ttfts, itls, tokens = [], [], 0
    for out in outputs.values():
        tokens += len(out.generated_tokens)
        stamps = out.timestamps or []
        if stamps:
            ttfts.append(stamps[0] - start)
            itls.extend(b - a for a, b in zip(stamps, stamps[1:]))
    return summary(SIDES["hf"], tokens, seconds, ttfts, itls, dtype=str(model.dtype).replace("torch.", ""))


def run_engine(name, model_path, prompts, new_tokens, device, dtype, kv_cache_gb, enforce_eager=False,
               wide_steps="auto"):
    from inference.engine.config import EngineConfig
    from inference.engine.engine import Engine
    from inference.engine.types import GenerationRequest, SamplingParams

    kv = None if device.startswith("cuda") else int(kv_cache_gb * 2**30)
    config = EngineConfig(kv_cache_bytes=kv, max_num_seqs=max(len(prompts), 1), enable_prefix_caching=False,
                          wide_steps=wide_steps)
    engine = Engine(str(model_path), device=device, dtype=dtype, config=config, enforce_eager=enforce_eager)
    engine.start()
    params = SamplingParams(max_tokens=new_tokens, temperature=0, ignore_eos=True)
    done = threading.Event()  # warm-up: the first step pays one-off costs on every backend
    engine.submit(GenerationRequest("warmup", prompts[0], SamplingParams(max_tokens=2, temperature=0)),
                  lambda e: e.finished and done.set())
    done.wait()
    stamps = {i: [] for i in range(len(prompts))}
    counts = {}
    remaining = threading.Semaphore(0)

    def on_event(i):
        def record(event):
            now = time.perf_counter()
            stamps[i].extend([now] * len(event.token_ids))
            if event.finished:
                counts[i] = event.completion_tokens
                remaining.release()
        return record

    start = time.perf_counter()
    for i, prompt in enumerate(prompts):
        engine.submit(GenerationRequest(f"r{i}", prompt, params), on_event(i))
    for _ in prompts:
        remaining.acquire()
    seconds = time.perf_counter() - start
    engine.shutdown()
    ttfts = [s[0] - start for s in stamps.values() if s]
    itls = [b - a for s in stamps.values() for a, b in zip(s, s[1:]) if b > a]
    runner = engine.runner
    wide = runner.decoder is not None and runner.decoder.wide_above is not None
    return summary(name, sum(counts.values()), seconds, ttfts, itls, dtype=str(runner.dtype).replace("torch.", ""),
                   weights=runner.quantization, attention=runner.backend, wide_steps="float32" if wide else "off")


def random_qwen_model(dtype) -> Path:
    """Qwen2.5-0.5B's architecture with random weights, and a small ChatML tokenizer built here: nothing is
    downloaded, nothing needs converting (the GPU host of bench/gpu.sh has neither network nor model)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from inference.engine.tiny import build_tokenizer

    folder = Path(tempfile.mkdtemp(prefix="qwen05b-random-"))
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**QWEN25_05B)).to(dtype)
    model.save_pretrained(folder)
    build_tokenizer().save_pretrained(folder)  # ids are what is measured: any tokenizer with a template will do
    return folder


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--qwen05b", action="store_true", help="random weights in Qwen2.5-0.5B's configuration")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--concurrency", default=None, help="comma list (default: 1,16,64; 1,16,64,256 on cuda)")
    parser.add_argument("--min-prompt", type=int, default=32)
    parser.add_argument("--max-prompt", type=int, default=512)
    parser.add_argument("--output", type=int, default=128, help="output tokens per request")
    parser.add_argument("--kv-cache-gb", type=float, default=2.0, help="CPU only; a GPU sizes it from free memory")
    parser.add_argument("--sides", default=None, help="comma list of hf,ours,ours-fp32,ours-eager,ours-narrow (default: "
                                                      "hf,ours,ours-fp32 on the CPU, hf,ours on a GPU)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--only", choices=sorted(SIDES), help=argparse.SUPPRESS)  # one side, in a child process
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def make_prompts(args, path, count):
    rng = random.Random(0)
    vocab = AutoConfig.from_pretrained(path, local_files_only=True).vocab_size
    return [[rng.randrange(100, min(vocab, 30000)) for _ in range(rng.randint(args.min_prompt, args.max_prompt))]
            for _ in range(count)]


def run_one(args):
    """One side at one concurrency, alone in this process, its result as JSON on the last line."""
    torch.manual_seed(0)
    prompts = make_prompts(args, args.model_dir, args.n)
    cuda = args.device.startswith("cuda")
    if args.only == "hf":
        dtype = torch.bfloat16 if cuda else torch.float32
        model = AutoModelForCausalLM.from_pretrained(args.model_dir, local_files_only=True, dtype=dtype)
        result = run_generate_batch(model.to(args.device).eval(), prompts, args.output)
    else:
        dtype = "float32" if args.only == "ours-fp32" else "auto"
        result = run_engine(SIDES[args.only], args.model_dir, prompts, args.output, args.device, dtype,
                            args.kv_cache_gb, enforce_eager=args.only == "ours-eager",
                            wide_steps="off" if args.only == "ours-narrow" else "auto")
    print(json.dumps({**result, "concurrency": args.n}))


def main():
    args = parse_args()
    if args.only:
        return run_one(args)
    cuda = args.device.startswith("cuda")
    levels = [int(n) for n in (args.concurrency or ("1,16,64,256" if cuda else "1,16,64")).split(",")]
    sides = (args.sides or ("hf,ours" if cuda else "hf,ours,ours-fp32")).split(",")
    path = random_qwen_model(torch.bfloat16) if args.qwen05b else args.model
    print(f"workload: N requests at t=0, prompts {args.min_prompt}-{args.max_prompt} tokens, {args.output} output "
          f"tokens each, EOS ignored; device {args.device}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; each side in a fresh process", flush=True)
    results = []
    for n in levels:
        for side in sides:
            argv = [a for a in sys.argv[1:] if a != "--qwen05b"]
            child = subprocess.run([sys.executable, __file__, *argv, "--only", side, "--n", str(n),
                                    "--model-dir", str(path)], capture_output=True, text=True)
            if child.returncode:
                print(child.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"{side} at {n} failed")
            results.append(json.loads(child.stdout.strip().splitlines()[-1]))
            print(results[-1], flush=True)

    print(f"\n{'N':>4} {'':34} {'precision':>16} {'tok/s':>9} {'TTFT p50':>9} {'TTFT p99':>9} {'ITL p50':>9} "
          f"{'vs hf':>7}")
    for n in levels:
        rows = [r for r in results if r["concurrency"] == n]
        base = next((r for r in rows if r["name"] == SIDES["hf"]), None)
        for r in rows:
            precision = r["dtype"] + ("" if r.get("weights", "none") == "none" else f"+{r['weights']}")
            ratio = f"{r['tok_s'] / base['tok_s']:6.2f}x" if base else ""
            print(f"{n:>4} {r['name']:34} {precision:>16} {r['tok_s']:9.1f} {r['ttft_p50']:8.2f}s "
                  f"{r['ttft_p99']:8.2f}s {r['itl_p50'] * 1000:7.1f}ms {ratio:>7}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
