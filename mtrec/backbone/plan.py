"""The backbone plan, without TensorFlow: what a `backbone` config means.

plan() resolves the blocks against the feature groups in named steps: index the blocks,
check their layer names (checkpoint paths), resolve each block (its inputs and its
layers' params), order the blocks topologically (reporting cycles), pick the outputs, and
infer each block's output spec (mtrec.backbone.specs) with the catalogue's shape rules.
Config validation runs plan() to report mistakes with their line before any graph is
built; the Keras layer (mtrec.backbone.layer) runs the same plan() to build exactly what
was validated.
"""
import dataclasses
import re
from typing import Any

from mtrec.backbone import packages
from mtrec.backbone.catalogue import CATALOGUE, layer_params
from mtrec.backbone.functions import Function, SpecOps, parse_function
from mtrec.backbone.shapes import infer_mlp
from mtrec.backbone.specs import Tensor, merge_specs, parse_slice, slice_spec, total

# A block name names the block's weights.
_NAME = re.compile(r"^[\w.-]+$")

# Fields EasyRec has that mtrec does not implement: (message attribute, why).
_INPUT_UNSUPPORTED = {
    "reset_input": "a package call's reset_input is not supported",
    "package_input": "package_input goes with package_name",
    "package_input_fn": "a package call's package_input_fn is not supported",
}
_LAYER_UNSUPPORTED = {
    "raw_input": "raw_input blocks are not supported; use input_layer",
    "embedding_layer": "embedding_layer blocks are not supported; use input_layer",
}


@dataclasses.dataclass
class InputRef:
    """One block input: a block's output or an implicit feature-group tensor."""
    kind: str            # "block" or "group"
    name: str
    slice: str | None
    ignore: bool
    fn: Function | None = None   # input_fn, applied after the slice


@dataclasses.dataclass
class Step:
    """One layer of a block, run on the block's input (then on the previous step's output).
    kind "keras_layer": layer names[0]; "lambda": `function`; "repeat": names[c] is copy c
    (reading repeat_input(x, c)); "recurrent": names[s] is step s. specs: the input spec of
    each named layer, filled by inference."""
    kind: str
    names: list
    keras_layer: Any = None          # the KerasLayer message of the named layers
    params: Any = None               # its params (catalogue.layer_params)
    config: Any = None               # the RepeatLayer / RecurrentLayer message
    function: Function | None = None     # the lambda's expression
    slice_fn: Function | None = None     # repeat input_slice, as lambda x, i: x<slice>
    input_fn: Function | None = None     # repeat input_fn (lambda x, i: ...)
    specs: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class BlockPlan:
    """One block resolved: its inputs, its layers' params, and (after inference) the specs
    its layers receive, which the builders read."""
    name: str
    config: Any                      # the Block message
    inputs: list                     # [InputRef]
    layers: list                     # [(KerasLayer message, params)] of its steps
    steps: list = dataclasses.field(default_factory=list)  # [Step] in order
    extra_fn: Function | None = None  # extra_input_fn, applied to the merged input
    input_spec: Any = None           # the merged input (after extra_input_fn)
    layer_specs: list = dataclasses.field(default_factory=list)  # input spec of each layer


@dataclasses.dataclass
class Plan:
    """The backbone resolved: what config validation reports and the Keras layer builds."""
    blocks: list                     # [BlockPlan] in execution order
    output: Any                      # spec of the backbone output (after top_mlp)
    output_names: list               # concat_blocks / output_blocks (or leaves)
    as_list: bool                    # output_blocks: the output is the list of those blocks
    errors: list                     # [(message, field, value, nth)]
    warnings: list
    # Blocks copied from a package call -> the name of the layers they share
    # (mtrec.backbone.packages).
    shared: dict = dataclasses.field(default_factory=dict)


