"""Real database servers for the tests and benchmarks, started here and stopped at the end.

- :func:`start_postgres`: a PostgreSQL server from the Debian package (binaries under
  ``/usr/lib/postgresql/*/bin``, newest version first): ``initdb`` into a fresh folder under
  the system temp dir, ``pg_ctl start`` on a free port of 127.0.0.1 and a Unix socket in that
  folder, trust authentication for user ``funnelsim``. PostgreSQL refuses to run as root, so
  as root the server runs as ``nobody`` (``runuser``). Durability is switched off (a test
  server). :meth:`Postgres.stop` stops it and removes the folder.
- :func:`start_spark`: a Spark session in local mode (pyspark from PyPI, a Java runtime such
  as Debian's default-jre-headless), UTC, two threads, few shuffle partitions, no UI.

:class:`Unavailable` says why a server cannot be had (no server binary, no Java); the tests
skip on it and on nothing else.
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

__all__ = ["Unavailable", "Postgres", "postgres_bin", "start_postgres", "copy_frame", "java", "start_spark",
           "stop_spark", "spark_parquet"]

USER = "funnelsim"
DATABASE = "postgres"


class Unavailable(RuntimeError):
    """The server's program is not installed on this machine."""


def postgres_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with a server, or None."""
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/postgres")]
    found = [p for p in found if (p / "initdb").exists() and (p / "pg_ctl").exists()]
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0) if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Postgres:
    """A running server: ``port`` on 127.0.0.1, the socket folder ``root``, user ``funnelsim``."""

    bindir: Path
    root: Path
    port: int
    as_user: tuple[str, ...]

    @property
    def url(self) -> str:
        return f"postgres://{USER}@127.0.0.1:{self.port}/{DATABASE}"

    def connect(self):
        """An Ibis PostgreSQL backend on the server."""
        import ibis

        return ibis.postgres.connect(host="127.0.0.1", port=self.port, user=USER, database=DATABASE)

    def psycopg(self):
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user=USER, dbname=DATABASE, autocommit=True)

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            _run([*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast", "-w",
                  "stop"], self.root)
        shutil.rmtree(self.root, ignore_errors=True)


def _run(command: list[str], cwd: Path) -> None:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


def start_postgres(attempts: int = 3) -> Postgres:
    """Start a fresh server (see the module doc); raise :class:`Unavailable` without one."""
    bindir = postgres_bin()
    if bindir is None:
        raise Unavailable("no PostgreSQL server under /usr/lib/postgresql/*/bin (apt-get install postgresql)")
    as_user: tuple[str, ...] = ()
    if os.geteuid() == 0:       # initdb and postgres refuse root: run them as an unprivileged user
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        as_user = (runuser, "-u", "nobody", "--")
    # as root, under /tmp: the unprivileged user must reach the folder (TMPDIR may be root's own)
    root = Path(tempfile.mkdtemp(prefix="funnelsim-pg-", dir="/tmp" if as_user and os.path.isdir("/tmp") else None))
    if as_user:
        os.chown(root, *_nobody())
    try:
        _run([*as_user, str(bindir / "initdb"), "-D", str(root / "data"), "-U", USER, "--auth=trust",
              "--encoding=UTF8", "--no-locale", "--no-sync"], root)
        last = None
        for _ in range(attempts):   # a free port may be taken between choosing and binding it
            port = _free_port()
            options = (f"-k {root} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off "
                       "-c synchronous_commit=off -c full_page_writes=off -c max_connections=20")
            try:
                _run([*as_user, str(bindir / "pg_ctl"), "-D", str(root / "data"), "-l", str(root / "server.log"),
                      "-o", options, "-w", "-t", "60", "start"], root)
                return Postgres(bindir, root, port, as_user)
            except RuntimeError as exc:
                last = exc
                time.sleep(0.5)
        raise RuntimeError(f"PostgreSQL did not start: {last}\n{_tail(root / 'server.log')}")
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def _nobody() -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text().splitlines()[-lines:])
    except OSError:
        return ""


_PG_TYPES = {"f": "double precision", "i": "bigint", "u": "bigint", "b": "boolean", "M": "timestamp"}


def copy_frame(server: Postgres, name: str, frame: pd.DataFrame, chunk_rows: int = 500_000) -> None:
    """Create table ``name`` with the frame's columns and bulk-load the frame with COPY
    (CSV through the client connection: no file the server must be able to read)."""
    columns = ", ".join(f'"{c}" {_PG_TYPES.get(frame[c].dtype.kind, "text")}' for c in frame.columns)
    with server.psycopg() as con:
        con.execute(f'DROP TABLE IF EXISTS "{name}"')
        con.execute(f'CREATE TABLE "{name}" ({columns})')
        with con.cursor().copy(f'COPY "{name}" FROM STDIN (FORMAT csv)') as copy:
            for start in range(0, len(frame), chunk_rows):
                buffer = io.StringIO()
                frame.iloc[start:start + chunk_rows].to_csv(buffer, index=False, header=False,
                                                            date_format="%Y-%m-%d %H:%M:%S.%f")
                copy.write(buffer.getvalue())
        con.execute(f'ANALYZE "{name}"')


def java() -> str | None:
    """The Java runtime Spark would use (``$JAVA_HOME/bin/java`` or ``java`` on the PATH)."""
    home = os.environ.get("JAVA_HOME")
    if home and Path(home, "bin", "java").exists():
        return str(Path(home, "bin", "java"))
    return shutil.which("java")


def start_spark():
    """A local Spark session (see the module doc); raise :class:`Unavailable` without Java."""
    if java() is None:
        raise Unavailable("no Java runtime for Spark (apt-get install default-jre-headless)")
    from pyspark.sql import SparkSession

    warehouse = tempfile.mkdtemp(prefix="funnelsim-spark-")
    return (SparkSession.builder.master("local[2]").appName("funnelsim-tests")
            .config("spark.driver.host", "127.0.0.1")        # no need for the machine's name to resolve
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", "2")
            .config("spark.default.parallelism", "2")
            .config("spark.driver.memory", "3g")
            .config("spark.sql.warehouse.dir", warehouse)
            .config("spark.driver.extraJavaOptions", f"-Djava.io.tmpdir={warehouse}")
            .getOrCreate())


def spark_parquet(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` as Parquet Spark reads: timestamps in microseconds (Spark refuses ns)."""
    frame.to_parquet(path, index=False, coerce_timestamps="us")
    return path


def stop_spark(session) -> None:
    """Stop the session and remove its scratch folder."""
    folder = session.conf.get("spark.sql.warehouse.dir", "")
    session.stop()
    if "funnelsim-spark-" in folder:
        shutil.rmtree(folder.removeprefix("file:"), ignore_errors=True)
