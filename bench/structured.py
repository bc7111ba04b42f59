"""What grammar-constrained decoding costs the engine: a mixed batch against an unconstrained one.

    .venv/bin/python bench/structured.py                                 # CPU, the default model
    .venv/bin/python bench/structured.py --device cuda --dtype bfloat16 --requests 64 --output 128

Two sides, each in a fresh process, with the same requests (chat prompts asking
to classify support tickets, every request --output tokens, EOS ignored so both
batches have the same shape at every step):

  plain   every request unconstrained
  mixed   --constrained of them follow a json_schema constraint (the ticket
          schema below), the others unconstrained

Each side runs the batch --repeats times (in each of --rounds processes, the
sides alternating) after a warm-up (which also compiles
the grammar, so the compile cache is warm) and reports medians of output
tokens/s, time per output token (batch wall time / output tokens) and step
time p50. The mixed side also times the grammar work itself: filling, masking
and unpacking the token bitmask and advancing the matcher (GrammarMask.allowed
and .accept), and applying the masks to the logits in the sampler, as a
fraction of the engine's step time.
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
TICKET_SCHEMA = {
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": ["billing", "technical", "account", "other"]},
        "summary": {"type": "string", "minLength": 10, "maxLength": 120},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 24}, "minItems": 1, "maxItems": 4},
    },
    "required": ["category", "summary", "tags"],
    "additionalProperties": False,
}
TICKETS = [
    "I was charged twice for my subscription this month and need a refund for the extra payment.",
    "The app crashes every time I try to upload a photo larger than 10 MB from my phone.",
    "I cannot log in since I changed my email address; the reset link never arrives.",
    "Could you tell me whether you ship to Norway and how long delivery usually takes?",
    "My invoice shows the wrong company name and VAT number; please send a corrected one.",
    "The export to CSV stopped working after yesterday's update, it produces an empty file.",
    "Please delete my account and all the data you hold about me.",
    "Your website is very slow in the evening, pages take more than ten seconds to load.",
]
BUDGET = 0.10  # grammar work may cost at most this fraction of the time per output token


def prompts(tokenizer, n):
    return [tokenizer.encode_chat([{"role": "user", "content": (
        "Classify this support ticket. Answer with JSON: a category (billing, technical, account or other), "
        f"a one-sentence summary and a few tags.\n\nTicket: {TICKETS[i % len(TICKETS)]}")}]) for i in range(n)]


class Timer:
    """Accumulated seconds spent in wrapped callables, on the engine thread."""

    def __init__(self):
        self.seconds = 0.0
        self.calls = 0

    def wrap(self, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self.calls += 1
        return timed


def instrument(engine_module, grammar_module, sampler_module):
    """Timers around the step, the grammar's mask work and the sampler's mask application."""
    timers = {"step": Timer(), "grammar": Timer(), "apply": Timer()}
    engine_module.Engine._step = timers["step"].wrap(engine_module.Engine._step)
    masked = timers["masked"] = Timer()  # calls: tokens sampled under a grammar mask
    allowed = timers["grammar"].wrap(grammar_module.GrammarMask.allowed)

    def counted(self):
        result = allowed(self)
        masked.calls += result is not None
        return result

    grammar_module.GrammarMask.allowed = counted
    grammar_module.GrammarMask.accept = timers["grammar"].wrap(grammar_module.GrammarMask.accept)
    sampler_module.apply_token_masks = timers["apply"].wrap(sampler_module.apply_token_masks)
    return timers


def run_batch(engine, requests):
    stamps = {r.request_id: [] for r in requests}
    finals = {}
    remaining = threading.Semaphore(0)

    def on_event(event):
        stamps[event.request_id].extend([time.perf_counter()] * len(event.token_ids))
        if event.finished:
            finals[event.request_id] = event
            remaining.release()

    start = time.perf_counter()
    for r in requests:
        engine.submit(r, on_event)
    for _ in requests:
        remaining.acquire()
    seconds = time.perf_counter() - start
    errors = [e.error for e in finals.values() if e.finish_reason == "error"]
    if errors:
        raise SystemExit(f"requests failed: {errors[:3]}")
    tokens = sum(e.completion_tokens for e in finals.values())
    itls = [b - a for s in stamps.values() for a, b in zip(s, s[1:]) if b > a]
    return seconds, tokens, itls


def run_side(args):
    """One side, alone in this process; its result as JSON on the last line."""
    import torch

    from inference.engine import engine as engine_module, grammar as grammar_module, sampler as sampler_module
    from inference.engine.config import EngineConfig
    from inference.engine.grammar_rules import json_schema_constraint
    from inference.engine.types import GenerationRequest, SamplingParams

    torch.manual_seed(0)
    timers = instrument(engine_module, grammar_module, sampler_module)
    config = EngineConfig(kv_cache_bytes=int(args.kv_cache_gb * 2**30), max_num_seqs=max(args.requests, 1))
    engine = engine_module.Engine(str(args.model), device=args.device, dtype=args.dtype, config=config)
    engine.start()
    constraint = json_schema_constraint(TICKET_SCHEMA)
    n_constrained = min(args.constrained, args.requests) if args.only == "mixed" else 0
    ids = prompts(engine.tokenizer, args.requests)

    # Constrained requests spread over the batch, as traffic would mix them.
    chosen = {k * args.requests // n_constrained for k in range(n_constrained)} if n_constrained else set()

    def batch(tag, output=args.output):
        return [GenerationRequest(f"{tag}-{i}", prompt,
                                  SamplingParams(max_tokens=output, temperature=0.7, seed=i, ignore_eos=True),
                                  constraint=constraint if i in chosen else None)
                for i, prompt in enumerate(ids)]

    setup_s = compile_s = None
    if n_constrained:
        start = time.perf_counter()
        engine.grammar_compiler()  # once per engine: xgrammar's view of the vocabulary
        setup_s = time.perf_counter() - start
        start = time.perf_counter()
        engine.prepare(GenerationRequest("compile", ids[0], SamplingParams(), constraint=constraint))
        compile_s = time.perf_counter() - start
    run_batch(engine, batch("warmup", output=min(4, args.output)))  # one-off allocations, every code path
    runs = []
    for r in range(args.repeats):
        for t in timers.values():
            t.seconds, t.calls = 0.0, 0
        seconds, tokens, itls = run_batch(engine, batch(f"run{r}"))
        runs.append({
            "seconds": seconds, "tokens": tokens, "tok_s": tokens / seconds, "s_per_token": seconds / tokens,
            "itl_p50": statistics.median(itls), "step_s": timers["step"].seconds, "steps": timers["step"].calls,
            "grammar_s": timers["grammar"].seconds, "apply_s": timers["apply"].seconds,
            "masked_tokens": timers["masked"].calls,
        })
    engine.shutdown()
    print(json.dumps({"side": args.only, "constrained": n_constrained, "setup_s": setup_s, "compile_s": compile_s,
                      "runs": runs}))


def median(result, key):
    return statistics.median(run[key] for run in result["runs"])


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--constrained", type=int, default=8, help="how many of the requests follow the schema")
    parser.add_argument("--output", type=int, default=64, help="output tokens per request")
    parser.add_argument("--repeats", type=int, default=2, help="measured runs of the batch per side and round")
    parser.add_argument("--rounds", type=int, default=2, help="fresh processes per side, alternating")
    parser.add_argument("--kv-cache-gb", type=float, default=1.0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--only", choices=["plain", "mixed"], help=argparse.SUPPRESS)  # one side, in a child
    return parser.parse_args()


def main():
    args = parse_args()
    if args.only:
        return run_side(args)
    import torch

    constrained = min(args.constrained, args.requests)
    print(f"workload: {args.requests} requests ({constrained} json_schema in the mixed batch), "
          f"{args.output} output tokens each, EOS ignored, temperature 0.7; "
          f"{args.rounds} x {args.repeats} runs per side; "
          f"device {args.device} {args.dtype}; torch threads {torch.get_num_threads()}; "
          f"each side in a fresh process", flush=True)
    results = {}
    # Sides alternate, round after round, so a slow spell of the machine hits both alike.
    for _ in range(args.rounds):
        for side in ("plain", "mixed"):
            child = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--only", side],
                                   capture_output=True, text=True)
            if child.returncode:
                print(child.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"side {side} failed")
            result = json.loads(child.stdout.strip().splitlines()[-1])
            print(f"{side}: " + ", ".join(f"{r['tok_s']:.1f} tok/s" for r in result["runs"]), flush=True)
            if side in results:
                results[side]["runs"] += result["runs"]
            else:
                results[side] = result
    report(results, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def report(results, args):
    plain, mixed = results["plain"], results["mixed"]
    rows = [
        ("output tokens/s", "tok_s", 1, "{:10.1f}"),
        ("time per output token (ms)", "s_per_token", 1000, "{:10.2f}"),
        ("step time p50 (ms)", "itl_p50", 1000, "{:10.2f}"),
    ]
    print(f"\nmedians over {args.rounds * args.repeats} runs      {'plain':>10} {'mixed':>10} {'mixed/plain':>12}")
    for label, key, scale, fmt in rows:
        a, b = median(plain, key) * scale, median(mixed, key) * scale
        print(f"{label:32} {fmt.format(a)} {fmt.format(b)} {b / a:11.3f}x")
    grammar = statistics.median(r["grammar_s"] / r["step_s"] for r in mixed["runs"])
    applying = statistics.median(r["apply_s"] / r["step_s"] for r in mixed["runs"])
    per_call = statistics.median(r["grammar_s"] / max(r["steps"], 1) for r in mixed["runs"])
    masked = median(mixed, "masked_tokens")
    per_token = statistics.median(r["grammar_s"] / max(r["masked_tokens"], 1) for r in mixed["runs"])
    slowdown = median(mixed, "s_per_token") / median(plain, "s_per_token") - 1
    print(f"\ngrammar setup (once per engine): {mixed['setup_s'] * 1000:.0f} ms; "
          f"schema compile (uncached, then cached): {mixed['compile_s'] * 1000:.0f} ms")
    print(f"grammar work (mask fill + unpack + accept), share of step time: {grammar:.2%} "
          f"({per_call * 1000:.2f} ms per step for {mixed['constrained']} constrained rows, "
          f"{per_token * 1e6:.0f} us per constrained token)")
    print(f"tokens sampled under a grammar mask per run: {masked:.0f} of {median(mixed, 'tokens'):.0f} "
          f"(a finished grammar forces EOS, which is ignored here; the rest of that choice is unconstrained)")
    print(f"masks applied to logits in the sampler, share of step time:   {applying:.2%}")
    spread = {side: "{:.1f}-{:.1f}".format(min(r["tok_s"] for r in results[side]["runs"]),
                                           max(r["tok_s"] for r in results[side]["runs"]))
              for side in ("plain", "mixed")}
    print(f"time per output token, mixed vs plain: {slowdown:+.2%} "
          f"(run-to-run tokens/s: plain {spread['plain']}, mixed {spread['mixed']})")
    total = grammar + applying
    verdict = "yes" if total <= BUDGET else "NO"
    print(f"grammar cost <= {BUDGET:.0%} of time per token: {verdict} "
          f"(measured directly: {total:.2%} of step time; end to end: {slowdown:+.2%}, "
          f"{'also' if slowdown <= BUDGET else 'NOT'} within budget)")


if __name__ == "__main__":
    main()
