"""The Python lambdas EasyRec configs put in a backbone (inputs.input_fn, extra_input_fn,
`lambda { expression }`, repeat.input_fn / input_slice), read without evaluating them.

A function is parsed by Python's `ast` and only this whitelist is accepted:
  lambda x: BODY         (lambda x, i: BODY in a repeat block; i is the copy's index)
  BODY :=  x
        |  BODY[k] | BODY[a:b]        pick from a list; k, a, b integers or i
        |  [BODY, ...]                a list
        |  tf.add_n(BODY)             element-wise sum of a list of tensors
        |  tf.stack(BODY, axis=k)     stack a list of tensors along a new axis
        |  tf.concat(BODY, axis=k)    concatenate a list of tensors
        |  tf.reduce_sum / reduce_mean / reduce_max(BODY, axis=k, keepdims=bool)
  (tf.math.* spellings too; axes count the batch axis, which cannot be reduced or split).
Anything else is a ValueError naming the part that is not allowed. apply() runs a
function with an `ops` object: SpecOps here (shapes, for config validation) or the
backbone layer's tensor ops, so validation and the model follow the same tree.
"""
import ast
import dataclasses

from mtrec.backbone.specs import Tensor, concat_specs, describe, is_list, short

# Call name -> (operation, whether it takes axis, whether it takes keepdims).
CALLS = {}
for _prefix in ("tf.", "tf.math."):
    CALLS[_prefix + "add_n"] = ("add_n", False, False)
    for _op in ("reduce_sum", "reduce_mean", "reduce_max"):
        CALLS[_prefix + _op] = (_op, True, True)
CALLS["tf.stack"] = ("stack", True, False)
CALLS["tf.concat"] = ("concat", True, False)

ALLOWED = ("x, x[k], x[a:b], [..], tf.add_n, tf.stack, tf.concat, tf.reduce_sum/mean/max "
           "(see docs/backbone.md)")


@dataclasses.dataclass(frozen=True)
class Function:
    """A parsed lambda: apply(value, ops, index) runs it."""
    text: str
    body: ast.expr
    with_index: bool

    def apply(self, value, ops, index: int = 0):
        """The function of value (and index); a bare name in the checked body is x, and a
        name in an index or a slice is i."""
        return _eval(self.body, value, index, ops)


def parse_function(text: str, with_index: bool = False) -> Function:
    """The checked lambda of a config string; ValueError naming the first part outside the
    grammar. with_index: the lambda takes (x, i) (a repeat block's input_fn)."""
    source = text.strip()
    try:
        tree = ast.parse(source, mode="eval").body
    except SyntaxError as e:
        raise ValueError(f"{text!r} does not parse as Python ({e.msg})") from None
    except (RecursionError, MemoryError):
        raise ValueError(f"{text!r} is nested too deeply") from None
    params = ("x", "i") if with_index else ("x",)
    if not isinstance(tree, ast.Lambda):
        raise ValueError(f"{text!r} is not a lambda; write `lambda {', '.join(params)}: ...`")
    args = tree.args
    names = tuple(a.arg for a in args.args)
    if (len(names) != len(params) or args.posonlyargs or args.vararg or args.kwonlyargs
            or args.kwarg or args.defaults):
        raise ValueError(f"{text!r} must take exactly ({', '.join(params)}); "
                         f"write `lambda {', '.join(params)}: ...`")
    rename = dict(zip(names, params))

    def check(node):
        if isinstance(node, ast.Name) and rename.get(node.id) == "x":
            return
        if isinstance(node, ast.Subscript):
            check(node.value)
            key = node.slice
            if isinstance(key, ast.Slice):
                if key.step is not None:
                    raise ValueError(f"{_show(source, key)!r}: slices take no step")
                for part in (key.lower, key.upper):
                    if part is not None:
                        _check_int(part, rename, source)
            else:
                _check_int(key, rename, source)
            return
        if isinstance(node, ast.List):
            if not node.elts:
                raise ValueError("an empty list [] gives nothing to compute on")
            for item in node.elts:
                check(item)
            return
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name not in CALLS:
                raise ValueError(f"{_show(source, node.func)!r} is not allowed; allowed: "
                                 f"{ALLOWED}")
            op, takes_axis, takes_keepdims = CALLS[name]
            if not node.args or len(node.args) > (2 if takes_axis else 1):
                raise ValueError(f"{name} takes the value"
                                 f"{' and an axis' if takes_axis else ''}")
            check(node.args[0])
            if len(node.args) == 2:
                _check_int(node.args[1], {}, source)
            for kw in node.keywords:
                if kw.arg == "axis" and takes_axis:
                    _check_int(kw.value, {}, source)
                elif kw.arg == "keepdims" and takes_keepdims:
                    if not (isinstance(kw.value, ast.Constant) and isinstance(kw.value.value,
                                                                              bool)):
                        raise ValueError(f"{name}: keepdims must be True or False")
                else:
                    raise ValueError(f"{name} does not take {kw.arg or '**'}=")
            if takes_axis and op != "add_n" and _axis_node(node) is None:
                raise ValueError(f"{name} needs an axis (the batch axis 0 cannot be used)")
            return
        raise ValueError(f"{_show(source, node)!r} is not allowed; allowed: {ALLOWED}")

    try:
        check(tree.body)
    except RecursionError:
        raise ValueError(f"{text!r} is nested too deeply") from None
    return Function(text, tree.body, with_index)


