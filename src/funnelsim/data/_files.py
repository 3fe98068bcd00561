"""Reading an event log's source: a CSV, Excel (.xlsx) or Parquet file, a DataFrame, an Ibis
table or a database table by URL (:class:`TableURL`), into an Ibis table with the source row
number of each event (:data:`ROW`, as a spreadsheet numbers it: the header is row 1), with the
canonical column names.

A CSV's delimiter (comma, semicolon or tab) is detected from its header line; only empty
cells are missing values. A CSV is read as UTF-8 (with or without a byte-order mark; a UTF-16
file with its byte-order mark is recognised too) unless ``encoding`` names another; a file
that is not valid in its encoding is an error naming the row, the column and the byte, never
a silent guess. A workbook is read from its first sheet unless ``sheet`` names another (by
name, or by its position counting from 1). Every problem is a
:class:`funnelsim.errors.FunnelDataError` naming the file, row and column.
"""

from __future__ import annotations

import codecs
import difflib
import importlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import ibis
import pandas as pd
import pyarrow as pa

from ..errors import FunnelDataError

__all__ = ["REQUIRED_COLUMNS", "ROW", "TableURL", "is_table_url", "open_table_url", "load_source", "rename_columns",
           "missing_column_error", "read_file", "EXCEL_SUFFIXES"]

REQUIRED_COLUMNS = ("deal_id", "stage", "timestamp")
ROW = "_row"  # position of the event in its source, as a spreadsheet numbers it


def load_source(source, expected: tuple[str, ...] = REQUIRED_COLUMNS, *, encoding: str | None = None,
                sheet: str | int | None = None, notes: list[str] | None = None) -> tuple[str, ibis.Table]:
    """Return (a name for messages, an Ibis table with a ``_row`` column). ``encoding`` is a
    CSV's text encoding, ``sheet`` a workbook's sheet (see the module doc); what reading decided
    that the user should know (which sheet) is appended to ``notes``."""
    name = "table"
    if isinstance(source, str) and is_table_url(source):
        source = TableURL(source)
    is_file = not isinstance(source, (TableURL, ibis.Table, pd.DataFrame))
    if not is_file:
        _refuse_file_options(encoding, sheet, "a DataFrame" if isinstance(source, pd.DataFrame) else "a table")
    if isinstance(source, TableURL):
        name, source = open_table_url(source)
    if isinstance(source, ibis.Table):  # no row numbers in a database: number rows deterministically
        order = [c for c in ("deal_id", "timestamp", "stage") if c in source.columns]
        return name, source.mutate(**{ROW: ibis.row_number().over(order_by=order) + 1})
    if isinstance(source, pd.DataFrame):
        return "DataFrame", _memtable(_frame_to_arrow(source.reset_index(drop=True)), first_row=1)
    path = Path(os.fspath(source))
    name = str(source)
    _check_file(path, name, "Export the event log with a header row and one row per stage change.")
    if path.suffix.lower() in (".parquet", ".pq"):  # DuckDB reads it in place, in parallel
        _refuse_file_options(encoding, sheet, "a Parquet file")
        try:
            table = ibis.get_backend().read_parquet(path, file_row_number=True)
            table.count().execute()
        except Exception as exc:  # any reader failure is a bad file
            raise FunnelDataError(f"cannot read Parquet: {str(exc).splitlines()[0]}", source=name) from None
        return name, table.rename({ROW: "file_row_number"}).mutate(**{ROW: ibis._[ROW] + 1})
    name, arrow = read_file(path, name, expected, encoding=encoding, sheet=sheet, notes=notes)
    return name, ibis.memtable(arrow)


def read_file(path: Path, name: str, expected: tuple[str, ...] = REQUIRED_COLUMNS, *, encoding: str | None = None,
              sheet: str | int | None = None, notes: list[str] | None = None) -> tuple[str, pa.Table]:
    """A CSV or workbook file as (its name for messages, an Arrow table with the spreadsheet row
    of each record in :data:`ROW`). CSV cells are all text; workbook cells keep their types (numbers, dates)
    where a column holds one type, else they are read as text. A workbook's name for messages
    says the sheet: ``crm.xlsx, sheet 'Events'``."""
    suffix = path.suffix.lower()
    if suffix in EXCEL_SUFFIXES or suffix in _OLD_EXCEL:
        if encoding is not None:
            raise FunnelDataError("--encoding applies to CSV files only; a workbook knows its own encoding",
                                  source=name, value=encoding, hint="Leave out --encoding (encoding=) for a .xlsx file.")
        return _read_workbook(path, name, sheet, notes, expected)
    if sheet is not None:
        raise FunnelDataError("--sheet applies to Excel workbooks (.xlsx) only", source=name, value=str(sheet),
                              hint="Leave out --sheet (sheet=) for a CSV file.")
    arrow = _read_csv(path, name, expected, encoding)
    return name, _with_rows(arrow, range(2, 2 + arrow.num_rows))


