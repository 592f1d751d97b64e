"""Read kdbus.h, the single source of truth, into what Python needs.

The header is kept to a small, regular subset of C (see its top comment),
so a few regular expressions and a tiny integer-expression evaluator are
enough; anything outside that subset is an error, not silently skipped.
"""

from __future__ import annotations

import ast
import operator
import re
from importlib import resources

HEADER_NAME = "kdbus.h"

_U64 = (1 << 64) - 1

_TYPE_MAP = {
    "__u64": "uint64_t",
    "__s64": "int64_t",
    "__u32": "uint32_t",
    "__s32": "int32_t",
    "__u16": "uint16_t",
    "__s16": "int16_t",
    "__u8": "uint8_t",
    "__s8": "int8_t",
}

_COMMENT_RE = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
_DEFINE_RE = re.compile(r"^[ \t]*#[ \t]*define[ \t]+(\w+)(\()?[ \t]*(.*)$", re.M)
_PREPROC_RE = re.compile(r"^[ \t]*#.*$", re.M)
_ENUM_RE = re.compile(r"\benum\s+(\w+)\s*\{(.*?)\}\s*;", re.S)
_STRUCT_RE = re.compile(r"\bstruct\s+(\w+)\s*\{")
_ATTR_RE = re.compile(r"__attribute__\s*\(\(")
_IOC_RE = re.compile(r"^(_IOW|_IOR|_IOWR|_IO)\s*\((.*)\)$", re.S)
_NUM_RE = re.compile(r"\b(0[xX][0-9a-fA-F]+|\d+)[uUlL]*\b")

# asm-generic/ioctl.h, as used on x86-64.
_IOC_DIR = {"_IO": 0, "_IOW": 1, "_IOR": 2, "_IOWR": 3}
_IOC_NRSHIFT, _IOC_TYPESHIFT, _IOC_SIZESHIFT, _IOC_DIRSHIFT = 0, 8, 16, 30


def read_header() -> str:
    return resources.files(__package__).joinpath(HEADER_NAME).read_text("ascii")


def strip_comments(text: str) -> str:
    # Keep line structure so that #define lines stay whole.
    return _COMMENT_RE.sub(lambda m: "\n" * m.group().count("\n") or " ", text)


def _join_continuations(text: str) -> str:
    return text.replace("\\\n", " ")


def _strip_attributes(text: str) -> str:
    """Remove every __attribute__((...)), parentheses balanced."""
    out = []
    pos = 0
    for m in _ATTR_RE.finditer(text):
        if m.start() < pos:
            continue
        out.append(text[pos:m.start()])
        depth, i = 2, m.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        pos = i
    out.append(text[pos:])
    return "".join(out)


_BINOPS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.LShift: operator.lshift, ast.RShift: operator.rshift,
    ast.BitOr: operator.or_, ast.BitAnd: operator.and_, ast.BitXor: operator.xor,
}


def _c_int(literal: str) -> int:
    if len(literal) > 1 and literal[0] == "0" and literal[1] not in "xX":
        return int(literal, 8)
    return int(literal, 0)


def _eval(expr: str, names: dict[str, int]) -> int:
    """Evaluate a C integer constant expression (no casts, no sizeof)."""
    expr = _NUM_RE.sub(lambda m: str(_c_int(m.group(1))), expr)
    tree = ast.parse(expr.strip(), mode="eval")

    def ev(node: ast.AST) -> int:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in names:
                raise ValueError(f"unknown name {node.id!r} in {expr!r}")
            return names[node.id]
        if isinstance(node, ast.UnaryOp):
            v = ev(node.operand)
            if isinstance(node.op, ast.Invert):
                return ~v & _U64
            if isinstance(node.op, ast.USub):
                return -v
            if isinstance(node.op, ast.UAdd):
                return v
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](ev(node.left), ev(node.right))
        raise ValueError(f"unsupported construct in constant expression {expr!r}")

    return ev(tree)


def defines(text: str) -> list[tuple[str, str]]:
    """Object-like #defines with a non-empty value, in header order."""
    text = _join_continuations(strip_comments(text))
    return [(m.group(1), m.group(3).strip()) for m in _DEFINE_RE.finditer(text)
            if not m.group(2) and m.group(3).strip()]