class _ErrorLog:
    """Collects errors (message, field, value, nth): nth is the occurrence of (field, value)
    among the backbone's blocks, so Source.where finds the line of this block's field
    (blocks appear in the text in config order)."""

    def __init__(self, blocks):
        self.errors, self.warnings = [], []
        self.where: dict = {}  # (block index, field, value) -> nth
        seen: dict = {}
        for k, block in enumerate(blocks):
            def visit(field, value, k=k):
                key = (field, _text(value))
                seen[key] = seen.get(key, 0) + 1
                self.where[(k,) + key] = seen[key]
            _walk_fields(block, visit)

    def error(self, message, k=None, field=None, value=None):
        nth = self.where.get((k, field, _text(value)), 1) if k is not None else 1
        self.errors.append((message, field, value, nth))


def _text(value):
    return None if value is None else str(value)


def _walk_fields(block, visit):
    """Call visit(field, value) for the located fields of a block, in text order."""
    visit("name", block.name)
    for inp in block.inputs:
        which = inp.WhichOneof("name")
        if which in ("feature_group_name", "block_name", "package_name"):
            visit(which, getattr(inp, which))
        elif which:
            visit(which, None)
        for field in ("input_fn", "input_slice", "reset_input", "package_input",
                      "package_input_fn"):
            if inp.HasField(field):
                visit(field, getattr(inp, field)
                      if field in ("input_fn", "input_slice", "package_input_fn") else None)
    if block.HasField("extra_input_fn"):
        visit("extra_input_fn", block.extra_input_fn)
    for layer in list(block.layers) + [block]:
        which = layer.WhichOneof("layer")
        if which == "keras_layer":
            visit("class_name", layer.keras_layer.class_name)
        elif which == "lambda":
            visit("expression", getattr(layer, "lambda").expression)
        elif which in ("repeat", "recurrent"):
            visit(which, None)
            inner = getattr(layer, which)
            for field in ("input_slice", "input_fn"):
                if which == "repeat" and inner.HasField(field):
                    visit(field, getattr(inner, field))
            visit("class_name", inner.keras_layer.class_name)
        elif which:
            visit(which, None)


def plan(backbone, group_widths: dict, sequence_widths: dict | None = None) -> Plan:
    """Resolve a BackboneTower against the feature groups.

    group_widths: {group name: [width of each feature]} of the model's feature groups
    (mtrec.features.width). sequence_widths: what an input_layer with
    output_seq_and_normal_feature gives for each group (sequence_group_widths); None when
    the caller does not know, and then those inputs are not checked. Errors are collected
    (message, field, value, nth) with the field whose line they concern.
    """
    blocks = list(backbone.blocks)
    log = _ErrorLog(blocks)
    backbone, shared = packages.expand(backbone, log.error)  # calls -> copies of blocks
    blocks = list(backbone.blocks)
    if not blocks:
        log.error("backbone has no blocks.", field="backbone")
        return Plan([], None, [], False, log.errors, log.warnings)
    by_name = _index_blocks(blocks, log)
    _check_layer_names(backbone, blocks, by_name, log)
    plans: dict[str, BlockPlan] = {}  # blocks without errors
    edges: dict[str, list] = {}  # block -> blocks it reads
    for k, block in enumerate(blocks):
        if not block.name or by_name.get(block.name) != k:
            continue
        block_plan, ok = _resolve_block(k, block, blocks, by_name, group_widths,
                                        sequence_widths, log)
        if ok:
            plans[block.name] = block_plan
        edges[block.name] = [r.name for r in block_plan.inputs if r.kind == "block"]
    order, cycles = _topological(list(by_name), edges)
    for cycle in cycles:
        log.error(f"blocks form a cycle ({' -> '.join(cycle)}); a backbone must be acyclic.",
                  by_name[cycle[0]], "name", cycle[0])
    names, as_list = _output_names(backbone, by_name, edges, log)
    specs = _infer_blocks(order, plans, by_name, group_widths, sequence_widths, log)
    output = _infer_output(backbone, names, as_list, specs, log)
    if cycles or any(n not in specs for n in names):
        output = None
    ordered = [plans[n] for n in order if n in plans] if not cycles else []
    return Plan(ordered, output, names, as_list, log.errors, log.warnings, shared)


