"""drf-spectacular's postprocessing hook: the OpenAI-compatible endpoints (inference.api.openapi) and vLLM's
(inference.api.openapi_vllm) join the generated document."""
import copy
import json

from accounts.auth import BEARER, SECURITY_SCHEME
from inference.api.openapi import PREFIXES, SCHEMAS, _chat_operation, _model_operation, _models_operation
from inference.api.openapi_vllm import _text_completion_operation, _tokenize_operations


def openai_paths() -> dict:
    paths = _tokenize_operations()
    for prefix, suffix in PREFIXES:
        paths[f"{prefix}/chat/completions"] = {"post": _chat_operation(suffix)}
        paths[f"{prefix}/completions"] = {"post": _text_completion_operation(suffix)}
        paths[f"{prefix}/models"] = {"get": _models_operation(suffix)}
        paths[f"{prefix}/models/{{model}}"] = {"get": _model_operation(suffix)}
    return paths


def compatibility_parameters() -> dict:
    """Parameters the validator takes only with a value that changes nothing (null, or a neutral value)."""
    from inference.chat import validation

    properties = {}
    for name, (neutral, why) in getattr(validation, "NEUTRAL_ONLY", {}).items():
        values = [*neutral, None]
        shown = " or ".join(json.dumps(v) for v in values)
        properties[name] = {"nullable": True, "enum": values, "description": f"Accepted only as {shown}: {why}."}
    for name, why in getattr(validation, "UNSUPPORTED", {}).items():
        properties[name] = {"nullable": True, "enum": [None], "description": f"Only null: {why}."}
    return properties


def add_openai_endpoints(result, generator=None, request=None, public=True):
    """drf-spectacular postprocessing hook: the OpenAI-compatible endpoints join the generated document."""
    result["paths"] = {**openai_paths(), **result.get("paths", {})}
    components = result.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name, schema in SCHEMAS.items():
        schemas.setdefault(name, copy.deepcopy(schema))
    request_properties = schemas["ChatCompletionRequest"]["properties"]
    for name, schema in compatibility_parameters().items():
        request_properties.setdefault(name, schema)
    components.setdefault("securitySchemes", {}).setdefault(SECURITY_SCHEME, dict(BEARER))
    result["tags"] = [
        {"name": "chat", "description": "OpenAI-compatible chat completions (also under /api/v1)."},
        {"name": "models", "description": "The models this server serves (also under /api/v1)."},
        {"name": "completions", "description": "OpenAI's legacy completions (also under /api/v1)."},
        {"name": "tokens", "description": "vLLM's /tokenize and /detokenize."},
        {"name": "sessions", "description": "Server-side chat sessions of the key's organization."},
    ]
    return result
