"""viewer.__main__: `python -m viewer runs/` arguments (serving itself is in test_viewer_browser)."""

import subprocess
import sys

import pytest

from viewer import __main__ as cli


class FakeApp:
    def __init__(self):
        self.ran = None

    def run(self, **kwargs):
        self.ran = kwargs


@pytest.fixture()
def fake(monkeypatch):
    app = FakeApp()
    roots = []
    monkeypatch.setattr("viewer.app.create_app", lambda root: roots.append(root) or app)
    return app, roots


def test_defaults_are_local_and_not_debug(fake, tmp_path):
    app, roots = fake
    cli.main([str(tmp_path)])
    assert app.ran == {"host": "127.0.0.1", "port": 8050, "debug": False}
    assert roots == [tmp_path]


def test_host_port_debug(fake, tmp_path):
    app, _ = fake
    cli.main([str(tmp_path), "--host", "0.0.0.0", "--port", "9001", "--debug"])
    assert app.ran == {"host": "0.0.0.0", "port": 9001, "debug": True}


@pytest.mark.parametrize("argv, message", [(["--port", "70000"], "not a valid port"),
                                           (["--port", "http"], "invalid int value")])
def test_bad_arguments(fake, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit):
        cli.main([str(tmp_path), *argv])
    assert message in capsys.readouterr().err


def test_root_must_be_a_folder(fake, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit):
        cli.main([str(tmp_path / "file")])
    assert "is not a folder" in capsys.readouterr().err


def test_help_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "viewer", "--help"], capture_output=True, text=True, check=True)
    assert "--host" in out.stdout and "127.0.0.1" in out.stdout


def test_a_url_root_is_passed_as_a_string(fake):
    app, roots = fake
    cli.main(["memory://tuneline-main/sweep"])
    assert roots == ["memory://tuneline-main/sweep"] and app.ran["host"] == "127.0.0.1"


def test_an_unknown_url_scheme_is_named(fake, capsys):
    with pytest.raises(SystemExit):
        cli.main(["nosuchscheme://bucket/sweep"])
    err = capsys.readouterr().err
    assert "nosuchscheme://" in err and "s3://" in err