# ---------------------------------------------------------------------------
# Steps of plan(), in order.

def _index_blocks(blocks: list, log: _ErrorLog) -> dict:
    """{block name: index} of the named, unique blocks; errors for the others."""
    by_name = {}
    for k, block in enumerate(blocks):
        name = block.name
        if not name:
            log.error("a backbone block has no name.", k, "name", name)
            continue
        if name in by_name:
            log.error(f"block name {name!r} is used twice; block names must be unique.", k,
                      "name", name)
            continue
        if not _NAME.match(name):
            log.error(f"block name {name!r} may only use letters, digits, '_', '.' and '-' (it "
                      "names the block's weights).", k, "name", name)
        by_name[name] = k
    return by_name


def _check_layer_names(backbone, blocks: list, by_name: dict, log: _ErrorLog) -> None:
    """Layer names: the block name, <block>_l<i> in `layers`, and top_mlp; all distinct, as
    they key the weights in checkpoints."""
    taken = {n: n for n in by_name}
    if backbone.HasField("top_mlp"):
        if "top_mlp" in by_name:
            log.error("block name 'top_mlp' is taken by the backbone's top_mlp; rename the "
                      "block.", by_name["top_mlp"], "name", "top_mlp")
        taken["top_mlp"] = None
    for k, block in enumerate(blocks):
        for sub in [n for names in step_names(block) for n in names]:
            if sub == block.name:
                continue
            if sub in taken:
                log.error(f"block {block.name!r}: one of its layers is named {sub!r}, which "
                          f"is already the name of "
                          f"{'the top_mlp' if taken[sub] is None else 'a block'}; rename the "
                          "block.", k, "name", block.name)
            taken[sub] = block.name


def step_names(block) -> list:
    """[[layer name, ...] per step] of a block: the block's name for its keras_layer,
    <block>_l<i> for layers[i], and <name>_<c> for copy (or step) c of a repeat
    (recurrent) layer; they key the weights in checkpoints."""
    entries = ([(f"{block.name}_l{i}", layer) for i, layer in enumerate(block.layers)]
               if block.layers else [(block.name, block)])
    out = []
    for base, holder in entries:
        which = holder.WhichOneof("layer")
        count = {"repeat": lambda: holder.repeat.num_repeat,
                 "recurrent": lambda: holder.recurrent.num_steps}.get(which)
        out.append([f"{base}_{c}" for c in range(count())] if count else [base])
    return out


def _resolve_block(k, block, blocks, by_name, group_widths, sequence_widths,
                   log) -> tuple[BlockPlan, bool]:
    """(the block's plan, whether it is free of errors)."""
    ok = _check_block(k, block, group_widths, log)
    refs, inputs_ok = _resolve_inputs(k, block, blocks, by_name, group_widths, log)
    ok = inputs_ok and ok
    if block.WhichOneof("layer") == "input_layer":
        if len(block.inputs) != 1 or block.inputs[0].WhichOneof("name") != \
                "feature_group_name":
            log.error(f"input_layer block {block.name!r} takes exactly one input, a "
                      "feature_group_name.", k, "name", block.name)
            ok = False
        ok = _check_input_layer(block, k, log.error) and ok
        if (ok and block.input_layer.output_seq_and_normal_feature
                and sequence_widths is not None):
            group = block.inputs[0].feature_group_name
            found = sequence_widths.get(group)
            if group in group_widths and (found is None or isinstance(found, str)):
                log.error(f"input_layer block {block.name!r}: output_seq_and_normal_feature "
                          f"needs sequences in feature group {group!r}: "
                          f"{found or 'it has no SequenceFeature'}.", k,
                          "feature_group_name", group)
                ok = False
    steps, layers_ok = _resolve_layers(k, block, log)
    # One entry per built layer (every copy of a repeat, every step of a recurrent).
    layers = [(step.keras_layer, step.params) for step in steps if step.keras_layer
              for _ in step.names]
    extra = parse_function(block.extra_input_fn) if block.HasField("extra_input_fn") and \
        ok else None
    return (BlockPlan(block.name, block, refs, layers, steps, extra),
            layers_ok and ok)