def _check_file(path: Path, name: str, hint: str) -> None:
    if not path.exists():
        raise FunnelDataError("file not found", source=name, hint="Check the path and the current directory.")
    if path.is_dir() or path.stat().st_size == 0:
        raise FunnelDataError("the file is empty" if not path.is_dir() else "this is a folder, not a file",
                              source=name, hint=hint)


def _refuse_file_options(encoding, sheet, what: str) -> None:
    """--encoding and --sheet say how to read a file; given for anything else they are a mistake."""
    for option, value in (("encoding", encoding), ("sheet", sheet)):
        if value is not None:
            raise FunnelDataError(f"--{option} ({option}=) applies to files, not to {what}", value=str(value),
                                  hint=f"Leave out --{option}.")


def _frame_to_arrow(frame: pd.DataFrame) -> pa.Table:
    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # a column mixing types, e.g. 5 and "12k": read as text
        mixed = [c for c in frame.columns if frame[c].dtype == object]
        frame = frame.assign(**{c: frame[c].map(_as_text) for c in mixed})
        return pa.Table.from_pandas(frame, preserve_index=False)


def _as_text(value) -> str | None:
    """A cell as the text a CSV export would hold: dates in ISO form, whole numbers without ".0"."""
    import datetime

    if _is_missing(value):
        return None
    if isinstance(value, datetime.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# --------------------------------------------------------------------------- tables by URL

@dataclass(frozen=True)
class TableURL:
    """A database table named by URL: ``postgres://user[:password]@host[:port]/database?table=events``
    (``table=schema.events`` for another schema; other query parameters go to the driver) or
    ``duckdb:///path/crm.duckdb?table=events`` (opened read-only), or any other backend
    :func:`ibis.connect` knows with ``?table=``. ``option`` names the command-line option it
    came from, for messages. Picklable, so a backtest's worker processes open it themselves."""

    url: str
    option: str | None = None

    @property
    def shown(self) -> str:
        """The URL without its password."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")  # two letters at least: C://... is a Windows path


def is_table_url(text: str) -> bool:
    """Whether ``text`` is a URL (``scheme://...``) rather than a file path."""
    return bool(_URL.match(text))


def open_table_url(source: TableURL) -> tuple[str, ibis.Table]:
    """Connect and return (the URL without its password, the table). Every problem, from an
    unknown scheme to a missing table, is a :class:`FunnelDataError` naming the URL (and
    the option it came from)."""
    where = f"{source.option} {source.shown!r}" if source.option else source.shown
    parts = urlsplit(source.url)
    scheme = parts.scheme.lower()
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    table_name = query.pop("table", "").strip()
    example = "postgres://user@host:5432/database?table=events or duckdb:///path/crm.duckdb?table=events"
    if not table_name:
        raise FunnelDataError("the URL names no table", source=where,
                              hint=f"Add ?table=NAME (or table=schema.NAME), e.g. {example}.")
    try:
        con = _connect(scheme, parts, query, where)
    except FunnelDataError:
        raise
    except (ImportError, ModuleNotFoundError) as exc:
        extra = {"postgres": "postgres", "postgresql": "postgres", "pyspark": "spark"}.get(scheme)
        install = f"pip install 'funnelsim[{extra}]'" if extra else f"install the Ibis backend for {scheme}"
        raise FunnelDataError(f"the {scheme} driver is not installed ({exc})", source=where,
                              hint=f"Run {install}.") from None
    except Exception as exc:  # the driver's own error: refused, unknown host, bad password, unknown scheme...
        raise FunnelDataError(f"cannot connect: {_first_line(exc)}", source=where,
                              hint=f"Check the URL (scheme, user, host, port, database) and that the server is "
                                   f"running; for example {example}.") from None
    schema, _, name = table_name.rpartition(".")
    try:
        return source.shown, con.table(name, database=schema or None)
    except Exception as exc:  # no such table (each driver has its own error)
        try:
            tables = sorted(con.list_tables(database=schema or None))
        except Exception:  # some backends cannot list (Ibis 12 on DuckDB 2)
            tables = None
        close = difflib.get_close_matches(name, tables or [], n=1, cutoff=0.5)
        hint = f"Did you mean '{close[0]}'? " if close else ""
        if tables:
            hint += f"Tables there: {', '.join(tables[:20])}{', ...' if len(tables) > 20 else ''}."
        else:
            hint += "Check the table's name (and schema: table=schema.name)." if tables is None else \
                f"The database has no table{' in ' + schema if schema else ''}."
        said = _first_line(exc)
        problem = f"there is no table {table_name!r}" + ("" if said in (name, table_name) else f" ({said})")
        raise FunnelDataError(problem, source=where, hint=hint) from None


def _connect(scheme: str, parts, query: dict, where: str):
    if scheme in ("postgres", "postgresql"):
        importlib.import_module("ibis.backends.postgres")  # a missing driver fails here, as ImportError

        query.setdefault("connect_timeout", "10")
        url = urlunsplit(parts._replace(scheme="postgres", query=urlencode(query)))
        return ibis.connect(url)
    if scheme == "duckdb":
        path = Path(unquote(parts.netloc + parts.path))
        if not path.is_file():
            raise FunnelDataError("no DuckDB database file there", source=where, value=str(path),
                                  hint="Check the path: duckdb:///absolute/path.duckdb or duckdb://relative.duckdb.")
        return ibis.duckdb.connect(path, read_only=True, **query)
    return ibis.connect(urlunsplit(parts._replace(query=urlencode(query))))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --------------------------------------------------------------------------- files

DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab"}


def _is_missing(value) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


EXCEL_SUFFIXES = (".xlsx", ".xlsm")
_OLD_EXCEL = (".xls", ".xlsb", ".ods")
SHEET_NOTE = "read sheet "  # how the note on the sheet a workbook was read from begins
ENCODING_EXAMPLES = "latin-1, cp1252 (Excel on Windows), cp1251, utf-16"


def _read_workbook(path: Path, name: str, sheet: str | int | None, notes: list[str] | None,
                   expected: tuple[str, ...] = REQUIRED_COLUMNS) -> tuple[str, pa.Table]:
    """One sheet of a workbook (openpyxl, through pandas): the header is row 1, blank rows keep
    their numbers (and are dropped), so a row named in a message is the row Excel shows."""
    if path.suffix.lower() in _OLD_EXCEL:
        raise FunnelDataError(f"cannot read {path.suffix} workbooks", source=name,
                              hint="Save it as an Excel workbook (.xlsx) or as 'CSV UTF-8' and read that.")
    try:
        book = pd.ExcelFile(path, engine="openpyxl")
    except Exception as exc:  # not a zip, not a workbook, password-protected...
        raise FunnelDataError(f"cannot read this Excel workbook ({_first_line(exc)})", source=name,
                              hint="Open it in Excel and save it again as .xlsx, or export the sheet as 'CSV UTF-8'.") from None
    with book:
        names = list(book.sheet_names)
        chosen = _pick_sheet(names, sheet, name)
        shown = f"{name}, sheet {chosen!r}"
        frame = pd.read_excel(book, sheet_name=chosen, dtype=object, keep_default_na=False, na_values=[""])
    if frame.columns.empty:
        raise FunnelDataError("the sheet is empty", source=shown,
                              hint="Put the column names (deal_id,stage,timestamp,...) on row 1"
                                   + (", or pick another sheet with --sheet." if len(names) > 1 else "."))
    frame.columns = [str(c) for c in frame.columns]
    if sheet is None and len(names) > 1 and not any(c in frame.columns for c in expected):
        raise FunnelDataError(f"the first sheet has none of the columns {', '.join(expected[:3])}", source=shown,
                              hint=f"Pick the sheet that holds the log with --sheet NAME (sheet= in Python); its "
                                   f"sheets: {', '.join(map(repr, names))}.")
    rows = pd.Series(range(2, 2 + len(frame)))
    filled = frame.notna().any(axis=1).to_numpy()
    frame, rows = frame[filled].reset_index(drop=True), rows[filled].to_numpy()
    if sheet is None and len(names) > 1 and notes is not None:
        notes.append(f"{SHEET_NOTE}{chosen!r}, the first of {len(names)} sheets in {name} "
                     f"({', '.join(map(repr, names[:6]))}{', ...' if len(names) > 6 else ''}); pick another with --sheet")
    arrow = _frame_to_arrow(frame)
    return shown, _with_rows(arrow, rows)


def _pick_sheet(names: list[str], sheet: str | int | None, name: str) -> str:
    """The sheet named ``sheet``, or at position ``sheet`` counting from 1; the first by default."""
    if sheet is None:
        return names[0]
    text = str(sheet).strip()
    if text in names:
        return text
    if text.isdigit() and 1 <= int(text) <= len(names):
        return names[int(text) - 1]
    close = difflib.get_close_matches(text, names, n=1, cutoff=0.5)
    hint = f"Did you mean '{close[0]}'? " if close else ""
    raise FunnelDataError("the workbook has no such sheet", source=f"{name}, option --sheet", value=text,
                          hint=hint + f"Its sheets: {', '.join(map(repr, names))} (or give a position, 1 to {len(names)}).")


def _csv_encoding(path: Path, name: str, encoding: str | None) -> str:
    """The Python codec name to read the CSV with: the one given (checked), else UTF-8, or UTF-16
    when the file starts with a UTF-16 byte-order mark."""
    if encoding is not None:
        try:
            codec = codecs.lookup(encoding.strip()).name
        except LookupError:
            raise FunnelDataError("unknown text encoding", source="option --encoding", value=encoding,
                                  hint=f"Give a codec name such as {ENCODING_EXAMPLES} or utf-8.") from None
        return "utf-8-sig" if codec == "utf-8" else codec
    with open(path, "rb") as fh:
        start = fh.read(2)
    return "utf-16" if start in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) else "utf-8-sig"


def _read_csv(path: Path, name: str, expected: tuple[str, ...] = REQUIRED_COLUMNS,
              encoding: str | None = None) -> pa.Table:
    """Read every column of a CSV as text; parsing happens in the database. Only an empty
    cell is missing: "NA" is a region (North America) or a deal id, not a blank."""
    import pyarrow.csv as pacsv

    codec = _csv_encoding(path, name, encoding)
    try:
        header = _header_line(path, codec)
    except UnicodeDecodeError:
        raise _encoding_error(path, name, codec, given=encoding) from None
    if not header.strip():
        raise FunnelDataError("the first line is blank; expected a header row", source=name,
                              hint="Put the column names (deal_id,stage,timestamp,...) on line 1.")
    delimiter, names = _sniff_delimiter(header, expected)
    # Arrow reads UTF-8 itself (a byte-order mark is skipped); other encodings go through Python's codec
    read = dict(read_options=pacsv.ReadOptions(use_threads=True, block_size=1 << 24,
                                               encoding="utf8" if codec == "utf-8-sig" else codec),
                convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in names},
                                                     strings_can_be_null=True, null_values=[""]))
    try:
        return pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter=delimiter), **read)
    except pa.ArrowInvalid:
        pass
    except UnicodeDecodeError:
        raise _encoding_error(path, name, codec, given=encoding, delimiter=delimiter, header=names) from None
    try:  # a quoted field may hold a line break: slower parsing, so only on a second try
        return pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
                              **read)
    except UnicodeDecodeError:
        raise _encoding_error(path, name, codec, given=encoding, delimiter=delimiter, header=names) from None
    except pa.ArrowInvalid as exc:
        if "utf8" in str(exc).lower():
            raise _encoding_error(path, name, codec, given=encoding, delimiter=delimiter, header=names) from None
        raise FunnelDataError(f"not a valid CSV: {str(exc).splitlines()[0]}", source=name,
                              row=_first_ragged_row(path, delimiter, len(names), codec),
                              hint=f"Every row needs as many {DELIMITERS[delimiter]}-separated fields as the header "
                                   f"({len(names)}); quote fields that contain a {DELIMITERS[delimiter]}.") from None


