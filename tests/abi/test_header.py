"""kdbus.h == the fact sheet == the Python (cffi) view, checked through gcc."""

from __future__ import annotations

import errno
import importlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from kdbusfs import abi
from kdbusfs.abi import constants
from kdbusfs.abi.ffi import ffi

# The package re-exports the FFI object as ``ffi``, shadowing the module.
ffi_module = importlib.import_module("kdbusfs.abi.ffi")

from . import sheet

ROOT = Path(__file__).resolve().parents[2]
HEADER_DIR = Path(abi.HEADER_PATH).parent
CC = shutil.which("gcc")
needs_gcc = pytest.mark.skipif(CC is None, reason="gcc not available")

FLAGS = ["-std=gnu11", "-Wall", "-Wextra", "-Werror", f"-I{HEADER_DIR}"]


def _build(src: Path, out: Path, *extra: str, cc: str | None = None) -> None:
    proc = subprocess.run([cc or CC, *FLAGS, *extra, str(src), "-o", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def c_abi(tmp_path_factory) -> dict:
    if CC is None:
        pytest.skip("gcc not available")
    exe = tmp_path_factory.mktemp("abi") / "abi_check"
    _build(ROOT / "c" / "abi_check.c", exe)
    return json.loads(subprocess.run([str(exe)], check=True, capture_output=True,
                                     text=True).stdout)


def _cffi_field(struct: str, path: str):
    """(offset, size, cname) of a possibly nested member, through cffi."""
    ctype, off = ffi.typeof(f"struct {struct}"), 0
    for part in path.split("."):
        f = dict(ctype.fields)[part]
        off += f.offset
        ctype = f.type
    return off, ffi.sizeof(ctype), ctype.cname


_SIGNED = {"s64", "s32"}
_SCALARS = {"u64", "s64", "u32", "s32"}


# --- struct layout -----------------------------------------------------------

@needs_gcc
def test_c_sizes_match_sheet(c_abi):
    assert c_abi["sizeof"] == sheet.SIZES


@needs_gcc
def test_c_fields_match_sheet(c_abi):
    expected = {k: [off, size] for k, (off, size, _t) in sheet.FIELDS.items()}
    assert c_abi["fields"] == expected


@needs_gcc
def test_c_signedness_matches_sheet(c_abi):
    expected = {k: t in _SIGNED for k, (_o, _s, t) in sheet.FIELDS.items() if t in _SCALARS}
    assert c_abi["signed"] == expected


def test_python_structs_are_the_sheet_structs():
    assert set(ffi_module.STRUCTS) == set(sheet.SIZES)


@pytest.mark.parametrize("struct", sorted(sheet.SIZES))
def test_python_sizes_match_sheet(struct):
    assert abi.sizeof(struct) == sheet.SIZES[struct]
    assert ffi.alignof(f"struct {struct}") == 8


@pytest.mark.parametrize("key", sorted(sheet.FIELDS))
def test_python_fields_match_sheet(key):
    struct, path = key.split(".", 1)
    off, size, type_ = sheet.FIELDS[key]
    assert abi.offsetof(struct, path) == off
    c_off, c_size, cname = _cffi_field(struct, path)
    assert (c_off, c_size) == (off, size)
    if type_ in _SCALARS:
        bits = {"u64": "uint64_t", "s64": "int64_t", "u32": "uint32_t", "s32": "int32_t"}
        assert cname == bits[type_]
    elif type_ == "flex":
        assert cname.endswith("[0]")


def test_python_has_no_undocumented_fields():
    # Every named cffi member (the alignment helpers aside) is in the sheet.
    for struct in sheet.SIZES:
        for name, _f in ffi.typeof(f"struct {struct}").fields:
            if not name.startswith("_kdbusfs"):
                assert f"{struct}.{name}" in sheet.FIELDS


@needs_gcc
def test_helper_macros(c_abi):
    assert c_abi["helpers"] == {
        "offsetof(kdbus_item, data)": 16,
        "KDBUS_ITEM_SIZE(0)": 16,
        "KDBUS_ITEM_SIZE(1)": 24,
        "KDBUS_ITEM_SIZE(8)": 24,
        "KDBUS_ITEM_SIZE(36)": 56,
        "KDBUS_ALIGN8(13)": 16,
    }


# --- constants -----------------------------------------------------------------

# kdbusfs extensions: ours, outside the sheet, never colliding with it.
EXTENSIONS = {"KDBUSFS_RECV_BLOCK": 1 << 32, "KDBUSFS_ITEM_FD_CHANNEL": 0x7F00,
              "KDBUSFS_CMD_FD_CHANNEL": 0x401895F0}


@needs_gcc
def test_c_constants_match_sheet(c_abi):
    assert c_abi["constants"] == {**sheet.CONSTANTS, **EXTENSIONS}


def test_python_constants_match_sheet():
    assert constants.VALUES == {**sheet.CONSTANTS, **EXTENSIONS}
    for name, value in sheet.CONSTANTS.items():
        assert getattr(constants, name) == value


@needs_gcc
def test_c_and_python_constants_agree(c_abi):
    assert c_abi["constants"] == constants.VALUES


def test_ioctl_names():
    ext = {EXTENSIONS["KDBUSFS_CMD_FD_CHANNEL"]: "KDBUSFS_CMD_FD_CHANNEL"}
    assert constants.IOCTL_NAMES == {**{v: k for k, v in sheet.IOCTLS.items()}, **ext}


@pytest.mark.parametrize("name", sorted(sheet.IOCTLS))
def test_ioctl_fields(name):
    value = sheet.IOCTLS[name]
    assert value & 0xFF00 == 0x9500
    assert (value >> 16) & 0x3FFF == sheet.IOCTL_ARG_SIZES[name]
    assert abi.COMMANDS[value].size == sheet.IOCTL_ARG_SIZES[name]


def test_item_names_cover_every_item_type():
    types = {v for k, v in sheet.CONSTANTS.items() if k.startswith("KDBUS_ITEM_")
             and k != "KDBUS_ITEM_HEADER_SIZE"}
    assert set(constants.ITEM_NAMES) == types | {0}


def test_errno_numbers_match_sheet():
    for name, number in sheet.ERRNOS.items():
        assert getattr(errno, name) == number, name


# --- the header as C clients see it ------------------------------------------------

CLIENT = r"""
/* What kdbus clients (systemd, the kernel selftests, GLib) do: include the
 * uapi header, then define their own item helpers. */
#include <stddef.h>
#include <stdint.h>
#include "kdbus.h"

#define KDBUS_ALIGN8(l) (((l) + 7) & ~7)
#define KDBUS_ITEM_HEADER_SIZE offsetof(struct kdbus_item, data)
#define KDBUS_ITEM_SIZE(s) KDBUS_ALIGN8((s) + KDBUS_ITEM_HEADER_SIZE)
#define KDBUS_ITEM_NEXT(item) \
	(typeof(item))(((uint8_t *)item) + KDBUS_ALIGN8((item)->size))
#define KDBUS_ITEM_FOREACH(item, head, first) \
	for (item = (head)->first; \
	     (uint8_t *)(item) < (uint8_t *)(head) + (head)->size; \
	     item = KDBUS_ITEM_NEXT(item))

int main(void)
{
	struct kdbus_cmd_hello hello = { .size = sizeof(hello) };
	struct kdbus_item *item;
	int n = 0;

	KDBUS_ITEM_FOREACH(item, &hello, items)
		n++;
	return n + (KDBUS_ITEM_SIZE(8) != 24) + (KDBUS_CMD_HELLO == 0);
}
"""

HELPERS = r"""
#define KDBUS_WANT_ITEM_HELPERS
#include <stdint.h>
#include <string.h>
#include "kdbus.h"

int main(void)
{
	/* a cmd with three items: 5-byte string (padded), u64, empty */
	union { struct kdbus_cmd cmd; uint64_t raw[16]; } u;
	struct kdbus_item *item;
	__u64 types = 0, n = 0;

	memset(&u, 0, sizeof(u));
	item = u.cmd.items;
	item->size = KDBUS_ITEM_HEADER_SIZE + 5;
	item->type = KDBUS_ITEM_NAME;
	memcpy(item->str, "a.bc", 5);
	item = KDBUS_ITEM_NEXT(item);
	item->size = KDBUS_ITEM_HEADER_SIZE + 8;
	item->type = KDBUS_ITEM_ID;
	item->id = 7;
	item = KDBUS_ITEM_NEXT(item);
	item->size = KDBUS_ITEM_HEADER_SIZE;
	item->type = KDBUS_ITEM_NEGOTIATE;
	u.cmd.size = (__u8 *)item + item->size - (__u8 *)&u.cmd;

	KDBUS_ITEMS_FOREACH(item, &u.cmd, items) {
		types += item->type;
		n++;
	}
	return !(n == 3 && types == KDBUS_ITEM_NAME + KDBUS_ITEM_ID + KDBUS_ITEM_NEGOTIATE &&
		 u.cmd.size == 24 + 24 + 24 + 16);
}
"""


@needs_gcc
@pytest.mark.parametrize("std", ["gnu89", "gnu99", "gnu11"])
def test_client_defining_its_own_helpers_builds_cleanly(tmp_path, std):
    src = tmp_path / "client.c"
    src.write_text(CLIENT)
    _build(src, tmp_path / "client", f"-std={std}")
    assert subprocess.run([str(tmp_path / "client")]).returncode == 0


@needs_gcc
def test_opt_in_helpers_walk_items(tmp_path):
    src = tmp_path / "helpers.c"
    src.write_text(HELPERS)
    _build(src, tmp_path / "helpers")
    assert subprocess.run([str(tmp_path / "helpers")]).returncode == 0


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not available")
def test_header_parses_as_cxx(tmp_path):
    src = tmp_path / "x.cc"
    src.write_text('#define KDBUS_WANT_ITEM_HELPERS\n#include "kdbus.h"\nint main() { return 0; }\n')
    proc = subprocess.run(["g++", "-Wall", "-Wextra", "-Werror", f"-I{HEADER_DIR}",
                           "-fsyntax-only", str(src)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# --- the header parser ----------------------------------------------------------------

from kdbusfs.abi import _header  # noqa: E402


def test_cdef_is_plain_declarations():
    src = ffi_module.CDEF
    for token in ("#", "__attribute__", "__aligned__", "__u64", "__s32", "_IOW", "/*"):
        assert token not in src
    assert "uint64_t" in src and "int64_t priority" in src


def test_extension_section_holds_only_kdbusfs_names():
    text = ffi_module.HEADER_TEXT
    start = text.index("/* BEGIN kdbusfs extensions */")
    end = text.index("/* END kdbusfs extensions */")
    assert "kdbusfs extensions" in text[:start]
    names = [d for d, _ in _header.defines(_header.strip_comments(text[start:end]))]
    assert sorted(names) == sorted(EXTENSIONS)
    # a stock kdbus rejects every extension flag: none is a kdbus flag bit
    assert EXTENSIONS["KDBUSFS_RECV_BLOCK"] & (constants.KDBUS_RECV_PEEK | constants.KDBUS_RECV_DROP
                                               | constants.KDBUS_RECV_USE_PRIORITY) == 0


@pytest.mark.parametrize("expr,value", [
    ("(~0ULL)", 2**64 - 1), ("(1ULL << 63)", 2**63), ("0x10 | 010", 0x18),
    ("(1 << 14) - 1", 0x3FFF), ("A + 1", 6), ("0x4442757344427573ULL", 0x4442757344427573),
])
def test_expression_evaluator(expr, value):
    assert _header._eval(expr, {"A": 5}) == value


@pytest.mark.parametrize("expr", ["sizeof(int)", "B", "1 / 2", "(char)1", "'a'"])
def test_expression_evaluator_rejects(expr):
    with pytest.raises((ValueError, SyntaxError)):
        _header._eval(expr, {})


def test_parser_sees_enums_defines_and_ioctls():
    text = """
    #define X 0x95 /* c */
    #define F(a) (a)
    #define GUARD
    enum e { A = 2, B, C = X << 1, D };
    struct s { __u64 a; } __attribute__((__aligned__(8)));
    #define CMD _IOWR(X, 0x80, struct s)
    """
    values = _header.evaluate(text, lambda name: {"s": 8}[name])
    assert values == {"A": 2, "B": 3, "C": 0x12A, "D": 0x12B, "X": 0x95,
                      "CMD": (3 << 30) | (8 << 16) | (0x95 << 8) | 0x80}
    assert _header.ioctl_defines(text) == ["CMD"]
    assert "struct s { uint64_t _kdbusfs_align8[0];" in _header.cdef(text, frozenset({"s"}))
