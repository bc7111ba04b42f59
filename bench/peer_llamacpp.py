"""This platform's /v1/chat/completions against llama.cpp's OpenAI-compatible server, same GGUF, same prompts.

    make bench-peer BENCH_ARGS="--concurrency 1,4 --rounds 1 --max-tokens 32"   # .venv-peer is built once
    .venv/bin/python bench/peer_llamacpp.py --our-env INFERENCE_PREFIX_CACHE=0 --json peer.json

Starts both servers on free loopback ports, stops them at the end:
  ours       uvicorn config.asgi:application, the embedded default (SQLite, in-process engine, engine settings
             at their defaults), a fresh DATA_DIR with its own API key but MODEL_CACHE_DIR at the repo's
             var/models, so the checkpoint converted from the GGUF is reused (make model prepares it), and
             TORCHINDUCTOR_CACHE_DIR at var/compile-cache, so the decode step make run compiled is too
  llama.cpp  llama-cpp-python's llama_cpp.server from .venv-peer on that GGUF itself, ChatML, n_ctx 2048

Requests stream through the openai SDK: temperature 0, the same system + user messages (with a system
message both chat templates render the same prompt), max_tokens, and min_tokens = max_tokens so that EOS
ends no answer early (llama.cpp's server silently drops ignore_eos; both honour min_tokens). llama.cpp also
gets repeat_penalty 1.0 (its default 1.1; ours has none). Output tokens: ours from the usage chunk;
llama.cpp's server ignores stream_options and sends none, so there its content chunks count.

Per concurrency level: rounds of --requests requests (at most --concurrency in flight), alternating ours,
llama.cpp, ours, ... so that drift hits both sides; the first --warmup-rounds are not counted (our engine
compiles kernels for shapes it meets first, and the measured rounds then all find the caches in one state).
Both servers live for the whole run but only one is under load: an idle uvicorn or llama.cpp server uses
~0% CPU, so even on 2 cores the idle one takes nothing measurable from the other.
llama-cpp-python's server decodes one request at a time (a global lock, no batching): beyond concurrency 1
its requests queue, which shows in TTFT; --interrupt_requests False, else a queued request cuts the
streaming one short. Our prefix cache serves the repeated prompts (--our-env INFERENCE_PREFIX_CACHE=0:
none); llama.cpp reuses the KV of the previous prompt's common prefix.
"""
import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import openai

ROOT = Path(__file__).resolve().parent.parent
PEER_PYTHON = ROOT / ".venv-peer" / "bin" / "python"  # make bench-peer installs llama-cpp-python[server] there
SYSTEM = "You are a helpful assistant."
PROMPTS = [  # open-ended, so that answers run long
    "Write a short story about a lighthouse keeper.",
    "Explain how a refrigerator works, step by step.",
    "Describe the history of the Roman Empire in detail.",
    "Write a letter to a friend about your summer holiday in the mountains.",
    "What are the main causes of climate change, and what can be done about them?",
    "Explain the rules of chess to a beginner.",
    "Write a recipe for a vegetable soup with detailed instructions.",
    "Describe a day in the life of a medieval blacksmith.",
    "Compare cats and dogs as pets, with pros and cons of each.",
    "Explain how the internet works to a ten-year-old.",
    "Write a poem about the ocean at night, then explain its imagery.",
    "Give detailed advice for someone starting to learn the piano.",
    "Describe the water cycle and why it matters for life on Earth.",
    "Write a product description for a new electric bicycle.",
    "Explain the difference between weather and climate with examples.",
    "Tell the story of a robot who learns to paint.",
]


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return s.getsockname()[1]


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))] if values else float("nan")


