import random

import pytest

from inference.engine.detokenizer import IncrementalDetokenizer


@pytest.fixture(params=["window", "native"])
def make(request):
    """Every test runs on both sources: the decode-window one and tokenizers' native DecodeStream."""
    def build(tokenizer, stop=()):
        native = tokenizer.hf_tokenizer._tokenizer if request.param == "native" else None
        return IncrementalDetokenizer(tokenizer.decode, stop, native_tokenizer=native)

    return build


def feed(make, tokenizer, ids, stop=()):
    """Push ids one by one; return (per-token deltas, flush text, detokenizer)."""
    detok = make(tokenizer, stop)
    deltas = []
    for token_id in ids:
        deltas.append(detok.push(token_id))
        if detok.stopped:
            break
    return deltas, detok.flush(), detok


def split_across_tokens(tokenizer, text, fragment):
    """True if fragment occurs in text but inside no single token of it."""
    assert fragment in text
    return not any(fragment in tokenizer.decode([i]) for i in tokenizer.encode(text))


def test_plain_text_streams_token_by_token(make, chat_tokenizer):
    text = "The capital of France is Paris."
    ids = chat_tokenizer.encode(text)
    deltas, tail, _ = feed(make, chat_tokenizer, ids)
    assert all(deltas), "every ASCII token should produce text immediately"
    assert "".join(deltas) + tail == text


def test_utf8_partial_bytes_are_held_until_the_character_completes(make, chat_tokenizer):
    text = "héllo 你好 🎉!"
    ids = chat_tokenizer.encode(text)
    # The test is only meaningful if some characters really span tokens.
    assert any("\ufffd" in chat_tokenizer.decode([i]) for i in ids)
    deltas, tail, _ = feed(make, chat_tokenizer, ids)
    assert not any("\ufffd" in d for d in deltas)
    assert "".join(deltas) + tail == text
    assert "" in deltas, "partial-character tokens should have been held back"


def test_utf8_partial_character_is_flushed_at_finish(make, chat_tokenizer):
    ids = chat_tokenizer.encode("ok 你")
    deltas, tail, _ = feed(make, chat_tokenizer, ids[:-1])  # drop the last byte of 你
    assert "".join(deltas) == "ok "
    assert tail.startswith("\ufffd")


def test_stop_string_split_across_tokens_is_never_emitted(make, chat_tokenizer):
    text = "The capital of France is Paris. Thank you."
    stop = "Paris"
    assert split_across_tokens(chat_tokenizer, text, stop)
    deltas, tail, detok = feed(make, chat_tokenizer, chat_tokenizer.encode(text), stop=(stop,))
    assert detok.stopped
    assert "".join(deltas) + tail == "The capital of France is "
    assert all("P" not in d for d in deltas)


def test_stop_string_inside_one_token_cuts_the_token_text(make, chat_tokenizer):
    text = "The capital of France"
    deltas, tail, detok = feed(make, chat_tokenizer, chat_tokenizer.encode(text), stop=("apit",))
    assert detok.stopped
    assert "".join(deltas) + tail == "The c"


def test_multibyte_stop_string_split_across_byte_tokens(make, chat_tokenizer):
    text = "say 你好 now"
    assert split_across_tokens(chat_tokenizer, text, "你")
    deltas, tail, detok = feed(make, chat_tokenizer, chat_tokenizer.encode(text), stop=("你好",))
    assert detok.stopped
    assert "".join(deltas) + tail == "say "


def test_possible_stop_prefix_is_released_once_it_diverges(make, chat_tokenizer):
    text = "Par is not Paris"
    ids = chat_tokenizer.encode(text)
    deltas, tail, detok = feed(make, chat_tokenizer, ids, stop=("Paris",))
    assert detok.stopped
    assert "".join(deltas) + tail == "Par is not "
    # "P" and "Par" were held while they could still become "Paris", and
    # released together with the text that ruled that out.
    first_text = next(d for d in deltas if d)
    assert deltas[0] == ""
    assert first_text.startswith("Par") and len(first_text) > 3


def test_held_back_stop_prefix_is_flushed_at_finish(make, chat_tokenizer):
    deltas, tail, detok = feed(make, chat_tokenizer, chat_tokenizer.encode("in Par"), stop=("Paris",))
    assert not detok.stopped
    assert "".join(deltas) == "in "
    assert tail == "Par"


def test_earliest_stop_string_wins(make, chat_tokenizer):
    text = "one two three"
    deltas, tail, _ = feed(make, chat_tokenizer, chat_tokenizer.encode(text), stop=("three", "two"))
    assert "".join(deltas) + tail == "one "


def test_nothing_is_emitted_after_a_stop(make, chat_tokenizer):
    detok = make(chat_tokenizer, ("is",))
    out = [detok.push(i) for i in chat_tokenizer.encode("This is more text")]
    assert "".join(out) == "Th"
    assert detok.push(chat_tokenizer.encode("x")[0]) == ""
    assert detok.flush() == ""


def test_special_tokens_produce_no_text(make, chat_tokenizer):
    im_end = chat_tokenizer.hf_tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids = chat_tokenizer.encode("hi") + [im_end] + chat_tokenizer.encode(" there")
    deltas, tail, _ = feed(make, chat_tokenizer, ids)
    assert "".join(deltas) + tail == "hi there"


@pytest.mark.parametrize("seed", range(5))
def test_random_token_streams_match_a_full_decode(make, chat_tokenizer, seed):
    rng = random.Random(seed)
    vocab = len(chat_tokenizer.hf_tokenizer)
    ids = [rng.randrange(3, vocab) for _ in range(200)]
    deltas, tail, _ = feed(make, chat_tokenizer, ids)
    assert "".join(deltas) + tail == chat_tokenizer.decode(ids)


@pytest.mark.parametrize("seed", range(5))
def test_random_streams_stop_exactly_where_a_full_decode_would(make, chat_tokenizer, seed):
    rng = random.Random(seed)
    vocab = len(chat_tokenizer.hf_tokenizer)
    ids = [rng.randrange(3, vocab) for _ in range(200)]
    full = chat_tokenizer.decode(ids)
    stop = full[120:123]  # certainly present, usually split across tokens
    deltas, tail, detok = feed(make, chat_tokenizer, ids, stop=(stop,))
    assert detok.stopped
    assert "".join(deltas) + tail == full[: full.index(stop)]