def _check_block(k, block, group_widths: dict, log: _ErrorLog) -> bool:
    """What the block is: a supported layer kind, not two, with inputs, not a group's name."""
    name = block.name
    which = block.WhichOneof("layer")
    ok = True
    if which in _LAYER_UNSUPPORTED:
        log.error(f"block {name!r}: `{which}` is not supported: {_LAYER_UNSUPPORTED[which]}.",
                  k, which)
        ok = False
    if block.HasField("extra_input_fn"):
        try:
            parse_function(block.extra_input_fn)
        except ValueError as e:
            log.error(f"block {name!r}: extra_input_fn {e}.", k, "extra_input_fn",
                      block.extra_input_fn)
            ok = False
    if block.layers and which is not None:
        log.error(f"block {name!r} has both `layers` and `{which}`; use one.", k, "name", name)
        ok = False
    if not block.inputs:
        log.error(f"block {name!r} has no inputs; give at least one `inputs {{ "
                  "feature_group_name | block_name }`.", k, "name", name)
        ok = False
    if which != "input_layer" and name in group_widths:
        log.error(f"block {name!r} has the name of a feature group; only an input_layer "
                  "block reading that group may; rename the block.", k, "name", name)
        ok = False
    return ok


def _resolve_inputs(k, block, blocks, by_name, group_widths, log) -> tuple[list, bool]:
    """([InputRef] of the block's inputs that resolve, whether all of them do)."""
    name = block.name
    is_input_layer = block.WhichOneof("layer") == "input_layer"
    groups = ", ".join(group_widths)
    refs, ok = [], True
    for inp in block.inputs:
        kind = inp.WhichOneof("name")
        for field, why in _INPUT_UNSUPPORTED.items():
            if inp.HasField(field):
                log.error(f"block {name!r}: inputs.{field} is not supported: {why}.", k, field)
                ok = False
        if kind in ("package_name", "use_package_input"):
            if kind == "use_package_input":  # (a package call left here failed: reported)
                log.error(f"block {name!r}: inputs.use_package_input is only for the blocks "
                          "of a package.", k, kind)
            ok = False
            continue
        if kind is None:
            log.error(f"block {name!r}: an input names neither feature_group_name nor "
                      "block_name.", k, "name", name)
            ok = False
            continue
        target = getattr(inp, kind)
        slice_text = inp.input_slice if inp.HasField("input_slice") else None
        if slice_text is not None:
            try:
                parse_slice(slice_text)
            except ValueError as e:
                log.error(f"block {name!r}: {e}", k, "input_slice", slice_text)
                ok = False

        fn = None
        if inp.HasField("input_fn"):
            try:
                fn = parse_function(inp.input_fn)
            except ValueError as e:
                log.error(f"block {name!r}: input_fn {e}.", k, "input_fn", inp.input_fn)
                ok = False

        def ref(ref_kind):
            return InputRef(ref_kind, target, slice_text, inp.ignore_input, fn)

        if kind == "feature_group_name":
            owner = by_name.get(target)
            if is_input_layer:
                if target not in group_widths:
                    log.error(f"block {name!r}: feature group {target!r} does not exist; "
                              f"groups: {groups}.", k, kind, target)
                    ok = False
                refs.append(ref("group"))
            elif owner is not None and blocks[owner].WhichOneof("layer") == "input_layer":
                # A feature_group_name that names an input_layer block reads that block.
                refs.append(ref("block"))
            elif target in group_widths:
                refs.append(ref("group"))
            else:
                log.error(f"block {name!r}: feature group {target!r} does not exist; groups: "
                          f"{groups}.", k, kind, target)
                ok = False
        elif target == name:  # block_name
            log.error(f"block {name!r} reads itself; a block cannot be its own input.", k,
                      kind, target)
            ok = False
        elif target not in by_name:
            log.error(f"block {name!r}: input block {target!r} does not exist; blocks: "
                      f"{', '.join(by_name)}.", k, kind, target)
            ok = False
        else:
            refs.append(ref("block"))
    return refs, ok


