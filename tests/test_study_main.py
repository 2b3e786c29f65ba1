"""`python -m viewer.study`: create prints one link per participant; progress, results CSV, token; clear errors."""

import json

from tests.support.study_run import tiny_run
from viewer.study.__main__ import main
from viewer.study.answers import StudyDB


def test_create_progress_results(tmp_path, capsys):
    run = tiny_run(tmp_path / "run")
    db = tmp_path / "s.sqlite"
    assert main(["create", str(run), "--db", str(db), "--layer", "conv2", "--sample", "2", "--task", "masks",
                 "--test", "5", "--practice", "1", "--participants", "3", "--base-url", "http://host:1"]) == 0
    out = capsys.readouterr().out
    links = [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("participant ")]
    assert len(links) == 3 and all(link.startswith("http://host:1/study/p/") for link in links)
    assert "step 6" in out  # the last step with saved weights by default
    study = out.split()[1].rstrip(":")
    assert len(StudyDB(db).spec(study).units) == 2
    assert main(["progress", study, "--db", str(db)]) == 0
    progress = json.loads(capsys.readouterr().out)
    assert [p["answered"] for p in progress["participants"]] == [0, 0, 0] and progress["items"] == 12
    assert main(["results", study, "--db", str(db)]) == 0
    assert capsys.readouterr().out.startswith("study,task,layer,step,unit")
    assert main(["token", "--db", str(db)]) == 0
    assert capsys.readouterr().out.strip() == StudyDB(db).researcher_token


def test_errors(tmp_path, capsys):
    run = tiny_run(tmp_path / "run")
    assert main(["create", str(run), "--db", str(tmp_path / "s.sqlite"), "--layer", "conv2", "--units", "1",
                 "--step", "5", "--task", "pairs"]) == 2
    assert "step given an invalid value: 5; the run recorded steps 0, 3, 6" in capsys.readouterr().err
    assert main(["progress", "nope", "--db", str(tmp_path / "s.sqlite")]) == 2
    assert "no study 'nope'" in capsys.readouterr().err
