"""Altair charts of the dashboard. Inputs are long-form pandas frames; money arrives
already converted to credits for the axis (``metrics.credits_axis``), times in UTC. Each
chart shows its times in the display zone (``dashboard.timezones``) and names it on the
axis and in the tooltips; the frames it is given are not changed."""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd

from dashboard import timezones
from dashboard.metrics import credits_axis
from dashboard.windows import Window

PERIOD_DASH = alt.StrokeDash(
    "period:N",
    title=None,
    scale=alt.Scale(domain=["this period", "previous period"], range=[[1, 0], [5, 4]]),
)


def _local(frame: pd.DataFrame, *fields: str) -> pd.DataFrame:
    """A copy whose time ``fields`` read, on the charts' UTC scale, the display zone's clock."""
    shown = frame.copy()
    for field in fields:
        if field in shown.columns and len(shown):
            shown[field] = timezones.wall_clock(shown[field]).to_numpy()
    return shown


def _zone_title(what: str | None = None) -> str:
    return timezones.label() if what is None else timezones.heading(what)


def _time_axis(field: str = "bucket", title: str | None = None, *, hourly: bool = False) -> alt.X:
    return alt.X(
        f"{field}:T",
        title=title or _zone_title(),
        scale=alt.Scale(type="utc"),
        axis=alt.Axis(labelOverlap=True, format="%H:%M" if hourly else "%b %d"),
    )


def period_lines(
    frame: pd.DataFrame, title: str, y_title: str, *, by_metric: bool = False, hourly: bool = False
) -> alt.Chart:
    """This period as a solid line, the previous period (shifted onto this axis) dashed."""
    color = (
        alt.Color("metric:N", title=None)
        if by_metric
        else alt.Color(
            "period:N",
            title=None,
            scale=alt.Scale(domain=["this period", "previous period"], range=["#1f77b4", "#9aa5b1"]),
        )
    )
    chart: alt.Chart = (
        alt.Chart(_local(frame, "bucket"), title=title)
        .mark_line(point=True)
        .encode(
            x=_time_axis(hourly=hourly),
            y=alt.Y("value:Q", title=y_title),
            color=color,
            strokeDash=PERIOD_DASH,
            tooltip=[
                alt.Tooltip("bucket:T", title=_zone_title("bucket"), format="%Y-%m-%d %H:%M"),
                "period:N",
                "metric:N",
                alt.Tooltip("value:Q", format=",.3f"),
            ],
        )
        .properties(height=240)
    )
    return chart


def stacked_bars_over_time(
    frame: pd.DataFrame, value: str, color: str, title: str, y_title: str, *, hourly: bool = False
) -> alt.Chart:
    """Bars spanning each bucket (``bucket`` to ``bucket_end``), stacked by ``color``."""
    chart: alt.Chart = (
        alt.Chart(_local(frame, "bucket", "bucket_end"), title=title)
        .mark_bar(stroke="white", strokeWidth=1)
        .encode(
            x=_time_axis(hourly=hourly),
            x2="bucket_end:T",
            y=alt.Y(f"sum({value}):Q", title=y_title),
            color=alt.Color(f"{color}:N", title=None),
            tooltip=[
                alt.Tooltip("bucket:T", title=_zone_title("bucket"), format="%Y-%m-%d %H:%M"),
                f"{color}:N",
                alt.Tooltip(f"sum({value}):Q", format=",.6f", title=y_title),
            ],
        )
        .properties(height=280)
    )
    return chart


def credential_lines(frame: pd.DataFrame, title: str, *, hourly: bool = False) -> alt.Chart:
    """One line per credential and metric over the window's buckets: colour = credential, dash = metric."""
    chart: alt.Chart = (
        alt.Chart(_local(frame, "bucket"), title=title)
        .mark_line(point=True)
        .encode(
            x=_time_axis(hourly=hourly),
            y=alt.Y("value:Q", title="count", axis=alt.Axis(tickMinStep=1, format="d")),
            color=alt.Color("credential:N", title=None),
            strokeDash=alt.StrokeDash("metric:N", title=None),
            tooltip=[
                alt.Tooltip("bucket:T", title=_zone_title("bucket"), format="%Y-%m-%d %H:%M"),
                "credential:N",
                "metric:N",
                "value:Q",
            ],
        )
        .properties(height=260)
    )
    return chart