def _resolve_layers(k, block, log: _ErrorLog) -> tuple[list, bool]:
    """([Step] of the block's layer or `layers`, whether all are supported and their params
    fit)."""
    name = block.name
    holders = list(block.layers) if block.layers else (
        [block] if block.WhichOneof("layer") in ("keras_layer", "lambda", "repeat",
                                                 "recurrent") else [])
    steps, ok = [], True
    for i, (holder, names) in enumerate(zip(holders, step_names(block) if holders else [])):
        where = f"layers[{i}] " if block.layers else ""
        kind = holder.WhichOneof("layer")
        if kind in _LAYER_UNSUPPORTED:
            log.error(f"block {name!r}: {where}`{kind}` is not supported: "
                      f"{_LAYER_UNSUPPORTED[kind]}.", k, kind)
            ok = False
            continue
        if kind is None:
            log.error(f"block {name!r}: {where}is empty; give a keras_layer.", k, "name", name)
            ok = False
            continue
        if kind == "lambda":
            expression = getattr(holder, "lambda").expression
            try:
                steps.append(Step("lambda", [], function=parse_function(expression)))
            except ValueError as e:
                log.error(f"block {name!r}: lambda {e}.", k, "expression", expression)
                ok = False
            continue
        step = Step(kind, names)
        keras_layer = holder.keras_layer
        if kind in ("repeat", "recurrent"):
            step.config = getattr(holder, kind)
            keras_layer = step.config.keras_layer
            count = step.config.num_repeat if kind == "repeat" else step.config.num_steps
            if count < 1:
                log.error(f"block {name!r}: {where}{kind} needs "
                          f"{'num_repeat' if kind == 'repeat' else 'num_steps'} >= 1.", k, kind)
                ok = False
            if not keras_layer.class_name:
                log.error(f"block {name!r}: {where}{kind} needs a keras_layer.", k, kind)
                ok = False
                continue
        if kind == "repeat":
            for field, text in (("input_slice", "lambda x, i: x" + step.config.input_slice),
                                ("input_fn", step.config.input_fn)):
                if not step.config.HasField(field):
                    continue
                try:
                    setattr(step, "slice_fn" if field == "input_slice" else "input_fn",
                            parse_function(text, with_index=True))
                except ValueError as e:
                    log.error(f"block {name!r}: repeat {field} {e}.", k, field,
                              getattr(step.config, field))
                    ok = False
        try:
            step.keras_layer, step.params = keras_layer, layer_params(keras_layer)
        except ValueError as e:
            log.error(f"block {name!r}: {e}", k, "class_name", keras_layer.class_name)
            ok = False
            continue
        steps.append(step)
    return steps, ok


