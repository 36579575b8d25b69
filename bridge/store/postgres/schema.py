"""Numbered PostgreSQL migrations, append only (as bridge.store.schema for SQLite): a released one
is never edited. `schema_version` holds how many are applied; applying takes a transaction-level
advisory lock, so bridges starting together migrate once.

Times are epoch seconds (double precision) where the SQLite store keeps them so, and
`timestamptz` for event times. One person's deliveries at one sink are at most one in flight: the
unique partial index `deliveries_one_inflight` is the backstop of the claim's head-of-line rule.
"""

MIGRATIONS: tuple[str, ...] = (
    # 1: the schema of SQLite migrations 1-11, as one, plus leases on claims.
    """
    CREATE TABLE events (
        id              BIGSERIAL PRIMARY KEY,
        key             TEXT NOT NULL UNIQUE,
        terminal        TEXT NOT NULL,
        subject         TEXT NOT NULL,
        badge           TEXT,
        user_id         TEXT,
        action          TEXT NOT NULL,
        action_inferred BOOLEAN NOT NULL,
        event_time      TIMESTAMPTZ NOT NULL,
        local_day       DATE NOT NULL,
        time_given      BOOLEAN NOT NULL,
        received_at     TIMESTAMPTZ NOT NULL,
        status          TEXT NOT NULL,
        duplicate_of    BIGINT REFERENCES events(id),
        topic           TEXT NOT NULL,
        job             TEXT,
        lat             DOUBLE PRECISION,
        lon             DOUBLE PRECISION,
        note            TEXT,
        source_id       TEXT
    );
    CREATE INDEX events_subject_time ON events(subject, event_time);

    CREATE TABLE deliveries (
        id              BIGSERIAL PRIMARY KEY,
        event_id        BIGINT NOT NULL REFERENCES events(id),
        sink            TEXT NOT NULL,
        person          TEXT,
        event_time      TIMESTAMPTZ NOT NULL,
        state           TEXT NOT NULL,
        outcome         TEXT,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at DOUBLE PRECISION NOT NULL,
        created_at      DOUBLE PRECISION NOT NULL,
        settled_at      DOUBLE PRECISION,
        last_error      TEXT,
        replayed        INTEGER NOT NULL DEFAULT 0,
        out_of_order    BOOLEAN NOT NULL DEFAULT FALSE,
        claimed_by      TEXT,                      -- the instance holding it while in flight
        lease_until     DOUBLE PRECISION,          -- it comes back to the others after this
        UNIQUE (event_id, sink)
    );
    CREATE INDEX deliveries_due ON deliveries(sink, state, next_attempt_at);
    CREATE INDEX deliveries_person ON deliveries(sink, person, state, event_time);
    CREATE UNIQUE INDEX deliveries_one_inflight ON deliveries(sink, person)
        WHERE state = 'inflight';
    CREATE INDEX deliveries_leases ON deliveries(lease_until) WHERE state = 'inflight';

    CREATE TABLE person_state (
        sink            TEXT NOT NULL,
        person          TEXT NOT NULL,
        state           JSONB NOT NULL,
        updated_at      DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (sink, person)
    );

    CREATE TABLE rejected (
        id              BIGSERIAL PRIMARY KEY,
        received_at     TIMESTAMPTZ NOT NULL,
        topic           TEXT NOT NULL,
        format          TEXT NOT NULL,
        payload         BYTEA NOT NULL,
        payload_size    INTEGER NOT NULL,
        payload_sha256  TEXT,
        reason          TEXT NOT NULL,
        reprocessed_at  TEXT,
        reprocessed_as  TEXT
    );

    CREATE TABLE kept_keys (
        key             TEXT PRIMARY KEY,
        action          TEXT NOT NULL,
        pruned_at       DOUBLE PRECISION NOT NULL
    );
    """,
    # 2: the bridges sharing the database: each one's heartbeat and broker connection, for
    # `status` and the page; and the index the daemons poll for due work others made.
    """
    CREATE TABLE instances (
        id              TEXT PRIMARY KEY,
        host            TEXT NOT NULL,
        started_at      DOUBLE PRECISION NOT NULL,
        heartbeat_at    DOUBLE PRECISION NOT NULL,
        mqtt_connected  BOOLEAN NOT NULL DEFAULT FALSE,
        stopped_at      DOUBLE PRECISION
    );
    CREATE INDEX deliveries_pending_due ON deliveries(next_attempt_at) WHERE state = 'pending';
    """,
    # 3: the people directory's cache (SQLite migration 5): each source's last good answer.
    """
    CREATE TABLE directory_sources (
        source          TEXT PRIMARY KEY,
        revision        BIGINT NOT NULL DEFAULT 0,
        records         INTEGER NOT NULL DEFAULT 0,
        digest          TEXT,
        synced_at       DOUBLE PRECISION,
        changed_at      DOUBLE PRECISION,
        error           TEXT,
        failed_at       DOUBLE PRECISION
    );
    CREATE TABLE directory_records (
        source          TEXT NOT NULL,
        seq             INTEGER NOT NULL,
        badge           TEXT,
        join_on         TEXT,
        fields          TEXT NOT NULL,
        PRIMARY KEY (source, seq)
    );
    """,
    # 4: operator repairs leave a trace (SQLite migration 7), and rejected payloads are bounded
    # (SQLite migrations 6 and 9): each row counts its `footprint` against the cap kept in
    # rejected_budget, one row (the cap, the running total, the rows kept and those pruned).
    # Every rejection locks that row first, so instances inserting at once take turns.
    """
    CREATE TABLE repairs (
        id              BIGSERIAL PRIMARY KEY,
        at              DOUBLE PRECISION NOT NULL, -- epoch seconds
        by_user         TEXT NOT NULL,             -- the operating-system user of the command
        change          TEXT NOT NULL,             -- e.g. "dead -> pending", "replay"
        deliveries      TEXT NOT NULL              -- JSON array of delivery ids
    );

    ALTER TABLE rejected ADD COLUMN footprint INTEGER NOT NULL DEFAULT 0;
    UPDATE rejected SET footprint = length(payload) + octet_length(topic)
        + octet_length(reason) + octet_length(format) + 160;
    CREATE TABLE rejected_budget (
        id              INTEGER PRIMARY KEY CHECK (id = 1),
        max_bytes       BIGINT NOT NULL,
        stored_bytes    BIGINT NOT NULL,           -- sum of rejected.footprint
        stored_rows     BIGINT NOT NULL,
        pruned          BIGINT NOT NULL            -- rows deleted to stay under max_bytes
    );
    INSERT INTO rejected_budget (id, max_bytes, stored_bytes, stored_rows, pruned)
        SELECT 1, 67108864, COALESCE(SUM(footprint), 0), COUNT(*), 0 FROM rejected;
    """,
    # 5: an event held for an implausible device time and booked at its received time keeps
    # the device's own time here (SQLite migration 12).
    """
    ALTER TABLE events ADD COLUMN device_time TEXT;
    """,
)
