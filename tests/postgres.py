"""A database of its own on the PostgreSQL server the machines run (127.0.0.1:5432, trust auth),
created for one test and dropped after it. Where no server answers, the test is skipped with
the reason (CI has one, so there it runs); CLOCKIN_TEST_POSTGRES points elsewhere."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest

SERVER = os.environ.get("CLOCKIN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(SERVER, autocommit=True, connect_timeout=3)


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """The URL of a new, empty database; dropped afterwards (with whatever still uses it)."""
    try:
        admin = _admin()
    except psycopg.OperationalError as err:
        pytest.skip(f"no PostgreSQL server at {SERVER}: {str(err).splitlines()[0]}")
    name = f"clockin_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield SERVER.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with _admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
