"""Model fields that keep any text a model or a client writes, NUL characters included.

PostgreSQL's text and jsonb types refuse U+0000, which a model may generate (a byte-level token) and a
client may send in a message. These fields store such text with a reversible escape, the same on every
database: U+0000 is stored as ESCAPE + "0" and ESCAPE itself as ESCAPE + "e" (ESCAPE is U+E000, a
private-use character). Text holding neither is stored as it is, so ordinary rows read the same in SQL.
"""
import re

from django.db import models

ESCAPE = "\ue000"
_ENCODED = re.compile(ESCAPE + "([0e])")
_DECODED = {"0": "\x00", "e": ESCAPE}


def encode(text: str) -> str:
    if "\x00" not in text and ESCAPE not in text:
        return text
    return text.replace(ESCAPE, ESCAPE + "e").replace("\x00", ESCAPE + "0")


def decode(text: str) -> str:
    if ESCAPE not in text:
        return text
    return _ENCODED.sub(lambda m: _DECODED[m.group(1)], text)


def map_strings(value, convert):
    """The JSON value with every string in it (keys too) converted."""
    if isinstance(value, str):
        return convert(value)
    if isinstance(value, list):
        return [map_strings(v, convert) for v in value]
    if isinstance(value, dict):
        return {convert(k) if isinstance(k, str) else k: map_strings(v, convert) for k, v in value.items()}
    return value


class NulSafeTextField(models.TextField):
    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        return encode(value) if isinstance(value, str) else value

    def from_db_value(self, value, expression, connection):
        return decode(value) if isinstance(value, str) else value


class NulSafeJSONField(models.JSONField):
    def get_prep_value(self, value):
        return super().get_prep_value(map_strings(value, encode))

    def from_db_value(self, value, expression, connection):
        return map_strings(super().from_db_value(value, expression, connection), decode)
