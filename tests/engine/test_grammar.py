"""Grammar-constrained decoding: json_schema / json_object / EBNF constraints through the engine."""

import json
import os
import re
import uuid
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest

from inference.engine.grammar import GrammarCompiler
from inference.engine.grammar_rules import (
    ERROR_INVALID_GRAMMAR,
    check_constraint,
    json_object_constraint,
    json_schema_constraint,
)
from inference.engine.types import CONSTRAINT_EBNF, Constraint, GenerationRequest, SamplingParams
from inference.queue import protocol

from .helpers import Collector

SEEDS = range(30)
# Every string and array is bounded, so a random model always reaches the end well within MAX_TOKENS.
SCHEMA = {
    "type": "object",
    "properties": {
        "kind": {"type": "string", "enum": ["cat", "dog", "bird"]},
        "name": {"type": "string", "minLength": 3, "maxLength": 12},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "minItems": 1, "maxItems": 3},
        "age": {"type": "integer", "minimum": 0, "maximum": 99},
    },
    "required": ["kind", "name", "tags", "age"],
    "additionalProperties": False,
}
MAX_TOKENS = 600
EBNF = 'root ::= "The answer is " answer "."\nanswer ::= "yes" | "no" | [0-9] [0-9]?'
EBNF_RE = re.compile(r"The answer is (yes|no|[0-9][0-9]?)\.")

REAL_MODEL = Path(__file__).resolve().parents[2] / "var" / "models" / "smollm2-135m-instruct"
TICKET_SCHEMA = json.loads(
    '{"type":"object","properties":{"category":{"type":"string","enum":["billing","technical","account","other"]},'
    '"summary":{"type":"string","minLength":10,"maxLength":120},"tags":{"type":"array","items":{"type":"string",'
    '"maxLength":24},"minItems":1,"maxItems":4}},"required":["category","summary","tags"],"additionalProperties":false}'
)


def run_all(engine, requests):
    """Submit every request at once (one batch) and wait for all of them."""
    collectors = [Collector() for _ in requests]
    for request, collector in zip(requests, collectors):
        engine.submit(request, collector)
    return [c.wait() for c in collectors]


def request(prompt_ids, params, constraint=None):
    return GenerationRequest(f"g-{uuid.uuid4().hex[:8]}", list(prompt_ids), params, constraint=constraint)


def sampled(seed, **kwargs):
    return SamplingParams(max_tokens=MAX_TOKENS, temperature=1.0, seed=seed, **kwargs)


def choice_texts(collector):
    texts = {}
    for e in collector.events:
        texts[e.index] = texts.get(e.index, "") + e.text
    return texts


def output_tokens(collector, index=0):
    return [t for e in collector.events if e.index == index for t in e.token_ids]


def assert_ends_at_eos_only(engine, tokens):
    special = set(engine.tokenizer.hf_tokenizer.all_special_ids)
    assert tokens[-1] in engine.tokenizer.eos_token_ids
    assert not special & set(tokens[:-1]), "control tokens inside constrained text"


def test_json_schema_outputs_always_validate(engine, prompt_ids):
    results = run_all(engine, [request(prompt_ids, sampled(s), json_schema_constraint(SCHEMA)) for s in SEEDS])
    texts = set()
    for c in results:
        assert c.final.finish_reason == "stop", c.text
        jsonschema.validate(json.loads(c.text), SCHEMA)
        assert_ends_at_eos_only(engine, output_tokens(c))
        texts.add(c.text)
    assert len(texts) > len(SEEDS) // 2, "sampling should still vary inside the grammar"


def test_json_object_outputs_are_objects(engine, prompt_ids):
    # An unbounded object: some seeds may run out of tokens; every finished one must parse.
    results = run_all(engine, [request(prompt_ids, sampled(s), json_object_constraint()) for s in SEEDS])
    finished = [c for c in results if c.final.finish_reason == "stop"]
    assert len(finished) >= len(SEEDS) // 2
    for c in finished:
        assert isinstance(json.loads(c.text), dict), c.text
    for c in results:
        assert c.text.startswith("{")


def test_ebnf_outputs_match_the_grammar(engine, prompt_ids):
    constraint = Constraint(CONSTRAINT_EBNF, EBNF)
    results = run_all(engine, [request(prompt_ids, sampled(s), constraint) for s in SEEDS])
    for c in results:
        assert c.final.finish_reason == "stop"
        assert EBNF_RE.fullmatch(c.text), c.text


