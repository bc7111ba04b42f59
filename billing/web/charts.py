"""Bar charts as plain geometry for an inline SVG (templates/dashboard/usage/_chart.html): no script needed.

A chart is one bar per day, each bar a stack of series (prompt and completion tokens, or one for spend),
a y axis with round ticks, a few day labels along the x axis, and a tooltip (`<title>`) on every bar.
"""
import math
from dataclasses import dataclass, field
from datetime import date
from typing import Callable

WIDTH, HEIGHT = 640, 260
LEFT, RIGHT, TOP, BOTTOM = 78, 12, 30, 44  # room for the tick labels, the legend and the day labels
X_LABELS = 6  # at most this many day labels, so they stay readable on a phone


@dataclass(frozen=True)
class Series:
    name: str
    color: str


@dataclass
class Segment:
    y: float
    height: float
    color: str


@dataclass
class Bar:
    x: float
    width: float
    title: str
    segments: list[Segment] = field(default_factory=list)


@dataclass
class Label:
    x: float
    y: float
    text: str


@dataclass
class LegendItem:
    x: int
    text: str
    color: str


@dataclass
class Chart:
    id: str
    title: str
    unit: str
    bars: list[Bar]
    y_ticks: list[Label]
    x_labels: list[Label]
    legend: list[LegendItem]
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right_edge: int = WIDTH - RIGHT
    top: int = TOP
    baseline: int = HEIGHT - BOTTOM
    plot_height: int = HEIGHT - TOP - BOTTOM
    center: int = (LEFT + WIDTH - RIGHT) // 2


def nice_step(maximum: int, intervals: int = 4) -> int:
    """A round tick step (1, 2 or 5 times a power of ten, at least 1) so that `intervals` steps reach `maximum`."""
    raw = max(maximum, 1) / intervals
    power = 10 ** max(math.floor(math.log10(raw)), 0) if raw >= 1 else 1
    for multiple in (1, 2, 5, 10):
        if multiple * power >= raw:
            return multiple * power
    return 10 * power


def bar_chart(*, id: str, title: str, unit: str, days: list[date], values: list[tuple[int, ...]],
              series: list[Series], describe: Callable[[date, tuple[int, ...]], str],
              tick_label: Callable[[int], str]) -> Chart:
    """One stacked bar per day; `values[i]` holds day i's figure of each series, `describe` its tooltip."""
    top_value = max((sum(v) for v in values), default=0)
    step = nice_step(top_value)
    scale_top = step * max(math.ceil(top_value / step), 1)
    plot_height = HEIGHT - TOP - BOTTOM
    plot_width = WIDTH - LEFT - RIGHT
    slot = plot_width / max(len(days), 1)
    gap = min(slot * 0.2, 4)

    bars = []
    for i, (day, figures) in enumerate(zip(days, values)):
        bar = Bar(x=round(LEFT + i * slot + gap / 2, 2), width=round(max(slot - gap, 1), 2),
                  title=describe(day, figures))
        y = HEIGHT - BOTTOM
        for value, one in zip(figures, series):
            height = plot_height * value / scale_top
            y -= height
            if value:
                bar.segments.append(Segment(y=round(y, 2), height=round(max(height, 0.5), 2), color=one.color))
        bars.append(bar)

    y_ticks = [Label(x=LEFT - 6, y=round(HEIGHT - BOTTOM - plot_height * tick / scale_top, 2),
                     text=tick_label(tick)) for tick in range(0, scale_top + 1, step)]
    every = max(math.ceil(len(days) / X_LABELS), 1)
    x_labels = [Label(x=round(LEFT + (i + 0.5) * slot, 2), y=HEIGHT - BOTTOM + 16, text=day.strftime("%b %d"))
                for i, day in enumerate(days) if i % every == 0]
    legend = [LegendItem(x=LEFT + 110 * i, text=one.name, color=one.color) for i, one in enumerate(series)]
    return Chart(id=id, title=title, unit=unit, bars=bars, y_ticks=y_ticks, x_labels=x_labels, legend=legend)