def horizontal_bars(
    frame: pd.DataFrame, category: str, value: str, title: str, x_title: str, color: str | None = None
) -> alt.Chart:
    encoding: dict[str, Any] = {
        "y": alt.Y(f"{category}:N", title=None, sort="-x"),
        "x": alt.X(f"{value}:Q", title=x_title),
        "tooltip": [f"{category}:N", alt.Tooltip(f"{value}:Q", format=",.6f")],
    }
    if color:
        encoding["color"] = alt.Color(f"{color}:N", title=None)
        encoding["tooltip"].append(f"{color}:N")
    # A fixed pixel height collapses a discrete axis in Streamlit 1.67's renderer; a step per band does not.
    chart: alt.Chart = alt.Chart(frame, title=title).mark_bar().encode(**encoding).properties(height=alt.Step(30))
    return chart


def latency_scatter(frame: pd.DataFrame) -> alt.Chart:
    chart: alt.Chart = (
        alt.Chart(_local(frame, "at"), title="Latency of each request (ms)")
        .mark_circle(size=48, opacity=0.75)
        .encode(
            x=alt.X(
                "at:T",
                title=_zone_title(),
                scale=alt.Scale(type="utc"),
                axis=alt.Axis(labelOverlap=True, format="%b %d %H:%M"),
            ),
            y=alt.Y("latency_ms:Q", title="latency (ms)"),
            color=alt.Color("status:N", title="status"),
            tooltip=[
                alt.Tooltip("at:T", title=_zone_title("at"), format="%Y-%m-%d %H:%M:%S"),
                "request_id:N",
                "model:N",
                "status:N",
                alt.Tooltip("latency_ms:Q", format=",.1f"),
                alt.Tooltip("ttfb_ms:Q", format=",.1f"),
            ],
        )
        .properties(height=260)
    )
    return chart


def rates_by_version(frame: pd.DataFrame) -> alt.Chart:
    """Each model's rates (credits per 1M tokens) across price-book versions."""
    chart: alt.Chart = (
        alt.Chart(frame, title="Rates per price-book version (credits per 1M tokens)")
        .mark_line(point=True)
        .encode(
            x=alt.X("version:O", title="price-book version", axis=alt.Axis(labelAngle=0)),
            y=alt.Y("rate:Q", title="credits per 1M tokens"),
            color=alt.Color("model:N", title=None),
            strokeDash=alt.StrokeDash("kind:N", title=None),
            tooltip=["version:O", "model:N", "kind:N", alt.Tooltip("rate:Q", format=",.6f")],
        )
        .properties(height=260)
    )
    return chart


def rows_per_day(frame: pd.DataFrame, title: str) -> alt.Chart:
    """Rows per UTC day: an export's days are UTC days, whatever zone the page shows."""
    chart: alt.Chart = (
        alt.Chart(frame, title=title)
        .mark_bar(stroke="white", strokeWidth=1)
        .encode(
            x=_time_axis("day", "day (UTC)"),
            x2="day_end:T",
            y=alt.Y("sum(rows):Q", title="rows"),
            tooltip=[alt.Tooltip("day:T", format="%Y-%m-%d"), alt.Tooltip("sum(rows):Q", title="rows")],
        )
        .properties(height=200)
    )
    return chart


def running_balance(frame: pd.DataFrame, title: str) -> alt.LayerChart:
    """The balance after each movement: one step line, a point per movement coloured by its kind."""
    base = alt.Chart(_local(frame, "at"), title=title).encode(
        x=alt.X(
            "at:T",
            title=_zone_title(),
            scale=alt.Scale(type="utc"),
            axis=alt.Axis(labelOverlap=True, format="%b %d %H:%M"),
        ),
        y=alt.Y("balance_credits:Q", title="credits", scale=alt.Scale(zero=False)),
    )
    line = base.mark_line(interpolate="step-after", color="#9aa5b1")
    points = base.mark_circle(size=40).encode(
        color=alt.Color("kind:N", title=None),
        tooltip=[
            alt.Tooltip("at:T", title=_zone_title("at"), format="%Y-%m-%d %H:%M:%S"),
            "kind:N",
            alt.Tooltip("balance_credits:Q", format=",.9f", title="balance"),
        ],
    )
    chart: alt.LayerChart = (line + points).properties(height=220)
    return chart


def spend_by_bucket(usage: pd.DataFrame, window: Window) -> pd.DataFrame:
    """Hourly usage rows with their bucket of ``window`` (start and end) and their charge as
    credits on an axis: what ``stacked_bars_over_time`` draws spend from."""
    return usage.assign(
        bucket=[window.bucket_of(h) for h in usage["hour"]],
        bucket_end=[window.bucket_of(h) + window.bucket for h in usage["hour"]],
        spend_credits=[credits_axis(c) for c in usage["charge"]],
    )
