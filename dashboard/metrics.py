"""Overview figures computed from read-model rows: totals, percentiles, series per bucket.

Invariants kept here:
- totals are the exact integer sums of the usage rollups, and provider cost and margin
  those of the provider rollups (money stays nanocredits; a float appears only as a
  chart coordinate, in credits);
- latency and TTFB percentiles are over *completed* requests (a 402 refused before any
  upstream call would otherwise pull p50 towards zero), linear interpolation between
  the closest ranks (numpy's default);
- a series has one point per bucket of the window, zero-filled for counts and left
  empty (NaN) for percentiles of a bucket with no completed request.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from dashboard.windows import Window
from domain.money import NANOCREDITS_PER_CREDIT, format_credits


def credits_text(amount: int) -> str:
    """Exact credits, without the trailing zeros ``format_credits`` pads to nine places."""
    whole, _, fraction = format_credits(int(amount)).partition(".")
    return f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"


def credits_axis(amount: int | float) -> float:
    """Credits as a chart coordinate only — never shown as an amount."""
    return float(amount) / NANOCREDITS_PER_CREDIT


@dataclass(frozen=True)
class Totals:
    requests: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    charge: int = 0
    cost: int = 0

    @classmethod
    def of(cls, counts: dict[str, int]) -> Totals:
        return cls(
            counts["requests"],
            counts["failed_requests"],
            counts["input_tokens"],
            counts["output_tokens"],
            counts["charge"],
            counts["cost"],
        )

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def error_rate(self) -> float | None:
        return self.failed / self.requests if self.requests else None


@dataclass(frozen=True)
class ProviderTotals:
    charged: int = 0
    provider_cost: int = 0
    provider_cost_unknown: int = 0
    failed_attempts: int = 0
    failovers: int = 0

    @classmethod
    def of(cls, counts: dict[str, int]) -> ProviderTotals:
        return cls(
            counts["charged"],
            counts["provider_cost"],
            counts["provider_cost_unknown"],
            counts["failed_attempts"],
            counts["failovers"],
        )

    @property
    def margin(self) -> int:
        return self.charged - self.provider_cost

    @property
    def margin_rate(self) -> float | None:
        return self.margin / self.charged if self.charged else None


@dataclass(frozen=True)
class Latency:
    completed: int
    p50_latency: float | None
    p95_latency: float | None
    p50_ttfb: float | None
    p95_ttfb: float | None


def _quantile(values: pd.Series, q: float) -> float | None:
    values = values.dropna()
    return None if values.empty else float(values.quantile(q))


def latency_of(timings: pd.DataFrame) -> Latency:
    done = timings[~timings["failed"]]
    return Latency(
        len(done),
        _quantile(done["latency_ms"], 0.5),
        _quantile(done["latency_ms"], 0.95),
        _quantile(done["ttfb_ms"], 0.5),
        _quantile(done["ttfb_ms"], 0.95),
    )


def usage_series(usage: pd.DataFrame, window: Window) -> pd.DataFrame:
    """Requests, failures, tokens and charge per bucket of ``window`` (zero-filled)."""
    buckets = pd.DataFrame({"bucket": window.bucket_starts()})
    if usage.empty:
        frame = buckets.assign(requests=0, failed_requests=0, tokens=0, charge=0)
    else:
        data = usage.assign(
            bucket=[window.bucket_of(h) for h in usage["hour"]], tokens=usage["input_tokens"] + usage["output_tokens"]
        )
        sums = data.groupby("bucket")[["requests", "failed_requests", "tokens", "charge"]].sum().reset_index()
        frame = buckets.merge(sums, on="bucket", how="left").fillna(0)
    frame = frame.astype({"requests": "int64", "failed_requests": "int64", "tokens": "int64", "charge": "int64"})
    frame["spend_credits"] = [credits_axis(c) for c in frame["charge"]]
    frame["error_rate_pct"] = [
        100.0 * f / r if r else None for f, r in zip(frame["failed_requests"], frame["requests"], strict=True)
    ]
    return frame


def margin_series(providers: pd.DataFrame | None, window: Window) -> pd.DataFrame:
    """Charged, provider cost and margin per bucket of ``window`` (zero-filled), with credit coordinates."""
    starts = pd.Index(window.bucket_starts(), name="bucket")
    money = ["charged", "provider_cost"]
    if providers is None or providers.empty:
        frame = pd.DataFrame({"bucket": starts, "charged": 0, "provider_cost": 0})
    else:
        data = providers.assign(bucket=[window.bucket_of(h) for h in providers["hour"]])
        sums = data.groupby("bucket")[money].sum().astype("int64")
        frame = sums.reindex(starts, fill_value=0).reset_index()  # no NaN on the way: the sums stay exact integers
    frame = frame.astype({name: "int64" for name in money})
    frame["margin"] = frame["charged"] - frame["provider_cost"]
    for name in (*money, "margin"):
        frame[f"{name}_credits"] = [credits_axis(v) for v in frame[name]]
    return frame


def latency_series(timings: pd.DataFrame, window: Window) -> pd.DataFrame:
    """p50/p95 latency and TTFB of completed requests per bucket (NaN where none)."""
    buckets = pd.DataFrame({"bucket": window.bucket_starts()})
    done = timings[~timings["failed"]]
    if done.empty:
        return buckets.assign(p50_latency_ms=None, p95_latency_ms=None, p50_ttfb_ms=None, p95_ttfb_ms=None)
    data = done.assign(bucket=[window.bucket_of(at) for at in done["at"]])
    grouped = data.groupby("bucket")
    stats = pd.DataFrame(
        {
            "p50_latency_ms": grouped["latency_ms"].quantile(0.5),
            "p95_latency_ms": grouped["latency_ms"].quantile(0.95),
            "p50_ttfb_ms": grouped["ttfb_ms"].quantile(0.5),
            "p95_ttfb_ms": grouped["ttfb_ms"].quantile(0.95),
        }
    ).reset_index()
    return buckets.merge(stats, on="bucket", how="left")


def against_previous(
    current: pd.DataFrame,
    previous: pd.DataFrame,
    window: Window,
    columns: list[str],
    labels: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Long form (bucket, period, metric, value); the previous period is shifted onto this window's axis."""
    shifted = previous.assign(bucket=previous["bucket"] + window.span)
    parts = []
    for period, frame in (("this period", current), ("previous period", shifted)):
        long = frame.melt(id_vars=["bucket"], value_vars=columns, var_name="metric", value_name="value")
        parts.append(long.assign(period=period))
    frame = pd.concat(parts, ignore_index=True)
    if labels:
        frame["metric"] = frame["metric"].map(lambda name: labels.get(name, name))
    return frame


def change_text(current: float | None, previous: float | None, *, unit: str = "", digits: int = 0) -> str | None:
    """``+12`` against the previous period (None when either side is unknown)."""
    if current is None or previous is None:
        return None
    return f"{current - previous:+,.{digits}f}{unit}"


def credits_change_text(current: int, previous: int) -> str:
    diff = current - previous
    return f"{'+' if diff >= 0 else '-'}{credits_text(abs(diff))}"
