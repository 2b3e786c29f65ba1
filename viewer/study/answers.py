"""Studies, items, participants and answers in one SQLite database (WAL; each answer committed before it is acknowledged).

    db = StudyDB("studies.sqlite")
    study, tokens = db.create(spec, items, participants=3)   # items: viewer.study.items.Items
    db.state(tokens[0])                   # the participant's next item (never a test item's truth)
    db.submit(tokens[0], {"item": 0, "mask": "0110..."})     # AnswerError(4xx, message) when refused
    db.answers(study)                     # every stored answer with its item's truth, for scoring

Participants answer items strictly in order: an answer for an item already answered
(a replay) or for a later item (out of order) is refused with 409, a malformed one
with 400. A participant's position is the number of their stored answers, so a
restarted server resumes each participant where they stopped.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import numpy as np

from recorder.metrics import imrou, mask_iou
from viewer.study.items import Items, unbits
from viewer.study.spec import StudySpec

__all__ = ["AnswerError", "StudyDB"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS studies (id TEXT PRIMARY KEY, spec TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS items (study TEXT NOT NULL, seq INTEGER NOT NULL, unit INTEGER NOT NULL,
    phase TEXT NOT NULL, public TEXT NOT NULL, truth TEXT NOT NULL, extra TEXT NOT NULL, PRIMARY KEY (study, seq));
CREATE TABLE IF NOT EXISTS context (study TEXT NOT NULL, unit INTEGER NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (study, unit));
CREATE TABLE IF NOT EXISTS images (study TEXT NOT NULL, name TEXT NOT NULL, png BLOB NOT NULL,
    PRIMARY KEY (study, name));
CREATE TABLE IF NOT EXISTS participants (token TEXT PRIMARY KEY, study TEXT NOT NULL, number INTEGER NOT NULL,
    condition TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS answers (participant TEXT NOT NULL, seq INTEGER NOT NULL, answer TEXT NOT NULL,
    confidence INTEGER, stored REAL NOT NULL, PRIMARY KEY (participant, seq));
"""
CONFIDENCE = (1, 2, 3)


