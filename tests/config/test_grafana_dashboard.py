"""platform/grafana/dashboard.json: importable, and every metric its queries name is one the platform exports.

The web side is read from /metrics itself (the Django test client, from loopback); the worker side from a worker's
own collector (inference/queue/metrics.py) built over a stub worker and engine. A renamed metric, or a typo in a
panel, fails here instead of leaving an empty panel in production.
"""
import json
import re
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from inference.queue.metrics import COUNTERS, GAUGES, WorkerCollector

DASHBOARD = Path(__file__).resolve().parents[2] / "platform" / "grafana" / "dashboard.json"

# PromQL words that look like metric names: aggregations, functions, binary operators and modifiers.
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset", "bool",
            "inf", "nan"}
SAMPLE_SUFFIXES = {  # a family's type -> the sample names it exposes
    "counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"), "info": ("_info",), "unknown": ("",), "untyped": ("",),
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (or a Grafana label_values() query) reads."""
    expr = re.sub(r"label_values\(\s*([^,)]+?)\s*(?:,[^)]*)?\)", r"\1", expr)  # label_values(metric, label)
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals: label values, regexes
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)  # label lists
    expr = re.sub(r"\$\{?\w+\}?", "", expr)  # Grafana variables
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", expr):
        if expr[match.end():].lstrip().startswith("("):
            continue  # a function or an aggregation
        if match.group().lower() not in KEYWORDS:
            names.add(match.group())
    return names


def exported(text: str) -> set[str]:
    """Every sample name an exposition can hold, labelled series or not yet (a family with no samples counts)."""
    return {family.name + suffix for family in text_string_to_metric_families(text)
            for suffix in SAMPLE_SUFFIXES[family.type]}


def queries(dashboard: dict) -> list[tuple[str, str]]:
    """(where, query) of every panel target and every query variable."""
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found.append((f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            found.append((f"variable {variable['name']}", query["query"] if isinstance(query, dict) else query))
    return found


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


@pytest.fixture
def web_metrics(client) -> set[str]:
    response = client.get("/metrics")  # the test client speaks from 127.0.0.1: no token needed
    assert response.status_code == 200
    return exported(response.content.decode())


@pytest.fixture
def worker_metrics() -> set[str]:
    engine = SimpleNamespace(stats=lambda: {key: 1 for key in (*GAUGES, *COUNTERS)})
    worker = SimpleNamespace(
        model_id="m", worker_id="host-1-abc", _engine=engine, _cond=threading.Condition(), _inflight={},
        max_running=4, _draining=threading.Event(), _redis=SimpleNamespace(xlen=lambda key: 3),
        _requests_key="queue:m")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(worker))
    return exported(generate_latest(registry).decode())


def test_it_is_an_importable_dashboard_with_a_prometheus_datasource_variable(dashboard):
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def test_it_has_the_panels_operators_look_for(dashboard):
    titles = " | ".join(panel["title"].lower() for panel in dashboard["panels"])
    for wanted in ("request rate by status", "time to first token", "end-to-end latency", "prompt, completion, cached",
                   "402 / 429 / 503", "holds in flight", "queue depth", "running / waiting", "kv cache blocks",
                   "prefix-cache hit rate", "worker tokens", "preemptions", "holds swept", "stripe events",
                   "reconciliation findings"):
        assert wanted in titles, wanted


@pytest.mark.django_db
def test_every_metric_the_dashboard_queries_is_exported(dashboard, web_metrics, worker_metrics):
    known = web_metrics | worker_metrics
    unknown = {}
    for where, query in queries(dashboard):
        names = metric_names(query)
        assert names, f"{where}: no metric found in {query!r}"
        missing = names - known
        if missing:
            unknown[where] = sorted(missing)
    assert not unknown, f"metrics no process exports: {unknown}"
    # Each side is really looked at: the dashboard reads both the web processes and the workers.
    read = set().union(*(metric_names(query) for _, query in queries(dashboard)))
    assert read & web_metrics and read & worker_metrics


@pytest.mark.django_db
def test_a_misspelt_or_removed_metric_would_be_caught(web_metrics, worker_metrics):
    known = web_metrics | worker_metrics
    typo = 'histogram_quantile(0.95, sum by (le) (rate(platform_time_to_first_token_second_bucket{model=~"$model"}[5m])))'
    assert metric_names(typo) == {"platform_time_to_first_token_second_bucket"}
    assert metric_names(typo) - known
    assert metric_names("sum by (model) (inference_worker_kv_cache_blocks - inference_worker_kv_cache_free_blocks)") \
        == {"inference_worker_kv_cache_blocks", "inference_worker_kv_cache_free_blocks"}
    assert metric_names("label_values(platform_tokens_total, model)") == {"platform_tokens_total"}
    assert "platform_tokens_total" in web_metrics and "inference_worker_preemptions_total" in worker_metrics
    assert "inference_worker_preemptions_total" not in web_metrics  # the sides are told apart
