"""The playground page: the form and transcript; the chat itself runs over the WebSocket (consumer.py)."""
from asgiref.sync import async_to_sync
from django.shortcuts import render

from accounts.web.decorators import member_required
from billing.services import account_for, price_get
from core.catalogue import DEFAULT_MODEL_ID
from core.money import usd_amount, usd_exact
from inference.dispatch import listed_models
from inference.web.routing import PLAYGROUND_PATH

DEFAULT_MAX_TOKENS = 256


def _model_options() -> list[dict]:
    options = []
    for spec in sorted(async_to_sync(listed_models)(), key=lambda s: (s.id != DEFAULT_MODEL_ID, s.id)):
        price = price_get(model_id=spec.id, default=spec.default_price)
        options.append({
            "id": spec.id,
            "temperature": spec.sampling_defaults().get("temperature", 1.0),
            "input_usd": usd_amount(price.input_micro_per_mtok),
            "output_usd": usd_amount(price.output_micro_per_mtok),
            "cached_input_usd": usd_amount(price.cached_input_micro_per_mtok),
        })
    return options


@member_required
def playground(request):
    models = _model_options()
    account = account_for(organization=request.organization)
    return render(request, "dashboard/playground.html", {
        "models": models,
        "temperature": models[0]["temperature"] if models else 1.0,
        "max_tokens": DEFAULT_MAX_TOKENS,
        "available_usd": usd_exact(account.available_micro),
        "ws_path": "/" + PLAYGROUND_PATH,
    })
