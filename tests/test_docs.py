"""The generated docs are up to date and the hand-written ones name what exists."""
import os
import re

import pytest

import gen_config_reference as gen
from conftest import ROOT

DOCS = os.path.join(ROOT, "docs")


@pytest.fixture(scope="module")
def schema():
    return gen.Schema(gen.descriptor_set())


def test_config_reference_is_up_to_date(tmp_path):
    out = tmp_path / "config_reference.md"
    assert gen.main(["--out", str(out)]) == 0
    with open(os.path.join(DOCS, "config_reference.md"), encoding="utf-8") as f:
        committed = f.read()
    assert out.read_text(encoding="utf-8") == committed, (
        "docs/config_reference.md is stale: run python scripts/gen_config_reference.py")


def test_every_proto_field_has_a_comment(schema):
    missing = schema.undocumented()
    assert not missing, (f"{len(missing)} proto fields have no comment (add a // line above "
                         "each):\n  " + "\n  ".join(missing))


def _section(text: str, name: str) -> str:
    start = text.index(f"\n## {name}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else len(text)]


def test_reference_rows_match_the_compiled_protos(schema):
    """Every field of every message the compiled *_pb2 modules hold has a row with its
    name, and scalar rows show the default an unset field reads as in Python."""
    from mtrec.protos import pipeline_pb2
    text = gen.render(schema)
    seen = set()

    def walk(descriptor):
        if not descriptor.full_name.startswith(gen.PACKAGE + "."):
            return  # google.protobuf.Struct: protobuf's own, no section
        name = descriptor.full_name[len(gen.PACKAGE) + 1:]
        if name in seen or descriptor.GetOptions().map_entry:
            return
        seen.add(name)
        section = _section(text, name).split("**enum ")[0]  # the field table
        cell = r"((?:[^|\\]|\\.)*)"  # a table cell; "\|" is an escaped pipe
        rows = {m.group(1): m.group(3).replace("\\|", "|") for m in
                re.finditer(rf"^\| `(\w+)` \|{cell}\|{cell}\|", section, re.M)}
        assert set(rows) == {f.name for f in descriptor.fields}, name
        for field in descriptor.fields:
            if field.message_type is not None:
                walk(field.message_type)
            elif not field.is_repeated:
                value = field.default_value
                shown = rows[field.name].strip().strip("`")
                if field.enum_type is not None:
                    assert shown == field.enum_type.values_by_number[value].name, field.name
                elif isinstance(value, bool):
                    assert shown == str(value).lower(), (name, field.name)
                elif isinstance(value, (str, bytes)):
                    raw = value if isinstance(value, str) else value.decode()
                    assert shown == '"' + raw.encode("unicode_escape").decode() + '"', \
                        (name, field.name)
                else:
                    assert float(shown) == pytest.approx(value), (name, field.name, shown)

    walk(pipeline_pb2.PipelineConfig.DESCRIPTOR)
    assert len(seen) > 50  # the walk really went through the tree
    assert text.index("\n## PipelineConfig\n") < text.index("\n## DatasetConfig\n")


def _read(name: str) -> str:
    with open(os.path.join(DOCS, name), encoding="utf-8") as f:
        return f.read()


def test_models_doc_lists_every_model_and_sample_config():
    from mtrec.models.registry import model_classes
    text = _read("models.md")
    missing = [name for name in model_classes() if f"`{name}`" not in text]
    assert not missing, f"docs/models.md lacks model_class {missing} (mtrec/models/registry.py)"
    samples = sorted(os.listdir(os.path.join(ROOT, "samples", "model_config")))
    unlisted = [name for name in samples if f"`{name}`" not in text]
    assert not unlisted, f"docs/models.md names no model for samples/model_config/{unlisted}"
    named = set(re.findall(r"`(\w+\.config)`", text))
    assert named and named <= set(samples), f"no such sample: {sorted(named - set(samples))}"


def test_python_api_doc_has_every_verb_signature():
    """docs/python_api.md shows each verb's signature exactly as mtrec/api.py defines it,
    and every verb is importable from mtrec itself."""
    import inspect
    import mtrec
    from mtrec import api
    text = _read("python_api.md")
    for verb in ("check", "train", "evaluate", "export", "predict"):
        signature = f"mtrec.{verb}{inspect.signature(getattr(api, verb))}"
        assert signature in text, f"docs/python_api.md: update to {signature}"
        assert callable(getattr(mtrec, verb))


def test_docs_link_to_existing_files_and_anchors():
    """Relative links in the docs pages point at files that exist, and #anchors in
    benchmarks.md at an <a id> or a heading there."""
    pages = ["README.md"] + [os.path.join("docs", n) for n in sorted(os.listdir(DOCS))
                             if n.endswith(".md")]
    for page in pages:
        with open(os.path.join(ROOT, page), encoding="utf-8") as f:
            text = f.read()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            full = os.path.normpath(os.path.join(ROOT, os.path.dirname(page), path)) \
                if path else os.path.join(ROOT, page)
            assert os.path.exists(full), f"{page}: link to missing {target}"
            if anchor and full.endswith("benchmarks.md"):
                with open(full, encoding="utf-8") as f:
                    assert f'<a id="{anchor}">' in f.read(), f"{page}: no anchor {target}"
