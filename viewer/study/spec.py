"""What a study shows: `StudySpec`, checked field by field.

    spec = StudySpec(run="runs/demo/baseline", layer="conv3", units=[4, 9], step=1500, task="masks",
                     n_practice=5, n_test=60)
    spec = StudySpec.from_dict(json.loads(text))      # ValueError naming the bad field and what is valid

Tasks: `"masks"` (Harth 2022: predict a unit's binary masks on a grid) and `"pairs"`
(Zimmermann et al. 2021: which of two occlusions leaves the unit's activation higher).
`conditions` are the reference conditions of a pairs study (`"none"`, `"natural"`),
assigned to participants in turn; a masks study has the single condition `"examples"`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

__all__ = ["CONDITIONS", "TASKS", "StudySpec"]

TASKS = ("masks", "pairs")
CONDITIONS = ("none", "natural")


def _int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} given an invalid value: {value!r}; expected an integer >= {minimum}")


@dataclass(frozen=True)
class StudySpec:
    """A study's definition; items are generated from it deterministically (see `viewer.study.items`).

        spec = StudySpec(run="runs/demo/baseline", layer="conv3", units=[4], step=1500, task="pairs")
    """

    run: str
    layer: str
    units: list[int]
    step: int
    task: str
    n_practice: int = 3
    n_test: int | None = None          # masks: 60 (Harth); pairs: 10 query images (ranks 11-20)
    conditions: list[str] = field(default_factory=list)  # pairs: ["none"], ["natural"] or both
    seed: int = 0
    n_examples: int = 12               # masks: images shown with the unit's masks before practice
    n_catch: int = 2                   # pairs: catch trials per unit among the test trials
    query_rank: int = 11               # pairs: rank (1-based) of the first query image
    n_references: int = 9              # pairs: natural reference images per unit

    def __post_init__(self):
        if not isinstance(self.run, str) or not self.run:
            raise ValueError(f"run given an invalid value: {self.run!r}; expected a run folder")
        if not isinstance(self.layer, str) or not self.layer:
            raise ValueError(f"layer given an invalid value: {self.layer!r}; expected a recorded layer name")
        if self.task not in TASKS:
            raise ValueError(f"task given an invalid value: {self.task!r}; expected one of {', '.join(TASKS)}")
        if not isinstance(self.units, (list, tuple)) or not self.units:
            raise ValueError(f"units given an invalid value: {self.units!r}; expected a non-empty list of unit "
                             "indices")
        for unit in self.units:
            _int("units", unit, 0)
        if len(set(self.units)) != len(self.units):
            raise ValueError(f"units given an invalid value: {self.units!r}; a unit appears twice")
        _int("step", self.step, 0)
        _int("n_practice", self.n_practice, 0)
        _int("seed", self.seed, 0)
        _int("n_examples", self.n_examples, 0)
        _int("n_catch", self.n_catch, 0)
        _int("query_rank", self.query_rank, 1)
        _int("n_references", self.n_references, 1)
        if self.n_test is None:
            object.__setattr__(self, "n_test", 60 if self.task == "masks" else 10)
        _int("n_test", self.n_test, 1)
        object.__setattr__(self, "units", list(self.units))
        conditions = list(self.conditions) or (["examples"] if self.task == "masks" else ["none"])
        valid = ("examples",) if self.task == "masks" else CONDITIONS
        bad = [c for c in conditions if c not in valid]
        if bad or len(set(conditions)) != len(conditions):
            raise ValueError(f"conditions given an invalid value: {self.conditions!r}; a {self.task} study takes "
                             f"distinct values among {', '.join(valid)}")
        object.__setattr__(self, "conditions", conditions)

    @classmethod
    def from_dict(cls, value: dict) -> StudySpec:
        if not isinstance(value, dict):
            raise ValueError(f"a study spec must be a JSON object, got {type(value).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown study field(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        missing = [name for name in ("run", "layer", "units", "step", "task") if name not in value]
        if missing:
            raise ValueError(f"the study spec lacks {', '.join(missing)}")
        return cls(**value)

    def to_dict(self) -> dict:
        return asdict(self)
