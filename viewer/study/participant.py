"""The participant's page: instructions, practice with feedback, the test without, progress.

    html = page_html(token)     # served at /study/p/<token>; it talks to .../state and .../answer

Plain HTML and JavaScript. Masks: click grid cells (or move with the arrow keys and
toggle with Space), then Submit (Enter). Pairs: choose the image that drives the unit
more (click, or the keys Left/Right) and a confidence 1-3 (click, or the keys 1-3),
which submits. Practice answers show the truth; test answers do not. The page fits a
laptop screen (images at most 40 % of the viewport's height).
"""

from __future__ import annotations

import json

__all__ = ["page_html"]

STYLE = """
body{font-family:system-ui,sans-serif;margin:0 auto;padding:.8rem 1.2rem;max-width:62rem;color:#222}
header{display:flex;gap:1rem;align-items:baseline;border-bottom:1px solid #ddd;padding-bottom:.4rem}
progress{width:14rem}.phase{font-weight:600}.muted{color:#666;font-size:.9rem}
.stage{position:relative;display:inline-block;height:min(40vh,22rem);aspect-ratio:1}
.stage img{width:100%;height:100%;image-rendering:pixelated;display:block}
.grid{position:absolute;inset:0;display:grid}
.cell{border:1px solid rgba(255,255,255,.55);background:transparent;margin:0;padding:0;cursor:pointer}
.cell.on{background:rgba(255,200,0,.55)}.cell.truth{box-shadow:inset 0 0 0 3px #0a0}
.cell:focus{outline:3px solid #06f;outline-offset:-3px}
.gallery{display:flex;flex-wrap:wrap;gap:.3rem;margin:.3rem 0}.gallery .stage{height:min(11vh,6rem)}
.pair{display:flex;gap:1.5rem}.pair button.side{border:3px solid transparent;padding:0;background:none}
.pair button.side.chosen{border-color:#06f}.pair .stage{height:min(36vh,20rem)}
.box{position:absolute;border:2px dashed #f0f;pointer-events:none}
button.act{font-size:1rem;padding:.35rem .9rem;margin:.4rem .3rem 0 0}
.feedback{font-weight:600;margin:.4rem 0}.ok{color:#070}.bad{color:#a00}.error{color:#a00}
"""

