"""Block packages (EasyRec's `backbone.packages`): reusable sub-graphs, expanded into
plain blocks before the plan (mtrec.backbone.plan), without TensorFlow.

A block input `{ package_name: P package_input: X }` calls package P: its blocks run on X
(a block's output, or another package called without input), each block of P reading
`use_package_input` gets X. Every call is a fresh copy of P's blocks, named
`P.<call>.<block>` (calls numbered from 1 in config order), so random layers (SeqAugment,
dropout) draw anew per call, as EasyRec runs the package again; the copies share their
layers, named `P.<block>` (the same weights for every call, as EasyRec's reuse). The call's
value is P's concat_blocks merged (a tensor), its output_blocks as a list, or, with
neither, its blocks no other block of P reads, merged. Inside P, `block_name` names P's
own blocks or the backbone's blocks.
"""
from mtrec.protos import backbone_pb2

_MAX_DEPTH = 8  # nested package calls


class _Expander:
    def __init__(self, backbone, error):
        self.packages = {}
        self.error = error  # (message, k, field, value)
        for package in backbone.packages:
            if not package.name:
                error("a backbone package has no name.", None, "packages", None)
            elif package.name in self.packages:
                error(f"package name {package.name!r} is used twice.", None, "packages", None)
            elif not package.blocks:
                error(f"backbone package {package.name!r} has no blocks.", None, "packages",
                      None)
            else:
                self.packages[package.name] = package
        self.top = {b.name for b in backbone.blocks}
        for name in self.packages:
            if name in self.top:
                error(f"package {name!r} has the name of a block; rename one of them.", None,
                      "packages", None)
        self.calls = {}      # package -> calls so far
        self.blocks = []     # the copies, in order
        self.shared = {}     # copy name -> shared layer name
        self.taken = set(self.top)

    def call(self, package_name, given, k, depth=0) -> str | None:
        """Expand one call of a package; given: the block name of its input (None: none).
        -> the block holding the call's value, or None after an error."""
        package = self.packages.get(package_name)
        if package is None:
            known = ", ".join(self.packages) or "none"
            self.error(f"package {package_name!r} does not exist; packages: {known}.", k,
                       "package_name", package_name)
            return None
        if depth > _MAX_DEPTH:
            self.error(f"package {package_name!r} calls packages more than {_MAX_DEPTH} deep "
                       "(a package calling itself?).", k, "package_name", package_name)
            return None
        n = self.calls[package_name] = self.calls.get(package_name, 0) + 1
        prefix = f"{package_name}.{n}"
        own = {b.name for b in package.blocks}
        copies = []
        for block in package.blocks:
            copy = backbone_pb2.Block()
            copy.CopyFrom(block)
            copy.name = f"{prefix}.{block.name}"
            if copy.name in self.taken:
                self.error(f"package {package_name!r}: its call's block name {copy.name!r} is "
                           "already a block's name; rename that block.", k, "package_name",
                           package_name)
                return None
            self.taken.add(copy.name)
            self.shared[copy.name] = f"{package_name}.{block.name}"
            for inp in copy.inputs:
                kind = inp.WhichOneof("name")
                if kind == "use_package_input":
                    if given is None:
                        self.error(f"package {package_name!r}: block {block.name!r} reads "
                                   "use_package_input but the call gives no package_input.", k,
                                   "package_name", package_name)
                        return None
                    inp.block_name = given
                elif kind in ("block_name", "feature_group_name") and \
                        getattr(inp, kind) in own:
                    inp.block_name = f"{prefix}.{getattr(inp, kind)}"
                elif kind == "package_name":
                    inner = self.resolve(inp, own, prefix, k, depth + 1)
                    if inner is None:
                        return None
                    inp.block_name = inner
            copies.append(copy)
        self.blocks.extend(copies)
        return self.output(package, prefix, own)

    def resolve(self, inp, own, prefix, k, depth) -> str | None:
        """A `package_name` input -> the block holding that call's value."""
        given = None
        if inp.HasField("package_input"):
            source = inp.package_input
            if source in own:
                given = f"{prefix}.{source}" if prefix else source
            elif source in self.top:
                given = source
            elif source in self.packages:
                given = self.call(source, None, k, depth)
                if given is None:
                    return None
            else:
                self.error(f"package_input {source!r} names neither a block nor a package.",
                           k, "package_name", inp.package_name)
            inp.ClearField("package_input")
            if given is None:
                return None
        return self.call(inp.package_name, given, k, depth)

    def output(self, package, prefix, own) -> str:
        names = list(package.output_blocks or package.concat_blocks)
        if not names:
            read = {getattr(i, i.WhichOneof("name")) for b in package.blocks for i in b.inputs
                    if i.WhichOneof("name") in ("block_name", "feature_group_name")}
            names = [b.name for b in package.blocks if b.name not in read]
        if len(names) == 1 and not package.output_blocks and names[0] in own:
            return f"{prefix}.{names[0]}"
        out = backbone_pb2.Block(name=prefix,
                                 merge_inputs_into_list=bool(package.output_blocks))
        for name in names:
            out.inputs.add(block_name=f"{prefix}.{name}" if name in own else name)
        self.taken.add(prefix)
        self.blocks.append(out)
        return prefix


def expand(backbone, error):
    """(a BackboneTower without packages, {copy block name: shared layer name}).
    error(message, k, field, value) reports a problem (k: the calling block's index)."""
    if not backbone.packages:
        return backbone, {}
    expander = _Expander(backbone, error)
    out = backbone_pb2.BackboneTower()
    out.CopyFrom(backbone)
    out.ClearField("packages")
    for k, block in enumerate(out.blocks):
        for inp in block.inputs:
            if inp.WhichOneof("name") == "package_name":
                value = expander.resolve(inp, set(), "", k, 0)
                if value is not None:
                    inp.block_name = value
    out.blocks.extend(expander.blocks)
    return out, expander.shared
