"""Dash callbacks: registered on the app given; each body calls a plain function of `views`.

    register(app, registry)   # called by viewer.app.create_app

Scrubbing, playing and hovering never call the server: those callbacks are
clientside functions of assets/tuneline.js (namespace `tuneline`), which recolor
the tiles from the payload already in the page and move the charts' cursors.
The server is asked only when a selection changes, when a tile is clicked or the
slider is released (unit detail), and once a second whether new rows were committed.

URLs: the page is built from the URL's path and query less its unit (the route key,
computed in the browser); the selectors and the open unit are written back into the
URL, a new unit as a new history entry, so a unit's URL can be bookmarked and the
back button closes or reopens units without rebuilding the page. A timeline at its
newest checkpoint follows new ones as they are committed; elsewhere it stays put.
"""

from __future__ import annotations

from dash import ClientsideFunction, Dash, Input, Output, State, ctx, no_update
from dash.exceptions import PreventUpdate

from viewer import views
from viewer.data import Registry
from viewer.layout import ID

__all__ = ["register"]


def _index(t) -> int:
    """A slider value from the browser as a row index (anything else: 0)."""
    return t if isinstance(t, int) and not isinstance(t, bool) and t >= 0 else 0


def follow(t, shown_max, new_max: int):
    """The slider's value when rows were committed: the newest checkpoint if it was at the newest one
    shown before (TensorBoard's habit), else unchanged (`no_update`)."""
    if not isinstance(shown_max, int) or _index(t) >= shown_max:
        return new_max
    return no_update


def _js(name: str) -> ClientsideFunction:
    return ClientsideFunction(namespace="tuneline", function_name=name)


def register(app: Dash, registry: Registry) -> None:
    """Register every callback of the viewer on `app`, for the runs of `registry`."""
    app.clientside_callback(_js("routeKey"), Output(ID.route, "data"), Input(ID.url, "pathname"),
                            Input(ID.url, "search"))
    app.callback(Output(ID.page, "children"), Input(ID.route, "data"), State(ID.url, "pathname"),
                 State(ID.url, "search"))(lambda _key, pathname, search: views.route(registry, pathname, search))

    @app.callback(Output(ID.page, "children", allow_duplicate=True), Input(ID.empty_live, "n_intervals"),
                   State(ID.url, "pathname"), State(ID.url, "search"), prevent_initial_call=True)
    def first_run(_ticks, pathname, search):
        """A folder that had no runs: show the page as soon as one appears."""
        if not registry.entries():
            raise PreventUpdate
        return views.route(registry, pathname, search)

    _register_map(app, registry)
    _register_compare(app, registry)
    for slider, play, speed, interval in ((ID.slider, ID.play, ID.speed, ID.interval),
                                          (ID.c_slider, ID.c_play, ID.c_speed, ID.c_interval)):
        _register_player(app, slider, play, speed, interval)


def _register_player(app: Dash, slider: str, play: str, speed: str, interval: str) -> None:
    """Play / pause, speed and the frame tick of one timeline, all in the browser."""
    app.clientside_callback(
        _js("togglePlay"),
        Output(interval, "disabled"), Output(play, "children"), Output(slider, "value", allow_duplicate=True),
        Input(play, "n_clicks"), State(interval, "disabled"), State(slider, "value"), State(slider, "max"),
        prevent_initial_call=True)
    app.clientside_callback(
        _js("tick"),
        Output(slider, "value", allow_duplicate=True), Output(interval, "disabled", allow_duplicate=True),
        Output(play, "children", allow_duplicate=True),
        Input(interval, "n_intervals"), State(slider, "value"), State(slider, "max"), prevent_initial_call=True)
    app.clientside_callback(_js("speed"), Output(interval, "interval"), Input(speed, "value"))


