"""Write docs/config_reference.md from the comments in protos/mtrec/protos/*.proto.

protoc (grpc_tools) compiles the .proto files with --include_source_info into a
FileDescriptorSet; the comments come from its SourceCodeInfo, the types and defaults from
the descriptors. One section per message, reached from PipelineConfig in field order
(messages nothing reaches follow, by name), each field with its type, default and comment,
and the values of the enums the message declares. The output depends only on the .proto
files, so two runs give the same bytes.

    python scripts/gen_config_reference.py [--out docs/config_reference.md]
"""
import argparse
import glob
import importlib.util
import os
import subprocess
import sys
import tempfile

from google.protobuf import descriptor_pb2

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PROTO_DIR = os.path.join(ROOT, "protos")
DEFAULT_OUT = os.path.join(ROOT, "docs", "config_reference.md")
PACKAGE = "mtrec.protos"
ROOT_MESSAGE = "PipelineConfig"

# FileDescriptorProto / DescriptorProto field numbers that make SourceCodeInfo paths.
_FILE_MESSAGE, _FILE_ENUM = 4, 5
_MESSAGE_FIELD, _MESSAGE_NESTED, _MESSAGE_ENUM, _MESSAGE_ONEOF = 2, 3, 4, 8
_ENUM_VALUE = 2

_F = descriptor_pb2.FieldDescriptorProto
_SCALAR_NAMES = {
    _F.TYPE_DOUBLE: "double", _F.TYPE_FLOAT: "float", _F.TYPE_INT64: "int64",
    _F.TYPE_UINT64: "uint64", _F.TYPE_INT32: "int32", _F.TYPE_FIXED64: "fixed64",
    _F.TYPE_FIXED32: "fixed32", _F.TYPE_BOOL: "bool", _F.TYPE_STRING: "string",
    _F.TYPE_BYTES: "bytes", _F.TYPE_UINT32: "uint32", _F.TYPE_SFIXED32: "sfixed32",
    _F.TYPE_SFIXED64: "sfixed64", _F.TYPE_SINT32: "sint32", _F.TYPE_SINT64: "sint64",
}


def descriptor_set(proto_dir: str = PROTO_DIR) -> descriptor_pb2.FileDescriptorSet:
    """The FileDescriptorSet of every mtrec .proto, with comments (protoc's source info).
    protoc runs in a child process: its compiler extension crashes a process that has
    TensorFlow loaded (two copies of protobuf's C++ runtime)."""
    protos = sorted(glob.glob(os.path.join(proto_dir, "mtrec", "protos", "*.proto")))
    if not protos:
        raise SystemExit(f"no .proto files under {proto_dir}/mtrec/protos")
    spec = importlib.util.find_spec("grpc_tools")  # found, not imported
    include = os.path.join(spec.submodule_search_locations[0], "_proto")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "protos.pb")
        result = subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_dir}", f"-I{include}",
             "--include_source_info", f"--descriptor_set_out={out}"] + protos,
            capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"protoc failed:\n{result.stderr}")
        with open(out, "rb") as f:
            return descriptor_pb2.FileDescriptorSet.FromString(f.read())


def _comment(location) -> str:
    text = location.leading_comments or location.trailing_comments
    return " ".join(line.strip() for line in text.strip().splitlines() if line.strip())


class Schema:
    """Messages and enums by short name ("DatasetConfig.Field"), each with its comments."""

    def __init__(self, files: descriptor_pb2.FileDescriptorSet):
        self.messages = {}   # name -> (DescriptorProto, path, comments by path, file name)
        self.enums = {}      # name -> (EnumDescriptorProto, path, comments by path)
        for file in files.file:
            if file.package != PACKAGE:
                continue
            comments = {tuple(loc.path): _comment(loc)
                        for loc in file.source_code_info.location}
            for i, message in enumerate(file.message_type):
                self._add_message(message, message.name, (_FILE_MESSAGE, i), comments, file.name)
            for i, enum in enumerate(file.enum_type):
                self.enums[enum.name] = (enum, (_FILE_ENUM, i), comments)

    def _add_message(self, message, name, path, comments, file_name):
        self.messages[name] = (message, path, comments, file_name)
        for i, nested in enumerate(message.nested_type):
            if not nested.options.map_entry:
                self._add_message(nested, f"{name}.{nested.name}",
                                  path + (_MESSAGE_NESTED, i), comments, file_name)
        for i, enum in enumerate(message.enum_type):
            self.enums[f"{name}.{enum.name}"] = (enum, path + (_MESSAGE_ENUM, i), comments)

    def order(self) -> list[str]:
        """Messages in reading order: depth-first from PipelineConfig through its fields,
        each the first time it is reached; then the unreached ones, by name."""
        seen, ordered = set(), []

        def visit(name):
            if name in seen or name not in self.messages:
                return
            seen.add(name)
            ordered.append(name)
            for field in self.messages[name][0].field:
                if field.type in (_F.TYPE_MESSAGE, _F.TYPE_GROUP):
                    visit(_short(field.type_name))

        visit(ROOT_MESSAGE)
        return ordered + sorted(set(self.messages) - seen)

    def undocumented(self) -> list[str]:
        """Fields without a comment, as "file: Message.field"."""
        missing = []
        for name, (message, path, comments, file_name) in sorted(self.messages.items()):
            for i, field in enumerate(message.field):
                if not comments.get(path + (_MESSAGE_FIELD, i)):
                    missing.append(f"{file_name}: {name}.{field.name}")
        return missing


