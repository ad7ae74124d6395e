"""The ``hessnorm`` command line: dispatch, errors, and the quick reproductions."""

import pandas as pd
import pytest

from hessnorm.cli import main


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "train" in capsys.readouterr().out


def test_unknown_experiment_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["reproduce", "table9"])
    assert info.value.code == 2 and "invalid choice: 'table9'" in capsys.readouterr().err


def test_library_errors_become_messages_and_exit_code_1(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "missing.pt"), "--quiet"]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_reproduce_gpt_quick(tmp_path):
    out = tmp_path / "gpt"
    assert main(["reproduce", "gpt", "--quick", "--out", str(out), "--quiet"]) == 0
    final = pd.read_csv(out / "final.csv")
    assert set(final["optimizer"]) == {"adam", "adasgd", "rotated-adam", "sgd"}
    assert (out / "curves.png").is_file() and "ordering" in (out / "table.md").read_text()


def test_reproduce_table1_l11_quick(tmp_path):
    out = tmp_path / "t"
    assert main(["reproduce", "table1-l11", "--quick", "--out", str(out), "--quiet"]) == 0
    table = pd.read_csv(out / "table.csv")
    assert len(table) == 5
