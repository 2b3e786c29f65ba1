"""tuneline's viewer: a Dash app to scrub through training, reading runs only through `recorder.store`.

    python -m viewer runs/            # or: tuneline-view runs/

Modules: `app` (create_app factory), `layout` (layout builders), `callbacks`
(registration), `views` (callback bodies as plain functions), `data` (run registry
and caches), `readout` (what is shown, computed from a run), `colors` (hue = class,
saturation = selectivity), `figures`, `images`, `synthetic` (generated runs for
tests, screenshots and benchmarks), `browser` (driving it from headless Chromium).
"""
