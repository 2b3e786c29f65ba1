"""Layout builders: plain functions from plain values to Dash components (no data access).

    app.layout = app_shell(root_label)
    map_page(run_options, controls)     # the layer map with its timeline and charts
    compare_page(run_options, runs)     # small multiples of several runs

Component ids are the constants of `ID`; the browser script (assets/tuneline.js)
uses the same ids.
"""

from __future__ import annotations

from dash import dcc, html

from viewer import colors

__all__ = ["ID", "SPEEDS", "app_shell", "compare_page", "compare_panel", "empty_page", "legend", "map_page",
           "message", "occlusion_block", "slider_marks", "unit_panel"]

SPEEDS = {"1 fps": 1000, "3 fps": 333, "6 fps": 167, "12 fps": 83, "25 fps": 40}
DEFAULT_SPEED = 167
LIVE_POLL_MS = 1000  # how often the page asks whether new checkpoints were committed
MAX_LEGEND = 40  # classes listed by name in a legend
RULE_NOTE = ("A layer is signed when any probe response is negative (a conv before its ReLU, BatchNorm, logits): "
             "its selectivity is measured on class means above each unit's smallest response, not above 0. "
             "A unit is dead only when its response is the same on every probe image.")


class ID:
    url = "url"
    page = "page"
    route = "route"  # the page key of the URL (its path and query less the unit): a new key, a new page
    live, c_live, empty_live = "map-live", "cmp-live", "empty-live"
    # layer map
    run, layer, by, metric, order = "map-run", "map-layer", "map-by", "map-metric", "map-order"
    data, charts, n, unit = "map-data", "map-charts", "map-n", "map-unit"
    version, synced = "map-version", "map-synced"  # metric values logged; the URL kept in step
    hover, painted, hover_note = "map-hover", "map-painted", "map-hover-note"
    canvas, stage, legend, title = "map-canvas", "map-stage", "map-legend", "map-title"
    slider, play, speed, interval, label = "map-t", "map-play", "map-speed", "map-interval", "map-step-label"
    status, body = "map-status", "map-body"
    hist, sel, det, acc, rf = "map-hist", "map-sel", "map-det", "map-acc", "map-rf"
    panel, close = "unit-panel", "unit-close"
    # comparison
    c_runs, c_layer, c_by, c_metric, c_align = "cmp-runs", "cmp-layer", "cmp-by", "cmp-metric", "cmp-align"
    c_data, c_charts, c_n, c_version = "cmp-data", "cmp-charts", "cmp-n", "cmp-version"
    c_grid, c_slider, c_play, c_speed, c_interval = "cmp-grid", "cmp-t", "cmp-play", "cmp-speed", "cmp-interval"
    c_label, c_status, c_legend = "cmp-step-label", "cmp-status", "cmp-legend"
    c_sel, c_det, c_acc, c_rf = "cmp-sel", "cmp-det", "cmp-acc", "cmp-rf"


GRAPH_CONFIG = {"displayModeBar": False, "responsive": True}


def message(text: str | None, kind: str = "info") -> html.Div | None:
    """A notice box ('info', 'warn' or 'error'); None without text."""
    if not text:
        return None
    return html.Div(text, className=f"tl-message tl-{kind}", role="status")


def empty_page(text: str) -> html.Div:
    """The page of a folder without runs: says so, and looks again every two seconds."""
    return html.Div([message(text, "warn"), dcc.Interval(id=ID.empty_live, interval=2000)])


def app_shell(root_label: str, studies: bool = False) -> html.Div:
    """The frame of every page: header with navigation (and the studies page when studies are
    served), the page slot, the live poll."""
    return html.Div([
        dcc.Location(id=ID.url, refresh="callback-nav"),
        dcc.Store(id=ID.route),
        html.Header([
            html.Div([html.Span("tuneline", className="tl-logo"),
                      html.Span("watch units become tuned", className="tl-tagline")], className="tl-brand"),
            html.Nav([dcc.Link("Layer map", href="/", className="tl-nav", id="nav-map"),
                      dcc.Link("Compare runs", href="/compare", className="tl-nav", id="nav-compare"),
                      *([html.A("Studies", href="/study/", className="tl-nav", id="nav-studies")] if studies else [])]),
            html.Div(root_label, className="tl-root", title="served folder"),
        ], className="tl-header"),
        html.Main(id=ID.page, className="tl-page"),
    ], className="tl-app")


