"""Reading an uploaded file into records (one dict per row), safely: whatever the bytes, the result is records or
a DatasetError naming the line or row, within the size, line and row caps.

JSONL and CSV are read as streams (a line, a row at a time), so a huge file is refused when it crosses a cap, not
after it filled memory; a JSON document is parsed whole, so its size is checked first; Parquet's row count is read
from its footer before any row. Text must be UTF-8: a bad byte is refused with its line, never replaced."""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from jobs.data.errors import DatasetError, capped

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
TEXT_SUFFIXES = (".jsonl", ".json", ".csv")
SNIFF_BYTES = 8192
# What a file that should be text but is not usually is: its first bytes say so.
KNOWN_BINARY = {
    b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image", b"%PDF": "a PDF document",
    b"PK\x03\x04": "a ZIP archive (or an Office document)", b"\x1f\x8b": "a gzip archive", b"PAR1": "a Parquet file",
    b"SQLite format 3": "an SQLite database",
}
PARQUET_BATCH_ROWS = 4096


@dataclass(frozen=True)
class ReadLimits:
    """Caps on what one upload may hold (settings STUDIO_MAX_UPLOAD_BYTES, _LINE_BYTES, _ROWS)."""

    max_bytes: int = 1 << 30
    max_line_bytes: int = 16 << 20
    max_rows: int = 2_000_000
    max_bytes_set_by: str = "STUDIO_MAX_UPLOAD_BYTES"
    """Where the upload cap comes from, for the refusal: the setting, or the person's account."""


def read_records(path: Path, limits: ReadLimits = ReadLimits()) -> list[dict]:
    """Rows of a JSONL, JSON (list of objects), CSV or Parquet file as dicts."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DatasetError([f"file type '{suffix or path.name}' is not supported; use {', '.join(SUFFIXES)}"])
    size = path.stat().st_size
    if size == 0:
        raise DatasetError(["the file is empty"])
    if size > limits.max_bytes:
        raise DatasetError([f"the file has {size:,} bytes; uploads are capped at {limits.max_bytes:,} "
                            f"({limits.max_bytes_set_by})"])
    if suffix in TEXT_SUFFIXES and (what := _binary_kind(path)):
        raise DatasetError([f"the file is not text: it looks like {what}, not {suffix[1:].upper()}. Upload JSONL, "
                            f"JSON, CSV or Parquet"])
    readers: dict[str, Callable[[Path, ReadLimits], list[dict]]] = {
        ".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".parquet": _read_parquet}
    records = readers[suffix](path, limits)
    if not records:
        raise DatasetError(["the file holds no rows"])
    return records


def _binary_kind(path: Path) -> str | None:
    """What a supposed text file really is, when its first bytes show it is binary; None for text."""
    with path.open("rb") as handle:
        head = handle.read(SNIFF_BYTES)
    for magic, what in KNOWN_BINARY.items():
        if head.startswith(magic):
            return what
    return "binary data (or text in an encoding other than UTF-8)" if b"\x00" in head else None


def parse_json_text(text: str | bytes) -> object:
    """json.loads that turns absurd nesting into a ValueError too (Python's parser recurses)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _too_many_rows(limits: ReadLimits) -> DatasetError:
    return DatasetError([f"more than {limits.max_rows:,} rows; uploads are capped at that (STUDIO_MAX_ROWS)"])


def _lines(path: Path, limits: ReadLimits) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line, checked for UTF-8 and the line cap as it is read."""
    with path.open("rb") as handle:
        for number, raw in enumerate(iter(lambda: handle.readline(limits.max_line_bytes + 1), b""), start=1):
            if len(raw) > limits.max_line_bytes and not raw.endswith(b"\n"):
                raise DatasetError([f"line {number}: longer than {limits.max_line_bytes:,} bytes "
                                    f"(STUDIO_MAX_LINE_BYTES)"])
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DatasetError([f"line {number}: not UTF-8 text (byte 0x{raw[error.start]:02x} at column "
                                    f"{error.start + 1})"]) from None


def _read_jsonl(path: Path, limits: ReadLimits) -> list[dict]:
    records, problems = [], []
    for number, line in _lines(path, limits):
        if not line.strip():
            continue
        try:
            record = parse_json_text(line)
        except json.JSONDecodeError as error:
            problems.append(f"line {number}: not valid JSON ({error.msg} at column {error.colno})")
            continue
        except ValueError as error:
            problems.append(f"line {number}: not valid JSON ({error})")
            continue
        if not isinstance(record, dict):
            problems.append(f"line {number}: expected a JSON object, got {type(record).__name__}")
            continue
        records.append(record)
        if len(records) > limits.max_rows:
            raise _too_many_rows(limits)
    if problems:
        raise DatasetError(capped(problems))
    return records


def _read_json(path: Path, limits: ReadLimits) -> list[dict]:
    data = path.read_bytes()  # within max_bytes: checked before any reading
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DatasetError([f"line {line}: not UTF-8 text (byte 0x{data[error.start]:02x})"]) from None
    try:
        document = parse_json_text(text)
    except json.JSONDecodeError as error:
        raise DatasetError([f"not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})"]) from None
    except ValueError as error:
        raise DatasetError([f"not valid JSON ({error})"]) from None
    if isinstance(document, dict) and isinstance(document.get("data"), list):
        document = document["data"]
    if not isinstance(document, list) or not all(isinstance(item, dict) for item in document):
        raise DatasetError(["a .json dataset must be a list of objects (or {\"data\": [...]})"])
    if len(document) > limits.max_rows:
        raise _too_many_rows(limits)
    return document


def _check_utf8(path: Path) -> None:
    """Refuse a file with a non-UTF-8 byte, naming its line, reading it in blocks."""
    decoder, line = codecs.getincrementaldecoder("utf-8")(), 1
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as error:
                line += block[: error.start].count(b"\n")
                raise DatasetError([f"line {line}: not UTF-8 text (byte 0x{block[error.start]:02x})"]) from None
            line += block.count(b"\n")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise DatasetError([f"line {line}: not UTF-8 text (the file ends inside a character)"]) from None


def _read_csv(path: Path, limits: ReadLimits) -> list[dict]:
    _check_utf8(path)
    csv.field_size_limit(limits.max_line_bytes)
    records = []
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        try:
            for record in reader:
                if None in record:
                    raise DatasetError([f"row {reader.line_num - 1}: more cells than the header has columns"])
                records.append({key: value for key, value in record.items() if key is not None})
                if len(records) > limits.max_rows:
                    raise _too_many_rows(limits)
        except csv.Error as error:
            raise DatasetError([f"line {reader.line_num}: could not read the CSV ({error})"]) from None
    for record in records:
        _decode_json_cell(record)
    return records


def _decode_json_cell(record: dict) -> None:
    """CSV cells carry messages as JSON text; a cell that does not decode is reported per row later."""
    messages = record.get("messages")
    if isinstance(messages, str):
        try:
            record["messages"] = parse_json_text(messages)
        except ValueError:
            pass


def _read_parquet(path: Path, limits: ReadLimits) -> list[dict]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        if parquet.metadata.num_rows > limits.max_rows:
            raise _too_many_rows(limits)
        records = [row for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS) for row in batch.to_pylist()]
    except DatasetError:
        raise
    except Exception as error:  # pyarrow raises several unrelated types for a corrupt file
        raise DatasetError([f"could not read the Parquet file: {error}"]) from None
    for record in records:
        _decode_json_cell(record)
    return records