def run_step(step: Step, x, call, ops):
    """A step's output for input x (specs or tensors): call(c, value) runs the step's c-th
    named layer; ops: the functions' operations (functions.SpecOps or tensor ops).
    EasyRec's semantics: a repeat block calls copy c on input_fn(input_slice(x, c), c) and
    gives the list of outputs (one output: itself; output_concat_axis: concatenated); a
    recurrent block feeds each step's output back as its input, keeping the list item at
    fixed_input_index and dropping it at the end."""
    if step.kind == "lambda":
        return step.function.apply(x, ops)
    if step.kind == "keras_layer":
        return call(0, x)
    if step.kind == "repeat":
        outputs = []
        for c in range(len(step.names)):
            value = x
            if step.slice_fn is not None:
                value = step.slice_fn.apply(value, ops, c)
            if step.input_fn is not None:
                value = step.input_fn.apply(value, ops, c)
            outputs.append(call(c, value))
        if len(outputs) == 1:
            return outputs[0]
        if step.config.HasField("output_concat_axis"):
            return ops.concat(outputs, step.config.output_concat_axis)
        return outputs
    fixed = step.config.fixed_input_index if step.config.HasField("fixed_input_index") else -1
    if fixed >= 0:
        if not isinstance(x, (list, tuple)):
            raise ValueError(f"recurrent with fixed_input_index {fixed} takes a list input "
                             "(e.g. input_fn: 'lambda x: [x, x]')")
        if fixed >= len(x):
            raise ValueError(f"recurrent fixed_input_index {fixed} is out of range for a "
                             f"list of {len(x)}")
    value = list(x) if fixed >= 0 else x
    for s in range(len(step.names)):
        out = call(s, value)
        if fixed < 0:
            value = out
            continue
        others = [j for j in range(len(value)) if j != fixed]
        if isinstance(out, (list, tuple)) and len(out) != len(others):
            raise ValueError(f"recurrent: the layer gives {len(out)} outputs for the "
                             f"{len(others)} inputs besides fixed_input_index {fixed}")
        for n, j in enumerate(others):
            value[j] = out[n] if isinstance(out, (list, tuple)) else out
    if fixed < 0:
        return value
    del value[fixed]
    return value[0] if len(value) == 1 else value


def _output_names(backbone, by_name: dict, edges: dict, log: _ErrorLog) -> tuple[list, bool]:
    """(blocks whose outputs form the backbone output, whether it is their list): the
    output_blocks, else the concat_blocks, else every block no other block reads."""
    read = {t for targets in edges.values() for t in targets}
    as_list = bool(backbone.output_blocks)
    if backbone.output_blocks and backbone.concat_blocks:
        log.error("backbone: set concat_blocks or output_blocks, not both.",
                  field="output_blocks")
    names = list(backbone.output_blocks or backbone.concat_blocks)
    field = _output_field(backbone)
    for n in names:
        if n not in by_name:
            log.error(f"backbone.{field}: block {n!r} does not exist; blocks: "
                      f"{', '.join(by_name)}.", field=field, value=n)
    if not names:
        names = [n for n in by_name if n not in read]
    if as_list and backbone.HasField("top_mlp"):
        log.error("backbone: top_mlp applies to the merged concat_blocks output; it cannot be "
                  "combined with output_blocks.", field="top_mlp")
    return names, as_list


def _output_field(backbone) -> str:
    return "output_blocks" if backbone.output_blocks else "concat_blocks"


def _infer_blocks(order: list, plans: dict, by_name: dict, group_widths: dict,
                  sequence_widths, log: _ErrorLog) -> dict:
    """{block: output spec} in topological order; None for a block with an error."""
    specs: dict = {}
    for name in order:
        p = plans.get(name)
        if p is None:
            specs[name] = None
            continue
        k = by_name[name]
        try:
            specs[name] = _block_output(p, specs, group_widths, sequence_widths)
        except _Located as e:
            log.error(f"block {name!r}: {e.message}", k, e.field, e.value)
            specs[name] = None
        except ValueError as e:
            log.error(f"block {name!r}: {e}", k, *_error_field(p))
            specs[name] = None
    return specs


def _infer_output(backbone, names: list, as_list: bool, specs: dict, log: _ErrorLog):
    """Spec of the backbone output: the list of the output blocks, or their merge (then
    top_mlp); None if unknown."""
    if not names or any(n not in specs for n in names):
        return None
    outs = [specs[n] for n in names]
    if as_list:
        return outs
    try:
        output = merge_specs(outs, -1, False, "backbone output")
        if backbone.HasField("top_mlp") and output is not None:
            output = infer_mlp(backbone.top_mlp, output)
        return output
    except ValueError as e:
        log.error(f"backbone output: {e}",
                  field=_output_field(backbone) if backbone.concat_blocks else "backbone")
        return None


# ---------------------------------------------------------------------------
# One block's checks and output spec; the graph order