def _field(label: str, control, width: str | None = None) -> html.Div:
    return html.Div([html.Label(label, className="tl-label"), control], className="tl-field",
                    style={"width": width} if width else None)


def _dropdown(id_: str, options, value, **kw) -> dcc.Dropdown:
    return dcc.Dropdown(id=id_, options=options, value=value, clearable=False, searchable=False, **kw)


def slider_marks(steps: list[int], n: int = 7) -> dict:
    """About n evenly spaced slider marks labeled with their step (1.2k, 3M)."""
    total = len(steps)
    if total == 0:
        return {}
    k = min(n, total)
    picks = sorted({round(i * (total - 1) / max(1, k - 1)) for i in range(k)})
    return {int(i): {"label": _short(steps[i])} for i in picks}


def _short(step: int) -> str:
    for div, suffix in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if abs(step) >= div:
            return f"{step / div:.3g}{suffix}"
    return str(step)


def _timeline(slider: str, play: str, speed: str, interval: str, label: str) -> html.Div:
    return html.Div([
        html.Button("▶ Play", id=play, className="tl-play", n_clicks=0, title="play / pause (space)"),
        dcc.Dropdown(id=speed, options=[{"label": k, "value": v} for k, v in SPEEDS.items()], value=DEFAULT_SPEED,
                     clearable=False, searchable=False, className="tl-speed"),
        html.Div(dcc.Slider(id=slider, min=0, max=0, step=1, value=0, marks={}, updatemode="mouseup",
                            included=True, dots=False, allow_direct_input=False), className="tl-slider"),
        html.Div("", id=label, className="tl-step-label"),
        dcc.Interval(id=interval, interval=DEFAULT_SPEED, disabled=True),
    ], className="tl-timeline", title="← / → step through checkpoints")


def legend(classes: list[str], class_colors: list[str], rule: str | None = None) -> list:
    """Class names with their hues, the saturation ramp, the dead / no-data swatches, and the
    selectivity rule in force (`LayerRecord.rule`: signed layers measure above each unit's floor)."""
    items = [html.Span([html.Span(className="tl-swatch", style={"background": c}), name], className="tl-legend-item")
             for name, c in zip(classes[:MAX_LEGEND], class_colors)]
    if len(classes) > MAX_LEGEND:
        items.append(html.Span(f"… {len(classes) - MAX_LEGEND} more classes", className="tl-legend-item"))
    gray = colors.to_hex(colors.hsv_to_rgb(0, 0, colors.VALUE))
    ramp = f"linear-gradient(90deg, {gray}, {class_colors[0] if class_colors else gray})"
    extras = [
        html.Span([html.Span("selectivity 0", className="tl-ramp-label"),
                   html.Span(className="tl-ramp", style={"background": ramp}),
                   html.Span("1", className="tl-ramp-label")], className="tl-legend-item"),
        html.Span([html.Span(className="tl-swatch", style={"background": colors.to_hex(colors.DEAD_RGB)}), "dead"],
                  className="tl-legend-item"),
        html.Span([html.Span(className="tl-swatch", style={"background": colors.to_hex(colors.NAN_RGB)}), "no data"],
                  className="tl-legend-item"),
    ]
    out = [html.Div(items, className="tl-legend-classes"), html.Div(extras, className="tl-legend-extras")]
    if rule:
        out.append(html.Div(f"selectivity rule: {rule}", className="tl-legend-rule", title=RULE_NOTE))
    return out


def _graph(id_: str, hidden: bool = False):
    """A chart; a `hidden` one (receptive fields) sits in a box `<id>-box` the browser shows once it has a
    figure for it."""
    graph = dcc.Graph(id=id_, config=GRAPH_CONFIG, className="tl-graph", figure={"data": [], "layout": {"height": 200}})
    return html.Div(graph, id=f"{id_}-box", className="tl-graph", style={"display": "none"}) if hidden else graph


