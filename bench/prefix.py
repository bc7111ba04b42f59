"""What the prefix cache saves: a growing chat session, and requests that share a long system prompt.

    .venv/bin/python bench/prefix.py                  # CPU, the default model (make run prepares it)
    .venv/bin/python bench/prefix.py --device cuda    # GPU, same model

Two workloads, each run with the cache off and on (each side in a fresh process):
  session  4 turns of one conversation: every turn sends the whole history (a
           300-token system prompt, earlier ~250-token questions and the model's
           answers, each ending where the model ends it, at most --answer-tokens)
           plus a new question; turn 4's prompt is about 1,500 tokens.
  shared   16 requests with the same ~1,000-token system prompt and different
           questions, sent one after the other (as a few-shot preamble would be).
Printed per request: prompt tokens, prompt tokens computed (the rest came from the
cache, as the engine reports in cached_tokens), and time to first token; then the
cache-on/cache-off ratios of turn 4's TTFT and of the shared requests' median TTFT.
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
TOPICS = ["lighthouses", "tides", "sailing ships", "coral reefs", "harbour cities", "storms at sea", "navigation",
          "whales", "fishing villages", "deep-sea vents", "icebergs", "ocean currents", "pirates", "maps",
          "submarines", "beaches"]


def paragraph(tokenizer, topic: str, tokens: int) -> str:
    """Deterministic filler text about a topic, about `tokens` tokens long in this tokenizer."""
    parts = []
    while len(tokenizer.encode(" ".join(parts))) < tokens:
        parts.append(f"Fact {len(parts) + 1} about {topic}: it has been studied for many years by people who "
                     "love the sea.")
    return " ".join(parts)


class Client:
    def __init__(self, engine):
        self.engine = engine
        self.count = 0

    def ask(self, messages, max_tokens, ignore_eos=True):
        """(prompt tokens, cached tokens, TTFT seconds, answer text) of one greedy request."""
        from inference.engine.types import GenerationRequest, SamplingParams

        ids = self.engine.tokenizer.encode_chat(messages)
        done, first, text = threading.Event(), [], []

        def on_event(event):
            if event.token_ids and not first:
                first.append(time.perf_counter())
            text.append(event.text)
            if event.finished:
                self.final = event
                done.set()

        self.count += 1
        start = time.perf_counter()
        params = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=ignore_eos)
        self.engine.submit(GenerationRequest(f"q{self.count}", ids, params, cache_salt="bench"), on_event)
        done.wait()
        return len(ids), self.final.cached_tokens, first[0] - start, "".join(text)


def run_side(args) -> list[dict]:
    from inference.engine.config import EngineConfig
    from inference.engine.engine import Engine

    config = EngineConfig(enable_prefix_caching=args.cache == "on",
                          kv_cache_bytes=None if args.device.startswith("cuda") else 1 << 30)
    engine = Engine(str(args.model), device=args.device, config=config)
    engine.start()
    client = Client(engine)
    client.ask([{"role": "user", "content": "Warm up."}], 2)
    rows = []
    tok = engine.tokenizer
    history = [{"role": "system", "content": "You are a patient teacher. " + paragraph(tok, "the sea", 300)}]
    for turn in range(1, 5):
        # A 300-token system prompt, then each turn adds ~250 tokens of question and the answer: turn 4's prompt
        # is ~1,500 tokens.
        history.append({"role": "user", "content": f"Turn {turn}. Tell me about {TOPICS[turn]}. "
                                                   + paragraph(tok, TOPICS[turn], 250)})
        # The answer ends where the model ends it, as a chat client sees it: an answer forced past its end
        # runs on into chat-control tokens (<|im_end|>, <|im_start|>) that its text does not carry, so the
        # next turn's prompt would part from the cached tokens a few words in.
        prompt, cached, ttft, answer = client.ask(history, args.answer_tokens, ignore_eos=False)
        history.append({"role": "assistant", "content": answer})
        rows.append({"workload": "session", "request": f"turn {turn}", "prompt": prompt, "cached": cached,
                     "ttft": ttft})
    system = {"role": "system", "content": "Answer like a ship's captain. " + paragraph(tok, "seamanship", 1000)}
    for i, topic in enumerate(TOPICS):
        prompt, cached, ttft, _ = client.ask([system, {"role": "user", "content": f"What about {topic}?"}], 8)
        rows.append({"workload": "shared", "request": f"#{i + 1}", "prompt": prompt, "cached": cached,
                     "ttft": ttft})
    engine.shutdown()
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--qwen05b", action="store_true", help="random weights in Qwen2.5-0.5B's configuration "
                                                               "(bench/engine.py's; for a GPU host without models)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--answer-tokens", type=int, default=100, help="tokens the model answers each turn")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--cache", choices=["on", "off"], help=argparse.SUPPRESS)  # one side, in a child process
    args = parser.parse_args()
    if args.cache:
        print(json.dumps(run_side(args)))
        return
    results = {}
    argv = [a for a in sys.argv[1:] if a != "--qwen05b"]
    if args.qwen05b:
        import torch

        from bench.engine import random_qwen_model

        argv += ["--model", str(random_qwen_model(torch.bfloat16))]
    for side in ("off", "on"):
        child = subprocess.run([sys.executable, __file__, *argv, "--cache", side], capture_output=True,
                               text=True)
        if child.returncode:
            print(child.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"cache {side} failed")
        results[side] = json.loads(child.stdout.strip().splitlines()[-1])

    print(f"{'':8} {'request':8} {'prompt':>7} | {'computed':>8} {'TTFT':>8} (cache off) | "
          f"{'computed':>8} {'TTFT':>8} (cache on)")
    for off, on in zip(results["off"], results["on"]):
        print(f"{off['workload']:8} {off['request']:8} {off['prompt']:7d} | {off['prompt'] - off['cached']:8d} "
              f"{off['ttft'] * 1000:6.0f}ms             | {on['prompt'] - on['cached']:8d} {on['ttft'] * 1000:6.0f}ms")
    turn4 = [r for r in zip(results["off"], results["on"]) if r[0]["request"] == "turn 4"][0]
    shared = {side: statistics.median(r["ttft"] for r in results[side] if r["workload"] == "shared")
              for side in results}
    computed = {side: sum(r["prompt"] - r["cached"] for r in results[side]) for side in results}
    print(f"\nturn 4 TTFT, cache on / off: {turn4[1]['ttft'] / turn4[0]['ttft']:.1%}"
          f"  ({turn4[1]['ttft'] * 1000:.0f} ms vs {turn4[0]['ttft'] * 1000:.0f} ms)")
    print(f"shared system prompt, median TTFT on / off: {shared['on'] / shared['off']:.1%}")
    print(f"prompt tokens computed over both workloads: {computed['on']} with the cache, {computed['off']} without")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
