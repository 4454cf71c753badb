"""``ember serve`` refuses a bad --port or --host with one ``ember: error:`` line and exit code 2, before
it loads the model (here the model file does not even exist: the address is what gets reported)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from serving import EMBER

from ember.cli import main
from ember.serve import serve


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "99999"], "port=99999; expected a port number from 0 to 65535"),
        (["--port", "-1"], "port=-1; expected a port number from 0 to 65535"),
        (["--host", "no-such-host.invalid"], "host='no-such-host.invalid' cannot be resolved"),
        (["--host", "bad..name"], "host='bad..name' cannot be resolved"),
        (["--timeout-body", "0"], "timeout_body=0.0; expected a number of seconds > 0"),
        (["--max-connections", "0"], "max_connections=0; expected an integer >= 1"),
    ],
)
def test_bad_addresses_and_limits_exit_2_before_the_model_loads(
    tmp_path: Path, capsys, args: list[str], message: str
) -> None:
    assert main(["serve", str(tmp_path / "missing.onnx"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ember: error: ") and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "no such file" not in err  # the model was not looked at


def test_the_console_script_reports_a_bad_port_in_one_line(tmp_path: Path) -> None:
    out = subprocess.run(
        [EMBER, "serve", str(tmp_path / "missing.onnx"), "--port", "99999"],
        capture_output=True, text=True, timeout=240, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.splitlines()[-1].startswith("ember: error: port=99999")
    assert "Traceback" not in out.stderr


def test_serve_checks_the_address_before_loading(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"host='no-such-host\.invalid' cannot be resolved"):
        serve(tmp_path / "missing.onnx", host="no-such-host.invalid")
    with pytest.raises(ValueError, match="port=70000"):
        serve(tmp_path / "missing.onnx", port=70000)
