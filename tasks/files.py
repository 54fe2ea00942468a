"""Text data files as they come: empty, header-only, another encoding or separator.

Read before `datasets`/`pandas` see the file, so the message names the file and the fix instead
of a parser traceback. Used by run_glue.py (csv/json) and run_clip.py (csv/tsv).
"""
import codecs
import os
from typing import Optional, Tuple

SEPARATORS = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def read_text(path: str, flag: str, encoding: Optional[str] = None, encoding_flag: Optional[str] = None) -> Tuple[str, str]:
    """(text, encoding): UTF-8 unless a byte-order mark says UTF-16/32 (or UTF-8 with BOM), or `encoding` is given.
    An empty file, or one that is not in that encoding, is refused with the file and the fix."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{flag} {path}: no such file.")
    with open(path, "rb") as f:
        raw = f.read()
    if not raw.strip():
        raise ValueError(f"{flag} {path} is empty ({len(raw)} bytes); give a file with a header and rows.")
    if encoding is None:
        encoding = next((name for bom, name in _BOMS if raw.startswith(bom)), "utf-8")
    try:
        return raw.decode(encoding), encoding
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        fix = f"pass {encoding_flag} with the file's encoding (e.g. latin-1) or " if encoding_flag else ""
        raise ValueError(f"{flag} {path} is not {encoding} text (byte 0x{raw[err.start]:02x} on line {line}); "
                         f"{fix}convert it to UTF-8 (iconv -f latin1 -t utf-8).") from None


def table_layout(path: str, flag: str, text: str, separator: Optional[str] = None) -> str:
    """The column separator of a csv/tsv text: `separator` when its header has it, else the one found in
    the header and the first row alike (None given), else an error. A header with no row is refused."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        raise ValueError(f"{flag} {path} has a header ({lines[0][:80]!r}) but no rows.")
    header, first = lines[0], lines[1]
    if separator is not None:
        return separator
    found = [s for s in SEPARATORS if header.count(s) > 0 and header.count(s) == first.count(s)]
    found = found or [s for s in SEPARATORS if header.count(s) > 0]
    if not found:
        return ","  # one column
    return max(found, key=header.count)


def check_separator(path: str, flag: str, text: str, separator: str, separator_flag: str) -> None:
    """With a separator given by a flag: a header without it, but with another one, names the flag's fix."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        raise ValueError(f"{flag} {path} has a header ({lines[0][:80]!r}) but no rows.")
    header = lines[0]
    if separator in header:
        return
    other = [s for s in SEPARATORS if s in header]
    if other:
        best = max(other, key=header.count)
        raise ValueError(f"{flag} {path}: its header {header[:80]!r} has no {SEPARATORS.get(separator, repr(separator))} "
                         f"separator but {header.count(best)} {SEPARATORS[best]}(s); pass {separator_flag} "
                         f"{best!r}.")


def rows_against_lines(path: str, text: str, rows: int) -> Optional[str]:
    """A warning when a csv/tsv read as fewer rows than it has lines: a quote left open merges the lines after it
    into one cell (a quoted field that spans lines does the same, legally). Names the first line whose quotes do
    not pair up."""
    lines = [line for line in text.splitlines() if line.strip()]
    if rows >= len(lines) - 1:
        return None
    odd = next((k for k, line in enumerate(text.splitlines(), 1) if line.count('"') % 2), None)
    where = f"; line {odd} opens a quote that is never closed on it" if odd else ""
    return (f"{path}: read {rows} rows from {len(lines) - 1} lines after the header: quoted text spans lines"
            f"{where}, so rows were merged. Check the quotes, or write the text without them.")
