/* tuneline viewer, browser side: tile maps painted on <canvas> from color codes already
 * in the page, so scrubbing, playing and hovering never wait for the server.
 *
 * A payload (viewer/readout.py: layer_payload) holds, per checkpoint t and unit k, a class
 * code and a saturation code (base64, [T, K]) and a palette computed by viewer/colors.py;
 * a tile's color is palette[class, saturation], or the dead / no-data gray. Clientside
 * callbacks (namespace "tuneline", registered in viewer/callbacks.py) repaint row t.
 */
(function () {
  "use strict";
  const TL = (window.tuneline = window.tuneline || {});
  TL.decoded = new Map(); // payload key -> decoded typed arrays (a few kept)
  TL.maps = {}; // canvas id -> {p, d, t, g, order, unit}
  TL.sliders = {}; // slider id -> {value, max}
  TL.paints = 0;
  TL.lastPaint = null;
  TL.lastKey = null;

  const BG = pack(27, 30, 36); // between tiles
  const METRIC = { si: "selectivity index", entropy: "1 − entropy", precision: "top-n precision" };

  function pack(r, g, b) {
    return ((255 << 24) | (b << 16) | (g << 8) | r) >>> 0; // RGBA bytes, little-endian
  }

  const B64 = new Uint8Array(128);
  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".split("").forEach(function (c, i) {
    B64[c.charCodeAt(0)] = i;
  });

  function bytes(s) {
    const n = s.length;
    const pad = s.endsWith("==") ? 2 : s.endsWith("=") ? 1 : 0;
    const out = new Uint8Array((n / 4) * 3 - pad);
    const m = out.length;
    let j = 0;
    for (let i = 0; i < n; i += 4) {
      const v = (B64[s.charCodeAt(i)] << 18) | (B64[s.charCodeAt(i + 1)] << 12) |
        (B64[s.charCodeAt(i + 2)] << 6) | B64[s.charCodeAt(i + 3)];
      if (j < m) out[j++] = (v >> 16) & 255;
      if (j < m) out[j++] = (v >> 8) & 255;
      if (j < m) out[j++] = v & 255;
    }
    return out;
  }

  function decode(p) {
    let d = TL.decoded.get(p.key);
    if (d) return d;
    const dom = bytes(p.dom);
    const pal = bytes(p.palette);
    const levels = p.sat_levels + 1;
    const lut = new Uint32Array(p.C * levels);
    for (let i = 0; i < lut.length; i++) lut[i] = pack(pal[3 * i], pal[3 * i + 1], pal[3 * i + 2]);
    d = {
      dom: p.dom_bytes === 2 ? new Uint16Array(dom.buffer) : dom,
      sat: bytes(p.sat),
      lut: lut,
      levels: levels,
      dead: pack.apply(null, p.dead_rgb),
      nan: pack.apply(null, p.nan_rgb),
      order: new Uint32Array(bytes(p.order).buffer),
    };
    d.rank = new Uint32Array(p.K); // position of each unit in the by-class order
    for (let i = 0; i < p.K; i++) d.rank[d.order[i]] = i;
    TL.decoded.set(p.key, d);
    while (TL.decoded.size > 8) TL.decoded.delete(TL.decoded.keys().next().value);
    return d;
  }

  TL.hovers = new Map(); // hover key -> {h: hover payload, concept, iou} (concepts of every tile)

  function addHover(h) {
    if (!h || TL.hovers.has(h.key)) return;
    TL.hovers.set(h.key, {
      h: h,
      concept: h.concept ? new Uint16Array(bytes(h.concept).buffer) : null,
      iou: h.iou ? new Uint16Array(bytes(h.iou).buffer) : null,
    });
    while (TL.hovers.size > 8) TL.hovers.delete(TL.hovers.keys().next().value);
  }

  function tileColor(p, d, i) {
    const c = d.dom[i];
    if (c === p.no_class) return d.nan;
    const s = d.sat[i];
    if (s === p.sat_dead) return d.dead;
    if (s >= d.levels) return d.nan;
    return d.lut[c * d.levels + s];
  }

  function geometry(K, width, maxTile) {
    const cols = Math.max(1, Math.min(K, Math.ceil(Math.sqrt(2 * K))));
    const rows = Math.max(1, Math.ceil(K / cols));
    const tile = Math.max(2, Math.min(maxTile, Math.floor(width / cols)));
    const gap = tile >= 7 ? 1 : 0;
    return { cols: cols, rows: rows, tile: tile, gap: gap, w: cols * tile, h: rows * tile };
  }

  function innerWidth(el) {
    if (!el) return 0;
    const cs = getComputedStyle(el);
    return el.clientWidth - (parseFloat(cs.paddingLeft) || 0) - (parseFloat(cs.paddingRight) || 0);
  }

  function clampT(p, t) {
    t = t == null ? p.T - 1 : Math.round(t);
    return Math.max(0, Math.min(p.T - 1, t));
  }

  function paint(canvas, p, t, opts) {
    const d = decode(p);
    const width = Math.max(120, innerWidth(canvas.parentElement) || canvas.width);
    const g = geometry(p.K, width, opts.maxTile || 56);
    if (canvas.width !== g.w) canvas.width = g.w;
    if (canvas.height !== g.h) canvas.height = g.h;
    const ctx = canvas.getContext("2d");
    const prev = TL.maps[canvas.id];
    const img = prev && prev.img && prev.img.width === g.w && prev.img.height === g.h
      ? prev.img : ctx.createImageData(g.w, g.h);
    const buf = new Uint32Array(img.data.buffer);
    buf.fill(BG);
    const order = opts.byClass ? d.order : null;
    const base = t * p.K;
    const inner = g.tile - g.gap;
    for (let pos = 0; pos < p.K; pos++) {
      const u = order ? order[pos] : pos;
      const color = tileColor(p, d, base + u);
      let off = ((pos / g.cols) | 0) * g.tile * g.w + (pos % g.cols) * g.tile;
      for (let y = 0; y < inner; y++, off += g.w) buf.fill(color, off, off + inner);
    }
    ctx.putImageData(img, 0, 0);
    const state = { p: p, d: d, t: t, g: g, order: order, unit: opts.unit, img: img, runIndex: opts.runIndex };
    if (opts.unit != null && opts.unit >= 0 && opts.unit < p.K) {
      const pos = order ? d.rank[opts.unit] : opts.unit;
      ctx.strokeStyle = "#ffffff";
      ctx.lineWidth = 2;
      ctx.strokeRect((pos % g.cols) * g.tile - 1, ((pos / g.cols) | 0) * g.tile - 1, g.tile + 1, g.tile + 1);
    }
    TL.maps[canvas.id] = state;
    if (TL.hover && TL.hover.canvas === canvas.id) tip().innerHTML = describe(state, TL.hover.unit);
    TL.paints += 1;
    const record = { canvas: canvas.id, key: p.key, t: t, at: performance.now() };
    TL.lastPaint = record;
    if (!TL.firstPaint) TL.firstPaint = record;
    requestAnimationFrame(function () {
      record.frame = performance.now(); // the frame that shows it
    });
    return state;
  }

  function paintLater(id, fn, tries) {
    const canvas = document.getElementById(id);
    if (canvas) return fn(canvas);
    if ((tries || 0) < 20) requestAnimationFrame(function () { paintLater(id, fn, (tries || 0) + 1); });
    return null;
  }

  function pickT(value, dragValue) {
    const trig = ((window.dash_clientside || {}).callback_context || {}).triggered || [];
    const dragged = trig.some(function (x) { return x.prop_id && x.prop_id.endsWith(".drag_value"); });
    return dragged && dragValue != null ? dragValue : value;
  }

  function fmtStep(s) {
    return s == null ? "" : Number(s).toLocaleString("en-US");
  }

  function stepLabel(p, t) {
    let text = "step " + fmtStep(p.steps[t]);
    const e = p.epochs[t];
    if (e != null) text += " · epoch " + (Math.round(e * 100) / 100);
    return text + " · checkpoint " + (t + 1) + " / " + p.T;
  }

  // ---------------------------------------------------------------- tooltip

  function tip() {
    let el = document.getElementById("tl-tip");
    if (!el) {
      el = document.createElement("div");
      el.id = "tl-tip";
      el.className = "tl-tip";
      document.body.appendChild(el);
    }
    return el;
  }

  function unitAt(canvas, state, e) {
    const rect = canvas.getBoundingClientRect();
    const x = (e.clientX - rect.left) * (canvas.width / rect.width);
    const y = (e.clientY - rect.top) * (canvas.height / rect.height);
    const col = Math.floor(x / state.g.tile), row = Math.floor(y / state.g.tile);
    if (col < 0 || col >= state.g.cols || row < 0) return -1;
    const pos = row * state.g.cols + col;
    if (pos >= state.p.K) return -1;
    return state.order ? state.order[pos] : pos;
  }

  function describe(state, u) {
    const p = state.p, d = state.d, t = state.t, i = t * p.K + u;
    const lines = ["<b>unit " + u + "</b> · " + p.layer + " · step " + fmtStep(p.steps[t])];
    const c = d.dom[i], s = d.sat[i];
    if (s === p.sat_dead) lines.push("dead unit");
    lines.push("dominant class: " + (c === p.no_class ? "none" : esc(p.classes[c])));
    lines.push((METRIC[p.metric] || p.metric) + ": " + (s < d.levels ? (s / p.sat_levels).toFixed(2) : s === p.sat_dead ? "0 (dead)" : "n/a"));
    const hv = TL.hovers.get(p.hover_key);
    if (!hv) {
      lines.push("<span class='tl-dim'>concepts loading…</span>");
    } else if (hv.concept) {
      const h = hv.h, code = hv.concept[i], k = code & 0x7fff, q = hv.iou[i];
      if (k !== h.concept_none && q !== h.iou_nan) {
        const det = (code & 0x8000) !== 0;
        lines.push("best concept: " + esc(h.concepts[k]) + " (" + esc(h.concept_category[k]) + "), IoU " +
          (q / h.iou_scale).toFixed(3) + (det ? " · <span class='tl-yes'>detector</span>" : " · not a detector"));
      }
    } else {
      lines.push("no dissection recorded");
    }
    return lines.join("<br>");
  }

  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (ch) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[ch];
    });
  }

  document.addEventListener("mousemove", function (e) {
    const el = tip();
    const canvas = e.target;
    const state = canvas && canvas.id ? TL.maps[canvas.id] : null;
    const u = state ? unitAt(canvas, state, e) : -1;
    if (u < 0) {
      el.style.display = "none";
      TL.hover = null;
      return;
    }
    TL.hover = { canvas: canvas.id, unit: u };
    el.innerHTML = describe(state, u);
    el.style.display = "block";
    const x = Math.min(e.clientX + 14, window.innerWidth - el.offsetWidth - 8);
    const y = e.clientY + 16 + el.offsetHeight > window.innerHeight ? e.clientY - el.offsetHeight - 10 : e.clientY + 16;
    el.style.left = x + "px";
    el.style.top = y + "px";
  });

  document.addEventListener("click", function (e) {
    const canvas = e.target;
    const state = canvas && canvas.id ? TL.maps[canvas.id] : null;
    if (!state) return;
    const u = unitAt(canvas, state, e);
    if (u < 0) return;
    if (canvas.id === "map-canvas") {
      window.dash_clientside.set_props("map-unit", { data: u });
    } else {
      const p = state.p;
      window.location.href = "/?run=" + encodeURIComponent(p.run) + "&layer=" + encodeURIComponent(p.layer) +
        "&by=" + encodeURIComponent(p.by) + "&metric=" + encodeURIComponent(p.metric) + "&unit=" + u;
    }
  });

  // ---------------------------------------------------------------- keys

  document.addEventListener("keydown", function (e) {
    if (e.defaultPrevented || e.altKey || e.ctrlKey || e.metaKey) return;
    const target = e.target || {};
    const tag = (target.tagName || "").toLowerCase();
    if (tag === "input" || tag === "textarea" || tag === "select" || target.isContentEditable) return;
    if (target.closest && target.closest('[role="slider"], [role="combobox"], [role="listbox"], .dash-dropdown')) return;
    const id = document.getElementById("map-t") ? "map-t" : document.getElementById("cmp-t") ? "cmp-t" : null;
    const s = id && TL.sliders[id];
    if (!s) return;
    // keys pressed faster than the page repaints count from the last key, not the last paint
    const pending = TL.pending && TL.pending.id === id && performance.now() - TL.pending.at < 1000;
    const base = pending ? TL.pending.value : s.value;
    let v = base;
    if (e.key === "ArrowRight") v = Math.min(s.max, v + 1);
    else if (e.key === "ArrowLeft") v = Math.max(0, v - 1);
    else if (e.key === "Home") v = 0;
    else if (e.key === "End") v = s.max;
    else if (e.key === " " && tag !== "button") {
      const play = document.getElementById(id === "map-t" ? "map-play" : "cmp-play");
      if (play) play.click();
      e.preventDefault();
      return;
    } else return;
    e.preventDefault();
    if (v === base) return;
    TL.lastKey = { key: e.key, at: e.timeStamp, value: v };
    TL.pending = { id: id, value: v, at: performance.now() };
    window.dash_clientside.set_props(id, { value: v });
  });

  window.addEventListener("resize", function () {
    Object.keys(TL.maps).forEach(function (id) {
      const canvas = document.getElementById(id), st = TL.maps[id];
      if (canvas && st) paint(canvas, st.p, st.t, { byClass: !!st.order, unit: st.unit, maxTile: st.g.tile > 20 ? 56 : 20 });
    });
  });

  // ---------------------------------------------------------------- figures

  function withCursor(fig, x) {
    if (!fig || !fig.layout) return fig;
    const shapes = (fig.layout.shapes || []).map(function (s) {
      return s.name === "cursor" ? Object.assign({}, s, { x0: x, x1: x, visible: x != null }) : s;
    });
    return { data: fig.data, layout: Object.assign({}, fig.layout, { shapes: shapes }) };
  }

  function cursorFigures(charts, value) {
    const n = charts.steps.length;
    const t = Math.max(0, Math.min(n - 1, value == null ? n - 1 : Math.round(value)));
    const x = charts.steps[t];
    const hist = charts.hist;
    const bars = hist.data.length ? [Object.assign({}, hist.data[0], { y: charts.counts[t] || [] })] : [];
    return [{ data: bars, layout: hist.layout }, withCursor(charts.sel, x), withCursor(charts.det, x),
      withCursor(charts.acc, x)].concat(optional(charts.rf, x));
  }

  /* A chart shown only when the run has its data (receptive fields): [figure, style of its box]. */
  function optional(fig, x) {
    // the graph fills its box (height 100 %): the box takes the figure's height
    return fig ? [withCursor(fig, x), { display: "block", height: (fig.layout.height || 200) + "px" }]
      : [BLANK, { display: "none" }];
  }

  /* Resolve after the next frame is shown: chart updates must not delay the tile map's repaint. */
  function afterFrame(value) {
    return new Promise(function (resolve) {
      requestAnimationFrame(function () { setTimeout(function () { resolve(value); }, 0); });
    });
  }

  const BLANK = { data: [], layout: { height: 200, xaxis: { visible: false }, yaxis: { visible: false } } };

  // ---------------------------------------------------------------- callbacks

  const nu = function () { return window.dash_clientside.no_update; };

  // merged into the namespace: tuneline_url.js adds the URL's functions to it
  window.dash_clientside = Object.assign({}, window.dash_clientside, {
    tuneline: Object.assign({}, (window.dash_clientside || {}).tuneline, {
      renderMap: function (payload, value, dragValue, unit, order) {
        if (!payload) {
          const canvas = document.getElementById("map-canvas");
          if (canvas) { canvas.width = 0; canvas.height = 0; }
          delete TL.maps["map-canvas"];
          delete TL.sliders["map-t"];
          return ["", nu()];
        }
        const t = clampT(payload, pickT(value, dragValue));
        TL.sliders["map-t"] = { value: t, max: payload.T - 1 };
        if (TL.pending && TL.pending.id === "map-t" && TL.pending.value === t) TL.pending = null;
        paintLater("map-canvas", function (canvas) {
          return paint(canvas, payload, t, { byClass: order === "class", unit: unit, maxTile: 56 });
        });
        // once painted, ask the server for the tooltips' concepts (if not already here)
        const ask = TL.hovers.has(payload.hover_key) || TL.asked === payload.hover_key ? nu() : payload.hover_key;
        if (ask !== nu()) TL.asked = payload.hover_key;
        return [stepLabel(payload, t), ask];
      },

      hoverData: function (hover) {
        addHover(hover);
        return hover ? hover.key : "";
      },

      mapCursor: function (charts, value, dragValue) {
        if (!charts) return [BLANK, BLANK, BLANK, BLANK, BLANK, { display: "none" }];
        return afterFrame(cursorFigures(charts, pickT(value, dragValue)));
      },


      togglePlay: function (clicks, disabled, value, max) {
        if (disabled) {
          const restart = value == null || value >= max;
          return [false, "❚❚ Pause", restart ? 0 : nu()];
        }
        return [true, "▶ Play", nu()];
      },

      tick: function (n, value, max) {
        if (value == null || max == null) throw window.dash_clientside.PreventUpdate;
        if (value >= max) return [nu(), true, "▶ Play"];
        const next = value + 1;
        return next >= max ? [next, true, "▶ Play"] : [next, nu(), nu()];
      },

      speed: function (ms) {
        return ms || 167;
      },

      renderCompare: function (data, value, dragValue) {
        if (!data || !data.runs) {
          delete TL.sliders["cmp-t"];
          return "";
        }
        const n = data.positions.length;
        let v = pickT(value, dragValue);
        v = Math.max(0, Math.min(n - 1, v == null ? n - 1 : Math.round(v)));
        TL.sliders["cmp-t"] = { value: v, max: n - 1 };
        (data.hovers || []).forEach(addHover);
        if (TL.pending && TL.pending.id === "cmp-t" && TL.pending.value === v) TL.pending = null;
        data.runs.forEach(function (p, r) {
          const row = data.rows[r][v];
          paintLater("cmp-canvas-" + r, function (canvas) {
            const state = paint(canvas, p, Math.max(row, 0), { byClass: false, maxTile: 24, runIndex: r });
            if (row < 0) {
              const ctx = canvas.getContext("2d");
              ctx.fillStyle = "rgba(27,30,36,0.85)";
              ctx.fillRect(0, 0, canvas.width, canvas.height);
            }
            const label = document.getElementById("cmp-label-" + r);
            if (label) label.textContent = row < 0 ? "not started yet" : stepLabel(p, row);
            return state;
          });
        });
        const pos = data.positions[v];
        return data.align === "step" ? "step " + fmtStep(pos) : Math.round(pos * 100) + "% of training";
      },

      compareCursor: function (charts, data, value, dragValue) {
        if (!charts) return [BLANK, BLANK, BLANK, BLANK, { display: "none" }];
        let x = null;
        if (data && data.positions && data.positions.length) {
          const n = data.positions.length;
          let v = pickT(value, dragValue);
          v = Math.max(0, Math.min(n - 1, v == null ? n - 1 : Math.round(v)));
          x = data.positions[v];
        }
        return afterFrame([withCursor(charts.sel, x), withCursor(charts.det, x), withCursor(charts.acc, x)]
          .concat(optional(charts.rf, x)));
      },
    }),
  });

  // ------------------------------------------------------------ test hooks

  /* The color painted for unit u of a canvas ([r, g, b]) and the page coordinates of its tile. */
  TL.tileRGB = function (canvasId, u) {
    const st = TL.maps[canvasId], canvas = document.getElementById(canvasId);
    if (!st || !canvas) return null;
    const pos = st.order ? st.d.rank[u] : u;
    const x = (pos % st.g.cols) * st.g.tile + 1, y = ((pos / st.g.cols) | 0) * st.g.tile + 1;
    const px = canvas.getContext("2d").getImageData(x, y, 1, 1).data;
    return [px[0], px[1], px[2]];
  };
  TL.tileCenter = function (canvasId, u) {
    const st = TL.maps[canvasId], canvas = document.getElementById(canvasId);
    if (!st || !canvas) return null;
    const rect = canvas.getBoundingClientRect();
    const pos = st.order ? st.d.rank[u] : u;
    const sx = rect.width / canvas.width, sy = rect.height / canvas.height;
    return { x: rect.left + ((pos % st.g.cols) + 0.5) * st.g.tile * sx,
      y: rect.top + (((pos / st.g.cols) | 0) + 0.5) * st.g.tile * sy };
  };
  TL.snapshot = function (canvasId) {
    const canvas = document.getElementById(canvasId);
    if (!canvas || !canvas.width) return null;
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let h = 0;
    for (let i = 0; i < data.length; i += 4) h = (Math.imul(h, 31) + data[i] + 7 * data[i + 1] + 13 * data[i + 2]) | 0;
    return h;
  };
})();
