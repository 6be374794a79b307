"""Prometheus label sets as Loki streams carry them: `{job="web", site="www.example.fi"}`.

Values are Go-quoted strings (what Prometheus' `labels.String()` writes with strconv.Quote)
or LogQL backtick strings; names are bare identifiers or, since Prometheus 3, quoted.
"""

from __future__ import annotations

import re

_SPACE = re.compile(r"\s*")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_QUOTED = re.compile(r'"((?:[^"\\\n]|\\.)*)"|`([^`]*)`')
_ESCAPE = re.compile(
    r'\\(?:([abfnrtv\\"])|([0-7]{3})|x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8}))'
)
_SIMPLE_ESCAPES = {
    "a": b"\a", "b": b"\b", "f": b"\f", "n": b"\n", "r": b"\r", "t": b"\t", "v": b"\v",
    "\\": b"\\", '"': b'"',
}


class LabelSyntaxError(ValueError):
    """The text is not a label set; the message says where, never what the values are."""


def parse_labels(text: str) -> dict[str, str]:
    """`{name="value", …}` as a dict; LabelSyntaxError when it is not one."""
    pos = _skip_space(text, 0)
    if not text.startswith("{", pos):
        raise LabelSyntaxError("a label set starts with '{'")
    pos = _skip_space(text, pos + 1)
    labels: dict[str, str] = {}
    while not text.startswith("}", pos):
        name, pos = _name(text, pos)
        pos = _skip_space(text, pos)
        if not text.startswith("=", pos):
            raise LabelSyntaxError(f"expected '=' after label {name!r} (character {pos + 1})")
        pos = _skip_space(text, pos + 1)
        value, pos = _string(text, pos)
        if name in labels:
            raise LabelSyntaxError(f"label {name!r} appears twice")
        labels[name] = value
        pos = _skip_space(text, pos)
        if text.startswith(",", pos):
            pos = _skip_space(text, pos + 1)
        elif not text.startswith("}", pos):
            raise LabelSyntaxError(f"expected ',' or '}}' at character {pos + 1}")
    if _skip_space(text, pos + 1) != len(text):
        raise LabelSyntaxError("text follows the closing '}'")
    return labels


def _skip_space(text: str, pos: int) -> int:
    match = _SPACE.match(text, pos)
    return match.end() if match else pos


def _name(text: str, pos: int) -> tuple[str, int]:
    match = _NAME.match(text, pos)
    if match:
        return match.group(), match.end()
    if text.startswith(('"', "`"), pos):
        return _string(text, pos)
    raise LabelSyntaxError(f"expected a label name at character {pos + 1}")


def _string(text: str, pos: int) -> tuple[str, int]:
    match = _QUOTED.match(text, pos)
    if match is None:
        raise LabelSyntaxError(f"expected a quoted label value at character {pos + 1}")
    quoted, raw = match.groups()
    return (raw if quoted is None else _unquote(quoted, pos)), match.end()


def _unquote(body: str, pos: int) -> str:
    """Go's strconv.Unquote for a double-quoted string body; \\x and octal give raw bytes."""
    if "\\" not in body:
        return body
    out = bytearray()
    start = 0
    for match in _ESCAPE.finditer(body):
        out += _plain(body[start:match.start()], pos)
        simple, octal, byte, short, long = match.groups()
        if simple:
            out += _SIMPLE_ESCAPES[simple]
        elif octal or byte:
            value = int(octal, 8) if octal else int(byte, 16)
            if value > 0xFF:
                raise LabelSyntaxError(f"octal escape out of range in the string at {pos + 1}")
            out.append(value)
        else:
            code = int(short or long, 16)
            if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise LabelSyntaxError(f"bad \\u escape in the string at character {pos + 1}")
            out += chr(code).encode()
        start = match.end()
    out += _plain(body[start:], pos)
    return out.decode("utf-8", errors="replace")


def _plain(chunk: str, pos: int) -> bytes:
    if "\\" in chunk:
        raise LabelSyntaxError(f"unknown escape in the string at character {pos + 1}")
    return chunk.encode()
