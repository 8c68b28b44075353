"""Console: the audit log — every admin action the ledger recorded, newest first: when, who
(``cli``, ``admin:<fingerprint of the admin key>``, ``payments``, the portal's actors;
``unrecorded`` for events older than actors and for the gateway's own work), the action, its
target and a summary (exact credits, never a secret). Filters by actor, action (one, or all
of a kind), target text and time range; at most the newest ``limit`` rows are shown.

It only reads the ``audit`` read model (projections/audit.py); it acts on nothing.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import streamlit as st

from dashboard import queries, timezones, ui
from dashboard.windows import PRESETS
from projections.audit import ACTIONS

ANY = "any"
ALL_TIME = "All time"
CUSTOM = "Custom days"
LIMITS = (50, 200, 1000)


def kinds() -> list[str]:
    """The first parts of the actions (``account``, ``key``…): each filters all of its kind."""
    return sorted({action.split(".", 1)[0] for action in ACTIONS})


def action_label(action: str) -> str:
    return action if action == ANY or "." in action else f"{action}.* (every {action} action)"


def day_start(day: date) -> datetime:
    """Midnight of ``day`` in the display zone, as a UTC moment."""
    return datetime.combine(day, time(), tzinfo=timezones.zone()).astimezone(UTC)


def time_range(choice: str, column: st.delta_generator.DeltaGenerator) -> tuple[datetime | None, datetime | None]:
    now = datetime.now(UTC)
    if choice == ALL_TIME:
        return None, None
    if choice in PRESETS:
        return now - PRESETS[choice], None
    today = timezones.shown(now).date()  # type: ignore[union-attr]
    picked = column.date_input(
        timezones.heading("Days"), value=(today - timedelta(days=6), today), key="audit_days", format="YYYY-MM-DD"
    )
    days = [d for d in (picked if isinstance(picked, (tuple, list)) else [picked]) if isinstance(d, date)] or [today]
    return day_start(days[0]), day_start(days[-1] + timedelta(days=1))


ctx = ui.page_context()
st.title("Audit log")
st.caption(
    "Who did what, from the ledger's events: the CLI acts as `cli`, the admin API and this console as "
    "`admin:` and the first 12 hex digits of the admin key's SHA-256, the payments webhook as `payments`. "
    "`unrecorded`: an event stored before actors were recorded, or the gateway's own work."
)

try:
    known_actors = queries.audit_actors(ctx.key, _source=ctx.source)
except queries.ReadModelsMissing:
    st.info(
        "This store has no audit log yet: it is created, and filled from the whole history, when the gateway "
        "(`tallyhub serve` or a `worker`) next starts, or by `tallyhub init` run again."
    )
    st.stop()
cols = st.columns(4)
actor = cols[0].selectbox("Actor", [ANY, *known_actors], key="audit_actor")
action = cols[1].selectbox("Action", [ANY, *kinds(), *ACTIONS], key="audit_action", format_func=action_label)
target = cols[2].text_input("Target contains", key="audit_target", help="account, key id, provider, alias…").strip()
limit = cols[3].selectbox("Show", LIMITS, index=1, key="audit_limit", format_func=lambda n: f"newest {n}")
left, right = st.columns([1, 2])
choice = left.selectbox("Time range", [ALL_TIME, *PRESETS, CUSTOM], key="audit_range")
since, until = time_range(choice, right)
if since is not None:
    right.caption(
        f"From {timezones.text(since, '%Y-%m-%d %H:%M')}"
        + (f" to {timezones.text(until, '%Y-%m-%d %H:%M')}" if until else "")
    )

who = None if actor == ANY else str(actor)
what = None if action == ANY else str(action)
frame = queries.audit_frame(
    ctx.key,
    actor=who,
    action=what,
    target=target or None,
    since=since,
    until=until,
    limit=int(limit),
    _source=ctx.source,
)
matching = queries.audit_count(
    ctx.key, actor=who, action=what, target=target or None, since=since, until=until, _source=ctx.source
)
st.session_state["audit_rows"] = len(frame)
st.session_state["audit_matching"] = matching
if frame.empty:
    anything = queries.audit_count(ctx.key, _source=ctx.source)
    st.info(
        "No admin action matches these filters."
        if anything
        else "No admin action recorded yet: the audit log "
        "fills as operators act (`tallyhub accounts create`, the console, the admin API)."
    )
    st.stop()

AT = timezones.heading("at")
shown = timezones.frame_columns(frame, ["at"]).rename(columns={"at": AT})
st.metric("Matching actions", f"{matching:,}", border=True)
st.dataframe(
    shown[[AT, "actor", "action", "target", "summary", "position", "aggregate_id"]],
    hide_index=True,
    width="stretch",
    key="audit_table",
)
if matching > len(frame):
    st.caption(f"The newest {len(frame):,} of {matching:,}: narrow the filters or show more to see older ones.")
