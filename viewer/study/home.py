"""The researcher's studies page (`GET /study/`): every study with its progress and links,
and a form that creates a study over the JSON API.

    page = home_html(db, runs=[{"id": "baseline", "layers": ["conv3"], "steps": [0, 500, 1500]}])

The form posts `POST /study/api/studies` (the same spec as `python -m viewer.study
create`) from the page and shows the participant links it gets back, or the server's
refusal as it is worded. Units take indices and inclusive ranges ("4, 9, 12-15").
"""

from __future__ import annotations

import html
import json

from viewer.study.spec import CONDITIONS, TASKS

__all__ = ["home_html"]

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;max-width:72rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}
form{display:grid;grid-template-columns:10rem 22rem;gap:.5rem 1rem;align-items:center}
form .wide{grid-column:1 / span 2}label{font-weight:600}input,select{font:inherit;padding:.2rem}
#made{margin-top:1rem;padding:.5rem 1rem;border-left:4px solid #2a7}#made.refused{border-color:#c33}
small{color:#666}td:nth-child(6){white-space:nowrap}
"""

# Fills the layer and step lists for the chosen run, shows the conditions of a pairs
# study, parses the units, posts the spec and shows the links or the refusal.
_SCRIPT = """
const runs = JSON.parse(document.getElementById('runs').textContent);
const $ = id => document.getElementById(id);
function fill(select, values, pick) {
  select.replaceChildren(...values.map(v => new Option(String(v), String(v))));
  if (pick !== undefined) select.value = String(pick);
}
function chooseRun() {
  const run = runs.find(r => r.id === $('run').value) || {layers: [], steps: []};
  fill($('layer'), run.layers);
  fill($('step'), run.steps.slice().reverse(), run.steps[run.steps.length - 1]);
}
function chooseTask() { $('conditions').hidden = $('task').value !== 'pairs'; }
function units(text) {
  const out = [];
  for (const part of text.split(',').map(p => p.trim()).filter(p => p)) {
    const m = part.match(/^(\\d+)(?:\\s*-\\s*(\\d+))?$/);
    if (!m) throw new Error('units given an invalid value: ' + JSON.stringify(part) +
                            '; expected unit indices and ranges, e.g. 4, 9, 12-15');
    for (let u = +m[1]; u <= +(m[2] ?? m[1]); u++) out.push(u);
  }
  return out;
}
function show(ok, nodes) {
  const made = $('made');
  made.hidden = false;
  made.className = ok ? '' : 'refused';
  made.replaceChildren(...nodes);
}
async function create(event) {
  event.preventDefault();
  let spec;
  try {
    spec = {run: $('run').value, layer: $('layer').value, units: units($('units').value),
            step: +$('step').value, task: $('task').value, participants: +$('participants').value,
            n_practice: +$('n_practice').value};
    if ($('n_test').value) spec.n_test = +$('n_test').value;
    if (spec.task === 'pairs')
      spec.conditions = [...document.querySelectorAll('input[name=condition]:checked')].map(c => c.value);
  } catch (error) { show(false, [error.message]); return; }
  $('submit').disabled = true;
  try {
    const reply = await fetch('api/studies', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                              body: JSON.stringify(spec), credentials: 'same-origin'});
    const text = await reply.text();
    if (!reply.ok) { show(false, [text]); return; }
    const made = JSON.parse(text);
    const list = document.createElement('ol');
    for (const link of made.links) {
      const a = Object.assign(document.createElement('a'), {href: link, textContent: link});
      const li = document.createElement('li'); li.append(a); list.append(li);
    }
    const results = Object.assign(document.createElement('a'), {href: 'r/' + made.study, textContent: 'its results'});
    show(true, ['Study ' + made.study + ' created (', results, '). Send each participant one link:', list]);
  } catch (error) {
    show(false, ['the server did not answer: ' + error.message]);
  } finally { $('submit').disabled = false; }
}
$('run').addEventListener('change', chooseRun);
$('task').addEventListener('change', chooseTask);
$('new').addEventListener('submit', create);
chooseRun(); chooseTask();
"""


def _study_row(db, study: str) -> str:
    spec, progress = db.spec(study), db.progress(study)
    links = "".join(f"<li><a href='p/{html.escape(p['token'])}'>/study/p/{html.escape(p['token'])}</a></li>"
                    for p in db.participants(study))
    quoted = html.escape(study)
    return (f"<tr><td>{quoted}</td><td>{spec.task}</td><td>{html.escape(spec.run)}</td>"
            f"<td>{html.escape(spec.layer)}</td><td>{spec.step}</td>"
            f"<td>{', '.join(map(str, spec.units))}</td>"
            f"<td>{progress['done']} of {len(progress['participants'])} done</td>"
            f"<td><a href='r/{quoted}'>results</a> · <a href='api/studies/{quoted}/results.csv'>CSV</a>"
            f"<details><summary>participant links</summary><ul>{links}</ul></details></td></tr>")


def home_html(db, runs: list[dict], creates: bool = True) -> str:
    """The page: studies of `db`, and (when `creates`) the form over `runs` ({id, layers, steps})."""
    studies = db.studies()
    rows = "".join(_study_row(db, study) for study in studies)
    table = ("<table id='studies'><thead><tr><th>study</th><th>task</th><th>run</th><th>layer</th><th>step</th>"
             f"<th>units</th><th>progress</th><th>links</th></tr></thead><tbody>{rows}</tbody></table>"
             if studies else "<p id='studies'>No studies yet.</p>")
    parts = ["<p><a href='/'>← layer map</a></p><h1>Studies</h1>", table]
    if creates and runs:
        run_options = "".join(f"<option>{html.escape(run['id'])}</option>" for run in runs)
        task_options = "".join(f"<option>{task}</option>" for task in TASKS)
        conditions = "".join(f"<label><input type='checkbox' name='condition' value='{c}' checked> {c}</label> "
                             for c in CONDITIONS)
        parts += [
            "<h2>New study</h2>",
            "<form id='new'>"
            f"<label for='run'>run</label><select id='run'>{run_options}</select>"
            "<label for='layer'>layer</label><select id='layer'></select>"
            "<label for='step'>checkpoint (step)</label><select id='step'></select>"
            "<label for='units'>units</label><input id='units' placeholder='4, 9, 12-15' required>"
            f"<label for='task'>task</label><select id='task'>{task_options}</select>"
            f"<span id='conditions' class='wide'><b>reference conditions</b> {conditions}"
            "<small>(assigned to participants in turn)</small></span>"
            "<label for='n_test'>test items</label>"
            "<input id='n_test' type='number' min='1' placeholder='task default: masks 60, pairs 10'>"
            "<label for='n_practice'>practice items</label><input id='n_practice' type='number' min='0' value='3'>"
            "<label for='participants'>participants</label>"
            "<input id='participants' type='number' min='1' value='3' required>"
            "<span class='wide'><button id='submit' type='submit'>Create study</button> "
            "<small>masks: Harth 2022's mask game; pairs: Zimmermann et al. 2021's occlusion pairs</small></span>"
            "</form><div id='made' hidden></div>",
            f"<script type='application/json' id='runs'>{_json_for_script(runs)}</script>",
            f"<script>{_SCRIPT}</script>"]
    elif creates:
        parts.append("<p>No runs to draw a study from: the served folder holds none yet.</p>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>tuneline studies</title>"
            f"<style>{_STYLE}</style></head><body>{''.join(parts)}</body></html>")


def _json_for_script(value) -> str:
    """JSON that cannot close the <script> element holding it."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
