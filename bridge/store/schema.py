"""Numbered schema migrations. Append only: a released migration is never edited, so a later
release upgrades an existing gateway's database in place (PRAGMA user_version = applied count).
"""

MIGRATIONS: tuple[str, ...] = (
    # 1: events, their deliveries (one per sink) and rejected payloads.
    """
    CREATE TABLE events (
        id              INTEGER PRIMARY KEY,
        key             TEXT NOT NULL UNIQUE,      -- layer 1 duplicate detection
        terminal        TEXT NOT NULL,
        subject         TEXT NOT NULL,             -- badge:<uid> or user:<id>
        badge           TEXT,
        user_id         TEXT,
        action          TEXT NOT NULL,
        action_inferred INTEGER NOT NULL,
        event_time      TEXT NOT NULL,             -- UTC, fixed width, sorts as time
        local_day       TEXT NOT NULL,             -- site-local date, for in/out inference
        time_given      INTEGER NOT NULL,
        received_at     TEXT NOT NULL,
        status          TEXT NOT NULL,             -- accepted | unmapped | duplicate
        duplicate_of    INTEGER REFERENCES events(id),
        topic           TEXT NOT NULL,
        job             TEXT,
        lat             REAL,
        lon             REAL,
        note            TEXT
    );
    CREATE INDEX events_subject_time ON events(subject, event_time);

    CREATE TABLE deliveries (
        id              INTEGER PRIMARY KEY,
        event_id        INTEGER NOT NULL REFERENCES events(id),
        sink            TEXT NOT NULL,
        person          TEXT,                      -- id at this sink; NULL: unmapped
        event_time      TEXT NOT NULL,             -- copied from the event: the order key
        state           TEXT NOT NULL,             -- unmapped|pending|inflight|held|delivered|dead
        outcome         TEXT,                      -- delivered | duplicate, once settled
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,             -- unix seconds
        created_at      REAL NOT NULL,
        settled_at      REAL,
        last_error      TEXT,
        UNIQUE (event_id, sink)
    );
    CREATE INDEX deliveries_due ON deliveries(sink, state, next_attempt_at);
    CREATE INDEX deliveries_person ON deliveries(sink, person, state, event_time);

    CREATE TABLE rejected (
        id              INTEGER PRIMARY KEY,
        received_at     TEXT NOT NULL,
        topic           TEXT NOT NULL,
        format          TEXT NOT NULL,
        payload         BLOB NOT NULL,
        payload_size    INTEGER NOT NULL,
        reason          TEXT NOT NULL
    );
    """,
    # 2: what a stateful sink knows of each person (McTime's clock, TimeTrack's open shift),
    # written in the same transaction as the delivery outcome that changed it.
    """
    CREATE TABLE person_state (
        sink            TEXT NOT NULL,
        person          TEXT NOT NULL,
        state           TEXT NOT NULL,             -- JSON object
        updated_at      REAL NOT NULL,
        PRIMARY KEY (sink, person)
    );
    """,
    # 3: the terminal's own event id, echoed back to it in delivery feedback.
    """
    ALTER TABLE events ADD COLUMN source_id TEXT;
    """,
    # 4: operator repairs. A rejected payload that a later config or directory turned into an
    # event is kept and marked (when, and the event key it became); a delivery replayed to its
    # sink counts how often. Deliveries gain the terminal state 'dropped' (no column needed).
    """
    ALTER TABLE rejected ADD COLUMN reprocessed_at TEXT;
    ALTER TABLE rejected ADD COLUMN reprocessed_as TEXT;
    ALTER TABLE deliveries ADD COLUMN replayed INTEGER NOT NULL DEFAULT 0;
    """,
    # 5: the people directory's cache: each source's last good answer (no secrets: only the
    # directory columns), so badges stay mapped through a vendor outage and across restarts.
    # `revision` grows whenever a source's records change, so the daemon notices a sync that
    # `clockin-bridge directory sync` ran beside it.
    """
    CREATE TABLE directory_sources (
        source          TEXT PRIMARY KEY,
        revision        INTEGER NOT NULL DEFAULT 0,
        records         INTEGER NOT NULL DEFAULT 0,
        digest          TEXT,                      -- of the records, to tell a change
        synced_at       REAL,                      -- unix seconds of the last good answer
        changed_at      REAL,
        error           TEXT,                      -- the last failure; NULL once one works
        failed_at       REAL
    );
    CREATE TABLE directory_records (
        source          TEXT NOT NULL,
        seq             INTEGER NOT NULL,
        badge           TEXT,                      -- badge sources; NULL for account sources
        join_on         TEXT,                      -- account sources: employee_number | email
        fields          TEXT NOT NULL,             -- JSON object: directory column -> value
        PRIMARY KEY (source, seq)
    );
    """,
    # 6: rejected payloads are bounded. A row keeps at most 16 KiB of the payload, with the
    # sha256 of the whole one (NULL on rows from before) and what the row counts against the
    # cap (`footprint`, bytes). rejected_budget, one row: the cap, the running total of the
    # footprints (so an insert never sums the table) and how many rows were pruned, oldest
    # first, to stay under the cap.
    """
    ALTER TABLE rejected ADD COLUMN payload_sha256 TEXT;
    ALTER TABLE rejected ADD COLUMN footprint INTEGER NOT NULL DEFAULT 0;
    UPDATE rejected SET footprint = length(payload) + length(CAST(topic AS BLOB))
        + length(CAST(reason AS BLOB)) + length(CAST(format AS BLOB)) + 160;
    CREATE TABLE rejected_budget (
        id              INTEGER PRIMARY KEY CHECK (id = 1),
        max_bytes       INTEGER NOT NULL,
        stored_bytes    INTEGER NOT NULL,          -- sum of rejected.footprint
        pruned          INTEGER NOT NULL           -- rows deleted to stay under max_bytes
    );
    INSERT INTO rejected_budget (id, max_bytes, stored_bytes, pruned)
        VALUES (1, 67108864, (SELECT COALESCE(SUM(footprint), 0) FROM rejected), 0);
    """,
    # 7: operator repairs leave a trace: each state change a command makes (dead retry/drop,
    # held complete/drop, replay) adds a row in its own transaction, and the daemon logs it
    # (repair.applied) when it notices the commit. Only the last 10,000 are kept.
    """
    CREATE TABLE repairs (
        id              INTEGER PRIMARY KEY,
        at              REAL NOT NULL,             -- epoch seconds
        by_user         TEXT NOT NULL,             -- the operating-system user of the command
        change          TEXT NOT NULL,             -- e.g. "dead -> pending", "replay"
        deliveries      TEXT NOT NULL              -- JSON array of delivery ids
    );
    """,
    # 8: bounded history. `counters` holds what status reports (events by status, deliveries
    # by sink and state, deliveries retried, rejected rows), kept by triggers in the very
    # transaction that changes a row, whichever process or code path writes it; filled here
    # from the tables as they are. `deliveries_waiting` (only pending and in-flight rows) gives
    # each sink's oldest undelivered delivery without a scan. `kept_keys`: layer-1 keys of
    # pruned events, so a late resend is still a duplicate (dropped after store.dedupe_days).
    """
    CREATE TABLE counters (
        name            TEXT NOT NULL,             -- events | deliveries | retried | rejected
        sink            TEXT NOT NULL,             -- '' unless name = deliveries
        state           TEXT NOT NULL,             -- event status, delivery state, or ''
        n               INTEGER NOT NULL,
        PRIMARY KEY (name, sink, state)
    ) WITHOUT ROWID;
    INSERT INTO counters SELECT 'events', '', status, COUNT(*) FROM events GROUP BY status;
    INSERT INTO counters
        SELECT 'deliveries', sink, state, COUNT(*) FROM deliveries GROUP BY sink, state;
    INSERT INTO counters SELECT 'retried', '', '', COUNT(*) FROM deliveries WHERE attempts > 1;
    INSERT INTO counters SELECT 'rejected', '', '', COUNT(*) FROM rejected;

    CREATE TRIGGER counters_event_in AFTER INSERT ON events BEGIN
        INSERT INTO counters VALUES ('events', '', NEW.status, 1)
            ON CONFLICT (name, sink, state) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER counters_event_out AFTER DELETE ON events BEGIN
        UPDATE counters SET n = n - 1
            WHERE name = 'events' AND sink = '' AND state = OLD.status;
    END;
    CREATE TRIGGER counters_event_moved AFTER UPDATE OF status ON events
    WHEN OLD.status IS NOT NEW.status BEGIN
        UPDATE counters SET n = n - 1
            WHERE name = 'events' AND sink = '' AND state = OLD.status;
        INSERT INTO counters VALUES ('events', '', NEW.status, 1)
            ON CONFLICT (name, sink, state) DO UPDATE SET n = n + 1;
    END;

    CREATE TRIGGER counters_delivery_in AFTER INSERT ON deliveries BEGIN
        INSERT INTO counters VALUES ('deliveries', NEW.sink, NEW.state, 1)
            ON CONFLICT (name, sink, state) DO UPDATE SET n = n + 1;
        INSERT INTO counters SELECT 'retried', '', '', 1 WHERE NEW.attempts > 1
            ON CONFLICT (name, sink, state) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER counters_delivery_out AFTER DELETE ON deliveries BEGIN
        UPDATE counters SET n = n - 1
            WHERE name = 'deliveries' AND sink = OLD.sink AND state = OLD.state;
        UPDATE counters SET n = n - 1
            WHERE name = 'retried' AND sink = '' AND state = '' AND OLD.attempts > 1;
    END;
    CREATE TRIGGER counters_delivery_moved AFTER UPDATE OF state, sink ON deliveries
    WHEN OLD.state IS NOT NEW.state OR OLD.sink IS NOT NEW.sink BEGIN
        UPDATE counters SET n = n - 1
            WHERE name = 'deliveries' AND sink = OLD.sink AND state = OLD.state;
        INSERT INTO counters VALUES ('deliveries', NEW.sink, NEW.state, 1)
            ON CONFLICT (name, sink, state) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER counters_delivery_retried AFTER UPDATE OF attempts ON deliveries
    WHEN (OLD.attempts > 1) IS NOT (NEW.attempts > 1) BEGIN
        INSERT INTO counters VALUES ('retried', '', '', IIF(NEW.attempts > 1, 1, -1))
            ON CONFLICT (name, sink, state) DO UPDATE SET n = n + excluded.n;
    END;

    CREATE TRIGGER counters_rejected_in AFTER INSERT ON rejected BEGIN
        INSERT INTO counters VALUES ('rejected', '', '', 1)
            ON CONFLICT (name, sink, state) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER counters_rejected_out AFTER DELETE ON rejected BEGIN
        UPDATE counters SET n = n - 1 WHERE name = 'rejected' AND sink = '' AND state = '';
    END;

    CREATE INDEX deliveries_waiting ON deliveries(sink, created_at)
        WHERE state IN ('pending', 'inflight');

    CREATE TABLE kept_keys (
        key             TEXT PRIMARY KEY,          -- events.key of a pruned event
        action          TEXT NOT NULL,             -- what a resend is answered with
        pruned_at       REAL NOT NULL              -- epoch seconds
    ) WITHOUT ROWID;
    CREATE INDEX kept_keys_pruned ON kept_keys(pruned_at);
    """,
    # 9: the count of rejected rows moves to rejected_budget, the one row every insert and
    # every pruning of a rejected payload already rewrites: a counters row beside it added a
    # page to each such transaction (a junk flood's WAL grew by half again).
    """
    DROP TRIGGER counters_rejected_in;
    DROP TRIGGER counters_rejected_out;
    DELETE FROM counters WHERE name = 'rejected';
    ALTER TABLE rejected_budget ADD COLUMN stored_rows INTEGER NOT NULL DEFAULT 0;
    UPDATE rejected_budget SET stored_rows = (SELECT COUNT(*) FROM rejected) WHERE id = 1;
    CREATE TRIGGER budget_rejected_in AFTER INSERT ON rejected BEGIN
        UPDATE rejected_budget SET stored_rows = stored_rows + 1 WHERE id = 1;
    END;
    CREATE TRIGGER budget_rejected_out AFTER DELETE ON rejected BEGIN
        UPDATE rejected_budget SET stored_rows = stored_rows - 1 WHERE id = 1;
    END;
    """,
    # 10: an operator released a held late punch (`held release`): it is sent although a later
    # punch of the person was already applied at that sink (bridge.store.queue).
    """
    ALTER TABLE deliveries ADD COLUMN out_of_order INTEGER NOT NULL DEFAULT 0;
    """,
    # 11: how many stored events had their direction inferred (no action from the terminal),
    # for `status` and the page, kept by triggers like the other counters of migration 8.
    """
    INSERT INTO counters SELECT 'inferred', '', '', COUNT(*) FROM events WHERE action_inferred;
    CREATE TRIGGER counters_inferred_in AFTER INSERT ON events WHEN NEW.action_inferred BEGIN
        INSERT INTO counters VALUES ('inferred', '', '', 1)
            ON CONFLICT (name, sink, state) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER counters_inferred_out AFTER DELETE ON events WHEN OLD.action_inferred BEGIN
        UPDATE counters SET n = n - 1 WHERE name = 'inferred' AND sink = '' AND state = '';
    END;
    """,
    # 12: an event with an implausible device time is stored with status 'held' (its
    # deliveries held) instead of rejected; when an operator books it at the time the gateway
    # received it (`held complete ID --use-received-time`), event_time becomes received_at and
    # the device's own time is kept here for the audit trail. NULL: the time was never replaced.
    """
    ALTER TABLE events ADD COLUMN device_time TEXT;
    """,
)
