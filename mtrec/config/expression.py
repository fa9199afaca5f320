"""The grammar of an ExprFeature's `expression` and of a RawFeature's `normalizer_fn`:
checked here without TensorFlow; mtrec.features.feature builds their TF ops.

An expression is parsed by Python's `ast` and only this whitelist of nodes is accepted,
so nothing in a config is ever evaluated as code:
  numbers; names of the feature's input_names; ( ); unary + -;
  + - * / (arithmetic on float64); > >= < <= == != (1.0 where true, else 0.0; chains
  like `1 < a < 5` mean both); & | (1.0 where both / either operand is non-zero).
Python's precedence applies: comparisons bind loosest, so write `(a > b) & (c > 1)`.
"""
import ast

BINARY = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.BitAnd: "&",
          ast.BitOr: "|"}
COMPARE = {ast.Gt: ">", ast.GtE: ">=", ast.Lt: "<", ast.LtE: "<=", ast.Eq: "==",
           ast.NotEq: "!="}
UNARY = {ast.USub: "-", ast.UAdd: "+"}

# normalizer_fn names -> the tf.math function each stands for (EasyRec loads any Python
# path here; mtrec accepts these element-wise formulas only).
NORMALIZERS = {}
for _op in ("log1p", "log", "sqrt", "abs", "sigmoid", "tanh", "square", "exp"):
    NORMALIZERS[f"tf.math.{_op}"] = _op
    NORMALIZERS[f"tf.{_op}"] = _op
for _op in ("sigmoid", "tanh"):
    NORMALIZERS[f"tf.nn.{_op}"] = _op


def parse_expression(text: str, names) -> ast.expr:
    """The checked syntax tree of an expression over `names`; ValueError naming the first
    thing that is not in the grammar."""
    if not text.strip():
        raise ValueError("the expression is empty")
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as e:
        raise ValueError(f"the expression {text!r} does not parse ({e.msg})") from None
    except (RecursionError, MemoryError):
        raise ValueError("the expression is nested too deeply to parse") from None
    names = set(names)

    def check(node):
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                raise ValueError(f"{node.value!r} is not a number")
        elif isinstance(node, ast.Name):
            if node.id not in names:
                raise ValueError(f"{node.id!r} is not one of the feature's input_names "
                                 f"({', '.join(sorted(names))})")
        elif isinstance(node, ast.BinOp) and type(node.op) in BINARY:
            check(node.left)
            check(node.right)
        elif isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
            check(node.operand)
        elif isinstance(node, ast.Compare) and all(type(op) in COMPARE for op in node.ops):
            check(node.left)
            for part in node.comparators:
                check(part)
        else:
            shown = ast.get_source_segment(text.strip(), node) or type(node).__name__
            raise ValueError(f"{shown!r} is not allowed (only numbers, input names, "
                             "+ - * /, comparisons, & | and parentheses)")

    try:
        check(tree)
    except RecursionError:
        raise ValueError("the expression is nested too deeply to check") from None
    return tree