class Server:
    """A server subprocess in its own process group, its output in a log file."""

    def __init__(self, name, argv, env, log, api_key, extra_body):
        self.name, self.api_key, self.extra_body, self.log = name, api_key, extra_body, log
        self.url = f"http://127.0.0.1:{argv[argv.index('--port') + 1]}/v1"
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        request = urllib.request.Request(self.url + "/models", headers={"Authorization": f"Bearer {self.api_key}"})
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    self.model = json.load(response)["data"][0]["id"]
                if self.name != "ours" or self._compiled(deadline):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.5)
        tail = Path(self.log).read_text(errors="replace")[-3000:]
        raise SystemExit(f"{self.name} did not answer GET /v1/models (exit code {self.proc.poll()}):\n{tail}")

    def _compiled(self, deadline) -> bool:
        """Ours: wait until /readyz lists no model still compiling its decode step (the first start on a machine
        serves eager meanwhile, which is not what this benchmark compares)."""
        said = False
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with urllib.request.urlopen(self.url.removesuffix("/v1") + "/readyz", timeout=5) as response:
                    if "compiling" not in json.load(response):
                        return True
            except OSError:
                pass
            if not said:
                print("ours: waiting for its compiled decode step (compiling once per machine)", flush=True)
                said = True
            time.sleep(2)
        return False

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start_ours(args, data_dir):
    env = {k: v for k, v in os.environ.items()  # the embedded default, engine settings at theirs unless --our-env
           if not k.startswith("INFERENCE_") and k not in ("DATABASE_URL", "REDIS_URL", "MODELS_FILE")}
    env.update(HF_HUB_OFFLINE="1", DATA_DIR=str(data_dir), MODEL_CACHE_DIR=str(ROOT / "var" / "models"))
    # The compiled decode step too, from the repo's cache (make run's): a fresh DATA_DIR would compile it again.
    env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(ROOT / "var" / "compile-cache"))
    env.update(item.split("=", 1) for item in args.our_env)

    def manage(*argv):  # quiet unless it fails
        done = subprocess.run([sys.executable, "manage.py", *argv], cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"manage.py {argv[0]} failed:\n{done.stderr[-3000:]}")
        return done.stdout

    manage("migrate", "--no-input")
    key = manage("createkey", "--org", "bench", "--credit-usd", "100").split()[-1]
    argv = [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1",
            "--port", str(free_port()), "--no-access-log", "--lifespan", "off"]
    return Server("ours", argv, env, data_dir / "ours.log", key, {})


def start_peer(args, data_dir):
    argv = [str(PEER_PYTHON), "-m", "llama_cpp.server", "--model", str(args.gguf), "--host", "127.0.0.1",
            "--port", str(free_port()), "--n_ctx", "2048", "--n_threads", str(args.threads),
            "--chat_format", "chatml", "--interrupt_requests", "False", "--verbose", "False"]
    return Server("llama.cpp", argv, dict(os.environ), data_dir / "llama_cpp.log", "none", {"repeat_penalty": 1.0})


async def one_request(client, server, prompt, args):
    body = dict(server.extra_body, **({} if args.allow_eos else {"min_tokens": args.max_tokens}))
    start = time.perf_counter()
    ttft, chunks, usage, text = None, 0, None, []
    stream = await client.chat.completions.create(
        model=server.model, messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}],
        max_tokens=args.max_tokens, temperature=0, stream=True, stream_options={"include_usage": True},
        extra_body=body)
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            ttft = ttft if ttft is not None else time.perf_counter() - start
            chunks += 1
            text.append(chunk.choices[0].delta.content)
        if chunk.usage:
            usage = chunk.usage.completion_tokens
    e2e = time.perf_counter() - start
    return {"ttft": ttft if ttft is not None else e2e, "e2e": e2e, "chunks": chunks, "usage": usage,
            "tokens": usage if usage is not None else chunks, "text": "".join(text)}


async def one_round(server, concurrency, count, args):
    """count requests, at most concurrency in flight; the round's wall time and its requests."""
    gate = asyncio.Semaphore(concurrency)
    # A generous timeout: our engine's first requests may wait for kernels to compile.
    async with openai.AsyncOpenAI(base_url=server.url, api_key=server.api_key, max_retries=0, timeout=600) as client:
        async def gated(prompt):
            async with gate:
                return await one_request(client, server, prompt, args)
        start = time.perf_counter()
        requests = await asyncio.gather(*(gated(PROMPTS[i % len(PROMPTS)]) for i in range(count)))
        return {"wall": time.perf_counter() - start, "requests": requests}