def _header_line(path: Path, codec: str) -> str:
    """The first line, decoded: only that line, so a bad byte further down is found later with
    its column (a text file decodes a whole block at once)."""
    if codec.startswith("utf-16"):  # its line breaks are two bytes
        with open(path, newline="", encoding=codec) as fh:
            return fh.readline()
    with open(path, "rb") as fh:
        return fh.readline().decode(codec)


def _sniff_delimiter(header: str, expected: tuple[str, ...]) -> tuple[str, list[str]]:
    """The delimiter (comma, semicolon or tab) that splits the header into the most of the
    expected column names, then into the most columns; ties go to the comma. Quotes are
    respected, so a delimiter inside a quoted name does not count."""
    import csv

    best = None
    for delimiter in DELIMITERS:
        names = next(csv.reader([header.rstrip("\r\n")], delimiter=delimiter))
        score = (sum(n in expected for n in names), len(names))
        if best is None or score > best[0]:
            best = (score, delimiter, names)
    return best[1], best[2]


def _first_ragged_row(path: Path, delimiter: str, width: int, encoding: str = "utf-8-sig") -> int | None:
    """The spreadsheet row of the first record whose field count differs from the header's."""
    import csv

    try:
        with open(path, newline="", encoding=encoding) as fh:
            for index, record in enumerate(csv.reader(fh, delimiter=delimiter)):
                if index and len(record) != width:
                    return index + 1
    except (csv.Error, UnicodeDecodeError):
        return None
    return None