class _Located(Exception):
    """A block error about a specific field (for its line)."""

    def __init__(self, message, field, value):
        super().__init__(message)
        self.message, self.field, self.value = message, field, value


def _error_field(p: BlockPlan):
    if p.layers:
        return "class_name", p.layers[-1][0].class_name
    return "name", p.name


def _check_input_layer(block, k, error) -> bool:
    c = block.input_layer
    name = block.name
    ok = True
    outputs = [f for f in ("only_output_feature_list", "only_output_3d_tensor",
                           "output_2d_tensor_and_feature_list") if getattr(c, f)]
    if c.output_seq_and_normal_feature:
        others = [f for f in ("do_batch_norm", "do_layer_norm", "dropout_rate",
                              "feature_dropout_rate", "wide_output_dim", *outputs)
                  if getattr(c, f)]
        if others:
            error(f"input_layer block {name!r}: output_seq_and_normal_feature cannot be "
                  f"combined with {', '.join(others)} in mtrec (EasyRec ignores them there); "
                  "remove them.", k, "name", name)
            ok = False
        if not c.concat_seq_feature:
            error(f"input_layer block {name!r}: concat_seq_feature: false (a list of separate "
                  "sequences) is not supported; mtrec concatenates the sequence features.", k,
                  "name", name)
            ok = False
        return ok
    if len(outputs) > 1:
        error(f"input_layer block {name!r}: set at most one of {', '.join(outputs)}.", k, "name",
              name)
        ok = False
    if c.do_batch_norm and c.do_layer_norm:
        error(f"input_layer block {name!r}: do_batch_norm and do_layer_norm are exclusive.", k,
              "name", name)
        ok = False
    for field in ("dropout_rate", "feature_dropout_rate"):
        if not 0 <= getattr(c, field) < 1:
            error(f"input_layer block {name!r}: {field} must be in [0, 1).", k, "name", name)
            ok = False
    if c.wide_output_dim > 1:
        error(f"input_layer block {name!r}: wide_output_dim {c.wide_output_dim} is not "
              "supported; mtrec's WIDE groups give one weight per feature (width 1).", k,
              "name", name)
        ok = False
    return ok


def input_layer_spec(config, widths: list):
    """Output spec of an input_layer over features of these widths."""
    features = [Tensor((w,)) for w in widths]
    if config.only_output_feature_list:
        return features
    if config.only_output_3d_tensor:
        known = {w for w in widths if w is not None}
        if len(known) > 1:
            raise ValueError(f"only_output_3d_tensor needs features of one width, got widths "
                             f"{sorted(known)}.")
        return Tensor((len(widths), known.pop() if known else None))
    tensor = Tensor((total(widths),))
    if config.output_2d_tensor_and_feature_list:
        return [tensor, features]
    return tensor


def sequence_input_spec(widths) -> list:
    """Spec of an input_layer with output_seq_and_normal_feature: [history (batch, len, d),
    mask (batch, len), target (batch, d_t)], without the target when the group has none;
    widths: (d, d_t) from sequence_group_widths, or None (unknown)."""
    hist, target = widths if isinstance(widths, tuple) else (None, None)
    spec = [Tensor((None, hist)), Tensor((None,))]
    return spec + [Tensor((target,))] if target != 0 else spec


