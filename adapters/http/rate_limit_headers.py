"""OpenAI's rate-limit headers, from a limiter's answer (application/ports.py ``Admission``):
``x-ratelimit-limit-requests``, ``x-ratelimit-remaining-requests``,
``x-ratelimit-reset-requests`` and the same three for ``-tokens``, each trio only when a
limit of its kind applies. Resets are written as OpenAI writes them: ``20ms``, ``1s``,
``1.5s``, ``6m0s``."""

from application.billing import OpenedRequest
from application.ports import Admission, WindowState

NO_HEADERS: dict[str, str] = {}


def rate_limit_headers(admission: Admission | None) -> dict[str, str]:
    if admission is None:
        return NO_HEADERS
    headers: dict[str, str] = {}
    _add(headers, "requests", admission.requests)
    _add(headers, "tokens", admission.tokens)
    return headers


def opened_rate_limit_headers(opened: OpenedRequest) -> dict[str, str]:
    """The headers of an admitted request (none when no limit applies to it)."""
    admitted = opened.rate_limit
    return NO_HEADERS if admitted is None else rate_limit_headers(admitted.admission)


def _add(headers: dict[str, str], kind: str, state: WindowState | None) -> None:
    if state is not None:
        headers[f"x-ratelimit-limit-{kind}"] = str(state.limit)
        headers[f"x-ratelimit-remaining-{kind}"] = str(state.remaining)
        headers[f"x-ratelimit-reset-{kind}"] = duration_text(state.reset_seconds)


def duration_text(seconds: float) -> str:
    """A duration as OpenAI's headers write it (Go's style): ``0s``, ``20ms``, ``1.5s``, ``6m0s``, ``1h0m0s``."""
    if seconds <= 0:
        return "0s"
    millis = round(seconds * 1000)
    if millis < 1000:
        return f"{max(millis, 1)}ms"
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    text = f"{rest / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    if minutes:
        return f"{minutes}m{text}"
    return text
