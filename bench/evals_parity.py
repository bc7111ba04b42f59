"""An evaluation harness through this platform's /v1/completions against the same harness on transformers.

    make bench-evals                                   # .venv-evals gets lm-evaluation-harness once
    .venv/bin/python bench/evals_parity.py --batch-size 8 --dtype float32

What evaluation users run against vLLM's server: lm-evaluation-harness's `local-completions` model, which scores
each multiple-choice answer as the log-likelihood of its tokens after the question (token-id prompts, a batch of
them per request, `echo`, `logprobs` 1, `max_tokens` 0) and generates free answers (greedy, `stop` strings, a batch
of prompts per request). Here it runs two small tasks written to a temporary folder: the same 32 general-knowledge
questions as multiple choice (4 answers each, 128 log-likelihoods) and as free answers, against our embedded server
(a fresh DATA_DIR and API key, the converted default model, INFERENCE_DTYPE as --dtype), then the same task on
lm-evaluation-harness's own `hf` model (transformers, the same checkpoint and dtype, on the CPU). It prints both
accuracies, how far apart the 128 log-likelihoods are, whether each answer's "is greedy" verdict agrees, how many
generated answers are the same text, and each lm_eval run's wall time (the hf side's includes loading the model;
ours was started before). Nothing is downloaded: the harness reads the task from local files.
"""
import argparse
import glob
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peer_llamacpp import ROOT, start_ours  # noqa: E402  (the same way of starting our server)

LM_EVAL = ROOT / ".venv-evals" / "bin" / "lm_eval"
MODEL_DIR = ROOT / "var" / "models" / "smollm2-135m-instruct"
QUESTIONS = [  # (question, the right answer, three wrong ones)
    ("What colour is the sky on a clear day?", "blue", ["green", "red", "purple"]),
    ("How many legs does a spider have?", "eight", ["six", "four", "ten"]),
    ("What is the capital of France?", "Paris", ["Berlin", "Madrid", "Rome"]),
    ("What do bees make?", "honey", ["milk", "silk", "wool"]),
    ("Which planet do we live on?", "Earth", ["Mars", "Venus", "Jupiter"]),
    ("What is frozen water called?", "ice", ["steam", "sand", "glass"]),
    ("How many days are in a week?", "seven", ["five", "nine", "twelve"]),
    ("What animal says moo?", "a cow", ["a cat", "a dog", "a duck"]),
    ("What is the opposite of hot?", "cold", ["warm", "loud", "fast"]),
    ("Which fruit is yellow and curved?", "a banana", ["an apple", "a grape", "a cherry"]),
    ("What gas do humans need to breathe?", "oxygen", ["helium", "neon", "argon"]),
    ("What is the largest ocean?", "the Pacific", ["the Arctic", "the Indian", "the Southern"]),
    ("How many hours are in a day?", "twenty-four", ["twelve", "thirty", "sixty"]),
    ("What is the capital of Japan?", "Tokyo", ["Beijing", "Seoul", "Bangkok"]),
    ("Which star is closest to Earth?", "the Sun", ["Sirius", "Polaris", "Vega"]),
    ("What do you call a baby cat?", "a kitten", ["a puppy", "a calf", "a foal"]),
    ("Which season comes after winter?", "spring", ["autumn", "summer", "winter"]),
    ("What is two plus two?", "four", ["three", "five", "six"]),
    ("What colour are most leaves in summer?", "green", ["blue", "white", "black"]),
    ("Which organ pumps blood?", "the heart", ["the lung", "the liver", "the stomach"]),
    ("What is the capital of Italy?", "Rome", ["Milan", "Naples", "Turin"]),
    ("How many continents are there?", "seven", ["three", "ten", "twenty"]),
    ("What do cows drink?", "water", ["oil", "juice", "coffee"]),
    ("What instrument has black and white keys?", "a piano", ["a drum", "a flute", "a violin"]),
    ("What is the boiling point of water in Celsius?", "one hundred degrees",
     ["ten degrees", "fifty degrees", "zero degrees"]),
    ("Which animal is known as the king of the jungle?", "the lion", ["the mouse", "the rabbit", "the sheep"]),
    ("What shape has three sides?", "a triangle", ["a square", "a circle", "a hexagon"]),
    ("Which month has the fewest days?", "February", ["March", "July", "October"]),
    ("What do plants need from the sun?", "light", ["salt", "sound", "plastic"]),
    ("What is the capital of Spain?", "Madrid", ["Lisbon", "Paris", "Athens"]),
    ("How many wheels does a bicycle have?", "two", ["three", "four", "six"]),
    ("What is the main language spoken in Brazil?", "Portuguese", ["Spanish", "French", "German"]),
]
TASK = r"""task: parity_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
target_delimiter: " "
metric_list:
  - metric: acc
  - metric: acc_norm
"""
GENERATION_TASK = r"""task: parity_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\nAnswer:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\n", "Question:"]
  max_gen_toks: 24
  do_sample: false
metric_list:
  - metric: exact_match
"""


