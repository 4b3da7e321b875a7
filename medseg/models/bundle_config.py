"""Reading a MONAI bundle config as data: references, a tiny expression subset, nothing executed.

A bundle config (``configs/inference.json|yaml``) is a program for ``monai.bundle.ConfigParser``:
``"$..."`` strings are Python passed to ``eval`` and ``"_target_"`` names any importable callable.
In safe mode medseg never hands it to that parser. :class:`SafeConfig` reads the parsed JSON/YAML
as plain data and resolves, on demand and only for the entries medseg needs:

* ``"@id"`` / ``"@a#b#0"``: a reference, replaced by the (resolved) entry it names;
* ``"$..."`` expressions made only of literals, references, ``x if c else y``, ``and``/``or``/``not``,
  comparisons, ``+ - * / // %`` on numbers (``+`` also joins strings and lists), indexing, and
  the pure built-ins ``len min max int float abs round tuple list bool str``. This covers the
  patterns real bundles use for data, e.g. ``"$@bundle_root + '/models/model.pt'"``,
  ``"$[1.5, 1.5, 1.5] if @displayable_configs#highres else [3.0, 3.0, 3.0]"`` (wholeBody) and
  ``"$len(@spatial_size)"`` (pediatric). Attribute access, other calls, lambdas, imports and
  comprehensions are code: evaluating one raises :class:`ModelError` naming the key and
  suggesting ``--trust-bundle``;
* dtype names written as ``"$torch.float32"`` / ``"$numpy.float32"`` (a fixed table, no lookup).

Entries medseg does not need (``datalist``, ``device``, ``evaluator``...) are never looked at.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from medseg.errors import ModelError, option

__all__ = ["TRUST_HINT", "DType", "SafeConfig", "split_id"]

TRUST_HINT = f"re-run with {option('trust_bundle', True)} only if you trust this bundle's code"

#: Pure built-ins a data expression may call (on already-evaluated literal arguments).
_PURE_CALLS = {"len": len, "min": min, "max": max, "int": int, "float": float, "abs": abs, "round": round,
               "tuple": tuple, "list": list, "bool": bool, "str": str}
_MAX_EXPRESSION = 500
_MAX_SIZE = 100_000
_REF = re.compile(r"@([A-Za-z0-9_]+(?:(?:#|::)[A-Za-z0-9_]+)*)")


class DType(str):
    """A dtype named by a ``$torch.float32``-style expression (kept as its name, e.g. ``"float32"``)."""


_DTYPES = {f"{mod}.{name}": DType(canon) for mod in ("torch", "numpy", "np")
           for name, canon in (("float32", "float32"), ("float", "float32"), ("float16", "float16"),
                               ("half", "float16"), ("bfloat16", "bfloat16"), ("float64", "float64"),
                               ("uint8", "uint8"), ("int8", "int8"), ("int16", "int16"), ("int32", "int32"),
                               ("int64", "int64"), ("bool", "bool"))}


def split_id(config_id: str) -> list[str]:
    return [part for part in re.split(r"#|::", config_id) if part != ""]


class SafeConfig:
    """Resolve entries of a parsed bundle config without executing anything.

    Parameters
    ----------
    config : dict
        ``json.load`` / ``yaml.safe_load`` output.
    where : path
        The config file (named in errors).
    overrides : dict, optional
        Entries replaced before anything is read, e.g. ``{"bundle_root": "/path/to/bundle"}``
        (what ``monai.bundle run --bundle_root`` does).
    """

    def __init__(self, config: dict, where: str | Path, overrides: dict[str, Any] | None = None) -> None:
        if not isinstance(config, dict):
            raise ModelError(where, "is not a config (expected a mapping at the top)", "check the file")
        self.config = config
        self.where = str(where)
        self.overrides = dict(overrides or {})

    # --- navigation ------------------------------------------------------------------------------
    def has(self, config_id: str) -> bool:
        try:
            self.raw(config_id)
        except ModelError:
            return False
        return True

    def raw(self, config_id: str) -> Any:
        """The entry as written (unresolved)."""
        node: Any = self.config
        for part in split_id(config_id):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise ModelError(f"{self.where}#{config_id}", "is not defined in the config",
                                 "the bundle config is incomplete or for another MONAI version")
        return node

    def value(self, config_id: str, _stack: tuple[str, ...] = ()) -> Any:
        """The entry with references and safe expressions resolved to plain data."""
        key = "#".join(split_id(config_id))
        if key in self.overrides:
            return self.overrides[key]
        if key in _stack:
            raise ModelError(f"{self.where}#{key}", f"refers to itself ({' -> '.join(_stack + (key,))})",
                             "fix the bundle config")
        return self._resolve(self.raw(key), key, _stack + (key,))

    def _resolve(self, node: Any, key: str, stack: tuple[str, ...]) -> Any:
        if isinstance(node, str):
            if node.startswith("@"):
                return self.value(node[1:], stack)
            if node.startswith("$"):
                return self._expression(node[1:].strip(), key, stack)
            if node.startswith("%"):
                raise ModelError(f"{self.where}#{key}", f"uses a macro ({node!r}) that reads another config",
                                 TRUST_HINT)
            return node
        if isinstance(node, dict):
            if "_target_" in node:
                raise ModelError(f"{self.where}#{key}", f"is a component ({node['_target_']!r}) where medseg "
                                 "needs plain data", TRUST_HINT)
            return {k: self._resolve(v, f"{key}#{k}", stack) for k, v in node.items()}
        if isinstance(node, list):
            return [self._resolve(v, f"{key}#{i}", stack) for i, v in enumerate(node)]
        return node

    # --- the expression subset ---------------------------------------------------------------------
    def _expression(self, text: str, key: str, stack: tuple[str, ...]) -> Any:
        where = f"{self.where}#{key}"
        if text in _DTYPES:
            return _DTYPES[text]
        if len(text) > _MAX_EXPRESSION:
            raise ModelError(where, f"holds a {len(text)}-character Python expression", TRUST_HINT)
        refs: dict[str, str] = {}

        def placeholder(match: re.Match) -> str:
            name = f"__ref{len(refs)}__"
            refs[name] = match.group(1)
            return name

        source = _REF.sub(placeholder, text)
        try:
            tree = ast.parse(source, mode="eval")
        except SyntaxError:
            raise ModelError(where, f"holds Python that is not a plain expression (${text[:80]})", TRUST_HINT) from None
        return _Evaluator(self, refs, where, stack, text).eval(tree.body)


class _Evaluator:
    def __init__(self, config: SafeConfig, refs: dict[str, str], where: str, stack, text: str) -> None:
        self.config, self.refs, self.where, self.stack, self.text = config, refs, where, stack, text

    def refuse(self, what: str) -> ModelError:
        return ModelError(self.where, f"needs Python code to evaluate (${self.text[:80]}: {what} is not "
                          "allowed in safe mode)", TRUST_HINT)

    def eval(self, node: ast.AST) -> Any:
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            raise self.refuse(_describe(node))
        return method(node)

    def _Constant(self, node: ast.Constant) -> Any:
        return node.value

    def _List(self, node: ast.List) -> list:
        return [self.eval(e) for e in node.elts]

    def _Tuple(self, node: ast.Tuple) -> tuple:
        return tuple(self.eval(e) for e in node.elts)

    def _Dict(self, node: ast.Dict) -> dict:
        if any(k is None for k in node.keys):
            raise self.refuse("dict unpacking")
        return {self.eval(k): self.eval(v) for k, v in zip(node.keys, node.values)}

    def _Name(self, node: ast.Name) -> Any:
        if node.id in self.refs:
            return self.config.value(self.refs[node.id], self.stack)
        raise self.refuse(f"the name {node.id!r}")

    def _IfExp(self, node: ast.IfExp) -> Any:
        return self.eval(node.body) if self.eval(node.test) else self.eval(node.orelse)

    def _BoolOp(self, node: ast.BoolOp) -> Any:
        result = None
        for value in node.values:
            result = self.eval(value)
            if isinstance(node.op, ast.And) and not result or isinstance(node.op, ast.Or) and result:
                return result
        return result

    def _UnaryOp(self, node: ast.UnaryOp) -> Any:
        value = self.eval(node.operand)
        if isinstance(node.op, ast.Not):
            return not value
        if isinstance(node.op, (ast.USub, ast.UAdd)) and _is_number(value):
            return -value if isinstance(node.op, ast.USub) else +value
        raise self.refuse(f"the operator {type(node.op).__name__}")

    def _Compare(self, node: ast.Compare) -> bool:
        ops = {ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b, ast.Lt: lambda a, b: a < b,
               ast.LtE: lambda a, b: a <= b, ast.Gt: lambda a, b: a > b, ast.GtE: lambda a, b: a >= b,
               ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b}
        left = self.eval(node.left)
        for op, comparator in zip(node.ops, node.comparators):
            if type(op) not in ops:
                raise self.refuse(f"the comparison {type(op).__name__}")
            right = self.eval(comparator)
            if not _is_plain(left) or not _is_plain(right):
                raise self.refuse("a comparison of non-data values")
            if not ops[type(op)](left, right):
                return False
            left = right
        return True

    def _BinOp(self, node: ast.BinOp) -> Any:
        a, b = self.eval(node.left), self.eval(node.right)
        op = type(node.op)
        if _is_number(a) and _is_number(b):
            if op is ast.Add:
                return a + b
            if op is ast.Sub:
                return a - b
            if op is ast.Mult:
                return a * b
            if op in (ast.Div, ast.FloorDiv, ast.Mod):
                if b == 0:
                    raise self.refuse("a division by zero")
                return a / b if op is ast.Div else a // b if op is ast.FloorDiv else a % b
        if op is ast.Add and type(a) is type(b) and isinstance(a, (str, list, tuple)):
            if len(a) + len(b) > _MAX_SIZE:
                raise self.refuse("a result this large")
            return a + b
        raise self.refuse(f"{type(node.op).__name__} of {type(a).__name__} and {type(b).__name__}")

    def _Subscript(self, node: ast.Subscript) -> Any:
        value, index = self.eval(node.value), self.eval(node.slice)
        if isinstance(value, (list, tuple, str, dict)) and isinstance(index, (int, str)) \
                and not isinstance(index, bool):
            try:
                return value[index]
            except (IndexError, KeyError, TypeError):
                raise self.refuse(f"the index {index!r}") from None
        raise self.refuse("this kind of indexing")

    def _Call(self, node: ast.Call) -> Any:
        if not isinstance(node.func, ast.Name) or node.func.id not in _PURE_CALLS:
            raise self.refuse(f"a call of {_describe(node.func)}")
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise self.refuse("keyword or * arguments")
        args = [self.eval(a) for a in node.args]
        if not all(_is_plain(a) for a in args):
            raise self.refuse("a call on non-data values")
        try:
            return _PURE_CALLS[node.func.id](*args)
        except (TypeError, ValueError) as exc:
            raise self.refuse(f"{node.func.id}() failing ({exc})") from None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float))  # bool is an int, as in Python


def _is_plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(_is_plain(k) and _is_plain(v) for k, v in value.items())
    return False


def _describe(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"attribute access ({ast.unparse(node)[:60]})"
    if isinstance(node, ast.Name):
        return f"the name {node.id!r}"
    if isinstance(node, ast.Lambda):
        return "a lambda"
    if isinstance(node, (ast.ListComp, ast.DictComp, ast.SetComp, ast.GeneratorExp)):
        return "a comprehension"
    return f"a {type(node).__name__} expression"
