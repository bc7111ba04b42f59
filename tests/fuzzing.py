"""What the fuzzers share: how many requests they generate, values past every bound, and the counts they report.

FUZZ_SCALE (default 1) multiplies every fuzzer's examples: at 1 they send about 10,000 requests in all across
/v1, /api/sessions, /api/billing and the chat validator; 0.1 gives a quick run, 10 a long one. Each fuzzer
counts what it sent per surface in SENT; the test session prints the counts at its end (tests/conftest.py).
"""
import os
from collections import Counter

from hypothesis import strategies as st


def _scale() -> float:
    raw = os.environ.get("FUZZ_SCALE", "1")
    try:
        scale = float(raw)
    except ValueError:
        scale = -1.0
    if not 0 < scale <= 1000:
        raise ValueError(f"FUZZ_SCALE must be a number above 0 and at most 1000, not {raw!r}")
    return scale


SCALE = _scale()
SENT: Counter = Counter()  # surface -> generated requests sent


def examples(default: int) -> int:
    """A fuzzer's max_examples: its default at FUZZ_SCALE=1."""
    return max(1, round(default * SCALE))


# Past the bounds of a Decimal, a 64-bit column, a float, Python's int-to-text limit and its calendar.
EDGE_NUMBERS = [
    "1e999999", "-1e999999", "1e-999999", "1E+30", "-0", "-0.0", "NaN", "-Infinity", "1_000", "0x10", "9" * 39,
    1e308, -1e308, 5e-324, -0.0, 0, -1, 2**31, 2**53 + 1, 2**63, -(2**63) - 1, 2**64, 10**30, -(10**30), 10**400,
]
EDGE_DATES = ["0001-01-01", "9999-12-31", "9999-12-30", "1969-12-31", "1970-01-01", "2999-12-31", "3000-01-01",
              "10000-01-01", "0000-00-00", "2026-02-30"]
EDGE_VALUES = EDGE_NUMBERS + EDGE_DATES
edge_values = st.sampled_from(EDGE_VALUES)


def _places(node, depth=0):
    """Every (container, key) in a JSON body, to put an edge value in its place (or beside it)."""
    if isinstance(node, dict):
        yield node, None  # a new key of the dict
        for key, value in node.items():
            yield node, key
            if depth < 3:
                yield from _places(value, depth + 1)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield node, index
            if depth < 3:
                yield from _places(value, depth + 1)


def slip_in_edges(data, case, *, query_names=(), body_names=(), share: int = 3) -> None:
    """In about 1 case in `share`, put an edge value somewhere in the case's body or query.

    `query_names` and `body_names` are the operation's documented names, so an edge value lands on a real
    parameter as often as on a generated key.
    """
    if data.draw(st.integers(0, share - 1)) != 0:
        return
    value = data.draw(edge_values)
    targets = ["body"] if isinstance(case.body, (dict, list)) else []
    if query_names or case.query:
        targets.append("query")
    if not targets:
        return
    if data.draw(st.sampled_from(targets)) == "query":
        names = sorted({*query_names, *(case.query or {})}) or ["start"]
        case.query = {**(case.query or {}), data.draw(st.sampled_from(names)): str(value)[:5000]}
        return
    places = list(_places(case.body))
    if not places:  # an empty list: the edge value is the whole body
        case.body = value
        return
    container, key = data.draw(st.sampled_from(places))
    if key is None:
        names = sorted({*body_names, *container}) or ["amount_usd"]
        key = data.draw(st.sampled_from(names))
    container[key] = value


def report() -> str:
    surfaces = ", ".join(f"{surface} {count:,}" for surface, count in sorted(SENT.items()))
    return f"fuzz (FUZZ_SCALE={SCALE:g}): {sum(SENT.values()):,} generated requests; {surfaces}"


def documented_names(document: dict, method: str, path: str) -> tuple[list[str], list[str]]:
    """(query parameter names, top-level body property names) of an operation in an OpenAPI document."""
    operation = document["paths"][path][method.lower()]
    query = [p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"]
    schema = (operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {}))
    if "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return query, sorted(schema.get("properties", {}))