def _encoding_error(path: Path, name: str, codec: str = "utf-8-sig", *, given: str | None = None,
                    delimiter: str | None = None, header: list[str] | None = None) -> FunnelDataError:
    """The first byte the file's encoding cannot read: its row (lines before it + 1), its column
    (fields before it on that line, when the line is plain), the byte and its offset, and the
    line's text as Latin-1 / Windows-1252 would read it, so the user sees whether that is the
    encoding to pass."""
    data = path.read_bytes()
    shown = "UTF-8" if codec == "utf-8-sig" else codec
    try:
        data.decode(codec)
        return FunnelDataError(f"the file is not {shown} text", source=name,
                               hint=f"Pass --encoding NAME ({ENCODING_EXAMPLES}), or save it as 'CSV UTF-8'.")
    except UnicodeDecodeError as exc:
        start = exc.start
    if codec == "utf-8-sig" and data.startswith(codecs.BOM_UTF8):
        start += len(codecs.BOM_UTF8)
    line_start = data.rfind(b"\n", 0, start) + 1
    line_end = data.find(b"\n", start)
    line = data[line_start:line_end if line_end >= 0 else len(data)].rstrip(b"\r")
    column = value = None
    if delimiter and header is not None and line_start:  # latin-1 maps byte i to character i: offsets agree
        fields = line.decode("latin-1").split(delimiter)
        index = line[:start - line_start].decode("latin-1").count(delimiter)
        if len(fields) == len(header) and index < len(header):
            column, value = header[index], fields[index].encode("latin-1").decode("cp1252", errors="replace")
    if value is None:
        near = line[max(0, start - line_start - 20):start - line_start + 20]
        value = near.decode("cp1252", errors="replace")
    problem = f"the file is not {shown} text (byte 0x{data[start]:02x} at byte offset {start})"
    if given is None:
        hint = (f"If {value.strip()!r} is how it should read, the file is Latin-1 / Windows-1252: pass "
                "--encoding latin-1 (or cp1252; encoding= in Python); for another encoding pass its name "
                "(cp1251, utf-16...), or save the file as 'CSV UTF-8' (Excel: Save As > CSV UTF-8).")
    else:
        hint = (f"Pass the encoding the file was saved in with --encoding ({ENCODING_EXAMPLES}), or save it as "
                "'CSV UTF-8' and leave --encoding out.")
    return FunnelDataError(problem, source=name, row=data.count(b"\n", 0, start) + 1, column=column,
                           value=value, hint=hint)