def summarize(rounds):
    requests = [r for rnd in rounds for r in rnd["requests"]]
    decode = [(r["tokens"] - 1) / (r["e2e"] - r["ttft"]) for r in requests if r["tokens"] > 1]
    return {"tok_s": statistics.median(sum(r["tokens"] for r in rnd["requests"]) / rnd["wall"] for rnd in rounds),
            "decode_tok_s": statistics.median(decode) if decode else float("nan"),
            "ttft_p50": percentile([r["ttft"] for r in requests], 50),
            "ttft_p99": percentile([r["ttft"] for r in requests], 99),
            "tokens_per_request": statistics.mean(r["tokens"] for r in requests),
            "counted_from": "usage" if all(r["usage"] is not None for r in requests) else "chunks"}


async def run(servers, args):
    levels = []
    for concurrency in args.concurrency:
        count = max(args.requests, concurrency)
        rounds = {server.name: [] for server in servers}
        for index in range(args.warmup_rounds + args.rounds):
            for server in servers:
                result = await one_round(server, concurrency, count, args)
                if index == 0 and not levels:  # both answer sensibly
                    print(f"first answer {server.name:9}: {result['requests'][0]['text'][:70]!r}...")
                label = "warm-up" if index < args.warmup_rounds else f"round {index - args.warmup_rounds + 1}"
                print(f"  concurrency {concurrency} {label} {server.name}: {result['wall']:.1f} s", flush=True)
                if index >= args.warmup_rounds:
                    rounds[server.name].append(result)
        levels.append({"concurrency": concurrency, "rounds": rounds,
                       "summary": {name: summarize(r) for name, r in rounds.items()}})
    return levels


def print_table(levels):
    print(f"\n{'conc':>4}  {'server':<14}{'out tok/s':>10}{'decode tok/s':>14}{'TTFT p50':>10}{'TTFT p99':>10}"
          f"  tokens/request")
    for level in levels:
        ours, peer = level["summary"]["ours"], level["summary"]["llama.cpp"]
        for name, s in (("ours", ours), ("llama.cpp", peer)):
            print(f"{level['concurrency']:>4}  {name:<14}{s['tok_s']:>10.1f}{s['decode_tok_s']:>14.1f}"
                  f"{s['ttft_p50'] * 1e3:>8.0f}ms{s['ttft_p99'] * 1e3:>8.0f}ms"
                  f"  {s['tokens_per_request']:.1f} ({s['counted_from']})")
        print(f"{level['concurrency']:>4}  {'ours/llama.cpp':<14}{ours['tok_s'] / peer['tok_s']:>9.2f}x"
              f"{ours['decode_tok_s'] / peer['decode_tok_s']:>13.2f}x")
    print("\nout tok/s: output tokens / round wall time, median over rounds; decode tok/s: per stream, median over "
          "requests of (tokens - 1) / (end - first token); TTFT over all requests of the level.")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=lambda s: [int(c) for c in s.split(",")], default=[1, 16],
                        help="levels, comma-separated (default 1,16)")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds per side and level (default 3)")
    parser.add_argument("--warmup-rounds", type=int, default=1, help="uncounted, before those (default 1)")
    parser.add_argument("--requests", type=int, default=len(PROMPTS), help="per round, at least the concurrency (default %(default)s)")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--allow-eos", action="store_true", help="let answers end at EOS (no min_tokens)")
    parser.add_argument("--our-env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment for our server, e.g. INFERENCE_DTYPE=float32 (repeatable)")
    parser.add_argument("--gguf", type=Path, help="default: the GGUF the default model is converted from")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="llama.cpp's --n_threads")
    parser.add_argument("--start-timeout", type=float, default=900,
                        help="seconds to wait for each server (ours compiles its decode step once per machine)")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    args = parser.parse_args()
    if any("=" not in item for item in args.our_env):
        parser.error("--our-env takes KEY=VALUE")
    if args.gguf is None:
        sys.path.insert(0, str(ROOT))
        from inference.engine.convert import default_gguf_path  # imports torch: only when needed
        args.gguf = default_gguf_path()
    # SIGTERM unwinds like Ctrl-C, through the finally that stops both servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    servers = []
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
        try:
            servers.append(start_ours(args, Path(tmp)))
            servers.append(start_peer(args, Path(tmp)))
            for server in servers:
                server.wait_ready(args.start_timeout)
            levels = asyncio.run(run(servers, args))
        finally:
            for server in servers:
                server.stop()
    print_table(levels)
    if args.json:
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        args.json.write_text(json.dumps({"args": settings, "levels": levels}, indent=1))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # the servers are already stopped
        sys.exit(130)