def write_task(folder: Path) -> None:
    rng = random.Random(0)
    with open(folder / "parity_mc.jsonl", "w") as out:
        for question, right, wrong in QUESTIONS:
            choices = [right, *wrong]
            rng.shuffle(choices)
            out.write(json.dumps({"question": question, "choices": choices, "label": choices.index(right)}) + "\n")
    (folder / "parity_mc.yaml").write_text(TASK.format(data=folder / "parity_mc.jsonl"))
    with open(folder / "parity_gen.jsonl", "w") as out:
        for question, right, _ in QUESTIONS:
            out.write(json.dumps({"question": question, "answer": right}) + "\n")
    (folder / "parity_gen.yaml").write_text(GENERATION_TASK.format(data=folder / "parity_gen.jsonl"))


def run_harness(name: str, model: str, model_args: str, args, folder: Path, env: dict) -> dict:
    out = folder / f"out-{name}"
    argv = [str(LM_EVAL), "--model", model, "--model_args", model_args, "--batch_size", str(args.batch_size),
            "--include_path", str(folder), "--tasks", "parity_mc,parity_gen", "--output_path", str(out),
            "--log_samples"]
    if model == "hf":
        argv += ["--device", "cpu"]
    started = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if done.returncode:
        raise SystemExit(f"lm_eval ({name}) failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    results = json.loads(Path(glob.glob(f"{out}/**/results_*.json", recursive=True)[0]).read_text())
    metrics = results["results"]["parity_mc"]
    scores, answers = {}, {}
    for line in open(glob.glob(f"{out}/**/samples_parity_mc_*.jsonl", recursive=True)[0]):
        sample = json.loads(line)
        scores[sample["doc_id"]] = [(float(r[0][0]), str(r[0][1]) == "True") for r in sample["resps"]]
    for line in open(glob.glob(f"{out}/**/samples_parity_gen_*.jsonl", recursive=True)[0]):
        sample = json.loads(line)
        answers[sample["doc_id"]] = sample["filtered_resps"][0]
    return {"acc": metrics["acc,none"], "acc_norm": metrics["acc_norm,none"], "scores": scores, "seconds": seconds,
            "answers": answers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per request (the harness's batch)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                        help="both sides' weights and activations")
    parser.add_argument("--ours-dtype", choices=("auto", "float32", "bfloat16"),
                        help="our INFERENCE_DTYPE instead (auto: the default, e.g. bf16 with int4 weights on a CPU "
                             "with AVX2, AVX-512 or bf16 instructions): how far the fast default is from the reference")
    args = parser.parse_args()
    args.ours_dtype = args.ours_dtype or args.dtype
    if not LM_EVAL.exists():
        raise SystemExit(f"{LM_EVAL} is missing: `make bench-evals` installs lm-evaluation-harness there")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory(prefix="evals-parity-") as tmp:
        folder = Path(tmp)
        write_task(folder)
        server = start_ours(argparse.Namespace(our_env=[f"INFERENCE_DTYPE={args.ours_dtype}"]), folder)
        try:
            server.wait_ready(900)
            ours = run_harness(
                "ours", "local-completions",
                f"model={server.model},base_url={server.url}/completions,tokenizer={MODEL_DIR},"
                "tokenized_requests=True,num_concurrent=1,max_retries=1",
                args, folder, {**env, "OPENAI_API_KEY": server.api_key})
        finally:
            server.stop()
        theirs = run_harness("transformers", "hf", f"pretrained={MODEL_DIR},dtype={args.dtype}", args, folder, env)
    pairs = [(a, b) for doc in ours["scores"] for a, b in zip(ours["scores"][doc], theirs["scores"][doc])]
    diffs = sorted(abs(a[0] - b[0]) for a, b in pairs)
    agree = sum(a[1] == b[1] for a, b in pairs)
    print(f"\nlm-evaluation-harness, {len(QUESTIONS)} questions x 4 answers = {len(pairs)} log-likelihoods, "
          f"ours {args.ours_dtype}, transformers {args.dtype}, batch {args.batch_size}")
    print(f"{'':34}{'ours (/v1/completions)':>24}{'transformers (hf)':>20}")
    print(f"{'acc':34}{ours['acc']:>24.4f}{theirs['acc']:>20.4f}")
    print(f"{'acc_norm':34}{ours['acc_norm']:>24.4f}{theirs['acc_norm']:>20.4f}")
    print(f"{'lm_eval wall time, both tasks (s)':34}{ours['seconds']:>24.1f}{theirs['seconds']:>20.1f}")
    print(f"log-likelihood |ours - transformers|: median {diffs[len(diffs) // 2]:.2e}, max {diffs[-1]:.2e}; "
          f"'is greedy' verdicts agree on {agree}/{len(pairs)}")
    same = sum(ours["answers"][doc] == theirs["answers"][doc] for doc in ours["answers"])
    print(f"generation (greedy, to the end of the line, at most 24 tokens): the same answer text for "
          f"{same}/{len(ours['answers'])} questions, e.g.")
    for doc in sorted(ours["answers"])[:3]:
        print(f"  {QUESTIONS[doc][0]!r} -> ours {ours['answers'][doc]!r}, transformers {theirs['answers'][doc]!r}")


if __name__ == "__main__":
    main()
