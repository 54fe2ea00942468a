"""Helpers of the bad-input catalogue (tests/test_bad_inputs_*.py): how a refusal and a warning must look."""
import pytest

from tasks.cli import InputWarning


def refused(cli, argv, capsys, *fragments, status=2):
    """cli(argv) ends with exit `status` and a last stderr line `prog: error: ...` holding every fragment,
    without traceback text. Returns that line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        cli(argv)
    err = capsys.readouterr().err
    assert done.value.code == status, err[-3000:]
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    prog = cli.__module__ + ".py"
    assert line.startswith(f"{prog}: error: "), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


def warned(record, *fragments):
    """One InputWarning among `record` (pytest.warns) holds every fragment."""
    messages = [str(w.message) for w in record if issubclass(w.category, InputWarning)]
    assert any(all(f in m for f in fragments) for m in messages), messages
