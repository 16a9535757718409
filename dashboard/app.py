"""The customer dashboard: a Dash app (Flask underneath, its JavaScript shipped in the package,
so it runs offline) over the warehouse's reader side (``dashboard.data``).

``create_app(settings)`` builds it; ``flavours dashboard`` serves it. The page shows the
customer base over time, new/updated/deleted customers per day, week or month, breakdowns of
the current customers, one customer's version timeline (``?customer=<id, e-mail or phone>``
opens it; ``start``, ``end`` and ``period`` set the charts), and how fresh the data is.
"""

from __future__ import annotations

from datetime import date
from urllib.parse import parse_qs

import plotly.graph_objects as go
from dash import Dash, Input, Output, State, dash_table, dcc, html, no_update

from core.settings import Settings
from dashboard import data
from warehouse.lake import WarehouseError

TIMELINE_COLUMNS = (
    "version",
    "valid_from",
    "valid_to",
    "change_action",
    "is_deleted",
    "changes",
    "name",
    "email",
    "phone",
    "city",
    "lang",
)
STYLE = {"fontFamily": "system-ui, sans-serif", "margin": "0 auto", "maxWidth": "1200px"}
CARD = {
    "display": "inline-block",
    "padding": "12px 20px",
    "marginRight": "12px",
    "border": "1px solid #ddd",
    "borderRadius": "8px",
}


def create_app(settings: Settings | None = None) -> Dash:
    """The dashboard's Dash app; ``app.server`` is its Flask (WSGI) app."""
    settings = settings or Settings()
    app = Dash(__name__, title="Flavours customers", update_title=None)
    app.server.add_url_rule("/healthz", "healthz", lambda: {"status": "ok"})
    app.layout = lambda: _layout(settings)

    @app.callback(
        Output("flows", "figure"),
        Output("active", "figure"),
        Output("range-totals", "children"),
        Input("dates", "start_date"),
        Input("dates", "end_date"),
        Input("period", "value"),
    )
    def update_series(start: str | None, end: str | None, period: str):
        if not start or not end:
            return go.Figure(), go.Figure(), ""
        rows = data.daily(settings, date.fromisoformat(start), date.fromisoformat(end), period)
        periods = [row["period"] for row in rows]
        flows = go.Figure(
            [
                go.Bar(name=name, x=periods, y=[row[name] for row in rows])
                for name in ("new", "updated", "deleted")
            ],
            layout=go.Layout(
                title=f"New, updated and deleted customers per {period}", barmode="group"
            ),
        )
        active = go.Figure(
            go.Scatter(x=periods, y=[row["active"] for row in rows], mode="lines"),
            layout=go.Layout(title=f"Active customers at the end of each {period}"),
        )
        totals = {name: sum(row[name] for row in rows) for name in ("new", "updated", "deleted")}
        text = (
            f"From {start} to {end}: {totals['new']:,} new, {totals['updated']:,} updated, "
            f"{totals['deleted']:,} deleted"
        )
        return flows, active, text

    @app.callback(
        Output("breakdown-chart", "figure"),
        Output("breakdown-table", "data"),
        Input("breakdown", "value"),
    )
    def update_breakdown(label: str):
        rows = data.breakdown(settings, label)
        figure = go.Figure(
            go.Bar(
                x=[count for _, count in rows][:25], y=[v for v, _ in rows][:25], orientation="h"
            ),
            layout=go.Layout(
                title=f"Current customers by {label}", yaxis={"autorange": "reversed"}
            ),
        )
        return figure, [{"value": value, "customers": count} for value, count in rows]

    @app.callback(
        Output("search", "value"),
        Output("dates", "start_date"),
        Output("dates", "end_date"),
        Output("period", "value"),
        Input("url", "search"),
    )
    def from_url(query: str | None):
        """``?customer=…&start=YYYY-MM-DD&end=YYYY-MM-DD&period=day|week|month`` (all optional)
        open the page on that customer, range and period: links can be shared."""
        params = {key: values[0] for key, values in parse_qs((query or "").lstrip("?")).items()}
        period = params.get("period")
        return (
            params.get("customer", ""),
            _iso_date(params.get("start")) or no_update,
            _iso_date(params.get("end")) or no_update,
            period if period in data.PERIODS else no_update,
        )

    @app.callback(
        Output("timeline", "data"),
        Output("timeline-title", "children"),
        Input("search", "value"),
        Input("find", "n_clicks"),
        State("search", "value"),
    )
    def update_timeline(_: str | None, __: int | None, search: str | None):
        if not search:
            return [], "Look up a customer by id, e-mail or phone"
        customer_id = data.find_customer(settings, search)
        if customer_id is None:
            return [], f"No customer with id, e-mail or phone {search!r}"
        versions = data.timeline(settings, customer_id, settings.dashboard_personal_data)
        rows = [{name: _cell(version[name]) for name in TIMELINE_COLUMNS} for version in versions]
        plural = "version" if len(rows) == 1 else "versions"
        return rows, f"Customer {customer_id}: {len(rows)} {plural}"

    return app


