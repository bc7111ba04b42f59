"""OpenAI tool calling for our models, free of Django: parsing, streaming, prompting, forced calls.

xgrammar is only imported when a constraint is built.
"""

from .calls import HERMES, LLAMA3, TOOL_FORMATS, ParsedCall, new_call_id
from .constraint import tool_call_constraint
from .parsing import ToolCallStream, parse_tool_calls

__all__ = [
    "HERMES", "LLAMA3", "TOOL_FORMATS", "ParsedCall", "ToolCallStream", "new_call_id",
    "parse_tool_calls", "tool_call_constraint",
]