class AnswerError(Exception):
    """A refused request: `status` (400, 404, 409) and a message saying what would be valid."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class StudyDB:
    """The study database at `path` (created on first use). See the module docstring.

        db = StudyDB("studies.sqlite"); db.researcher_token
    """

    def __init__(self, path):
        self.path = Path(path)
        with closing(self._connect()) as conn, conn:
            conn.executescript(SCHEMA)
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('researcher_token', ?)", (secrets.token_urlsafe(24),))

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=60000")
        return conn

    @property
    def researcher_token(self) -> str:
        with closing(self._connect()) as conn:
            return conn.execute("SELECT value FROM meta WHERE key = 'researcher_token'").fetchone()[0]

    # ------------------------------------------------------------------ researcher side
    def create(self, spec: StudySpec, items: Items, participants: int = 1) -> tuple[str, list[str]]:
        """Store a study and its items; returns (study id, participant tokens)."""
        study = secrets.token_hex(6)
        with closing(self._connect()) as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO studies VALUES (?, ?, ?)", (study, json.dumps(spec.to_dict()), time.time()))
            conn.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?)", [
                (study, seq, it.unit, it.phase, json.dumps(it.public), it.truth, json.dumps(it.extra))
                for seq, it in enumerate(items.items)])
            conn.executemany("INSERT INTO context VALUES (?, ?, ?)",
                             [(study, unit, json.dumps(value)) for unit, value in items.context.items()])
            conn.executemany("INSERT INTO images VALUES (?, ?, ?)",
                             [(study, name, data) for name, data in items.images.items()])
            conn.execute("COMMIT")
        return study, self.add_participants(study, participants)

    def add_participants(self, study: str, n: int) -> list[str]:
        spec = self.spec(study)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"participants given an invalid value: {n!r}; expected an integer >= 1")
        tokens = [secrets.token_urlsafe(24) for _ in range(n)]
        with closing(self._connect()) as conn:
            conn.execute("BEGIN IMMEDIATE")
            start = conn.execute("SELECT COUNT(*) FROM participants WHERE study = ?", (study,)).fetchone()[0]
            conn.executemany("INSERT INTO participants VALUES (?, ?, ?, ?)", [
                (token, study, start + i, spec.conditions[(start + i) % len(spec.conditions)])
                for i, token in enumerate(tokens)])
            conn.execute("COMMIT")
        return tokens

    def studies(self) -> list[str]:
        with closing(self._connect()) as conn:
            return [r[0] for r in conn.execute("SELECT id FROM studies ORDER BY created")]

    def spec(self, study: str) -> StudySpec:
        with closing(self._connect()) as conn:
            row = conn.execute("SELECT spec FROM studies WHERE id = ?", (study,)).fetchone()
        if row is None:
            raise AnswerError(404, f"no study {study!r}; known studies: {', '.join(self.studies()) or 'none'}")
        return StudySpec.from_dict(json.loads(row[0]))

    def items(self, study: str) -> list[dict]:
        with closing(self._connect()) as conn:
            rows = conn.execute("SELECT seq, unit, phase, public, truth, extra FROM items WHERE study = ? ORDER BY seq",
                                (study,)).fetchall()
        return [{"seq": s, "unit": u, "phase": p, "public": json.loads(pub), "truth": t, "extra": json.loads(e)}
                for s, u, p, pub, t, e in rows]

    def participants(self, study: str) -> list[dict]:
        with closing(self._connect()) as conn:
            rows = conn.execute(
                "SELECT p.token, p.number, p.condition, COUNT(a.seq) FROM participants p LEFT JOIN answers a "
                "ON a.participant = p.token WHERE p.study = ? GROUP BY p.token ORDER BY p.number", (study,)).fetchall()
        return [{"token": t, "number": n, "condition": c, "answered": a} for t, n, c, a in rows]

    def progress(self, study: str) -> dict:
        spec, total = self.spec(study), len(self.items(study))
        people = [{k: v for k, v in p.items() if k != "token"} | {"total": total} for p in self.participants(study)]
        return {"study": study, "task": spec.task, "units": spec.units, "items": total, "participants": people,
                "done": sum(p["answered"] == total for p in people)}

    def answers(self, study: str) -> list[dict]:
        """Every stored answer of the study with its item (truth, extra) and participant."""
        items = {it["seq"]: it for it in self.items(study)}
        with closing(self._connect()) as conn:
            rows = conn.execute(
                "SELECT p.number, p.condition, a.seq, a.answer, a.confidence, a.stored FROM answers a JOIN participants p "
                "ON a.participant = p.token WHERE p.study = ? ORDER BY p.number, a.seq", (study,)).fetchall()
        return [{"participant": n, "condition": c, "seq": s, "answer": a, "confidence": conf, "stored": t,
                 **{k: items[s][k] for k in ("unit", "phase", "truth", "extra", "public")}}
                for n, c, s, a, conf, t in rows]

    # ------------------------------------------------------------------ participant side
    def _participant(self, conn, token) -> tuple[str, str, int]:
        row = conn.execute("SELECT study, condition, number FROM participants WHERE token = ?",
                           (str(token),)).fetchone() if isinstance(token, str) else None
        if row is None:
            raise AnswerError(404, "no study at this link; check the link you were given")
        return row

    def state(self, token: str) -> dict:
        """The participant's position and next item (public part only), or done."""
        with closing(self._connect()) as conn:
            study, condition, _ = self._participant(conn, token)
            position = conn.execute("SELECT COUNT(*) FROM answers WHERE participant = ?", (token,)).fetchone()[0]
            total = conn.execute("SELECT COUNT(*) FROM items WHERE study = ?", (study,)).fetchone()[0]
            phases = conn.execute("SELECT phase, COUNT(*) FROM items WHERE study = ? GROUP BY phase",
                                  (study,)).fetchall()
            row = conn.execute("SELECT unit, phase, public FROM items WHERE study = ? AND seq = ?",
                               (study, position)).fetchone()
            context = None
            if row is not None:
                value = conn.execute("SELECT value FROM context WHERE study = ? AND unit = ?",
                                     (study, row[0])).fetchone()
                context = json.loads(value[0]) if value else {}
        spec = self.spec(study)
        state = {"task": spec.task, "condition": condition, "position": position, "total": total,
                 "phases": dict(phases), "units": len(spec.units), "done": row is None}
        if row is not None:
            unit, phase, public = row
            if condition != "natural":
                context.pop("references", None)
            state["item"] = {"item": position, "phase": phase, "unit_number": spec.units.index(unit) + 1, **json.loads(public)}
            state["context"] = context
        return state

    def image(self, token: str, name: str) -> bytes:
        with closing(self._connect()) as conn:
            study, _, _ = self._participant(conn, token)
            row = conn.execute("SELECT png FROM images WHERE study = ? AND name = ?", (study, str(name))).fetchone()
        if row is None:
            raise AnswerError(404, f"no image {name!r} in this study")
        return bytes(row[0])

    def submit(self, token: str, body) -> dict:
        """Store one answer (committed before returning); practice answers get the truth back."""
        if not isinstance(body, dict):
            raise AnswerError(400, "an answer must be a JSON object such as {\"item\": 0, \"mask\": \"0110...\"} or "
                                   "{\"item\": 0, \"choice\": \"left\", \"confidence\": 2}")
        seq = body.get("item")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise AnswerError(400, f"item given an invalid value: {seq!r}; expected the index (int >= 0) of the item "
                                   "being answered")
        with closing(self._connect()) as conn:
            study, _, _ = self._participant(conn, token)
            conn.execute("BEGIN IMMEDIATE")
            try:
                position = conn.execute("SELECT COUNT(*) FROM answers WHERE participant = ?", (token,)).fetchone()[0]
                total = conn.execute("SELECT COUNT(*) FROM items WHERE study = ?", (study,)).fetchone()[0]
                if seq < position:
                    raise AnswerError(409, f"item {seq} was already answered (a replay); the next item is "
                                           f"{position if position < total else 'none: the study is complete'}")
                if position >= total:
                    raise AnswerError(409, f"the study is complete ({total} items answered); item {seq} is not expected")
                if seq > position:
                    raise AnswerError(409, f"item {seq} is out of order; the next item to answer is {position}")
                phase, public, truth = conn.execute("SELECT phase, public, truth FROM items WHERE study = ? AND seq = ?",
                                                    (study, seq)).fetchone()
                answer, confidence = _checked(body, json.loads(public))
                conn.execute("INSERT INTO answers VALUES (?, ?, ?, ?, ?)", (token, seq, answer, confidence, time.time()))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        reply = {"stored": True, "item": seq, "phase": phase, "next": seq + 1, "total": total}
        if phase == "practice":
            reply["truth"] = truth
            reply["feedback"] = _feedback(answer, truth, json.loads(public))
        return reply


