from django import forms
from django.contrib import admin

from billing.models import ModelPrice
from core.forms import MicroUSDField
from core.money import usd


class ModelPriceForm(forms.ModelForm):
    # Prices are kept in micro-USD per million tokens, typed here as USD per million tokens.
    input_micro_per_mtok = MicroUSDField(min_micro=0, label="Input, USD per million tokens",
                                         help_text="For example 0.10; exact to six decimals.")
    cached_input_micro_per_mtok = MicroUSDField(
        min_micro=0, required=False, label="Cached input, USD per million tokens",
        help_text="Prompt tokens served from the prefix cache, for example 0.05. Blank: half the input price.")
    output_micro_per_mtok = MicroUSDField(min_micro=0, label="Output, USD per million tokens",
                                          help_text="For example 0.20; exact to six decimals.")

    class Meta:
        model = ModelPrice
        fields = ["model_id", "input_micro_per_mtok", "cached_input_micro_per_mtok", "output_micro_per_mtok"]

    def clean(self):
        cleaned = super().clean()
        cached, full = cleaned.get("cached_input_micro_per_mtok"), cleaned.get("input_micro_per_mtok")
        # A hold reserves every prompt token at the input price; a dearer cached token would outgrow it.
        if cached is not None and full is not None and cached > full:
            self.add_error("cached_input_micro_per_mtok", "The cached input price cannot exceed the input price.")
        return cleaned


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    """Prices apply to holds placed after the change; a request in flight keeps the price it started with."""

    form = ModelPriceForm
    list_display = ["model_id", "input_price", "cached_input_price", "output_price", "updated_at"]
    search_fields = ["model_id"]
    ordering = ["model_id"]

    @admin.display(description="Input / 1M tokens", ordering="input_micro_per_mtok")
    def input_price(self, obj):
        return usd(obj.input_micro_per_mtok)

    @admin.display(description="Cached input / 1M tokens", ordering="cached_input_micro_per_mtok")
    def cached_input_price(self, obj):
        amount = usd(obj.price().cached_input_micro_per_mtok)
        return amount if obj.cached_input_micro_per_mtok is not None else f"{amount} (half of input)"

    @admin.display(description="Output / 1M tokens", ordering="output_micro_per_mtok")
    def output_price(self, obj):
        return usd(obj.output_micro_per_mtok)