def _layout(settings: Settings) -> html.Div:
    try:
        overview = data.overview(settings)
    except WarehouseError as error:
        return html.Div(
            [html.H1("Flavours customers"), html.P(str(error), id="error")], style=STYLE
        )
    if overview.rejected_events or overview.delivery_errors:
        trust = html.Span(
            f" ⚠ {overview.rejected_events:,} rejected events, {overview.delivery_errors:,} "
            "delivery errors: see raw.customer_events_rejected and raw.delivery_errors.",
            style={"color": "#b45309"},
        )
    else:
        trust = html.Span(" No rejected events or delivery errors.")
    personal = "shown" if settings.dashboard_personal_data else "masked"
    return html.Div(
        [
            dcc.Location(id="url"),
            html.H1("Flavours customers"),
            html.P(
                [
                    html.Span(
                        f"Last event received {_when(overview.last_event_received)}, last load "
                        f"{_when(overview.last_load)}. Personal data {personal}."
                    ),
                    trust,
                ],
                id="freshness",
            ),
            html.Div(
                [
                    _card("customers", "Customers", overview.customers),
                    _card("active", "Active", overview.active),
                    _card("deleted", "Deleted", overview.deleted),
                ]
            ),
            html.Div(
                [
                    dcc.DatePickerRange(
                        id="dates",
                        start_date=overview.first_day,
                        end_date=overview.last_day,
                        min_date_allowed=overview.first_day,
                        max_date_allowed=overview.last_day,
                        display_format="YYYY-MM-DD",
                    ),
                    dcc.RadioItems(
                        id="period",
                        options=list(data.PERIODS),
                        value="week",
                        inline=True,
                        style={"display": "inline-block", "marginLeft": "16px"},
                    ),
                ],
                style={"margin": "16px 0"},
            ),
            html.P(id="range-totals"),
            dcc.Graph(id="active", config={"displayModeBar": False}),
            dcc.Graph(id="flows", config={"displayModeBar": False}),
            html.H2("Current customers"),
            dcc.Dropdown(
                id="breakdown",
                options=list(data.BREAKDOWNS),
                value="city",
                clearable=False,
                style={"maxWidth": "320px"},
            ),
            html.Div(
                [
                    html.Div(
                        dcc.Graph(id="breakdown-chart", config={"displayModeBar": False}),
                        style={"flex": "2"},
                    ),
                    html.Div(
                        dash_table.DataTable(
                            id="breakdown-table",
                            columns=[{"name": n, "id": n} for n in ("value", "customers")],
                            page_size=15,
                        ),
                        style={"flex": "1", "paddingTop": "60px"},
                    ),
                ],
                style={"display": "flex", "gap": "16px"},
            ),
            html.H2(id="timeline-title"),
            html.Div(
                [
                    dcc.Input(
                        id="search",
                        placeholder="customer id, e-mail or phone",
                        debounce=True,
                        style={"width": "360px"},
                    ),
                    html.Button("Find", id="find"),
                ]
            ),
            dash_table.DataTable(
                id="timeline",
                columns=[{"name": n, "id": n} for n in TIMELINE_COLUMNS],
                style_cell={"whiteSpace": "normal", "textAlign": "left"},
                page_size=20,
            ),
        ],
        style=STYLE,
    )


def _card(key: str, title: str, value: int) -> html.Div:
    return html.Div(
        [html.Div(title), html.Div(f"{value:,}", id=f"kpi-{key}", style={"fontSize": "28px"})],
        style=CARD,
    )


def _iso_date(text: str | None) -> str | None:
    try:
        return date.fromisoformat(text).isoformat() if text else None
    except ValueError:
        return None


def _when(moment) -> str:
    return "never" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def _cell(value) -> str | int | bool:
    if isinstance(value, int | bool | str):
        return value
    if value is None:
        return ""
    return f"{value:%Y-%m-%d %H:%M:%S}" if hasattr(value, "strftime") else str(value)
