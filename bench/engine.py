"""Engine throughput and latency against transformers, on one workload, in one run.

    .venv/bin/python bench/engine.py                       # CPU, the default model (make run prepares it)
    .venv/bin/python bench/engine.py --device cuda --dtype bfloat16 --qwen05b   # GPU, Qwen2.5-0.5B's config, random weights

Runs the same requests (random prompt lengths, fixed output length, EOS ignored)
through (a) transformers `generate`, one request at a time, (b) transformers'
continuous batching (`generate_batch`), (c) this engine, and prints output
tokens/s, time to first token p50/p99 and inter-token latency p50 for each,
with our ratio to (b). All requests arrive at t=0.
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


def percentile(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def summary(name, tokens, seconds, ttfts, itls):
    return {"name": name, "tokens": tokens, "seconds": seconds, "tok_s": tokens / seconds,
            "ttft_p50": percentile(ttfts, 50), "ttft_p99": percentile(ttfts, 99),
            "itl_p50": statistics.median(itls) if itls else float("nan")}


def run_generate(model, prompts, new_tokens, device):
    tokens, ttfts, itls = 0, [], []
    start = time.perf_counter()
    for prompt in prompts:
        t0 = time.perf_counter()
        out = model.generate(torch.tensor([prompt], device=device), max_new_tokens=1, min_new_tokens=1,
                             do_sample=False, pad_token_id=0)
        ttfts.append(time.perf_counter() - start)  # queued behind the earlier requests, as a server would be
        first = time.perf_counter() - t0
        t1 = time.perf_counter()
        out = model.generate(torch.tensor([prompt], device=device), max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
        whole = time.perf_counter() - t1
        n = out.shape[1] - len(prompt)
        tokens += n
        itls.append(max(whole - first, 0) / max(n - 1, 1))
    return summary("transformers generate (one at a time)", tokens, time.perf_counter() - start, ttfts, itls)


def run_generate_batch(model, prompts, new_tokens):
    config = GenerationConfig(max_new_tokens=new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0)
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
    return summary("transformers continuous batching", tokens, seconds, ttfts, itls)


def run_engine(model_path, prompts, new_tokens, device, dtype, kv_cache_gb):
    from inference.engine.config import EngineConfig
    from inference.engine.engine import Engine
    from inference.engine.types import GenerationRequest, SamplingParams

    config = EngineConfig(kv_cache_bytes=int(kv_cache_gb * 2**30), max_num_seqs=max(len(prompts), 1))
    engine = Engine(str(model_path), device=device, dtype=dtype, config=config)
    engine.start()
    params = SamplingParams(max_tokens=new_tokens, temperature=0, ignore_eos=True)
    # Warm-up: the first forward pays one-off allocation costs on every backend.
    done = threading.Event()
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
    return summary("this engine", sum(counts.values()), seconds, ttfts, itls)


def random_qwen_model(dtype) -> Path:
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    folder = Path(tempfile.mkdtemp(prefix="qwen05b-random-"))
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**QWEN25_05B)).to(dtype)
    model.save_pretrained(folder)
    # The engine needs a tokenizer with a chat template; ids are what is measured, so any will do.
    AutoTokenizer.from_pretrained(DEFAULT_MODEL, local_files_only=True).save_pretrained(folder)
    return folder


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--qwen05b", action="store_true", help="random weights in Qwen2.5-0.5B's configuration")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--min-prompt", type=int, default=32)
    parser.add_argument("--max-prompt", type=int, default=512)
    parser.add_argument("--output", type=int, default=128, help="output tokens per request")
    parser.add_argument("--sequential", type=int, default=4,
                        help="how many of the requests (a) runs one at a time (its tokens/s is per its own count)")
    parser.add_argument("--kv-cache-gb", type=float, default=2.0)
    parser.add_argument("--skip", default="", help="comma list of a,b,c to skip")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--only", choices=["a", "b", "c"], help=argparse.SUPPRESS)  # one side, in a child process
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def run_one(args):
    """One side of the comparison, alone in this process, its result as JSON on the last line."""
    torch.manual_seed(0)
    rng = random.Random(0)
    dtype = getattr(torch, args.dtype)
    path = args.model_dir
    vocab = AutoConfig.from_pretrained(path, local_files_only=True).vocab_size
    prompts = [[rng.randrange(100, min(vocab, 30000)) for _ in range(rng.randint(args.min_prompt, args.max_prompt))]
               for _ in range(args.requests)]
    if args.only == "c":
        result = run_engine(path, prompts, args.output, args.device, args.dtype, args.kv_cache_gb)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype).to(args.device).eval()
        if args.only == "a":
            result = run_generate(model, prompts[:args.sequential], args.output, args.device)
        else:
            result = run_generate_batch(model, prompts, args.output)
    print(json.dumps(result))


def main():
    args = parse_args()
    if args.only:
        return run_one(args)
    path = random_qwen_model(getattr(torch, args.dtype)) if args.qwen05b else args.model
    print(f"workload: {args.requests} requests, prompts {args.min_prompt}-{args.max_prompt} tokens, "
          f"{args.output} output tokens each, EOS ignored; device {args.device} {args.dtype}; "
          f"torch threads {torch.get_num_threads()}; each side in a fresh process", flush=True)
    results = []
    for side in "abc":
        if side in args.skip.split(","):
            continue
        # A fresh interpreter per side: one library's threads and caches must not slow the next.
        argv = [a for a in sys.argv[1:] if a != "--qwen05b"]
        child = subprocess.run([sys.executable, __file__, *argv, "--only", side, "--model-dir", str(path)],
                               capture_output=True, text=True)
        if child.returncode:
            print(child.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"side {side} failed")
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
        print(results[-1], flush=True)

    print(f"\n{'':40} {'tok/s':>9} {'TTFT p50':>9} {'TTFT p99':>9} {'ITL p50':>9} {'tokens':>7}")
    for r in results:
        print(f"{r['name']:40} {r['tok_s']:9.1f} {r['ttft_p50']:8.2f}s {r['ttft_p99']:8.2f}s "
              f"{r['itl_p50'] * 1000:7.1f}ms {r['tokens']:7d}")
    by_name = {r["name"]: r for r in results}
    ours, theirs = by_name.get("this engine"), by_name.get("transformers continuous batching")
    if ours and theirs:
        print(f"\nthis engine / transformers continuous batching: {ours['tok_s'] / theirs['tok_s']:.2f}x output tokens/s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
