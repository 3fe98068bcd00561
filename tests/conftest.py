import pandas as pd
import pytest

from funnelsim.data.events import FunnelDefinition

from . import servers


@pytest.fixture
def funnel():
    return FunnelDefinition(stages=("Lead", "Qualified", "Proposal"), won=("Won", "Closed Won"), lost=("Lost",))


@pytest.fixture
def small_log():
    """Hand-built log: every spell below is worked out in tests/test_spells.py."""
    rows = [
        ("d1", "Lead", "2024-01-01", 100, "EU"),
        ("d1", "Qualified", "2024-01-11", 120, "EU"),
        ("d1", "Won", "2024-02-10", 150, "EU"),
        ("d2", "Lead", "2024-01-05", 50, "US"),
        ("d2", "Proposal", "2024-01-07", None, "US"),      # skip
        ("d2", "Qualified", "2024-01-09", None, "US"),     # back
        ("d2", "Qualified", "2024-01-10", None, "US"),     # repeated stage: stay continues
        ("d2", "Lost", "2024-01-20", None, "US"),
        ("d3", "Closed Won", "2024-01-15", 70, "EU"),      # created terminal
        ("d4", "Lead", "2024-02-01 09:00", 10, None),      # open, blank segment
        ("d5", "Lead", "2024-01-20", 30, "US"),
        ("d5", "Qualified", "2024-01-20", 30, "US"),       # zero-length stay in Lead
        ("d5", "Proposal", "2024-03-01", 30, "US"),        # after the as_of used in tests
    ]
    return pd.DataFrame(rows, columns=["deal_id", "stage", "timestamp", "amount", "region"])


def write_csv(tmp_path, frame, name="events.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for the whole run (tests/servers.py); skipped only without one."""
    try:
        server = servers.start_postgres()
    except servers.Unavailable as exc:
        pytest.skip(str(exc))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def spark_session():
    """Spark in local mode for the whole run (tests/servers.py); skipped only without Java."""
    try:
        session = servers.start_spark()
    except servers.Unavailable as exc:
        pytest.skip(str(exc))
    yield session
    servers.stop_spark(session)
