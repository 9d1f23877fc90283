"""User-facing messages: exact text of what the user reads, one error style, nothing slow first."""
import json
import subprocess
import sys

from click.testing import CliRunner

from rtclassify.cli import main

UNKNOWN_MODEL = "Error: --model 'nope' is neither a built-in model (genetic5, broad2) nor an existing model file"


def test_an_unknown_model_is_refused_before_torch_is_imported():
    code = ("import sys; from click.testing import CliRunner; from rtclassify.cli import main; "
            "r = CliRunner().invoke(main, ['predict', '--model', 'nope', '--data', '.', '--out', 'x.csv']); "
            "print(r.exit_code, 'torch' in sys.modules); print(r.output)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    first, rest = out.split("\n", 1)
    assert first == "2 False"
    assert rest.strip() == UNKNOWN_MODEL


def test_every_model_command_refuses_the_same_way():
    for args in (["serve", "--source", "zmq", "--connect", "tcp://127.0.0.1:1", "--publish", "tcp://127.0.0.1:2"],
                 ["demo"], ["annotate", __file__]):
        r = CliRunner().invoke(main, [*args, "--model", "nope"])
        assert r.exit_code == 2 and r.output.strip() == UNKNOWN_MODEL, (args, r.output)


def test_detect_names_a_file_that_is_not_npz(tmp_path):
    bad = tmp_path / "trace.txt"
    bad.write_text("not an archive")
    r = CliRunner().invoke(main, ["detect", "--fs", "50000", str(bad)])
    assert r.exit_code == 1
    line = json.loads(r.output.strip())
    assert line["error"].startswith(f"{bad}: not an .npz archive; expected an .npz file holding arrays v")
    assert "pickle" not in line["error"]


def test_one_device_default_everywhere():
    for cmd in ("predict", "serve"):
        r = CliRunner().invoke(main, [cmd, "--help"])
        assert "[default: auto]" in r.output.split("--device", 1)[1].split("\n  --", 1)[0], cmd