def _show(source, node) -> str:
    return ast.get_source_segment(source, node) or type(node).__name__


def _dotted(node) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return head and f"{head}.{node.attr}"
    return None


def _check_int(node, rename, source):
    if isinstance(node, ast.Name) and rename.get(node.id) == "i":
        return
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        node = node.operand
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return
    raise ValueError(f"{_show(source, node)!r} is not an integer"
                     f"{' or i' if 'i' in rename.values() else ''}")


def _int(node, index: int) -> int:
    if isinstance(node, ast.Name):
        return index
    if isinstance(node, ast.UnaryOp):
        return -_int(node.operand, index)
    return node.value


def _axis_node(call):
    if len(call.args) == 2:
        return call.args[1]
    return next((kw.value for kw in call.keywords if kw.arg == "axis"), None)


def _eval(node, x, index, ops):
    if isinstance(node, ast.Name):
        return x
    if isinstance(node, ast.Subscript):
        value = _eval(node.value, x, index, ops)
        key = node.slice
        if isinstance(key, ast.Slice):
            lower = None if key.lower is None else _int(key.lower, index)
            upper = None if key.upper is None else _int(key.upper, index)
            return ops.slice(value, lower, upper)
        return ops.index(value, _int(key, index))
    if isinstance(node, ast.List):
        return [_eval(item, x, index, ops) for item in node.elts]
    op, _, _ = CALLS[_dotted(node.func)]
    value = _eval(node.args[0], x, index, ops)
    if op == "add_n":
        return ops.add_n(value)
    axis = _int(_axis_node(node), index)
    if op in ("stack", "concat"):
        return getattr(ops, op)(value, axis)
    keepdims = next((kw.value.value for kw in node.keywords if kw.arg == "keepdims"), False)
    return ops.reduce(op[len("reduce_"):], value, axis, keepdims)


class SpecOps:
    """The functions' operations on specs (mtrec.backbone.specs): ValueError when a value
    does not fit; None (unknown) stays None."""

    @staticmethod
    def index(value, k):
        if value is None:
            return None
        if not is_list(value):
            raise ValueError(f"[{k}] picks from a list, got {describe(value)}")
        if not -len(value) <= k < len(value):
            raise ValueError(f"[{k}] is out of range for {describe(value)}")
        return value[k]

    @staticmethod
    def slice(value, lower, upper):
        if value is None:
            return None
        if not is_list(value):
            raise ValueError(f"a slice [a:b] picks from a list, got {describe(value)}")
        picked = value[lower:upper]
        if not picked:
            raise ValueError(f"[{'' if lower is None else lower}:"
                             f"{'' if upper is None else upper}] picks nothing from "
                             f"{describe(value)}")
        return picked

    @staticmethod
    def _tensors(value, what):
        if value is None or (is_list(value) and any(v is None for v in value)):
            return None
        if not is_list(value) or any(not isinstance(v, Tensor) for v in value):
            raise ValueError(f"{what} takes a list of tensors, got {describe(value)}")
        return value

    def add_n(self, value):
        items = self._tensors(value, "tf.add_n")
        if items is None:
            return None
        if len({v.shape for v in items}) > 1:
            raise ValueError(f"tf.add_n needs tensors of one shape, got "
                             f"{', '.join(short(v) for v in items)}")
        return items[0]

    def stack(self, value, axis):
        items = self._tensors(value, "tf.stack")
        if items is None:
            return None
        if len({v.shape for v in items}) > 1:
            raise ValueError(f"tf.stack needs tensors of one shape, got "
                             f"{', '.join(short(v) for v in items)}")
        rank = len(items[0].shape) + 1           # with the batch axis
        ax = axis + rank + 1 if axis < 0 else axis
        if not 1 <= ax <= rank:
            raise ValueError(f"tf.stack axis {axis} is out of range (or the batch axis) for "
                             f"{short(items[0])} tensors")
        shape = list(items[0].shape)
        shape.insert(ax - 1, len(items))
        return Tensor(tuple(shape))

    def concat(self, value, axis):
        items = self._tensors(value, "tf.concat")
        if items is None:
            return None
        return concat_specs(items, axis, "tf.concat")

    @staticmethod
    def reduce(kind, value, axis, keepdims):
        if value is None:
            return None
        if not isinstance(value, Tensor):
            raise ValueError(f"tf.reduce_{kind} takes a tensor, got {describe(value)}")
        rank = len(value.shape) + 1
        ax = axis + rank if axis < 0 else axis
        if not 1 <= ax < rank:
            raise ValueError(f"tf.reduce_{kind} axis {axis} is out of range (or the batch "
                             f"axis) for {short(value)} tensors")
        shape = list(value.shape)
        if keepdims:
            shape[ax - 1] = 1
        else:
            del shape[ax - 1]
        if not shape:
            raise ValueError(f"tf.reduce_{kind} would leave only the batch axis; use "
                             "keepdims=True")
        return Tensor(tuple(shape))