def _checked(body: dict, public: dict) -> tuple[str, int | None]:
    """(answer text, confidence) of a well-formed answer to the item, else AnswerError(400)."""
    if public["kind"] == "mask":
        h, w = public["grid"]
        extra = sorted(set(body) - {"item", "mask"})
        mask = body.get("mask")
        if extra or not isinstance(mask, str) or len(mask) != h * w or set(mask) - {"0", "1"}:
            raise AnswerError(400, f"a mask answer is {{\"item\": n, \"mask\": \"...\"}} with a string of {h * w} "
                                   f"characters '0' or '1' ({h} rows of {w} cells, row by row); got "
                                   + (f"unexpected field(s) {', '.join(extra)}" if extra else f"mask={mask!r}"[:120]))
        return mask, None
    extra = sorted(set(body) - {"item", "choice", "confidence"})
    choice, confidence = body.get("choice"), body.get("confidence")
    if extra or choice not in ("left", "right") or isinstance(confidence, bool) or confidence not in CONFIDENCE:
        raise AnswerError(400, "a pair answer is {\"item\": n, \"choice\": \"left\" | \"right\", \"confidence\": 1 | 2 | 3}"
                               "; got " + (f"unexpected field(s) {', '.join(extra)}" if extra else
                                          f"choice={choice!r}, confidence={confidence!r}"[:120]))
    return choice, int(confidence)


def _feedback(answer: str, truth: str, public: dict) -> dict:
    if public["kind"] == "mask":
        shape = public["grid"]
        predicted, actual = unbits(answer, shape)[None], unbits(truth, shape)[None]
        scores = {"imrou": imrou(predicted, actual), "iou": mask_iou(predicted, actual)}
        return {k: (None if np.isnan(v) else round(v, 4)) for k, v in scores.items()}
    return {"correct": answer == truth}