def enums(text: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """[(tag, [(enumerator, expression or None), ...]), ...]"""
    text = _PREPROC_RE.sub("", _join_continuations(strip_comments(text)))
    result = []
    for m in _ENUM_RE.finditer(text):
        members = []
        for part in m.group(2).split(","):
            part = part.strip()
            if not part:
                continue
            name, _, value = part.partition("=")
            members.append((name.strip(), value.strip() or None))
        result.append((m.group(1), members))
    return result


def _enum_block(members, values: dict[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    nxt = 0
    for name, expr in members:
        out[name] = v = nxt if expr is None else _eval(expr, {**values, **out})
        nxt = v + 1
    return out


def evaluate(text: str, sizeof, partial: bool = False) -> dict[str, int]:
    """Every enumerator and integer-valued #define of the header.

    ``sizeof(struct_name)`` supplies struct sizes for the _IOx() macros
    (raise ValueError if unknown).  Enums and defines are resolved until
    nothing changes, so either may refer to the other regardless of order.
    Leftovers are an error unless ``partial``.
    """
    values: dict[str, int] = {}
    pending = [("enum", members) for _tag, members in enums(text)]
    pending += [("define", item) for item in defines(text)]
    while pending:
        left = []
        for kind, item in pending:
            try:
                if kind == "enum":
                    values.update(_enum_block(item, values))
                else:
                    values[item[0]] = _eval_define(item[1], values, sizeof)
            except ValueError:
                left.append((kind, item))
        if len(left) == len(pending):
            if partial:
                break
            raise ValueError(f"cannot evaluate: {left}")
        pending = left
    return values


def _eval_define(body: str, names: dict[str, int], sizeof) -> int:
    m = _IOC_RE.match(body)
    if not m:
        return _eval(body, names)
    macro, args = m.group(1), [a.strip() for a in m.group(2).split(",")]
    if macro == "_IO":
        type_, nr = args
        size = 0
    else:
        type_, nr, struct = args
        sm = re.fullmatch(r"struct\s+(\w+)", struct)
        if not sm:
            raise ValueError(f"unsupported ioctl argument type {struct!r}")
        size = sizeof(sm.group(1))
    return ((_IOC_DIR[macro] << _IOC_DIRSHIFT) | (size << _IOC_SIZESHIFT)
            | (_eval(type_, names) << _IOC_TYPESHIFT) | (_eval(nr, names) << _IOC_NRSHIFT))


def ioctl_defines(text: str) -> list[str]:
    """Names of the #defines built with _IOx(), in header order."""
    return [name for name, body in defines(text) if _IOC_RE.match(body)]


def struct_bodies(text: str) -> dict[str, str]:
    """{struct name: the text between its braces}, in header order."""
    text = strip_comments(text)
    out = {}
    for m in _STRUCT_RE.finditer(text):
        depth, i = 1, m.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        out[m.group(1)] = text[m.end():i - 1]
    return out


def _no_sizeof(name: str) -> int:
    raise ValueError(name)


def cdef(text: str, align8: frozenset[str] = frozenset()) -> str:
    """The header as cffi cdef source: declarations only, stdint types.

    Enumerator values are replaced by their computed integers (cffi only
    understands simple enum expressions).  Structs named in ``align8`` get a
    leading zero-length uint64_t member, the only way to express
    __aligned__(8) to cffi's ABI-mode layout engine.
    """
    values = evaluate(text, _no_sizeof, partial=True)  # struct sizes are cffi's job
    src = _join_continuations(strip_comments(text))
    src = _PREPROC_RE.sub("", src)
    src = _strip_attributes(src)

    def enum_sub(m: re.Match) -> str:
        body = ", ".join(f"{name} = {values[name]}" for name, _ in enums(m.group(0))[0][1])
        return f"enum {m.group(1)} {{ {body} }};"

    src = _ENUM_RE.sub(enum_sub, src)
    for old, new in _TYPE_MAP.items():
        src = re.sub(rf"\b{old}\b", new, src)

    def struct_sub(m: re.Match) -> str:
        if m.group(1) in align8:
            return f"{m.group(0)} uint64_t _kdbusfs_align8[0];"
        return m.group(0)

    src = _STRUCT_RE.sub(struct_sub, src)
    return "\n".join(line.rstrip() for line in src.splitlines() if line.strip())