def _register_map(app: Dash, registry: Registry) -> None:
    @app.callback(
        Output(ID.layer, "options"), Output(ID.layer, "value"), Output(ID.by, "options"), Output(ID.by, "value"),
        Output(ID.metric, "options"), Output(ID.metric, "value"),
        Input(ID.run, "value"), Input(ID.layer, "value"), Input(ID.by, "value"), State(ID.metric, "value"),
        prevent_initial_call=True)
    def controls(run_id, layer, by, metric):
        c = views.map_controls(registry, run_id, layer, by, metric)
        return c["layers"], c["layer"], c["bys"], c["by"], c["metrics"], c["metric"]

    @app.callback(
        Output(ID.data, "data"), Output(ID.slider, "max"), Output(ID.slider, "marks"), Output(ID.slider, "value"),
        Output(ID.title, "children"), Output(ID.legend, "children"), Output(ID.status, "children"),
        Output(ID.unit, "data"), Output(ID.n, "data"),
        Input(ID.run, "value"), Input(ID.layer, "value"), Input(ID.by, "value"), Input(ID.metric, "value"),
        Input(ID.n, "data"), State(ID.slider, "value"), State(ID.slider, "max"))
    def layer_map(run_id, layer, by, metric, _n, t, shown_max):
        view = views.map_view(registry, run_id, layer, by, metric)
        payload = view["payload"]
        trigger = ctx.triggered_id
        n = payload["T"] if payload else views.committed(registry, run_id)
        if trigger == ID.n:  # new rows committed: the range grows; at the newest checkpoint, follow
            value, unit = follow(t, shown_max, view["max"]), no_update
        elif trigger is None:  # the page's first paint: keep a unit named in the URL
            value, unit = view["max"], no_update
        elif trigger == ID.run:
            value, unit = view["max"], None
        else:
            value, unit = min(_index(t), view["max"]), (no_update if trigger != ID.layer else None)
        return (payload, view["max"], view["marks"], value, view["title"], view["legend"], view["status"],
                unit, n if n != _n else no_update)

    @app.callback(
        Output(ID.charts, "data"),
        Input(ID.run, "value"), Input(ID.layer, "value"), Input(ID.by, "value"), Input(ID.metric, "value"),
        Input(ID.n, "data"), Input(ID.version, "data"))
    def charts(run_id, layer, by, metric, _n, _version):
        return views.map_charts(registry, run_id, layer, by, metric)

    @app.callback(
        Output(ID.n, "data", allow_duplicate=True), Output(ID.run, "options"), Output(ID.version, "data"),
        Input(ID.live, "n_intervals"), State(ID.run, "value"), State(ID.n, "data"), State(ID.run, "options"),
        State(ID.version, "data"), prevent_initial_call=True)
    def live(_ticks, run_id, known, shown, version):
        """New rows of the shown run, metric values logged, new runs in the folder."""
        n = views.committed(registry, run_id)
        options = views.new_run_options(registry, shown)
        now = views.scalar_version(registry, run_id)
        if (n is None or n == known) and options is None and now == version:
            raise PreventUpdate
        return ((no_update if n is None or n == known else n), (no_update if options is None else options),
                (no_update if now == version else now))

    @app.callback(
        Output(ID.panel, "children"),
        Input(ID.unit, "data"), Input(ID.slider, "value"), Input(ID.by, "value"), Input(ID.metric, "value"),
        Input(ID.n, "data"), State(ID.run, "value"), State(ID.layer, "value"))
    def unit_detail(unit, t, by, metric, _n, run_id, layer):
        if unit is None and ctx.triggered_id != ID.unit:
            raise PreventUpdate
        return views.unit_view(registry, run_id, layer, unit, by, metric, t)

    @app.callback(Output(ID.unit, "data", allow_duplicate=True), Input(ID.close, "n_clicks"),
                   prevent_initial_call=True)
    def close_unit(clicks):
        if not clicks:
            raise PreventUpdate
        return None

    app.clientside_callback(
        _js("syncUrl"), Output(ID.synced, "data"),
        Input(ID.run, "value"), Input(ID.layer, "value"), Input(ID.by, "value"), Input(ID.metric, "value"),
        Input(ID.unit, "data"))
    app.clientside_callback(
        _js("renderMap"), Output(ID.label, "children"), Output(ID.painted, "data"),
        Input(ID.data, "data"), Input(ID.slider, "value"), Input(ID.slider, "drag_value"), Input(ID.unit, "data"),
        Input(ID.order, "value"))

    @app.callback(Output(ID.hover, "data"), Input(ID.painted, "data"), State(ID.run, "value"),
                   State(ID.layer, "value"), prevent_initial_call=True)
    def hover(_painted, run_id, layer):
        """Concepts for the tooltips, once the map is painted (not on the way to the first paint)."""
        return views.map_hover(registry, run_id, layer)

    app.clientside_callback(_js("hoverData"), Output(ID.hover_note, "children"), Input(ID.hover, "data"))
    app.clientside_callback(
        _js("mapCursor"),
        Output(ID.hist, "figure"), Output(ID.sel, "figure"), Output(ID.det, "figure"), Output(ID.acc, "figure"),
        Output(ID.rf, "figure"), Output(f"{ID.rf}-box", "style"),
        Input(ID.charts, "data"), Input(ID.slider, "value"), Input(ID.slider, "drag_value"))