def sequence_group_widths(groups: dict, features: dict) -> dict:
    """{group: (history width, target width, 0 for none)} of what an input_layer with
    output_seq_and_normal_feature reads from each group that has sequences, or a string
    saying why a group's sequences cannot be read that way; widths are None where a feature
    is unknown. groups: {name: FeatureGroupConfig}; features: {name: FeatureConfig}.

    As EasyRec: the group's SequenceFeatures concatenated per position are the history
    and its other features concatenated the target. A group without SequenceFeatures in
    feature_names but with one sequence_features entry (SeqAttGroupConfig) gives its
    hist_seq and key features instead.
    """
    from mtrec.features.width import feature_width
    from mtrec.protos import feature_pb2
    sequence = feature_pb2.FeatureConfig.SequenceFeature

    def width(names):
        known = [features.get(n) for n in names]
        return None if None in known else sum(feature_width(f, False) for f in known)

    out = {}
    for name, group in groups.items():
        seq = [n for n in group.feature_names
               if features.get(n) is not None and features[n].feature_type == sequence]
        if seq:
            out[name] = (width(seq), width([n for n in group.feature_names if n not in seq]))
        elif len(group.sequence_features) == 1:
            maps = group.sequence_features[0].seq_att_map
            out[name] = (width([n for m in maps for n in m.hist_seq]),
                         width([n for m in maps for n in m.key]))
        elif group.sequence_features:
            out[name] = (f"it has {len(group.sequence_features)} sequence_features; one "
                         "input_layer reads one sequence, so split them into groups")
    return out


def _block_output(p: BlockPlan, specs: dict, group_widths: dict, sequence_widths=None):
    block = p.config
    if block.WhichOneof("layer") == "input_layer":
        if block.input_layer.output_seq_and_normal_feature:
            return sequence_input_spec((sequence_widths or {}).get(p.inputs[0].name))
        return input_layer_spec(block.input_layer, group_widths[p.inputs[0].name])
    values = []
    for ref in p.inputs:
        spec = (specs.get(ref.name) if ref.kind == "block"
                else Tensor((total(group_widths[ref.name]),)))
        if ref.slice is not None:
            try:
                spec = slice_spec(spec, ref.slice)
            except ValueError as e:
                raise _Located(str(e), "input_slice", ref.slice) from None
        if ref.fn is not None and not ref.ignore:
            spec = _apply(ref.fn, spec, "input_fn")
        if not ref.ignore:
            values.append(spec)
    if not values:
        raise ValueError("every input has ignore_input; the block has nothing to read.")
    x = merge_specs(values, block.input_concat_axis, block.merge_inputs_into_list,
                    "merging the inputs")
    if p.extra_fn is not None:
        x = _apply(p.extra_fn, x, "extra_input_fn")
    p.input_spec = x
    ops = SpecOps()
    for step in p.steps:
        if x is None:
            return None
        entry = CATALOGUE[step.keras_layer.class_name] if step.keras_layer else None

        def call(c, value, step=step, entry=entry):
            step.specs.append(value)
            p.layer_specs.append(value)
            return None if value is None else entry.infer(step.params, value)

        try:
            x = run_step(step, x, call, ops)
        except ValueError as e:
            if step.kind == "lambda":
                raise _Located(f"lambda {step.function.text!r}: {e}.", "expression",
                               step.function.text) from None
            raise
    return x


def _apply(fn: Function, spec, field: str):
    """A function's output spec; _Located at the field's line if it does not fit."""
    try:
        return fn.apply(spec, SpecOps())
    except ValueError as e:
        raise _Located(f"{field} {fn.text!r}: {e}.", field, fn.text) from None


def _topological(names: list, edges: dict) -> tuple[list, list]:
    """(order, cycles): blocks after their inputs (config order among ready blocks), and
    each cycle as [a, b, ..., a] (a reads ... reads a)."""
    order, done = [], set()
    remaining = list(names)
    while remaining:
        ready = [n for n in remaining if all(t in done for t in edges.get(n, []))]
        if not ready:
            break
        for n in ready:
            order.append(n)
            done.add(n)
        remaining = [n for n in remaining if n not in done]
    cycles, reported = [], set()
    for start in remaining:
        path, seen = [start], {start: 0}
        node = start
        while True:  # follow unfinished inputs until a node repeats
            nxt = next((t for t in edges.get(node, []) if t not in done), None)
            if nxt is None:
                break
            if nxt in seen:
                cycle = path[seen[nxt]:] + [nxt]
                key = frozenset(cycle)
                if key not in reported:
                    reported.add(key)
                    cycles.append(cycle)
                break
            seen[nxt] = len(path)
            path.append(nxt)
            node = nxt
    return order, cycles

