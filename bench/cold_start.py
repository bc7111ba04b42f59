"""An engine's first minutes on a machine whose compile cache is empty: the decode step compiled before serving against
compiled in the background while serving eager (background_compile.py), in one run.

    .venv/bin/python bench/cold_start.py                 # the default model (make run prepares it)
    .venv/bin/python bench/cold_start.py --minutes 5 --sides background,startup

Each side runs in a fresh process with a fresh, empty TORCHINDUCTOR_CACHE_DIR (nothing compiled before, as on a new
machine) and the same engine settings as the embedded default. From the moment the engine is created, one client
sends greedy requests of --tokens tokens back to back. Printed per side: seconds until the engine has run its
warm-up requests (what /readyz waits for), until the first answer, until decode steps run compiled; the client's
output tokens/s before and after that, and its tokens answered within the first --minutes minutes.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "var" / "models" / "smollm2-135m-instruct"
SIDES = {"background": "compiled in the background", "startup": "compiled before serving"}


def measure(args) -> dict:
    sys.path.insert(0, str(ROOT))
    import threading

    from inference.engine.config import EngineConfig
    from inference.engine.engine import Engine
    from inference.engine.types import GenerationRequest, SamplingParams

    started = time.monotonic()
    engine = Engine(str(args.model), config=EngineConfig(kv_cache_bytes=args.kv_cache_mb << 20),
                    compile_in_background=args.side == "background")
    engine.start()
    engine.warm_up(timeout=3600)
    ready = time.monotonic() - started
    prompt = engine.tokenizer.encode_chat([{"role": "user", "content": "Tell me about the sea."}])
    answers, compiled_at = [], None  # (finished at, tokens, decode tok/s, compiled all along)
    limit = args.minutes * 60
    while time.monotonic() - started < limit:
        compiled_before = engine.stats()["compiling"] == 0 and engine.runner.compiled is not None
        times, done = [], threading.Event()

        def on_event(event, times=times, done=done):
            if event.token_ids:
                times.append(time.monotonic())
            if event.finished:
                done.set()

        engine.submit(GenerationRequest(f"r{len(answers)}", prompt, SamplingParams(
            max_tokens=args.tokens, temperature=0, ignore_eos=True)), on_event)
        done.wait()
        rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
        answers.append((times[-1] - started, len(times), rate, compiled_before))
        if compiled_at is None and engine.runner.compiled is not None and engine.stats()["compiling"] == 0:
            compiled_at = time.monotonic() - started
    engine.shutdown(timeout=30)
    eager = [rate for _, _, rate, compiled in answers if not compiled]
    fast = [rate for _, _, rate, compiled in answers if compiled]
    return {"side": args.side, "ready_s": ready, "first_answer_s": answers[0][0] if answers else None,
            "compiled_s": compiled_at, "eager_tok_s": statistics.median(eager) if eager else None,
            "compiled_tok_s": statistics.median(fast) if fast else None,
            "tokens": sum(tokens for end, tokens, _, _ in answers if end <= limit), "answers": len(answers)}


def run_side(args, side: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="cold-compile-") as cache:
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache, HF_HUB_OFFLINE="1")
        argv = [sys.executable, __file__, "--side", side, "--model", str(args.model), "--minutes", str(args.minutes),
                "--tokens", str(args.tokens), "--kv-cache-mb", str(args.kv_cache_mb)]
        done = subprocess.run(argv, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{side} failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def show(value, digits=1):
    return "-" if value is None else f"{value:.{digits}f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--sides", default="background,startup")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--kv-cache-mb", type=int, default=1024)
    parser.add_argument("--side", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(measure(args)))
        return
    rows = [run_side(args, side) for side in args.sides.split(",")]
    print(f"{args.model.name}, empty compile cache, one client, {args.tokens}-token answers, first "
          f"{args.minutes:g} minutes")
    print(f"{'side':28} {'ready s':>8} {'1st answer s':>12} {'compiled s':>10} {'eager tok/s':>11} "
          f"{'compiled tok/s':>14} {'tokens':>7}")
    for row in rows:
        print(f"{SIDES[row['side']]:28} {show(row['ready_s']):>8} {show(row['first_answer_s']):>12} "
              f"{show(row['compiled_s']):>10} {show(row['eager_tok_s']):>11} {show(row['compiled_tok_s']):>14} "
              f"{row['tokens']:>7}")


if __name__ == "__main__":
    main()
