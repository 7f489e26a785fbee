"""The CLI's command routing (`felix-train [--home DIR] COMMAND ...`)."""

from felix_train.cli import main


def test_a_leading_home_is_not_taken_for_a_spec(tmp_path, capsys):
    # `--home DIR` names an existing folder: it must not route the command to `run DIR`
    assert main(["--home", str(tmp_path), "jobs", "list"]) == 0
    assert "spec" not in capsys.readouterr().err.lower()


def test_a_spec_path_alone_still_runs(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    rc = main(["--home", str(tmp_path), str(missing)])
    assert rc == 2  # routed to `run`, which refuses the unreadable spec
