"""Grammar compiles in a child process: the same masks as in-process, and a compile past its deadline
stopped with the process that ran it."""
import os

import pytest

from inference.engine.grammar import GrammarCompiler
from inference.engine.grammar_rules import CompileTimeout, json_schema_constraint
from tests.poll import wait_until

SCHEMA = {"type": "object", "properties": {"kind": {"type": "string", "enum": ["cat", "dog"]},
                                          "age": {"type": "integer"}}, "required": ["kind", "age"]}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def bounded(chat_tokenizer, engine):
    compiler = GrammarCompiler.for_tokenizer(chat_tokenizer, engine.runner.vocab_size, compile_timeout_s=60)
    yield compiler
    compiler.close()


def test_a_grammar_compiled_in_the_child_masks_like_one_compiled_here(bounded, chat_tokenizer, engine):
    here = GrammarCompiler.for_tokenizer(chat_tokenizer, engine.runner.vocab_size)
    constraint = json_schema_constraint(SCHEMA)
    ours, theirs = here.mask_factory(constraint)(), bounded.mask_factory(constraint)()
    assert bounded.process.pid is not None and bounded.process.pid != os.getpid()
    for step in range(40):  # walk the grammar by allowed tokens: both sides allow the same at each step
        allowed = ours.allowed()
        assert allowed.equal(theirs.allowed()) and 0 < int(allowed.sum()) < len(allowed)
        token_id = int(allowed.nonzero()[step % int(allowed.sum())])
        ours.accept(token_id)
        theirs.accept(token_id)
        if ours.completed:
            break


def test_a_compile_past_its_deadline_stops_the_child_and_is_refused_again_at_once(bounded):
    bounded.compile(json_schema_constraint({"type": "boolean"}))  # the child is up
    child = bounded.process.pid
    bounded.process.timeout_s = 1e-6  # no compile answers within a microsecond
    slow = json_schema_constraint({"type": "string", "maxLength": 77})
    with pytest.raises(CompileTimeout, match="took longer than 1e-06 s, the limit"):
        bounded.compile(slow)
    wait_until(lambda: not alive(child), timeout=10, message=f"the compile child {child} to exit")
    bounded.process.timeout_s = 60
    with pytest.raises(CompileTimeout):  # kept: the same schema would take as long again
        bounded.compile(slow)
    assert bounded.compile(json_schema_constraint({"type": "integer"})) is not None  # a new child
    assert bounded.process.pid not in (None, child)