def map_page(run_options: list[dict], controls: dict, notice: str | None = None, unit: int | None = None) -> html.Div:
    """The layer map page. `controls` holds options and values of run, layer, by, metric; `unit` is
    the unit whose detail opens first."""
    c = controls
    return html.Div([
        html.Div([
            _field("Run", _dropdown(ID.run, run_options, c.get("run")), "300px"),
            _field("Layer", _dropdown(ID.layer, c.get("layers", []), c.get("layer")), "200px"),
            _field("Grouping", _dropdown(ID.by, c.get("bys", []), c.get("by")), "250px"),
            _field("Saturation", _dropdown(ID.metric, c.get("metrics", []), c.get("metric")), "190px"),
            _field("Tile order", dcc.RadioItems(id=ID.order, options=[{"label": "unit id", "value": "id"},
                                                                      {"label": "by class", "value": "class"}],
                                                value="id", inline=True, className="tl-radio")),
        ], className="tl-controls"),
        message(notice, "warn"),
        html.Div(id=ID.status),
        html.Div([
            html.Section([
                html.Div("", id=ID.title, className="tl-map-title"),
                html.Div(html.Canvas(id=ID.canvas, className="tl-canvas", width=0, height=0), id=ID.stage,
                         className="tl-stage"),
                html.Div(id=ID.legend, className="tl-legend"),
                _timeline(ID.slider, ID.play, ID.speed, ID.interval, ID.label),
            ], className="tl-map-card tl-card"),
            html.Section([_graph(ID.hist), _graph(ID.sel), _graph(ID.det), _graph(ID.acc), _graph(ID.rf, hidden=True)],
                         className="tl-charts tl-card"),
        ], id=ID.body, className="tl-body"),
        html.Section(id=ID.panel, className="tl-unit-panel"),
        dcc.Store(id=ID.data), dcc.Store(id=ID.charts), dcc.Store(id=ID.n, data=c.get("n")),
        dcc.Store(id=ID.unit, data=unit), dcc.Store(id=ID.hover), dcc.Store(id=ID.painted),
        dcc.Store(id=ID.version), dcc.Store(id=ID.synced),
        html.Div(id=ID.hover_note, hidden=True),
        dcc.Interval(id=ID.live, interval=LIVE_POLL_MS),
    ], className="tl-map-page")


def _image_card(image: dict) -> html.Figure:
    caption = f"#{image['rank'] + 1} · img {image['image']}"
    if image.get("label"):
        caption += f" · {image['label']}"
    value = image.get("value")
    return html.Figure([html.Img(src=image["src"], className="tl-topk-img", alt=caption),
                        html.Figcaption([caption, html.Br(), f"act {value:.3g}" if value is not None else ""])],
                       className="tl-topk")


def unit_panel(title: str, subtitle: str, figures: list[dict], images: list[dict], images_note: str,
               rule: str | None = None, occlusion: dict | None = None) -> list:
    """The unit detail: header (with the selectivity rule in force), three figures, the top-k images at
    the selected checkpoint, and the occlusion block (`occlusion_block`) when the layer has occlusion."""
    head = [html.H3(title, className="tl-unit-title"), html.Div(subtitle, className="tl-unit-sub")]
    if rule:
        head.append(html.Div(f"selectivity rule: {rule}", className="tl-unit-rule", title=RULE_NOTE))
    return [
        html.Div([html.Div(head), html.Button("×", id=ID.close, className="tl-close", title="close", n_clicks=0)],
                 className="tl-unit-head"),
        html.Div([dcc.Graph(figure=f, config=GRAPH_CONFIG, className="tl-graph") for f in figures],
                 className="tl-unit-figs"),
        html.Div(images_note, className="tl-unit-note"),
        html.Div([_image_card(im) for im in images], className="tl-topk-row", id="unit-topk"),
        *([] if occlusion is None else [html.Div(occlusion_block(occlusion), id="unit-occlusion")]),
    ]


