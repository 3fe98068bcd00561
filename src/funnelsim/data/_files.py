"""Reading an event log's source: a CSV or Parquet file, a DataFrame, an Ibis table or a
database table by URL (:class:`TableURL`), into an Ibis table with the source row number of
each event (:data:`ROW`, as a spreadsheet numbers it: the header is row 1), with the
canonical column names.

A CSV's delimiter (comma, semicolon or tab) is detected from its header line; only empty
cells are missing values. Every problem is a :class:`funnelsim.errors.FunnelDataError`
naming the file, row and column.
"""

from __future__ import annotations

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
           "missing_column_error"]

REQUIRED_COLUMNS = ("deal_id", "stage", "timestamp")
ROW = "_row"  # position of the event in its source, as a spreadsheet numbers it


def load_source(source, expected: tuple[str, ...] = REQUIRED_COLUMNS) -> tuple[str, ibis.Table]:
    """Return (a name for messages, an Ibis table with a ``_row`` column)."""
    name = "table"
    if isinstance(source, str) and is_table_url(source):
        source = TableURL(source)
    if isinstance(source, TableURL):
        name, source = open_table_url(source)
    if isinstance(source, ibis.Table):  # no row numbers in a database: number rows deterministically
        order = [c for c in ("deal_id", "timestamp", "stage") if c in source.columns]
        return name, source.mutate(**{ROW: ibis.row_number().over(order_by=order) + 1})
    if isinstance(source, pd.DataFrame):
        frame = source.reset_index(drop=True)
        try:
            arrow = pa.Table.from_pandas(frame, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # a column mixing types, e.g. 5 and "12k": read as text
            mixed = [c for c in frame.columns if frame[c].dtype == object]
            frame = frame.assign(**{c: frame[c].map(lambda v: None if _is_missing(v) else str(v)) for c in mixed})
            arrow = pa.Table.from_pandas(frame, preserve_index=False)
        return "DataFrame", _memtable(arrow, first_row=1)
    path = Path(os.fspath(source))
    name = str(source)
    if not path.exists():
        raise FunnelDataError("file not found", source=name, hint="Check the path and the current directory.")
    if path.is_dir() or path.stat().st_size == 0:
        raise FunnelDataError("the file is empty" if not path.is_dir() else "this is a folder, not a file",
                              source=name, hint="Export the event log with a header row and one row per stage change.")
    if path.suffix.lower() in (".parquet", ".pq"):  # DuckDB reads it in place, in parallel
        try:
            table = ibis.get_backend().read_parquet(path, file_row_number=True)
            table.count().execute()
        except Exception as exc:  # any reader failure is a bad file
            raise FunnelDataError(f"cannot read Parquet: {str(exc).splitlines()[0]}", source=name) from None
        return name, table.rename({ROW: "file_row_number"}).mutate(**{ROW: ibis._[ROW] + 1})
    return name, _memtable(_read_csv(path, name, expected), first_row=2)


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


def _read_csv(path: Path, name: str, expected: tuple[str, ...] = REQUIRED_COLUMNS) -> pa.Table:
    """Read every column of a CSV as text; parsing happens in the database. Only an empty
    cell is missing: "NA" is a region (North America) or a deal id, not a blank."""
    import pyarrow.csv as pacsv

    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            header = fh.readline()
    except UnicodeDecodeError:
        raise _encoding_error(path, name) from None
    if not header.strip():
        raise FunnelDataError("the first line is blank; expected a header row", source=name,
                              hint="Put the column names (deal_id,stage,timestamp,...) on line 1.")
    delimiter, names = _sniff_delimiter(header, expected)
    read = dict(read_options=pacsv.ReadOptions(use_threads=True, block_size=1 << 24),
                convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in names},
                                                     strings_can_be_null=True, null_values=[""]))
    try:
        return pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter=delimiter), **read)
    except pa.ArrowInvalid:
        pass
    try:  # a quoted field may hold a line break: slower parsing, so only on a second try
        return pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
                              **read)
    except pa.ArrowInvalid as exc:
        if "utf8" in str(exc).lower():
            raise _encoding_error(path, name) from None
        raise FunnelDataError(f"not a valid CSV: {str(exc).splitlines()[0]}", source=name,
                              row=_first_ragged_row(path, delimiter, len(names)),
                              hint=f"Every row needs as many {DELIMITERS[delimiter]}-separated fields as the header "
                                   f"({len(names)}); quote fields that contain a {DELIMITERS[delimiter]}.") from None


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


def _first_ragged_row(path: Path, delimiter: str, width: int) -> int | None:
    """The spreadsheet row of the first record whose field count differs from the header's."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            for index, record in enumerate(csv.reader(fh, delimiter=delimiter)):
                if index and len(record) != width:
                    return index + 1
    except (csv.Error, UnicodeDecodeError):
        return None
    return None


def _encoding_error(path: Path, name: str) -> FunnelDataError:
    data = path.read_bytes()
    try:
        data.decode("utf-8")
        row = None
    except UnicodeDecodeError as exc:
        row = data.count(b"\n", 0, exc.start) + 1
    return FunnelDataError("the file is not UTF-8 text", source=name, row=row,
                           hint="Save it as 'CSV UTF-8' (Excel: Save As > CSV UTF-8).")


def _memtable(arrow: pa.Table, first_row: int) -> ibis.Table:
    import numpy as np

    rows = pa.array(np.arange(first_row, first_row + arrow.num_rows, dtype="int64"))
    return ibis.memtable(arrow.append_column(ROW, rows))


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
