"""A scripted participant that plays a study through HTTP: for tests, and as a baseline.

    answers = play("http://127.0.0.1:8050/study/p/<token>")              # pairs: centre distance
    answers = play(link, predict=lambda item: blob_answer(item, area=3))  # masks: a centred blob

`predict(item) -> answer dict` gets the item as the server sends it (`state["item"]`)
and returns the answer's fields (without `"item"`). The stock strategies: pairs by
centre distance (the occluder farther from the image centre leaves the activation
higher: `centre_distance`), masks by a lookup of the best-concept masks the researcher
holds (`lookup_answer`) or a centred blob (`blob_answer`).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable

import numpy as np

from viewer.study.items import bits, blob_mask

__all__ = ["blob_answer", "centre_distance", "get_json", "lookup_answer", "play", "post_json"]


def get_json(url: str, timeout: float = 60) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def post_json(url: str, body, timeout: float = 60) -> tuple[int, str]:
    """(status, body text) of a POST; 4xx answers come back as values, not exceptions."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def centre_distance(item: dict) -> dict:
    """Pairs: the side whose occluder lies farther from the image centre (no occluder counts as farthest)."""
    h, w = item["size"]

    def distance(box):
        if box is None:
            return np.inf
        return np.hypot((box[0] + box[2]) / 2 - h / 2, (box[1] + box[3]) / 2 - w / 2)

    left, right = distance(item["boxes"]["left"]), distance(item["boxes"]["right"])
    return {"choice": "left" if left >= right else "right", "confidence": 3 if abs(left - right) > 2 else 1}


def blob_answer(item: dict, area: float) -> dict:
    return {"mask": bits(blob_mask(tuple(item["grid"]), area))}


def lookup_answer(masks: dict[str, str]) -> Callable[[dict], dict]:
    """Masks: answer each image with `masks[image name]` (e.g. the best-concept masks of the study's items)."""
    return lambda item: {"mask": masks[item["image"]]}


def play(link: str, predict: Callable[[dict], dict] | None = None, limit: int | None = None,
         on_response: Callable[[str, int, str], None] | None = None) -> list[dict]:
    """Answer the study at `link` from where it stands until it is done (or `limit` answers); returns the replies.

    `on_response(url, status, body)` sees every HTTP response (e.g. to scan for leaks)."""
    predict = predict or centre_distance
    replies = []
    while limit is None or len(replies) < limit:
        with urllib.request.urlopen(f"{link}/state", timeout=60) as response:
            text = response.read().decode()
        if on_response:
            on_response(f"{link}/state", 200, text)
        state = json.loads(text)
        if state["done"]:
            break
        item = state["item"]
        status, body = post_json(f"{link}/answer", {"item": item["item"], **predict(item)})
        if on_response:
            on_response(f"{link}/answer", status, body)
        if status != 200:
            raise RuntimeError(f"answer to item {item['item']} refused ({status}): {body.strip()}")
        replies.append(json.loads(body))
    return replies
