"""The first request on a fresh server, with and without the warm start (INFERENCE_WARM_START).

    .venv/bin/python bench/warm_start.py                 # after make model; --rounds 2 alternates off, on, off, on

Each run starts a fresh server process as `make run` does (uvicorn config.asgi:application --lifespan off, the
embedded default: SQLite, the engine in the process, engine settings at their defaults) on the default model in the
repo's var/models, in a fresh DATA_DIR with its own API key; waits for GET /readyz to answer 200; then sends
--requests identical requests one after another (one user message, max_tokens 8, temperature 0) and times each.
It prints, per setting, when /livez and /readyz first answered 200 after the process started, request 1, the median
of requests 2 to N, their ratio, and the time from start to the first answer (ready + request 1).

Without the warm start /readyz is ready as soon as the process answers and request 1 loads the engine (torch,
weights, compiled kernels); with it the process loads them before /readyz says ready, so request 1 costs what the
others do. The absolute figures depend on how busy the machine is: compare the ratios.
"""
import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
MODEL = "smollm2-135m-instruct"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 8, "temperature": 0}
WS_MAX_BYTES = "2097152"  # the Makefile's PLAYGROUND_WS_MAX_BYTES


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return s.getsockname()[1]


def environment(data_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items()  # the embedded default, as make run serves it
           if not k.startswith("INFERENCE_") and k not in ("DATABASE_URL", "REDIS_URL", "MODELS_FILE")}
    env.update(HF_HUB_OFFLINE="1", DATA_DIR=str(data_dir), MODEL_CACHE_DIR=str(ROOT / "var" / "models"))
    return env


def manage(env, *argv) -> str:
    done = subprocess.run([sys.executable, "manage.py", *argv], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"manage.py {argv[0]} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def wait_for(http, path, proc, log, deadline) -> float:
    """Seconds on the monotonic clock when `path` first answered 200."""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if http.get(path).status_code == 200:
                return time.monotonic()
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"{path} did not answer 200 in time:\n{log.read_text(errors='replace')[-3000:]}")


def one_run(env, key, warm: bool, args, folder: Path) -> dict:
    env = dict(env, INFERENCE_WARM_START="1" if warm else "0")
    port = free_port()
    log = folder / f"server-{'on' if warm else 'off'}-{time.time_ns()}.log"
    argv = [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1", "--port", str(port),
            "--ws-max-size", WS_MAX_BYTES, "--no-access-log", "--lifespan", "off"]
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=args.start_timeout) as http:
            deadline = started + args.start_timeout
            live = wait_for(http, "/livez", proc, log, deadline)
            ready = wait_for(http, "/readyz", proc, log, deadline)
            times, answer = [], None
            for _ in range(args.requests):
                sent = time.perf_counter()
                response = http.post("/v1/chat/completions", json=dict(BODY, max_tokens=args.max_tokens),
                                     headers={"Authorization": f"Bearer {key}"})
                times.append(time.perf_counter() - sent)
                if response.status_code != 200:
                    raise SystemExit(f"request {len(times)} answered {response.status_code}: {response.text}")
                answer = answer or response.json()["choices"][0]["message"]["content"]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    rest = statistics.median(times[1:])
    return {"warm_start": warm, "livez_s": live - started, "readyz_s": ready - started, "first_s": times[0],
            "rest_median_s": rest, "ratio": times[0] / rest, "first_answer_s": ready - started + times[0],
            "times_s": times, "answer": answer}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=1, help="runs per setting, alternating off and on (default 1)")
    parser.add_argument("--requests", type=int, default=10, help="requests per run, at least 2 (default 10)")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--start-timeout", type=float, default=600, help="seconds for a server to start and answer")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    args = parser.parse_args()
    if args.rounds < 1 or args.requests < 2 or args.max_tokens < 1:
        parser.error("--rounds and --max-tokens must be at least 1, --requests at least 2")
    weights = ROOT / "var" / "models" / MODEL
    if not (weights / "config.json").is_file() or not list(weights.glob("*.safetensors")):
        raise SystemExit(f"{weights} holds no converted model: run `make model` first")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds through the finally that stops the server

    runs = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-warm-start-") as tmp:
        env = environment(Path(tmp))
        manage(env, "migrate", "--no-input")
        key = manage(env, "createkey", "--org", "bench", "--credit-usd", "100").split()[-1]
        for index in range(args.rounds):
            for warm in (False, True):
                run = one_run(env, key, warm, args, Path(tmp))
                runs.append(run)
                print(f"round {index + 1} warm start {'on ' if warm else 'off'}: ready after {run['readyz_s']:.1f} s, "
                      f"request 1 {run['first_s']:.2f} s, median of 2-{args.requests} {run['rest_median_s']:.2f} s "
                      f"(answer: {run['answer']!r})", flush=True)
    load_after = os.getloadavg()

    print(f"\n{'warm start':<11}{'/livez':>8}{'/readyz':>9}{'request 1':>11}{'median 2-' + str(args.requests):>12}"
          f"{'1 / median':>12}{'first answer':>14}")
    for warm in (False, True):
        mine = [r for r in runs if r["warm_start"] == warm]

        def med(key):
            return statistics.median(r[key] for r in mine)

        print(f"{'on' if warm else 'off (=0)':<11}{med('livez_s'):>7.1f}s{med('readyz_s'):>8.1f}s{med('first_s'):>10.2f}s"
              f"{med('rest_median_s'):>11.2f}s{med('ratio'):>11.1f}x{med('first_answer_s'):>13.1f}s")
    print(f"\nSeconds after the server process started (/livez, /readyz: first 200; first answer: /readyz + request 1), "
          f"median over {args.rounds} run(s) per setting. Load average before {load_before[0]:.2f}, after "
          f"{load_after[0]:.2f} on {os.cpu_count()} CPUs.")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs,
                                         "loadavg": [load_before, load_after]}, indent=1))


if __name__ == "__main__":
    main()
