"""tuneline's viewer: a Dash app to scrub through training, reading runs only through `recorder.store`.

    python -m viewer runs/            # or: tuneline-view runs/, or python -m viewer s3://bucket/sweep

    import viewer                     # in a Jupyter notebook (the `notebook` extra)
    viewer.show("runs/demo")          # the same app, inline in the cell's output

Modules: `app` (create_app factory), `layout` (layout builders), `callbacks`
(registration on the app given), `views` (callback bodies as plain functions; the
comparison's in `compare`), `data` (run registry and caches), `readout` (what is shown,
computed from a run), `receptive` (occlusion: RF sizes, pixel maps), `unit_rf` (a unit's
occlusion block), `colors` (hue = class, saturation = selectivity), `figures`,
`rf_figures`, `images`, `notebook` (`show`).
"""

__all__ = ["show"]


def show(root="runs", **options):
    """Serve the runs below `root` (folder or URL) and show the viewer in the notebook; see `viewer.notebook.show`."""
    from viewer.notebook import show as show_inline  # Dash is imported on first use, not with the package

    return show_inline(root, **options)
