"""Web hosts hold no weights: in front of the worker queue a web host lists, tokenizes and answers from the files of
`prepare_model --tokenizer-only`, and lists the models live workers serve even without those files.

The web host is the run's live server (tests/plugins/live_server.py) with its own MODELS_FILE; the workers are real
`manage.py inference_worker` processes whose MODELS_FILE points at the tiny model's whole checkpoint.
"""
import json

import openai
import pytest
from django.core.management import call_command
from django.test import override_settings

from billing.services import account_for
from tests.plugins.live_server import TINY_PRICE
from tests.workers.conftest import WorkerPool

SPLIT = "tiny-split"  # the web host has its tokenizer files only; a worker its weights
BARE = "tiny-split-bare"  # the web host has none of its files; a worker its weights
NOBODY = "tiny-split-nobody"  # listed in the web host's MODELS_FILE, but no files and no worker
BARE_WINDOW = 640  # BARE's worker serves a window shorter than the model's
MESSAGES = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Name three colours."}]


def _models_file(path, models: dict) -> str:
    path.write_text(json.dumps({model_id: {"path": str(folder), **TINY_PRICE} for model_id, folder in models.items()}))
    return str(path)


@pytest.fixture(scope="module")
def hosts(tiny_model_path, tmp_path_factory, redis_url):
    """The MODELS_FILEs of a web host (tokenizer files of SPLIT only), of the workers and of an embedded host with
    the weights; one worker each for SPLIT and BARE."""
    folder = tmp_path_factory.mktemp("split-hosts")
    web_folder = folder / "web"
    web = _models_file(folder / "web.json", {SPLIT: web_folder / SPLIT, BARE: web_folder / BARE,
                                              NOBODY: web_folder / NOBODY})
    workers = _models_file(folder / "workers.json", {SPLIT: tiny_model_path, BARE: tiny_model_path})
    weights = _models_file(folder / "weights.json", {SPLIT: tiny_model_path})
    with override_settings(MODELS_FILE=web):
        call_command("prepare_model", "--tokenizer-only", "--model", SPLIT, "--source", tiny_model_path)
    pools = [WorkerPool(redis_url, workers, folder, model=model) for model in (SPLIT, BARE)]
    try:
        pools[0].start()
        pools[1].start("--max-model-len", str(BARE_WINDOW))
        for pool in pools:
            pool.ensure(1)
        yield {"web": web, "web_folder": web_folder, "weights": weights, "pools": dict(zip((SPLIT, BARE), pools))}
    finally:
        for pool in pools:
            pool.stop_all()


def _answer(client, model: str):
    return client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=8, temperature=0, seed=1,
                                          logprobs=True, extra_body={"ignore_eos": True})


def test_a_web_host_with_tokenizer_files_only_answers_as_a_host_with_the_weights(hosts, settings, queue,
                                                                                 openai_client):
    settings.MODELS_FILE = hosts["web"]
    assert not [p for p in (hosts["web_folder"] / SPLIT).iterdir() if p.suffix in (".safetensors", ".bin")]
    assert SPLIT in [m.id for m in openai_client.models.list().data]
    through_workers = _answer(openai_client, SPLIT)

    settings.INFERENCE_QUEUE_URL = None  # the embedded default: the engine, with the weights, in this process
    settings.MODELS_FILE = hosts["weights"]
    with_weights = _answer(openai_client, SPLIT)

    tokens = [[t.token for t in answer.choices[0].logprobs.content] for answer in (through_workers, with_weights)]
    assert len(tokens[0]) == 8 and tokens[0] == tokens[1]
    assert through_workers.choices[0].message.content == with_weights.choices[0].message.content
    assert (through_workers.usage.prompt_tokens, through_workers.usage.completion_tokens) == \
        (with_weights.usage.prompt_tokens, with_weights.usage.completion_tokens)


def test_a_model_only_the_workers_have_is_listed_and_refused_naming_the_files_to_prepare(hosts, settings, queue,
                                                                                        openai_client, alice):
    settings.MODELS_FILE = hosts["web"]
    listed = [m.id for m in openai_client.models.list().data]
    assert BARE in listed and NOBODY not in listed
    assert openai_client.models.retrieve(BARE).id == BARE
    before = account_for(organization=alice).available_micro

    with pytest.raises(openai.APIStatusError) as refused:
        openai_client.chat.completions.create(model=BARE, messages=MESSAGES, max_tokens=8)
    assert refused.value.status_code == 503, refused.value
    error = refused.value.body
    assert error["code"] == "model_unavailable" and error["param"] is None
    assert "lacks the tokenizer files" in error["message"] and "prepare_model --tokenizer-only" in error["message"]
    assert refused.value.response.headers["Retry-After"]
    assert account_for(organization=alice).available_micro == before  # nothing held, nothing charged

    with pytest.raises(openai.NotFoundError):  # no files and no worker: unknown here, as before
        openai_client.chat.completions.create(model=NOBODY, messages=MESSAGES, max_tokens=8)
    with pytest.raises(openai.NotFoundError):
        openai_client.models.retrieve(NOBODY)


def test_the_model_list_reports_the_window_the_workers_serve(hosts, settings, queue, openai_client):
    settings.MODELS_FILE = hosts["web"]
    split_window = next(iter(hosts["pools"][SPLIT].heartbeats().values()))["context_window"]
    listed = {m.id: m.max_model_len for m in openai_client.models.list().data}
    assert listed[SPLIT] == split_window  # its config.json says 2048; the worker may hold fewer in its KV cache
    assert listed[BARE] == BARE_WINDOW  # no files here: the live worker's --max-model-len
    assert openai_client.models.retrieve(BARE).max_model_len == BARE_WINDOW


def test_with_the_queue_unreachable_a_model_without_files_here_is_a_503_not_a_404(hosts, settings, queue,
                                                                                  openai_client):
    settings.MODELS_FILE = hosts["web"]
    settings.INFERENCE_QUEUE_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    listed = [m.id for m in openai_client.models.list().data]
    assert SPLIT in listed and BARE not in listed  # what this host has files for, and nothing it cannot ask about
    with pytest.raises(openai.APIStatusError) as refused:
        openai_client.chat.completions.create(model=BARE, messages=MESSAGES, max_tokens=8)
    assert refused.value.status_code == 503 and "cannot be reached" in refused.value.body["message"]
    with pytest.raises(openai.APIStatusError) as refused:
        openai_client.models.retrieve(BARE)
    assert refused.value.status_code == 503