def test_unconstrained_neighbours_are_unaffected(engine, prompt_ids, chat_tokenizer):
    other = chat_tokenizer.encode_chat([{"role": "user", "content": "Tell me about the cat in the library."}])
    greedy = SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True)
    alone = [output_tokens(c) for c in run_all(engine, [request(p, greedy) for p in (prompt_ids, other)])]
    batch = [request(prompt_ids, greedy), request(other, greedy)]
    batch += [request(prompt_ids, sampled(s), json_schema_constraint(SCHEMA)) for s in range(6)]
    batch += [request(other, replace(sampled(s), temperature=0.0), Constraint(CONSTRAINT_EBNF, EBNF)) for s in range(2)]
    results = run_all(engine, batch)
    assert [output_tokens(c) for c in results[:2]] == alone
    for c in results[2:8]:
        jsonschema.validate(json.loads(c.text), SCHEMA)
    for c in results[8:]:
        assert EBNF_RE.fullmatch(c.text), c.text


def test_every_choice_of_n_follows_the_schema(engine, prompt_ids):
    results = run_all(engine, [request(prompt_ids, sampled(s, n=3), json_schema_constraint(SCHEMA)) for s in range(5)])
    for c in results:
        texts = choice_texts(c)
        assert sorted(texts) == [0, 1, 2]
        for index, text in texts.items():
            jsonschema.validate(json.loads(text), SCHEMA)
            assert_ends_at_eos_only(engine, output_tokens(c, index))
        assert c.final.finish_reason == "stop"


def test_same_seed_same_constrained_output(engine, prompt_ids):
    first, second = run_all(engine, [request(prompt_ids, sampled(7), json_schema_constraint(SCHEMA))
                                     for _ in range(2)])
    assert first.text == second.text


@pytest.mark.parametrize("constraint, message", [
    (Constraint("json_schema", '{"type": "string", "pattern": "(?<=a)b"}'), "Lookbehind is not supported"),
    (Constraint("json_schema", '{"type": "object", "properties": {'), "not valid JSON"),
    (Constraint("json_schema", "[1, 2]"), "must be an object"),
    (Constraint("json_schema", '{"type": "frog"}'), "frog"),
    (Constraint("ebnf", 'root ::= "a" missing'), 'Rule "missing" is not defined'),
    (Constraint("ebnf", 'start ::= "a"'), 'root rule with name "root" is not found'),
])
def test_check_constraint_names_the_problem(constraint, message):
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        check_constraint(constraint)
    assert ".cc:" not in str(info.value), "no xgrammar source locations in client messages"


def test_check_constraint_accepts_valid_constraints():
    for constraint in (json_schema_constraint(SCHEMA), json_schema_constraint(TICKET_SCHEMA),
                       json_object_constraint(), Constraint(CONSTRAINT_EBNF, EBNF)):
        assert check_constraint(constraint) is None


def test_invalid_constraint_ends_the_request_with_invalid_grammar(engine, prompt_ids):
    bad = Constraint("json_schema", '{"type": "string", "pattern": "(?<=a)b"}')
    req = request(prompt_ids, sampled(1), bad)
    engine.prepare(req)  # must not raise
    (c,) = run_all(engine, [req])
    final = c.final
    assert final.finish_reason == "error" and final.error_code == ERROR_INVALID_GRAMMAR
    assert "Lookbehind" in final.error and final.completion_tokens == 0
    # The engine keeps serving constrained requests.
    (ok,) = run_all(engine, [request(prompt_ids, sampled(2), json_schema_constraint(SCHEMA))])
    jsonschema.validate(json.loads(ok.text), SCHEMA)


def test_grammar_finished_before_min_tokens_does_not_break_the_request(engine, prompt_ids):
    # After "yes" only EOS is allowed, which min_tokens forbids: the choice continues unconstrained.
    req = request(prompt_ids, SamplingParams(max_tokens=12, min_tokens=8, temperature=1.0, seed=3),
                  Constraint(CONSTRAINT_EBNF, 'root ::= "yes"'))
    (c,) = run_all(engine, [req])
    assert c.text.startswith("yes")
    assert c.final.finish_reason in ("stop", "length") and c.final.completion_tokens >= 8


