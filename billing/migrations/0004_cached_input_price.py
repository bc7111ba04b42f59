"""Prompt tokens served from the prefix cache: a cached input price per model, on holds and on usage records.

Holds placed before this (perhaps still active) get half their input price, the default, so every hold names
the price it settles with. Older usage records keep no cached price: none of their tokens were cached.
"""
from django.db import migrations, models
from django.db.models import F


def half_the_input_price(apps, schema_editor):
    Hold = apps.get_model("billing", "Hold")
    # Integer division on both SQLite and PostgreSQL; prices are never negative.
    Hold.objects.filter(cached_input_micro_per_mtok__isnull=True).update(
        cached_input_micro_per_mtok=F("input_micro_per_mtok") / 2)


class Migration(migrations.Migration):

    dependencies = [
        ('billing', '0003_usage_by_key_and_time'),
    ]

    operations = [
        migrations.AddField(
            model_name='modelprice',
            name='cached_input_micro_per_mtok',
            field=models.BigIntegerField(blank=True, null=True),
        ),
        migrations.AddConstraint(
            model_name='modelprice',
            constraint=models.CheckConstraint(
                condition=models.Q(('cached_input_micro_per_mtok__isnull', True),
                                   ('cached_input_micro_per_mtok__gte', 0), _connector='OR'),
                name='cached_price_not_negative'),
        ),
        migrations.AddField(
            model_name='hold',
            name='cached_input_micro_per_mtok',
            field=models.BigIntegerField(null=True),
        ),
        migrations.AddField(
            model_name='usagerecord',
            name='cached_input_micro_per_mtok',
            field=models.BigIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='usagerecord',
            name='cached_tokens',
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.RunPython(half_the_input_price, migrations.RunPython.noop),
        migrations.AlterField(
            model_name='hold',
            name='cached_input_micro_per_mtok',
            field=models.BigIntegerField(),
        ),
    ]
