"""The participant's page in real Chromium: both tasks played end to end, by mouse and keyboard; stored scores checked."""

import io

import numpy as np
import pytest
from PIL import Image

from recorder.metrics import imrou
from tests.support.browser import chromium
from tests.support.study_run import tiny_run
from tests.support.study_server import StudyServer
from viewer.study.answers import StudyDB
from viewer.study.items import generate, unbits
from viewer.study.scoring import score_study
from viewer.study.source import StudySource
from viewer.study.spec import StudySpec


# Each <img> on the page once all have loaded: (name, loaded with a size, distinct colours of its pixels), read back
# through a canvas (the images are same-origin, so the canvas is readable).
IMAGES_SHOWN = """async () => {
  const imgs = [...document.querySelectorAll('#main img')];
  await Promise.all(imgs.map((img) => img.decode().catch(() => null)));
  return imgs.map((img) => {
    const loaded = img.complete && img.naturalWidth > 0;
    let colours = 0;
    if (loaded) {
      const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
      const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);
      const px = ctx.getImageData(0, 0, c.width, c.height).data, seen = new Set();
      for (let i = 0; i < px.length; i += 4) seen.add((px[i] << 16) | (px[i + 1] << 8) | px[i + 2]);
      colours = seen.size;
    }
    return [img.src.split('/').pop(), loaded, colours];
  });
}"""


def images_shown(page) -> dict[str, tuple[bool, int]]:
    """{image name: (loaded, distinct colours)} of every picture in the page's main area, after they have loaded."""
    page.wait_for_function("() => [...document.querySelectorAll('#main img')].every((i) => i.complete)")
    return {name: (loaded, colours) for name, loaded, colours in page.evaluate(IMAGES_SHOWN)}


def distinct_colours(png: bytes) -> int:
    return len(np.unique(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3), axis=0))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("page")
    source = StudySource.open(tiny_run(folder / "run"))
    db = StudyDB(folder / "studies.sqlite")
    masks = StudySpec(run=str(source.run.location), layer="conv2", units=[1], step=6, task="masks", n_test=3,
                      n_practice=1, n_examples=2)
    pairs = StudySpec(run=str(source.run.location), layer="conv2", units=[2], step=6, task="pairs", n_test=3,
                      n_practice=1, n_references=2, n_catch=1, conditions=["natural"])
    studies = {"masks": db.create(masks, generate(source, masks))[0], "pairs": db.create(pairs, generate(source, pairs))[0]}
    server = StudyServer(db.path).start()
    with chromium() as browser:
        yield db, studies, server, browser
    server.stop()


def start_playing(served, task: str):
    """The first participant's page of the `task` study, past its start screen: (db, study, token, page)."""
    db, studies, server, browser = served
    study = studies[task]
    token = db.participants(study)[0]["token"]
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    page.goto(f"{server.url}/study/p/{token}")
    page.click("#start")
    return db, study, token, page


def test_masks_played_by_mouse_and_keyboard(served):
    db, study, token, page = start_playing(served, "masks")
    expected = []
    for n in range(4):
        page.wait_for_selector(f"#main[data-item='{n}'] .cell")  # item n painted
        assert page.locator("#count").inner_text() == f"item {n + 1} of 4"
        cells = page.locator("button.cell")
        count = cells.count()
        cells.nth(0).click()                       # mouse
        cells.nth(n % count).focus()
        page.keyboard.press("ArrowRight")          # keyboard: move, toggle
        page.keyboard.press("Space")
        mask = ["0"] * count
        mask[0] = "1"
        second = min(n % count + 1, count - 1)
        mask[second] = "0" if second == 0 else "1"
        expected.append("".join(mask))
        if n == 0:  # practice: the truth comes back after the answer
            page.keyboard.press("Enter")
            page.wait_for_selector("#next")
            assert "IoU" in page.locator("#feedback").inner_text()
            assert page.locator(".cell.truth").count() == db.items(study)[0]["truth"].count("1")
            page.click("#next")
            page.wait_for_function("document.querySelector('#count').innerText === 'item 2 of 4'")
        else:
            page.click("#submit")
            page.wait_for_function(f"document.querySelector('#count').innerText !== 'item {n + 1} of 4'")
            assert page.locator(".cell.truth").count() == 0
    page.wait_for_selector("text=Thank you!")
    stored = [a["answer"] for a in db.answers(study)]
    assert stored == expected
    tests = [a for a in db.answers(study) if a["phase"] == "test"]
    shape = tests[0]["public"]["grid"]
    row = next(r for r in score_study(db, study)["rows"] if r["who"] == 0)
    assert row["imrou"] == pytest.approx(imrou(np.stack([unbits(a["answer"], shape) for a in tests]),
                                               np.stack([unbits(a["truth"], shape) for a in tests])), abs=1e-6)
    page.close()


def test_pairs_played_with_confidence(served):
    db, study, token, page = start_playing(served, "pairs")
    expected = []
    for n in range(5):
        page.wait_for_selector(f"#main[data-item='{n}'] #side-left")  # item n painted
        assert page.locator(".gallery img").count() == 2  # the natural references
        state = db.state(token)  # what the server holds for item n
        shown = images_shown(page)
        references = state["context"]["references"]
        assert set(shown) == {*references, state["item"]["left"], state["item"]["right"]}
        for name, (loaded, colours) in shown.items():
            # every picture arrived, and shows what the study stored: as many colours as the PNG holds (more than
            # one unless the occluder covers the whole image)
            assert loaded, f"image {name} did not load"
            assert colours == distinct_colours(db.image(token, name)), name
        assert all(colours > 1 for name, (_, colours) in shown.items() if name in references)
        if n % 2:
            page.keyboard.press("ArrowRight")
            page.keyboard.press("3")
            expected.append(("right", 3))
        else:
            page.click("#side-left")
            page.click("#confidence-2")
            expected.append(("left", 2))
        if n == 0:
            page.wait_for_selector("#next")
            assert "the unit stays more active on the" in page.locator("#feedback").inner_text()
            page.click("#next")
        page.wait_for_function(f"document.querySelector('#count').innerText !== 'item {n + 1} of 5'")
    page.wait_for_selector("text=Thank you!")
    answers = db.answers(study)
    assert [(a["answer"], a["confidence"]) for a in answers] == expected
    trials = [a for a in answers if a["phase"] == "test" and not a["extra"]["catch"]]
    row = next(r for r in score_study(db, study)["rows"] if r["who"] == 0)
    assert row["accuracy"] == pytest.approx(np.mean([a["answer"] == a["truth"] for a in trials]), abs=1e-6)
    assert row["confidence"] == pytest.approx(np.mean([a["confidence"] for a in trials]))
    page.close()
