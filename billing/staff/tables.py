"""A table of figures, rendered two ways from the same rows: cells for the page and values for CSV."""
from dataclasses import dataclass
from django.utils import timezone

from billing.staff.formats import age
from core.money import usd, usd_exact

# Cells a spreadsheet would run as a formula (an organization named "=HYPERLINK(...)").
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value):
    """Text a spreadsheet would run as a formula gets a leading apostrophe; anything else passes as it is."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    kind: str = "text"  # text, int, usd (micro-USD), datetime or age (a timedelta)

    @property
    def csv_header(self) -> str:
        return {"usd": f"{self.key}_usd", "age": f"{self.key}_seconds"}.get(self.kind, self.key)

    @property
    def numeric(self) -> bool:
        return self.kind in ("int", "usd", "age")

    def display(self, value) -> str:
        if value is None or value == "":
            return "—" if self.kind != "text" else ""
        if self.kind == "usd":
            return usd(value)
        if self.kind == "int":
            return f"{value:,}"
        if self.kind == "datetime":
            return timezone.localtime(value).strftime("%Y-%m-%d %H:%M")
        if self.kind == "age":
            return age(value)
        return str(value)

    def csv_value(self, value) -> str:
        if value is None:
            return ""
        if self.kind == "usd":
            return usd_exact(value)
        if self.kind == "datetime":
            return timezone.localtime(value).isoformat()
        if self.kind == "age":
            return str(int(value.total_seconds()))
        return spreadsheet_safe(str(value)) if self.kind == "text" else str(value)


@dataclass
class Table:
    name: str  # also the CSV file's name: /staff/billing/export/<name>.csv
    title: str
    columns: list[Column]
    rows: list[dict]
    note: str = ""
    empty: str = "Nothing in this range."
    # A totals line under the table on the page (keyed like rows); CSV files carry the rows only.
    totals: dict | None = None

    def cells(self) -> list[list[tuple[str, bool]]]:
        return [[(c.display(row.get(c.key)), c.numeric) for c in self.columns] for row in self.rows]

    def total_cells(self) -> list[tuple[str, bool]] | None:
        if self.totals is None:
            return None
        return [(c.display(self.totals[c.key]) if c.key in self.totals else "", c.numeric) for c in self.columns]

    def csv_rows(self) -> list[list[str]]:
        return [[c.csv_header for c in self.columns]] + [
            [c.csv_value(row.get(c.key)) for c in self.columns] for row in self.rows
        ]
