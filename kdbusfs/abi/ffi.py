"""cffi (ABI mode) declarations of the kdbus structs, built from kdbus.h."""

from __future__ import annotations

import re

import cffi

from . import _header

HEADER_TEXT = _header.read_header()


#: Every struct declared by the header, in header order.
STRUCTS: tuple[str, ...] = tuple(dict.fromkeys(_header._STRUCT_RE.findall(
    _header.strip_comments(HEADER_TEXT))))


def _build() -> tuple[cffi.FFI, str]:
    # cffi cannot see __aligned__(8), which every kdbus struct carries.
    # Structs with no 8-byte member of their own (kdbus_caps, kdbus_audit)
    # get a leading zero-length uint64_t member instead; the check below
    # proves the guess for every struct.
    bodies = _header.struct_bodies(HEADER_TEXT)
    short = frozenset(name for name, body in bodies.items()
                      if not re.search(r"\b(__u64|__s64|struct)\b", body))
    src = _header.cdef(HEADER_TEXT, align8=short)
    real = cffi.FFI()
    real.cdef(src)
    for name in bodies:
        if real.alignof(f"struct {name}") != 8 or real.sizeof(f"struct {name}") % 8:
            raise AssertionError(f"struct {name} is not 8-aligned in the cffi view")
    return real, src


ffi, CDEF = _build()


def _ctype(name: str) -> str:
    return name if name.startswith(("struct ", "union ", "enum ")) else f"struct {name}"


def sizeof(name: str) -> int:
    """sizeof(struct name); ``name`` may omit the ``struct`` keyword."""
    return ffi.sizeof(_ctype(name))


def offsetof(struct: str, field: str, *more: str) -> int:
    """offsetof(struct, field); nested members as ``"a.b"`` or extra args."""
    return ffi.offsetof(_ctype(struct), *field.split("."), *more)