def test_masks_only_allow_grammar_tokens_and_eos_at_the_end(chat_tokenizer, engine):
    compiler = GrammarCompiler.for_tokenizer(chat_tokenizer, engine.runner.vocab_size)
    mask = compiler.mask_factory(Constraint(CONSTRAINT_EBNF, 'root ::= "yes" | "no"'))()
    allowed = mask.allowed()
    assert allowed.shape == (engine.runner.vocab_size,)
    for token in allowed.nonzero().flatten().tolist():
        assert "yes".startswith(chat_tokenizer.decode([token])) or "no".startswith(chat_tokenizer.decode([token]))
    for token in chat_tokenizer.encode("no"):
        assert mask.allowed()[token]
        mask.accept(token)
    assert set(mask.allowed().nonzero().flatten().tolist()) == set(chat_tokenizer.eos_token_ids)


@pytest.mark.parametrize("bounded", [True, False])
def test_strings_never_spell_a_surrogate_in_invalid_utf8(chat_tokenizer, engine, bounded):
    """Byte-level models can spell U+D800 as ED A0 80, which is not UTF-8: it would decode to
    three replacement characters and break maxLength. Valid three-byte characters stay allowed."""
    import xgrammar as xgr

    decoded = xgr.TokenizerInfo.from_huggingface(chat_tokenizer.hf_tokenizer).decoded_vocab
    byte_token = {piece[0]: i for i, piece in enumerate(decoded) if len(piece) == 1}
    compiler = GrammarCompiler.for_tokenizer(chat_tokenizer, engine.runner.vocab_size)
    schema = {"type": "string", "maxLength": 5} if bounded else {"type": "string"}
    mask = compiler.mask_factory(json_schema_constraint(schema))()
    for token in chat_tokenizer.encode('"') + [byte_token[0xED]]:
        assert mask.allowed()[token]
        mask.accept(token)
    allowed = mask.allowed()
    assert allowed[byte_token[0x9F]]  # ED 9F BF is U+D7FF, a real character
    assert not allowed[byte_token[0xA0]] and not allowed[byte_token[0xBF]]  # ED A0..BF xx: surrogates


def test_compiles_are_cached_per_constraint(chat_tokenizer, engine):
    compiler = GrammarCompiler.for_tokenizer(chat_tokenizer, engine.runner.vocab_size, cache_size=2)
    a, b, c = (Constraint(CONSTRAINT_EBNF, f'root ::= "{w}"') for w in ("a", "b", "c"))
    first = compiler.compile(a)
    assert compiler.compile(a) is first
    compiler.compile(b)
    compiler.compile(c)  # evicts a, the least recently used
    assert compiler.compile(a) is not first


def test_constraint_crosses_the_queue_protocol():
    req = GenerationRequest("r1", [1, 2, 3], SamplingParams(max_tokens=5), constraint=json_schema_constraint(SCHEMA))
    back = protocol.decode_request(protocol.encode_request(req))
    assert back.constraint == req.constraint and json.loads(back.constraint.source) == SCHEMA
    plain = protocol.decode_request(protocol.encode_request(GenerationRequest("r2", [1], SamplingParams())))
    assert plain.constraint is None
    raw = json.loads(protocol.encode_request(req))
    raw["constraint"]["kind"] = "regex"
    with pytest.raises(ValueError, match="regex"):
        protocol.decode_request(json.dumps(raw))


@pytest.mark.skipif(
    os.environ.get("ENGINE_GGUF_TESTS") != "1" or not (REAL_MODEL / "config.json").exists(),
    reason="runs the real 135M model (~30 s); set ENGINE_GGUF_TESTS=1",
)
def test_real_model_classifies_tickets_with_valid_json():
    from inference.engine.config import EngineConfig
    from inference.engine.engine import Engine

    engine = Engine(str(REAL_MODEL), config=EngineConfig(kv_cache_bytes=256 << 20))
    prompt = engine.tokenizer.encode_chat([{"role": "user", "content": (
        "Classify this support ticket as JSON with a category, a short summary and tags.\n\n"
        "Ticket: I was charged twice for my subscription this month and need a refund for the extra payment."
    )}])
    engine.start()
    try:
        results = run_all(engine, [request(prompt, SamplingParams(max_tokens=512, temperature=0.7, seed=s),
                                           json_schema_constraint(TICKET_SCHEMA)) for s in range(10)])
    finally:
        engine.shutdown()
    for c in results:
        assert c.final.finish_reason == "stop", c.text
        jsonschema.validate(json.loads(c.text), TICKET_SCHEMA)