SCRIPT = r"""
const base = `/study/p/${TOKEN}`;
const $ = (sel) => document.querySelector(sel);
let state = null, started = false, busy = false;

async function load() {
  const r = await fetch(`${base}/state`, {cache: "no-store"});
  if (!r.ok) { $("#main").innerHTML = `<p class="error">${await r.text()}</p>`; return; }
  state = await r.json();
  render();
}

function header() {
  const s = state;
  $("#progress").max = s.total; $("#progress").value = s.position;
  $("#count").textContent = s.done ? `all ${s.total} answered` : `item ${s.position + 1} of ${s.total}`;
  $("#phase").textContent = s.done ? "done" : `${s.item.phase} · unit ${s.item.unit_number} of ${s.units}`;
}

function picture(name, mask, grid, box, size) {
  const stage = document.createElement("div"); stage.className = "stage";
  const img = document.createElement("img"); img.src = `${base}/image/${name}`; img.alt = "probe image";
  stage.appendChild(img);
  if (mask) {
    const g = document.createElement("div"); g.className = "grid";
    g.style.gridTemplate = `repeat(${grid[0]}, 1fr) / repeat(${grid[1]}, 1fr)`;
    for (const c of mask) { const d = document.createElement("div"); d.className = "cell" + (c === "1" ? " on" : ""); g.appendChild(d); }
    stage.appendChild(g);
  }
  if (box) {
    const b = document.createElement("div"); b.className = "box";
    Object.assign(b.style, {top: `${100 * box[0] / size[0]}%`, left: `${100 * box[1] / size[1]}%`,
      height: `${100 * (box[2] - box[0]) / size[0]}%`, width: `${100 * (box[3] - box[1]) / size[1]}%`});
    stage.appendChild(b);
  }
  return stage;
}

function instructions() {
  const masks = state.task === "masks";
  $("#main").innerHTML = `<h2>Instructions</h2>` + (masks ?
    `<p>A unit of a neural network lights up on some parts of images. First look at the examples: the yellow cells are where the unit fires. Then predict, for new images, which cells it fires on: click cells (or move with the arrow keys and press Space) and press Submit (or Enter).</p>` :
    `<p>Each trial shows the same image twice, each with a different part hidden (dashed square). Choose the image on which the unit stays <b>more</b> active (click it, or press ← / →), then say how sure you are (1 = guess, 3 = sure; click or press 1–3).</p>`) +
    `<p>The first ${state.phases.practice || 0} items are practice: you will see the right answer after each. In the ${state.phases.test} test items you will not. You can close the page and come back to this link; you resume where you stopped.</p>
     <button class="act" id="start">Start</button>`;
  $("#start").onclick = () => { started = true; render(); };
  $("#start").focus();
}

function render() {
  header();
  if (state.done) { $("#main").dataset.item = "done"; $("#main").innerHTML = "<h2>Thank you!</h2><p>All answers are stored. You can close this page.</p>"; return; }
  if (!started && state.position === 0) { instructions(); return; }
  (state.task === "masks" ? renderMask : renderPair)();
}

function context() {
  const box = document.createElement("div");
  const ctx = state.context || {};
  if (ctx.examples && ctx.examples.length) {
    box.innerHTML = `<div class="muted">Examples: where this unit fires (yellow)</div>`;
    const g = document.createElement("div"); g.className = "gallery";
    for (const e of ctx.examples) g.appendChild(picture(e.image, e.mask, ctx.grid));
    box.appendChild(g);
  }
  if (ctx.references && ctx.references.length) {
    box.innerHTML = `<div class="muted">Reference images: images on which this unit is active</div>`;
    const g = document.createElement("div"); g.className = "gallery";
    for (const name of ctx.references) g.appendChild(picture(name));
    box.appendChild(g);
  }
  return box;
}

function renderMask() {
  const item = state.item, [h, w] = item.grid;
  const main = $("#main"); main.innerHTML = ""; main.dataset.item = item.item; main.appendChild(context());
  const stage = picture(item.image); const grid = document.createElement("div"); grid.className = "grid";
  grid.style.gridTemplate = `repeat(${h}, 1fr) / repeat(${w}, 1fr)`;
  const cells = [];
  for (let i = 0; i < h * w; i++) {
    const c = document.createElement("button"); c.className = "cell"; c.type = "button";
    c.setAttribute("aria-label", `cell row ${Math.floor(i / w) + 1} column ${i % w + 1}`);
    c.setAttribute("aria-pressed", "false"); c.dataset.index = i;
    c.onclick = () => { c.classList.toggle("on"); c.setAttribute("aria-pressed", c.classList.contains("on")); };
    c.onkeydown = (ev) => {
      const moves = {ArrowLeft: -1, ArrowRight: 1, ArrowUp: -w, ArrowDown: w};
      if (ev.key in moves) { const j = i + moves[ev.key]; if (j >= 0 && j < h * w) cells[j].focus(); ev.preventDefault(); }
      else if (ev.key === "Enter") { submitMask(cells); ev.preventDefault(); }
    };
    cells.push(c); grid.appendChild(c);
  }
  stage.appendChild(grid);
  const title = document.createElement("p"); title.textContent = "Click the cells where the unit fires on this image.";
  main.appendChild(title); main.appendChild(stage);
  const submit = document.createElement("button"); submit.className = "act"; submit.id = "submit"; submit.textContent = "Submit";
  submit.onclick = () => submitMask(cells);
  main.appendChild(document.createElement("br")); main.appendChild(submit);
  const fb = document.createElement("div"); fb.id = "feedback"; main.appendChild(fb);
  cells[0].focus();
}

async function send(body) {
  if (busy) return null; busy = true;
  try {
    const r = await fetch(`${base}/answer`, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
    const text = await r.text();
    if (!r.ok) { $("#feedback").innerHTML = `<p class="error">${text}</p>`; await load(); return null; }
    return JSON.parse(text);
  } finally { busy = false; }
}

function next(reply, message) {
  $("#progress").value = reply.next;  // the count names the item shown until the next one is painted
  if (!reply.truth) { load(); return; }
  $("#feedback").innerHTML = `<p class="feedback">${message}</p><button class="act" id="next">Next</button>`;
  $("#next").onclick = load; $("#next").focus();
}

const fixed = (v) => (v === null || v === undefined) ? "–" : Number(v).toFixed(2);

async function submitMask(cells) {
  const mask = cells.map((c) => c.classList.contains("on") ? "1" : "0").join("");
  const reply = await send({item: state.item.item, mask});
  if (!reply) return;
  if (reply.truth) cells.forEach((c, i) => { if (reply.truth[i] === "1") c.classList.add("truth"); c.disabled = true; });
  const f = reply.feedback || {};
  next(reply, reply.truth ? `Practice: your cells are shaded, green frames mark where the unit fires. IoU ${fixed(f.iou)}, ImRoU ${fixed(f.imrou)}` : "");
}

function renderPair() {
  const item = state.item; let chosen = null;
  const main = $("#main"); main.innerHTML = ""; main.dataset.item = item.item; main.appendChild(context());
  const title = document.createElement("p"); title.textContent = "On which image does the unit stay more active?";
  main.appendChild(title);
  const row = document.createElement("div"); row.className = "pair";
  const sides = {};
  for (const side of ["left", "right"]) {
    const b = document.createElement("button"); b.className = "side"; b.type = "button"; b.id = `side-${side}`;
    b.setAttribute("aria-label", `${side} image`);
    b.appendChild(picture(item[side], null, null, item.boxes[side], item.size));
    b.onclick = () => choose(side); sides[side] = b; row.appendChild(b);
  }
  main.appendChild(row);
  const conf = document.createElement("div"); conf.innerHTML = `<span class="muted">How sure? </span>`;
  for (const [n, label] of [[1, "1 · guess"], [2, "2 · fairly"], [3, "3 · sure"]]) {
    const b = document.createElement("button"); b.className = "act"; b.id = `confidence-${n}`; b.textContent = label;
    b.onclick = () => answer(n); conf.appendChild(b);
  }
  main.appendChild(conf);
  const fb = document.createElement("div"); fb.id = "feedback"; main.appendChild(fb);
  function choose(side) { chosen = side; for (const s in sides) sides[s].classList.toggle("chosen", s === side); }
  async function answer(n) {
    if (!chosen) { $("#feedback").innerHTML = `<p class="error">First choose the left or the right image.</p>`; return; }
    document.onkeydown = null;
    const reply = await send({item: item.item, choice: chosen, confidence: n});
    if (!reply) return;
    next(reply, reply.truth ? (reply.feedback.correct ? `<span class="ok">Right:</span>` : `<span class="bad">Not this time:</span>`) + ` the unit stays more active on the ${reply.truth} image.` : "");
  }
  document.onkeydown = (ev) => {
    if (ev.key === "ArrowLeft") choose("left"); else if (ev.key === "ArrowRight") choose("right");
    else if (["1", "2", "3"].includes(ev.key)) answer(Number(ev.key));
  };
}

load();
"""


def page_html(token: str) -> str:
    """The participant's page for the study link `token`."""
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'><title>tuneline study</title>"
            f"<style>{STYLE}</style></head><body><header><strong>Study</strong><progress id='progress'></progress>"
            "<span id='count' class='muted'></span><span id='phase' class='phase'></span></header>"
            "<main id='main'><p>Loading…</p></main>"
            f"<script>const TOKEN = {json.dumps(token)};{SCRIPT}</script></body></html>")
