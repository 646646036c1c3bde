"""The quality page's charts, built with plotly and drawn in the browser by plotly.js (served by
the page itself, see /charts.js): up-vote rate and answer volume per day and model version with publish
and activation events on the timeline, abstention rate, causes of bad answers over time."""

from __future__ import annotations

from feedback.reviews import CAUSES, Quality


def quality_figures(data: Quality, events: list[dict]) -> dict[str, str]:
    """Chart id → plotly figure as JSON."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    days = data.days
    votes = make_subplots(specs=[[{"secondary_y": True}]])
    for model, series in sorted(data.models.items()):
        votes.add_trace(go.Bar(x=days, y=series["answers"], name=f"{model}: answers", opacity=0.35), secondary_y=True)
        votes.add_trace(go.Scatter(x=days, y=series["up_rate"], name=f"{model}: up-vote rate", mode="lines+markers",
                                   connectgaps=False), secondary_y=False)
    shown = [e for e in events if days and days[0] <= str(e.get("at", ""))[:10] <= days[-1]]
    for i, event in enumerate(shown):
        day = str(event.get("at", ""))[:10]
        votes.add_vline(x=day, line_dash="dot", line_color="#888")
        # Stacked in rows: a publish and its activation on one day would otherwise print over each other.
        votes.add_annotation(x=day, y=1.04 + 0.07 * (i % 3), yref="paper", text=f"{event['event']} {event['model']}",
                             showarrow=False, font={"size": 10}, xanchor="left", bgcolor="rgba(255,255,255,0.8)")
    votes.update_yaxes(title_text="up votes / all votes", range=[0, 1.05], tickformat=".0%", secondary_y=False)
    most = max((n for series in data.models.values() for n in series["answers"] if n), default=1)
    votes.update_yaxes(title_text="answers", secondary_y=True, **_counts_axis(most))
    votes.update_layout(title="Up-vote rate and answers per day, by model version", barmode="group", legend={"orientation": "h"},
                        margin={"t": 60 + 20 * min(len(shown), 3)}, showlegend=True)

    abstention = go.Figure()
    for model, series in sorted(data.models.items()):
        abstention.add_trace(go.Scatter(x=days, y=series["abstention_rate"], name=model, mode="lines+markers",
                                        connectgaps=False))
    highest = max((r for series in data.models.values() for r in series["abstention_rate"] if r is not None), default=0)
    abstention.update_layout(title="Abstention rate per day, by model version",
                             yaxis={"tickformat": ".0%", "range": [0, max(0.1, highest * 1.2)]},
                             legend={"orientation": "h"}, showlegend=True)

    causes = go.Figure()
    for cause, counts in sorted(data.causes.items()):
        causes.add_trace(go.Bar(x=days, y=counts, name=CAUSES.get(cause, cause)))
    most = max((sum(day) for day in zip(*data.causes.values())), default=1) if data.causes else 1
    causes.update_layout(title="Causes of bad answers, by the day they were reviewed", barmode="stack",
                         legend={"orientation": "h"}, yaxis=_counts_axis(most), showlegend=True)

    documents = go.Figure(go.Bar(
        # One bar per (collection, path): the same path in two collections is two documents.
        x=[down for _, _, down, _ in data.documents][::-1],
        y=[f"{collection}: {path}" for collection, path, _, _ in data.documents][::-1],
        orientation="h", name="down votes", marker_color="#c0392b",
    ))
    most = max((down for _, _, down, _ in data.documents), default=1)
    documents.update_layout(title="Documents most often behind down-voted answers",
                            xaxis={"title": "down votes", **_counts_axis(most)},
                            margin={"l": 260}, height=120 + 28 * max(len(data.documents), 1))
    # Into <script type="application/json"> blocks: no "<" may close one (paths and names are data).
    return {name: figure.to_json().replace("<", "\\u003c") for name, figure in
            (("votes", votes), ("abstention", abstention), ("causes", causes), ("documents", documents))}


def _counts_axis(most: float) -> dict:
    """An axis of counts: whole numbers only, about five ticks (not 0.5, 1.01 …)."""
    step = max(1, -(-int(most) // 5))
    return {"rangemode": "tozero", "tick0": 0, "dtick": step, "tickformat": ",d"}


def up_rates(data: Quality) -> list[tuple[str, int, float | None]]:
    """(model, answers, 👍 share of its votes) over the period, most answers first."""
    rows = []
    for model, series in data.models.items():
        up, down = sum(series["up"]), sum(series["down"])
        rows.append((model, sum(series["answers"]), up / (up + down) if up + down else None))
    return sorted(rows, key=lambda r: -r[1])


def text_alternatives(data: Quality, events: list[dict]) -> dict[str, str]:
    """What each chart shows, in a sentence, for whoever cannot see it."""
    rates = "; ".join(f"{model}: {answers} answers, " + (f"{rate:.0%} up-voted" if rate is not None else "no votes")
                      for model, answers, rate in up_rates(data)) or "no answers"
    abstained = "; ".join(f"{model}: {sum(s['abstained'])} of {sum(s['answers'])} answers abstained"
                          for model, s in sorted(data.models.items())) or "no answers"
    causes = "; ".join(f"{CAUSES.get(c, c)}: {sum(n)}" for c, n in sorted(data.causes.items())) or "no causes named"
    documents = "; ".join(f"{c}: {p} ({down} down)" for c, p, down, _ in data.documents[:5]) or "no down votes"
    return {
        "votes": f"Up-vote rate and answers per day over {len(data.days)} days. {rates}. "
                 f"{len(events)} publish or activation events.",
        "abstention": f"Abstention rate per day. {abstained}.",
        "causes": f"Causes of bad answers by review day. {causes}.",
        "documents": f"Documents most often behind down-voted answers. {documents}.",
    }
