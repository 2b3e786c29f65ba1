"""Screenshots of the human-studies pages for the README: both participant tasks and the results pages.

    .venv/bin/python bench/study_screenshots.py RUN OUT [--layer conv3]

RUN is a trained run folder (e.g. one from `python -m training` with image_size=32,
depth=3, width=8); OUT receives study_masks.png, study_pairs.png, study_results.png,
study_results_masks.png, the studies database and the viewer's log. Scripted
participants answer first so the results pages have data. Every screenshot waits until
each <img> on the page has loaded (`complete` and a natural width), so no picture is
taken while the item images are still on their way.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.browser import chromium, free_port, serve  # noqa: E402
from viewer.study.scripted import blob_answer, play  # noqa: E402

ALL_LOADED = "() => [...document.images].every((img) => img.complete && img.naturalWidth > 0)"


def shoot(page, path: Path) -> None:
    """A full-page screenshot once every image on the page has loaded and been decoded."""
    page.wait_for_function(ALL_LOADED, timeout=30_000)
    page.evaluate("() => Promise.all([...document.images].map((img) => img.decode()))")
    page.screenshot(path=str(path), full_page=True)
    print("wrote", path)


def create(run: str, db: Path, base: str, *args: str) -> tuple[str, list[str], str]:
    """(study id, participant links, results link) of a study made with `python -m viewer.study create`."""
    out = subprocess.run([sys.executable, "-m", "viewer.study", "create", run, "--db", str(db), "--base-url", base,
                          *args], capture_output=True, text=True, check=True).stdout
    return (out.split()[1].rstrip(":"), re.findall(r"participant \d+: (\S+)", out),
            re.search(r"results: (\S+)", out).group(1))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a trained run folder")
    parser.add_argument("out", type=Path, help="folder for the PNGs")
    parser.add_argument("--layer", default="conv3")
    args = parser.parse_args(argv)
    run = str(Path(args.run).resolve())
    args.out.mkdir(parents=True, exist_ok=True)
    db = args.out / "studies.sqlite"
    db.unlink(missing_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    common = ("--layer", args.layer, "--sample", "2")
    _, mlinks, mres = create(run, db, base, *common, "--task", "masks", "--test", "20", "--practice", "3",
                             "--participants", "4")
    _, plinks, pres = create(run, db, base, *common, "--task", "pairs", "--test", "10", "--practice", "2",
                             "--conditions", "none,natural", "--participants", "6")
    with serve(Path(run).parent, port=port, env={"TUNELINE_STUDIES": str(db)}, log=args.out / "viewer.log"), \
            chromium() as browser:
        for link, area in zip(mlinks[1:], (0.15, 0.3, 0.5)):
            play(link, lambda item, a=area: blob_answer(item, a))
        for link in plinks[2:]:
            play(link)

        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(mlinks[0])
        page.click("#start")
        page.wait_for_selector("#main[data-item='0'] .cell")
        cells = page.locator("button.cell")
        side = int(round(cells.count() ** 0.5))
        for i in range(cells.count()):
            r, c = divmod(i, side)
            if 1 <= r <= side // 2 and 1 <= c <= side // 2 + 1:
                cells.nth(i).click()
        page.click("#submit")
        page.wait_for_selector("#next")
        shoot(page, args.out / "study_masks.png")

        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(plinks[1])  # the second participant: natural references
        page.click("#start")
        page.wait_for_selector("#main[data-item='0'] #side-left")
        page.click("#side-left")
        shoot(page, args.out / "study_pairs.png")

        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(pres)
        shoot(page, args.out / "study_results.png")
        page.goto(mres)
        shoot(page, args.out / "study_results_masks.png")


if __name__ == "__main__":
    main()
