"""Property-based: mutated sample configs either load, or fail with ONE clear ConfigError
naming file:line (or the field path) — never another exception. A few mutations also go
through the CLI to check the exit code and that stderr holds no traceback."""
import os
import re
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import SAMPLES
from mtrec import config as config_lib
from mtrec.errors import ConfigError, MtrecError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(f for f in os.listdir(SAMPLES) if f.endswith(".config"))
TEXTS = {name: open(os.path.join(SAMPLES, name)).read() for name in CONFIGS}


def _replace_nth(text, pattern, nth, replace):
    matches = list(re.finditer(pattern, text, flags=re.M))
    if not matches:
        return text
    m = matches[nth % len(matches)]
    return text[:m.start()] + replace(m) + text[m.end():]


def drop_brace(text, nth):
    return _replace_nth(text, r"[{}]", nth, lambda m: "")


def rename_field(text, nth):
    return _replace_nth(text, r"^(\s*)([a-z_]+)(\s*[:{])", nth,
                        lambda m: m.group(1) + m.group(2) + "x" + m.group(3))


def wrong_type(text, nth):
    return _replace_nth(text, r":\s*(\d+(\.\d+)?|true|false)\b", nth, lambda m: ': "abc"')


def unknown_feature_in_group(text, nth):
    return _replace_nth(text, r"group_name:\s*\"[^\"]+\"", nth,
                        lambda m: m.group(0) + ' feature_names: "no_such_feature"')


def duplicate_tower(text, nth):
    match = re.search(r"(\n(\s*)task_towers \{.*?\n\2\})", text, flags=re.S)
    return text if not match else text[:match.end()] + match.group(1) + text[match.end():]


def negative_size(text, nth):
    return _replace_nth(text, r"(hidden_units|num_expert|embedding_dim|batch_size|"
                              r"hash_bucket_size|num_buckets):\s*\[?(\d+)", nth,
                        lambda m: m.group(0).replace(m.group(2), "-" + m.group(2)))


def huge_size(text, nth):
    return _replace_nth(text, r"(hash_bucket_size|num_buckets|embedding_dim):\s*(\d+)", nth,
                        lambda m: m.group(0).replace(m.group(2), "4000000000"))


def truncate(text, nth):
    return text[:len(text) * (nth % 97 + 1) // 100]


MUTATIONS = [drop_brace, rename_field, wrong_type, unknown_feature_in_group, duplicate_tower,
             negative_size, huge_size, truncate]


def check_outcome(path, text):
    """Loading either works or raises one ConfigError whose message names the place."""
    try:
        config_lib.load(path)
    except ConfigError as e:
        message = str(e)
        assert message.startswith(path), message
        assert "Traceback" not in message
        return message
    except MtrecError as e:  # e.g. a vocab file the mutation names
        assert str(e), "an empty error message"
        return str(e)
    return None


# scripts/bench/fault_injection.sh raises the counts for the figures in docs/reliability.md.
@settings(max_examples=int(os.environ.get("MTREC_FUZZ_CONFIGS", 500)), deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(CONFIGS), mutations=st.lists(
    st.tuples(st.sampled_from(MUTATIONS), st.integers(0, 10_000)), min_size=1, max_size=3))
def test_mutated_configs_fail_with_one_located_message(tmp_path, name, mutations):
    text = TEXTS[name]
    for mutate, nth in mutations:
        text = mutate(text, nth)
    path = str(tmp_path / f"m_{name}")
    with open(path, "w") as f:
        f.write(text)
    message = check_outcome(path, text)
    for line in re.findall(re.escape(path) + r":(\d+):", message or ""):
        assert 1 <= int(line) <= text.count("\n") + 1, message


@pytest.mark.parametrize("mutate, expected", [
    # huge_size's third size is an embedding_dim: 4e9 floats per example is more than mtrec
    # builds a model on (a 4e9 hash_bucket_size is "more than this machine's" memory).
    (drop_brace, "mtrec: error:"), (huge_size, "mtrec builds"),
    (duplicate_tower, "is used twice"), (negative_size, "mtrec: error:"),
])
def test_cli_reports_mutations_without_a_traceback(tmp_path, mutate, expected):
    text = mutate(TEXTS["mmoe_on_taobao.config"], 3)
    path = tmp_path / "bad.config"
    path.write_text(text)
    result = subprocess.run([sys.executable, "-m", "mtrec", "check", "--config", str(path)],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 1
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert str(path) in result.stderr
