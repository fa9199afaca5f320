"""The classifier of scripts/bench/fault_classes.py on canned outputs (no subprocess), and
the --edit_config_json limits its deep_nesting class found (a "bug in mtrec" line before)."""
import os
import sys

import pytest

from mtrec import config as config_lib
from mtrec.errors import ConfigError
from test_config import BASE, write

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts", "bench"))
import fault_classes as fc  # noqa: E402

LOG = "03:53:52 INFO training MMoE from step 0 to 10\n"
ONE = LOG + "mtrec: error: /d/x.csv:7: column 'clk': 'nan' is not a finite number. Fix it.\n"
TRACEBACK = ("Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
             "RecursionError: maximum recursion depth exceeded\n")


@pytest.mark.parametrize("kwargs, expected", [
    # A failure with one line naming what it must.
    (dict(code=1, stderr=ONE, names=["/d/x.csv:7:", "column 'clk'"]), "clear"),
    # ...that names the wrong line, or is two error lines, or no line at all.
    (dict(code=1, stderr=ONE, names=["/d/x.csv:8:"]), "unclear"),
    (dict(code=1, stderr=ONE + "mtrec: error: again\n"), "unclear"),
    (dict(code=1, stderr=LOG), "unclear"),
    (dict(code=-9, stderr=LOG), "unclear"),
    # The error boundary's line for an unexpected exception is not a clear message.
    (dict(code=1, stderr="mtrec: error: check: unexpected RecursionError: x. This is a bug "
                         "in mtrec; please report it.\n"), "unclear"),
    # A name may be a tuple of alternatives.
    (dict(code=1, stderr="mtrec: error: could not export: No space left on device.\n",
          names=[("disk full", "No space left on device")]), "clear"),
    # A ConfigError's problems follow on the next lines.
    (dict(code=1, stderr="mtrec: error: /c: 1 problem:\n  /c:22: training would need 9 GiB\n",
          names=["/c:22:"]), "clear"),
    (dict(code=1, stdout=TRACEBACK, stderr=ONE), "traceback"),
    (dict(code=0, stderr=TRACEBACK), "traceback"),
    (dict(code=0, stderr=LOG), "silent"),  # expected to fail
    (dict(code=0, stderr=LOG, expect="either"), "clear"),  # a documented success
    (dict(code=0, stderr=LOG, expect="either", wrong="3 of 2001 lines"), "silent"),
    (dict(code=1, stderr=ONE, expect="succeed"), "unclear"),
    (dict(code=0, stderr=LOG, expect="succeed", leftover="left .tmp-1-h-x"), "unclear"),
    (dict(code=1, stderr=ONE, lost="the checkpoint of step 10 no longer restores"), "lost"),
    (dict(code=0, stderr=TRACEBACK, expect="succeed", lost="gone"), "lost"),
    (dict(code=1, stderr=ONE, seconds=31.0, limit=30), "slow"),
    (dict(code=1, stderr=ONE, seconds=29.0, limit=30), "clear"),
])
def test_classify(kwargs, expected):
    kwargs.setdefault("stdout", "")
    code, stdout, stderr = kwargs.pop("code"), kwargs.pop("stdout"), kwargs.pop("stderr")
    outcome, why = fc.classify(code, stdout, stderr, **kwargs)
    assert outcome == expected, why
    assert outcome in fc.OUTCOMES


def test_worst_and_table():
    assert fc.worst([("clear", ""), ("unclear", "a"), ("silent", "b")]) == ("silent", "b")
    assert fc.worst([("traceback", "t"), ("lost", "l")]) == ("lost", "l")
    text = fc.table({"memory": {"clear": 3, "slow": 1}}, {"full_disk": "not root"})
    lines = text.splitlines()
    assert lines[0] == "| class | tried | clear | traceback | silent | lost | slow | unclear |"
    assert lines[2] == "| memory | 4 | 3 | 0 | 0 | 0 | 1 | 0 |"
    assert lines[3].startswith("| full_disk | skipped: not root |")


@pytest.mark.parametrize("json_text", [
    '{"a": ' * 5000 + "1" + "}" * 5000,  # beyond json's nesting depth
    '{"data_config.batch_size": ' + "9" * 5000 + "}",  # beyond its 4300 digits
])
def test_edit_config_json_beyond_jsons_limits_is_a_config_error(tmp_path, json_text):
    with pytest.raises(ConfigError, match="--edit_config_json is not valid JSON: "):
        config_lib.load(write(tmp_path, BASE), edit_config_json=json_text)
