"""Speed and fidelity of each weight format on this machine: what `--dtype auto` / `--quantization auto` rest on.

    .venv/bin/python bench/precision.py                 # CPU, the default model (make run prepares it)

For each precision (float32, bfloat16, bfloat16 with int8 weights, bfloat16 with
int4 weights) the engine answers a fixed set of prompts greedily, each alone (one
sequence: the step a single client sees, on the CPU in bf16 the compiled graph of
compiled_decode.py) and then all at once. Fidelity is top-1 agreement, of each
set of answers: along the engine's own answer, the share of positions where
transformers in float32, fed the same prefix, would pick the same next token
(1.0: the same model). Printed side by side with the milliseconds per decode step.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "var" / "models" / "smollm2-135m-instruct"
PRECISIONS = {"float32": ("float32", "none"), "bfloat16": ("bfloat16", "none"), "bf16+int8": ("bfloat16", "int8"),
              "bf16+int4": ("bfloat16", "int4")}
PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.", "Explain photosynthesis simply.",
           "List three uses of a paperclip.", "Who wrote Romeo and Juliet?", "Translate 'good morning' to Spanish.",
           "Why is the sky blue?", "Give me a tip for learning to cook.", "What is 12 times 12?",
           "Describe a cat in two sentences.", "What does a lighthouse do?", "Name the planets of the solar system.",
           "How do I boil an egg?", "What is a prime number?", "Tell me a fun fact about octopuses.",
           "Summarise the plot of Cinderella."]


def run_precision(args, name):
    """Greedy answers and step times of one precision, in this process."""
    from inference.engine.config import EngineConfig
    from inference.engine.engine import Engine
    from inference.engine.types import GenerationRequest, SamplingParams

    dtype, quantization = PRECISIONS[name]
    engine = Engine(str(args.model), dtype=dtype, quantization=quantization,
                    config=EngineConfig(kv_cache_bytes=512 << 20, enable_prefix_caching=False))
    engine.start()
    prompts = [engine.tokenizer.encode_chat([{"role": "user", "content": p}]) for p in PROMPTS]
    params = SamplingParams(max_tokens=args.tokens, temperature=0, ignore_eos=True)

    def run(batch):
        done = threading.Semaphore(0)
        results = {}
        stamps = {}

        def on_event(i):
            def record(event):
                stamps.setdefault(i, []).extend([time.perf_counter()] * len(event.token_ids))
                results.setdefault(i, []).extend(event.token_ids)
                if event.finished:
                    done.release()
            return record

        start = time.perf_counter()
        for i in batch:
            engine.submit(GenerationRequest(f"{name}-{i}-{len(batch)}", prompts[i], params), on_event(i))
        for _ in batch:
            done.acquire()
        seconds = time.perf_counter() - start
        gaps = sorted(b - a for s in stamps.values() for a, b in zip(s, s[1:]) if b > a)
        return results, seconds, gaps[len(gaps) // 2]

    run([0])  # warm-up
    alone, steps_alone = [], []
    for i in range(len(prompts)):  # one at a time: on the CPU in bf16 each step is the compiled one-sequence graph
        result, _, step = run([i])
        alone.append(result[i])
        steps_alone.append(step)
    answers, seconds, step_all = run(list(range(len(prompts))))
    engine.shutdown()
    return {"name": name, "answers": [answers[i] for i in range(len(prompts))], "answers_alone": alone,
            "prompts": prompts, "step_ms_alone": statistics.median(steps_alone) * 1000, "step_ms_all": step_all * 1000,
            "tok_s_all": len(prompts) * args.tokens / seconds}


def agreement(model_path, prompts, answers):
    """Share of answer positions where float32 transformers picks the same token given the same prefix."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, local_files_only=True, dtype=torch.float32).eval()
    same = total = 0
    with torch.inference_mode():
        for prompt, answer in zip(prompts, answers):
            ids = torch.tensor([prompt + answer])
            predicted = model(ids).logits[0, len(prompt) - 1:-1].argmax(-1).tolist()
            same += sum(p == a for p, a in zip(predicted, answer))
            total += len(answer)
    return same / total


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--tokens", type=int, default=32, help="tokens each answer is long")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--only", choices=sorted(PRECISIONS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        print(json.dumps(run_precision(args, args.only)))
        return
    rows = []
    for name in PRECISIONS:  # each in a fresh process: one precision's threads and caches never slow the next
        child = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--only", name], capture_output=True,
                               text=True)
        if child.returncode:
            print(child.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{name} failed")
        row = json.loads(child.stdout.strip().splitlines()[-1])
        row["agreement"] = agreement(args.model, row["prompts"], row["answers"])
        row["agreement_alone"] = agreement(args.model, row["prompts"], row["answers_alone"])
        rows.append(row)
        print(f"{name}: done", flush=True)
    print(f"\n{'':10} {'top-1 agreement':>16} {'(1 seq)':>8} {'step, 1 seq':>12} {'step, 16 seqs':>14} "
          f"{'tok/s, 16 seqs':>15}")
    for r in rows:
        print(f"{r['name']:10} {r['agreement']:16.1%} {r['agreement_alone']:8.1%} {r['step_ms_alone']:10.1f}ms "
              f"{r['step_ms_all']:12.1f}ms {r['tok_s_all']:15.1f}")
    print("top-1 agreement: answers decoded 16 at once, then each alone (1 seq); steps: median time between tokens")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