def occlusion_block(section: dict) -> list:
    """A unit's occlusion (`viewer.unit_rf.occlusion_section`): mask | discrepancy pairs of its top images,
    its RF and RF size over training, and a strip of its RF at the occluded checkpoints."""
    out = [html.H4("Occlusion and receptive field", className="tl-unit-h4"),
           html.Div(section["note"], className="tl-unit-note", id="unit-occ-note")]
    if "cards" not in section:
        return out
    pairs = [html.Figure([html.Div([html.Img(src=c["mask"], className="tl-topk-img", alt="dissection mask"),
                                    html.Img(src=c["occ"], className="tl-topk-img tl-occ-img",
                                             alt="discrepancy map")], className="tl-pair"),
                          html.Figcaption(c["caption"])], className="tl-topk") for c in section["cards"]]
    strip = [html.Figure([html.Img(src=s["src"], className="tl-strip-img" + (" tl-current" if s["current"] else ""),
                                   alt=f"RF at step {s['step']}"),
                          html.Figcaption(f"{s['step']:,}")], className="tl-strip-item") for s in section["strip"]]
    return out + [
        html.Div(pairs, className="tl-topk-row", id="unit-occ"),
        html.Div([dcc.Graph(figure=f, config=GRAPH_CONFIG, className="tl-graph") for f in section["figures"]]
                 + [html.Div([html.Div("empirical RF at each occluded checkpoint (step)", className="tl-strip-title"),
                              html.Div(strip, className="tl-strip", id="unit-rf-strip")], className="tl-strip-box")],
                 className="tl-unit-figs tl-rf-figs"),
    ]


def compare_page(run_options: list[dict], runs: list[str], controls: dict | None = None,
                 notice: str | None = None) -> html.Div:
    """Small multiples of one layer of several runs at one shared checkpoint, and their curves.

    `controls` holds options and values of layer, by, metric (as `views.compare_controls`)."""
    c = controls or {}
    return html.Div([
        html.Div([
            _field("Runs", dcc.Dropdown(id=ID.c_runs, options=run_options, value=runs, multi=True, clearable=True,
                                        searchable=True, placeholder="pick runs to compare"), "440px"),
            _field("Layer", _dropdown(ID.c_layer, c.get("layers", []), c.get("layer")), "150px"),
            _field("Grouping", _dropdown(ID.c_by, c.get("bys", []), c.get("by")), "230px"),
            _field("Saturation", _dropdown(ID.c_metric, c.get("metrics", []), c.get("metric")), "170px"),
            _field("Align by", dcc.RadioItems(id=ID.c_align, options=[{"label": "step", "value": "step"},
                                                                      {"label": "fraction of training",
                                                                       "value": "fraction"}],
                                              value="step", inline=True, className="tl-radio")),
        ], className="tl-controls"),
        message(notice, "warn"),
        html.Div(id=ID.c_status),
        html.Section([
            _timeline(ID.c_slider, ID.c_play, ID.c_speed, ID.c_interval, ID.c_label),
            html.Div(id=ID.c_grid, className="tl-grid"),
            html.Div(id=ID.c_legend, className="tl-legend"),
        ], className="tl-card tl-compare-card"),
        html.Section([_graph(ID.c_sel), _graph(ID.c_det), _graph(ID.c_acc), _graph(ID.c_rf, hidden=True)],
                     className="tl-compare-charts tl-card"),
        dcc.Store(id=ID.c_data), dcc.Store(id=ID.c_charts), dcc.Store(id=ID.c_n), dcc.Store(id=ID.c_version),
        dcc.Interval(id=ID.c_live, interval=LIVE_POLL_MS),
    ], className="tl-compare-page")


def compare_panel(index: int, name: str, note: str) -> html.Div:
    """One run's small multiple; the browser draws into its canvas."""
    return html.Div([
        html.Div([html.Span(name, className="tl-panel-name"), html.Span(note, className="tl-panel-note")],
                 className="tl-panel-head"),
        html.Canvas(id=f"cmp-canvas-{index}", className="tl-canvas tl-small", width=360, height=180,
                    **{"data-index": str(index)}),
        html.Div("", id=f"cmp-label-{index}", className="tl-panel-step"),
    ], className="tl-panel")