def _short(type_name: str) -> str:
    return type_name[len(PACKAGE) + 2:] if type_name.startswith(f".{PACKAGE}.") else type_name


def _anchor(name: str) -> str:
    return name.lower().replace(".", "")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _type(field) -> str:
    if field.type in (_F.TYPE_MESSAGE, _F.TYPE_GROUP, _F.TYPE_ENUM):
        name = _short(field.type_name)
        # A type from another package (google.protobuf.Struct) has no section here.
        text = name.lstrip(".") if name.startswith(".") else f"[{name}](#{_anchor(name)})"
    else:
        text = _SCALAR_NAMES[field.type]
    return f"repeated {text}" if field.label == _F.LABEL_REPEATED else text


def _default(field, schema: Schema) -> str:
    """The value an unset field reads as: its [default = ...], else protobuf's zero."""
    if field.label == _F.LABEL_REPEATED or field.type in (_F.TYPE_MESSAGE, _F.TYPE_GROUP):
        return ""
    if field.HasField("default_value"):
        value = field.default_value
    elif field.type == _F.TYPE_ENUM:
        enum = schema.enums.get(_short(field.type_name))
        value = enum[0].value[0].name if enum else ""
    elif field.type in (_F.TYPE_STRING, _F.TYPE_BYTES):
        value = ""
    elif field.type == _F.TYPE_BOOL:
        value = "false"
    else:
        value = "0"
    if field.type in (_F.TYPE_STRING, _F.TYPE_BYTES):
        value = '"' + value.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'
    return _cell(f"`{value}`")


def _enum_lines(name: str, schema: Schema) -> list[str]:
    enum, path, comments = schema.enums[name]
    lines = [f"<a id=\"{_anchor(name)}\"></a>**enum {name}**"]
    comment = comments.get(path)
    if comment:
        lines += ["", comment]
    lines += ["", "| value | number | description |", "|---|---|---|"]
    for i, value in enumerate(enum.value):
        text = comments.get(path + (_ENUM_VALUE, i), "")
        lines.append(f"| `{value.name}` | {value.number} | {_cell(text)} |")
    return lines + [""]


def _message_lines(name: str, schema: Schema) -> list[str]:
    message, path, comments, file_name = schema.messages[name]
    lines = [f"## {name}", "", f"*{file_name}*"]
    if comments.get(path):
        lines += ["", comments[path]]
    lines.append("")
    if message.field:
        lines += ["| field | type | default | description |", "|---|---|---|---|"]
        for i, field in enumerate(message.field):
            text = comments.get(path + (_MESSAGE_FIELD, i), "")
            if field.HasField("oneof_index") and not field.proto3_optional:
                oneof = message.oneof_decl[field.oneof_index].name
                text = f"(one of `{oneof}`) {text}"
            lines.append(f"| `{field.name}` | {_type(field)} | {_default(field, schema)} | "
                         f"{_cell(text)} |")
        lines.append("")
    else:
        lines += ["(no fields)", ""]
    for i, enum in enumerate(message.enum_type):
        lines += _enum_lines(f"{name}.{enum.name}", schema)
    return lines


def render(schema: Schema) -> str:
    order = schema.order()
    nested_enums = {e for m in schema.messages for e in schema.enums if e.startswith(m + ".")}
    top_enums = sorted(set(schema.enums) - nested_enums)
    lines = [
        "# Config reference",
        "",
        "Generated from the comments in `protos/mtrec/protos/*.proto` by "
        "`scripts/gen_config_reference.py`; do not edit by hand (regenerate with "
        "`python scripts/gen_config_reference.py`). A config is a `PipelineConfig` in "
        "protobuf text format. Sections start at `PipelineConfig` and follow its fields. "
        "*default* is the value an unset field reads as; some empty ones are filled from "
        "other fields before training (their description says how).",
        "",
        "Messages: " + ", ".join(f"[{n}](#{_anchor(n)})" for n in order) + ".",
        "",
    ]
    for name in order:
        lines += _message_lines(name, schema)
    if top_enums:
        lines += ["## Enums declared at file level", ""]
        for name in top_enums:
            lines += _enum_lines(name, schema)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--protos", default=PROTO_DIR, help="directory holding mtrec/protos/")
    args = parser.parse_args(argv)
    schema = Schema(descriptor_set(args.protos))
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(render(schema))
    missing = schema.undocumented()
    print(f"wrote {args.out}: {len(schema.messages)} messages, {len(schema.enums)} enums"
          + (f"; {len(missing)} fields without a comment" if missing else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