def _register_compare(app: Dash, registry: Registry) -> None:
    @app.callback(
        Output(ID.c_layer, "options"), Output(ID.c_layer, "value"), Output(ID.c_by, "options"),
        Output(ID.c_by, "value"), Output(ID.c_metric, "options"), Output(ID.c_metric, "value"),
        Input(ID.c_runs, "value"), Input(ID.c_layer, "value"), Input(ID.c_by, "value"), State(ID.c_metric, "value"),
        prevent_initial_call=True)
    def controls(run_ids, layer, by, metric):
        c = views.compare_controls(registry, run_ids, layer, by, metric)
        return c["layers"], c["layer"], c["bys"], c["by"], c["metrics"], c["metric"]

    @app.callback(
        Output(ID.c_data, "data"), Output(ID.c_grid, "children"), Output(ID.c_slider, "max"),
        Output(ID.c_slider, "marks"), Output(ID.c_slider, "value"), Output(ID.c_legend, "children"),
        Output(ID.c_status, "children"), Output(ID.c_n, "data"),
        Input(ID.c_runs, "value"), Input(ID.c_layer, "value"), Input(ID.c_by, "value"), Input(ID.c_metric, "value"),
        Input(ID.c_align, "value"), Input(ID.c_n, "data"), State(ID.c_slider, "value"), State(ID.c_slider, "max"))
    def compare(run_ids, layer, by, metric, align, _n, t, shown_max):
        view = views.compare_view(registry, run_ids, layer, by, metric, align)
        if ctx.triggered_id == ID.c_n:
            value = follow(t, shown_max, view["max"])
        elif ctx.triggered_id in (ID.c_by, ID.c_metric):
            value = min(_index(t), view["max"])
        else:
            value = view["max"]
        counts = views.poll(registry, run_ids)
        counts.update({p["run"]: p["T"] for p in (view["data"] or {}).get("runs", [])})
        return (view["data"], view["grid"], view["max"], view["marks"], value, view["legend"], view["status"],
                counts)

    @app.callback(
        Output(ID.c_charts, "data"),
        Input(ID.c_runs, "value"), Input(ID.c_layer, "value"), Input(ID.c_by, "value"), Input(ID.c_metric, "value"),
        Input(ID.c_align, "value"), Input(ID.c_n, "data"), Input(ID.c_version, "data"))
    def compare_charts(run_ids, layer, by, metric, align, _n, _version):
        return views.compare_charts(registry, run_ids, layer, by, metric, align)

    @app.callback(
        Output(ID.c_n, "data", allow_duplicate=True), Output(ID.c_runs, "options"), Output(ID.c_version, "data"),
        Input(ID.c_live, "n_intervals"), State(ID.c_runs, "value"), State(ID.c_n, "data"),
        State(ID.c_runs, "options"), State(ID.c_version, "data"), prevent_initial_call=True)
    def live(_ticks, run_ids, known, shown, version):
        """New rows of the shown runs, metric values logged, new runs in the folder."""
        counts = views.poll(registry, run_ids)
        options = views.new_run_options(registry, shown)
        now = {r: views.scalar_version(registry, r) for r in counts}
        if counts == (known or {}) and options is None and now == (version or {}):
            raise PreventUpdate
        return ((no_update if counts == (known or {}) else counts), (no_update if options is None else options),
                (no_update if now == (version or {}) else now))

    app.clientside_callback(
        _js("renderCompare"), Output(ID.c_label, "children"),
        Input(ID.c_data, "data"), Input(ID.c_slider, "value"), Input(ID.c_slider, "drag_value"))
    app.clientside_callback(
        _js("compareCursor"), Output(ID.c_sel, "figure"), Output(ID.c_det, "figure"), Output(ID.c_acc, "figure"),
        Output(ID.c_rf, "figure"), Output(f"{ID.c_rf}-box", "style"),
        Input(ID.c_charts, "data"), Input(ID.c_data, "data"), Input(ID.c_slider, "value"),
        Input(ID.c_slider, "drag_value"))