def _with_rows(arrow: pa.Table, rows) -> pa.Table:
    """``arrow`` with the spreadsheet row of each record as the :data:`ROW` column."""
    import numpy as np

    return arrow.append_column(ROW, pa.array(np.asarray(rows, dtype="int64")))


def _memtable(arrow: pa.Table, first_row: int) -> ibis.Table:
    return ibis.memtable(_with_rows(arrow, range(first_row, first_row + arrow.num_rows)))


def rename_columns(table: ibis.Table, columns: dict[str, str], name: str) -> ibis.Table:
    missing_sources = [c for c in columns if c not in table.columns]
    if missing_sources:
        raise missing_column_error(missing_sources[0], table.columns, name, "in the column mapping", "--columns")
    table = table.rename({canonical: theirs for theirs, canonical in columns.items()})
    for required in REQUIRED_COLUMNS:
        if required not in table.columns:
            raise missing_column_error(required, [c for c in table.columns if c != ROW], name,
                                        "which is required", "a column mapping (--columns theirs=" + required + ")")
    if table.count().execute() == 0:
        raise FunnelDataError("the log has a header but no rows", source=name,
                              hint="Export at least one event per deal.")
    return table


def missing_column_error(column, available, source, why, fix) -> FunnelDataError:
    available = [c for c in available if c != ROW]
    close = difflib.get_close_matches(column, available, n=1, cutoff=0.5)
    hint = f"Did you mean '{close[0]}'? " if close else ""
    hint += f"Columns present: {', '.join(available)}. Rename it or use {fix}."
    return FunnelDataError(f"there is no column '{column}' ({why})", source=source, hint=hint)


# --------------------------------------------------------------------------- parsing
#
# Parsing and row checks happen in one pass: each row gets the first problem it has
# (``_problem``, an index into the list of checks) and the offending text
# (``_bad_value``). Only when some row has a problem does a second query fetch the
# first such row to describe it.
