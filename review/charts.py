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
    for event in events:
        day = str(event.get("at", ""))[:10]
        if days and days[0] <= day <= days[-1]:
            votes.add_vline(x=day, line_dash="dot", line_color="#888")
            votes.add_annotation(x=day, y=1.06, yref="paper", text=f"{event['event']} {event['model']}",
                                 showarrow=False, font={"size": 10}, textangle=-30, xanchor="left")
    votes.update_yaxes(title_text="up votes / all votes", range=[0, 1.05], tickformat=".0%", secondary_y=False)
    votes.update_yaxes(title_text="answers", secondary_y=True, rangemode="tozero")
    votes.update_layout(title="Up-vote rate and answers per day, by model version", barmode="group", legend={"orientation": "h"},
                        margin={"t": 90})

    abstention = go.Figure()
    for model, series in sorted(data.models.items()):
        abstention.add_trace(go.Scatter(x=days, y=series["abstention_rate"], name=model, mode="lines+markers",
                                        connectgaps=False))
    highest = max((r for series in data.models.values() for r in series["abstention_rate"] if r is not None), default=0)
    abstention.update_layout(title="Abstention rate per day, by model version",
                             yaxis={"tickformat": ".0%", "range": [0, max(0.1, highest * 1.2)]},
                             legend={"orientation": "h"})

    causes = go.Figure()
    for cause, counts in sorted(data.causes.items()):
        causes.add_trace(go.Bar(x=days, y=counts, name=CAUSES.get(cause, cause)))
    causes.update_layout(title="Causes of bad answers, by the day they were reviewed", barmode="stack",
                         legend={"orientation": "h"}, yaxis={"rangemode": "tozero"})

    documents = go.Figure(go.Bar(
        x=[down for _, _, down, _ in data.documents][::-1], y=[path for _, path, _, _ in data.documents][::-1],
        orientation="h", name="down votes", marker_color="#c0392b",
    ))
    documents.update_layout(title="Documents most often behind down-voted answers", xaxis={"title": "down votes"},
                            margin={"l": 260}, height=120 + 28 * max(len(data.documents), 1))
    # Into <script type="application/json"> blocks: no "<" may close one (paths and names are data).
    return {name: figure.to_json().replace("<", "\\u003c") for name, figure in
            (("votes", votes), ("abstention", abstention), ("causes", causes), ("documents", documents))}
