import OrlCore
import PostgresNIO

/// The PostgreSQL schema, as an ordered list of migrations: the same rules as the SQLite
/// list (`OrlStore/Schema.swift`), numbered on their own. A migration, once released,
/// never changes; a change is a new one appended.
///
/// `schema_migrations` holds one row per applied migration. Opening applies the missing
/// ones in one transaction (PostgreSQL's DDL is transactional: all or none), under an
/// advisory lock so that two processes opening a new database do not both migrate it,
/// and refuses a database that has more than this binary knows.
///
/// Columns mirror SQLite's, with PostgreSQL's types: times stay milliseconds since the
/// epoch (BIGINT), so both stores read and write the same values. Every text column
/// collates as "C" (byte order, as SQLite's BINARY), so listings come out in the same
/// order on both, whatever locale the database was created with.
enum PostgresSchema {
    struct Migration {
        var summary: String
        /// One statement each: the extended protocol runs one at a time.
        var statements: [String]
    }

    static let migrations: [Migration] = [
        Migration(
            summary: "create the state: resources, history, events, status, supervision, holds, ledger, vault, runs, sources",
            statements: [
                """
                CREATE TABLE resources (
                    kind TEXT COLLATE "C" NOT NULL,
                    namespace TEXT COLLATE "C" NOT NULL,
                    name TEXT COLLATE "C" NOT NULL,
                    manifest TEXT NOT NULL,
                    manifest_hash TEXT NOT NULL,
                    spec_hash TEXT NOT NULL,
                    generation BIGINT NOT NULL,
                    resource_version BIGINT NOT NULL,
                    source TEXT COLLATE "C" NOT NULL,
                    file TEXT NOT NULL,
                    line BIGINT NOT NULL,
                    revision TEXT,
                    applied_at BIGINT NOT NULL,
                    applied_by TEXT NOT NULL,
                    code_root TEXT,
                    PRIMARY KEY (kind, namespace, name)
                )
                """,
                "CREATE INDEX resources_by_source ON resources (source, kind, namespace, name)",
                """
                CREATE TABLE applies (
                    number BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    source TEXT NOT NULL,
                    revision TEXT,
                    applied_at BIGINT NOT NULL,
                    applied_by TEXT NOT NULL,
                    summary TEXT NOT NULL,
                    plan TEXT NOT NULL,
                    result TEXT NOT NULL
                )
                """,
                """
                CREATE TABLE events (
                    number BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    time BIGINT NOT NULL,
                    kind TEXT NOT NULL CHECK (kind IN ('Normal', 'Warning')),
                    resource_kind TEXT COLLATE "C",
                    resource_namespace TEXT COLLATE "C",
                    resource_name TEXT COLLATE "C",
                    reason TEXT NOT NULL,
                    message TEXT NOT NULL,
                    CHECK ((resource_kind IS NULL) = (resource_namespace IS NULL)
                        AND (resource_kind IS NULL) = (resource_name IS NULL))
                )
                """,
                "CREATE INDEX events_by_resource ON events (resource_kind, resource_namespace, resource_name, number)",
                "CREATE INDEX events_by_time ON events (time)",
                """
                CREATE TABLE status (
                    kind TEXT COLLATE "C" NOT NULL,
                    namespace TEXT COLLATE "C" NOT NULL,
                    name TEXT COLLATE "C" NOT NULL,
                    phase TEXT NOT NULL,
                    conditions TEXT NOT NULL DEFAULT '[]',
                    observed_generation BIGINT NOT NULL DEFAULT 0,
                    updated_at BIGINT NOT NULL,
                    PRIMARY KEY (kind, namespace, name),
                    FOREIGN KEY (kind, namespace, name) REFERENCES resources (kind, namespace, name) ON DELETE CASCADE
                )
                """,
                """
                CREATE TABLE supervision (
                    kind TEXT COLLATE "C" NOT NULL,
                    namespace TEXT COLLATE "C" NOT NULL,
                    name TEXT COLLATE "C" NOT NULL,
                    pid BIGINT,
                    start_time BIGINT,
                    launch_hash TEXT,
                    token_digest TEXT,
                    started_at BIGINT,
                    restarts BIGINT NOT NULL DEFAULT 0,
                    crashes BIGINT NOT NULL DEFAULT 0,
                    last_exit TEXT,
                    exited_at BIGINT,
                    PRIMARY KEY (kind, namespace, name),
                    CHECK ((pid IS NULL) = (start_time IS NULL))
                )
                """,
                """
                CREATE TABLE holds (
                    kind TEXT COLLATE "C" NOT NULL,
                    namespace TEXT COLLATE "C" NOT NULL,
                    name TEXT COLLATE "C" NOT NULL,
                    held_at BIGINT NOT NULL,
                    held_by TEXT NOT NULL,
                    PRIMARY KEY (kind, namespace, name),
                    FOREIGN KEY (kind, namespace, name) REFERENCES resources (kind, namespace, name) ON DELETE CASCADE
                )
                """,
                """
                CREATE TABLE ledger (
                    number BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    time BIGINT NOT NULL,
                    kind TEXT COLLATE "C" NOT NULL,
                    namespace TEXT COLLATE "C" NOT NULL,
                    name TEXT COLLATE "C" NOT NULL,
                    model TEXT COLLATE "C" NOT NULL,
                    prompt_tokens BIGINT NOT NULL,
                    completion_tokens BIGINT NOT NULL,
                    usd DOUBLE PRECISION NOT NULL,
                    latency_ms BIGINT NOT NULL,
                    request_id TEXT NOT NULL,
                    outcome TEXT NOT NULL,
                    run TEXT,
                    step TEXT
                )
                """,
                "CREATE INDEX ledger_by_time ON ledger (time)",
                "CREATE INDEX ledger_by_agent ON ledger (namespace, name, time)",
                "CREATE INDEX ledger_by_run ON ledger (run, step) WHERE run IS NOT NULL",
                """
                CREATE TABLE ledger_daily (
                    day TEXT COLLATE "C" NOT NULL,
                    kind TEXT COLLATE "C" NOT NULL,
                    namespace TEXT COLLATE "C" NOT NULL,
                    name TEXT COLLATE "C" NOT NULL,
                    model TEXT COLLATE "C" NOT NULL,
                    calls BIGINT NOT NULL,
                    prompt_tokens BIGINT NOT NULL,
                    completion_tokens BIGINT NOT NULL,
                    usd DOUBLE PRECISION NOT NULL,
                    PRIMARY KEY (day, kind, namespace, name, model)
                )
                """,
                """
                CREATE TABLE secrets (
                    namespace TEXT COLLATE "C" NOT NULL,
                    name TEXT COLLATE "C" NOT NULL,
                    box BYTEA NOT NULL,
                    key_check TEXT NOT NULL,
                    size BIGINT NOT NULL,
                    updated_at BIGINT NOT NULL,
                    updated_by TEXT NOT NULL,
                    PRIMARY KEY (namespace, name)
                )
                """,
                """
                CREATE TABLE sources (
                    name TEXT COLLATE "C" PRIMARY KEY,
                    url TEXT NOT NULL,
                    ref TEXT,
                    path TEXT,
                    suspended_at BIGINT,
                    suspended_by TEXT,
                    last_applied TEXT,
                    last_applied_at BIGINT,
                    last_attempted TEXT,
                    last_attempted_at BIGINT,
                    result TEXT CHECK (result IN ('Applied', 'Invalid', 'Refused', 'Failed', 'Unreachable')),
                    message TEXT NOT NULL DEFAULT '',
                    failures BIGINT NOT NULL DEFAULT 0,
                    CHECK ((suspended_at IS NULL) = (suspended_by IS NULL))
                )
                """,
                """
                CREATE TABLE manifest_files (
                    source TEXT COLLATE "C" NOT NULL,
                    path TEXT COLLATE "C" NOT NULL,
                    content_hash TEXT NOT NULL,
                    stamp TEXT,
                    record TEXT NOT NULL,
                    PRIMARY KEY (source, path)
                )
                """,
                """
                CREATE TABLE manifest_namespaces (
                    source TEXT COLLATE "C" NOT NULL,
                    namespace TEXT COLLATE "C" NOT NULL,
                    diagnostics TEXT NOT NULL,
                    PRIMARY KEY (source, namespace)
                )
                """,
                """
                CREATE TABLE runs (
                    id TEXT COLLATE "C" NOT NULL PRIMARY KEY,
                    namespace TEXT COLLATE "C" NOT NULL,
                    workflow TEXT COLLATE "C" NOT NULL,
                    generation BIGINT NOT NULL,
                    phase TEXT NOT NULL CHECK (phase IN ('Running', 'Succeeded', 'Failed', 'Cancelled')),
                    trigger TEXT NOT NULL CHECK (trigger IN ('manual', 'schedule')),
                    cron TEXT,
                    slot BIGINT,
                    input TEXT NOT NULL,
                    plan TEXT NOT NULL,
                    created_at BIGINT NOT NULL,
                    created_by TEXT NOT NULL,
                    ended_at BIGINT,
                    error TEXT,
                    CHECK ((trigger = 'schedule') = (slot IS NOT NULL AND cron IS NOT NULL))
                )
                """,
                "CREATE INDEX runs_by_workflow ON runs (namespace, workflow, id)",
                "CREATE UNIQUE INDEX runs_by_slot ON runs (namespace, workflow, slot) WHERE slot IS NOT NULL",
                """
                CREATE TABLE run_steps (
                    run_id TEXT COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
                    idx BIGINT NOT NULL,
                    step TEXT COLLATE "C" NOT NULL,
                    namespace TEXT COLLATE "C" NOT NULL,
                    agent TEXT COLLATE "C",
                    state TEXT NOT NULL CHECK (state IN (
                        'Pending', 'Ready', 'Running', 'WaitingApproval',
                        'Succeeded', 'Failed', 'DeadLetter', 'Skipped', 'Cancelled')),
                    waiting BIGINT NOT NULL DEFAULT 0,
                    attempt BIGINT NOT NULL DEFAULT 0,
                    ready_at BIGINT,
                    lease_expires_at BIGINT,
                    deadline BIGINT,
                    started_at BIGINT,
                    ended_at BIGINT,
                    error TEXT,
                    decided_by TEXT,
                    reason TEXT,
                    PRIMARY KEY (run_id, idx)
                )
                """,
                "CREATE INDEX run_steps_ready ON run_steps (state, namespace, agent, ready_at)",
                "CREATE INDEX run_steps_deadline ON run_steps (state, deadline)",
                "CREATE INDEX run_steps_lease ON run_steps (state, lease_expires_at)",
                "CREATE INDEX run_steps_by_state ON run_steps (run_id, state)",
                """
                CREATE TABLE run_attempts (
                    run_id TEXT COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
                    step TEXT COLLATE "C" NOT NULL,
                    attempt BIGINT NOT NULL,
                    namespace TEXT COLLATE "C" NOT NULL,
                    agent TEXT COLLATE "C" NOT NULL,
                    started_at BIGINT NOT NULL,
                    ended_at BIGINT,
                    outcome TEXT NOT NULL CHECK (outcome IN (
                        'Running', 'Succeeded', 'Failed', 'TimedOut', 'LeaseExpired', 'Abandoned')),
                    error TEXT,
                    PRIMARY KEY (run_id, step, attempt)
                )
                """,
                """
                CREATE TABLE run_values (
                    run_id TEXT COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
                    key TEXT COLLATE "C" NOT NULL,
                    version BIGINT NOT NULL,
                    value TEXT NOT NULL,
                    written_at BIGINT NOT NULL,
                    step TEXT,
                    attempt BIGINT,
                    PRIMARY KEY (run_id, key, version)
                )
                """,
                """
                CREATE TABLE cron_slots (
                    namespace TEXT COLLATE "C" NOT NULL,
                    workflow TEXT COLLATE "C" NOT NULL,
                    cron TEXT COLLATE "C" NOT NULL,
                    slot BIGINT NOT NULL,
                    run_id TEXT,
                    PRIMARY KEY (namespace, workflow, cron)
                )
                """,
                """
                CREATE TABLE tool_approvals (
                    id TEXT COLLATE "C" PRIMARY KEY,
                    namespace TEXT COLLATE "C" NOT NULL,
                    agent TEXT NOT NULL,
                    tool TEXT NOT NULL,
                    arguments TEXT NOT NULL,
                    requested_at BIGINT NOT NULL,
                    expires_at BIGINT NOT NULL,
                    state TEXT NOT NULL,
                    decided_by TEXT,
                    reason TEXT,
                    decided_at BIGINT
                )
                """,
                "CREATE INDEX tool_approvals_pending ON tool_approvals (requested_at) WHERE state = 'Pending'",
                """
                CREATE TABLE alert_outbox (
                    event_number BIGINT NOT NULL,
                    namespace TEXT COLLATE "C" NOT NULL,
                    alert TEXT COLLATE "C" NOT NULL,
                    type TEXT NOT NULL,
                    time BIGINT NOT NULL,
                    resource_kind TEXT NOT NULL,
                    resource_namespace TEXT NOT NULL,
                    resource_name TEXT NOT NULL,
                    reason TEXT NOT NULL,
                    message TEXT NOT NULL,
                    action TEXT,
                    state TEXT NOT NULL DEFAULT 'Pending' CHECK (state IN ('Pending', 'Delivered', 'Failed')),
                    attempts BIGINT NOT NULL DEFAULT 0,
                    next_attempt_at BIGINT NOT NULL,
                    last_error TEXT,
                    delivered_at BIGINT,
                    PRIMARY KEY (namespace, alert, event_number)
                )
                """,
                "CREATE INDEX alert_outbox_due ON alert_outbox (state, next_attempt_at)",
                """
                CREATE TABLE alert_cursor (
                    id BIGINT PRIMARY KEY CHECK (id = 1),
                    event_number BIGINT NOT NULL
                )
                """,
                "INSERT INTO alert_cursor (id, event_number) VALUES (1, 0)",
            ]
        ),
        Migration(
            summary: "budget reservations exact across processes; change counters per topic",
            statements: [
                // As SQLite's: whole micro-dollars and tokens, one row per account and window
                // (agent '' for a shared budget). A reservation is a conditional UPDATE of its
                // lines' rows, so it locks those rows only, not the state.
                """
                CREATE TABLE budget_lines (
                    budget_namespace TEXT COLLATE "C" NOT NULL,
                    budget_name TEXT COLLATE "C" NOT NULL,
                    agent_namespace TEXT COLLATE "C" NOT NULL,
                    agent_name TEXT COLLATE "C" NOT NULL,
                    period TEXT COLLATE "C" NOT NULL,
                    period_start BIGINT NOT NULL,
                    cap_micro_usd BIGINT,
                    cap_tokens BIGINT,
                    spent_micro_usd BIGINT NOT NULL,
                    spent_tokens BIGINT NOT NULL,
                    reserved_micro_usd BIGINT NOT NULL,
                    reserved_tokens BIGINT NOT NULL,
                    PRIMARY KEY (budget_namespace, budget_name, agent_namespace, agent_name, period, period_start)
                )
                """,
                """
                CREATE TABLE budget_holds (
                    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    micro_usd BIGINT NOT NULL,
                    tokens BIGINT NOT NULL,
                    created_at BIGINT NOT NULL,
                    lines TEXT NOT NULL
                )
                """,
                // The SQLite schema's change_topics, counted by statement triggers: what a
                // consumer polls (changeMarker) to learn that another node wrote.
                "CREATE TABLE change_topics (topic TEXT COLLATE \"C\" PRIMARY KEY, generation BIGINT NOT NULL)",
                "INSERT INTO change_topics (topic, generation) VALUES ('resources', 0), ('secrets', 0), ('runs', 0), ('events', 0)",
                """
                CREATE FUNCTION orl_count_change() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    UPDATE change_topics SET generation = generation + 1 WHERE topic = TG_ARGV[0];
                    RETURN NULL;
                END
                $$
                """,
            ]
                + [
                    ("resources", "resources"), ("holds", "resources"), ("secrets", "secrets"), ("runs", "runs"), ("run_steps", "runs"),
                    ("run_attempts", "runs"), ("run_values", "runs"), ("tool_approvals", "runs"),
                ].map { table, topic in
                    "CREATE TRIGGER \(table)_changes AFTER INSERT OR UPDATE OR DELETE ON \(table) "
                        + "FOR EACH STATEMENT EXECUTE FUNCTION orl_count_change('\(topic)')"
                } + ["CREATE TRIGGER events_changes AFTER INSERT ON events FOR EACH STATEMENT EXECUTE FUNCTION orl_count_change('events')"]
        ),
        Migration(
            summary: "keep each source's manifest index as one blob",
            statements: [
                "CREATE TABLE manifest_indexes (source TEXT COLLATE \"C\" NOT NULL PRIMARY KEY, data BYTEA NOT NULL)",
                "DROP TABLE manifest_files",
                "DROP TABLE manifest_namespaces",
            ]
        ),
        Migration(
            summary: "announce every counted change on the orl_changes channel (LISTEN/NOTIFY)",
            statements: [
                // NOTIFY is delivered at commit, to every session listening, on every node
                // (nothing when the transaction rolls back); the same payload is sent once
                // per transaction however many statements fired.
                """
                CREATE OR REPLACE FUNCTION orl_count_change() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    UPDATE change_topics SET generation = generation + 1 WHERE topic = TG_ARGV[0];
                    PERFORM pg_notify('\(PostgresChangeSignal.channel)', TG_ARGV[0]);
                    RETURN NULL;
                END
                $$
                """
            ]
        ),
        Migration(
            summary: "nodes: leases with a fencing generation, agents' placement, singletons; supervision stamped with its node",
            statements: [
                """
                CREATE TABLE nodes (
                    name TEXT COLLATE "C" NOT NULL PRIMARY KEY,
                    generation BIGINT NOT NULL,
                    expires_at BIGINT NOT NULL,
                    renewed_at BIGINT NOT NULL,
                    registered_at BIGINT NOT NULL,
                    labels TEXT NOT NULL,
                    cordoned BIGINT NOT NULL DEFAULT 0
                )
                """,
                """
                CREATE TABLE agent_assignments (
                    kind TEXT COLLATE "C" NOT NULL,
                    namespace TEXT COLLATE "C" NOT NULL,
                    name TEXT COLLATE "C" NOT NULL,
                    node TEXT COLLATE "C" NOT NULL,
                    generation BIGINT NOT NULL,
                    replacing_node TEXT COLLATE "C",
                    replacing_generation BIGINT,
                    released BIGINT NOT NULL DEFAULT 0,
                    assigned_at BIGINT NOT NULL,
                    PRIMARY KEY (kind, namespace, name)
                )
                """,
                """
                CREATE TABLE singletons (
                    role TEXT COLLATE "C" NOT NULL PRIMARY KEY,
                    node TEXT COLLATE "C" NOT NULL,
                    generation BIGINT NOT NULL,
                    since BIGINT NOT NULL
                )
                """,
                "ALTER TABLE supervision ADD COLUMN node TEXT COLLATE \"C\"",
                "ALTER TABLE supervision ADD COLUMN node_generation BIGINT",
            ]
        ),
        Migration(
            summary: "budget holds that expire: who made each (gateway, node and generation), its lease, and released ones kept",
            statements: [
                // As SQLite's: holds made before have no expires_at and never expire.
                "ALTER TABLE budget_holds ADD COLUMN owner TEXT COLLATE \"C\" NOT NULL DEFAULT ''",
                "ALTER TABLE budget_holds ADD COLUMN node TEXT COLLATE \"C\" NOT NULL DEFAULT ''",
                "ALTER TABLE budget_holds ADD COLUMN node_generation BIGINT NOT NULL DEFAULT 0",
                "ALTER TABLE budget_holds ADD COLUMN expires_at BIGINT",
                "ALTER TABLE budget_holds ADD COLUMN released_at BIGINT",
                "CREATE INDEX budget_holds_by_owner ON budget_holds (owner) WHERE released_at IS NULL",
            ]
        ),
        Migration(
            summary: "the process that claimed each running step (its token digest), so its end gives the attempt up at once",
            statements: [
                // As SQLite's: steps claimed before have none and wait for their lease.
                "ALTER TABLE run_steps ADD COLUMN claimant TEXT COLLATE \"C\""
            ]
        ),
        Migration(
            summary: "manifest indexes compressed with lz4 where the server has it",
            statements: [
                // A source's index is a blob of megabytes rewritten by every apply that changes
                // a file: pglz, PostgreSQL's default, took 200+ ms of the server's CPU to compress
                // 3.4 MB (a one-change apply of 10,000 manifests spent most of its time there)
                // and 15-40 ms to read it back; lz4 compresses as well here at a quarter of the
                // cost and reads it back at a third. PostgreSQL 13, or a server built without
                // lz4, keeps pglz.
                """
                DO $$
                BEGIN
                    IF current_setting('server_version_num')::int >= 140000 THEN
                        BEGIN
                            EXECUTE 'ALTER TABLE manifest_indexes ALTER COLUMN data SET COMPRESSION lz4';
                        EXCEPTION WHEN feature_not_supported THEN
                            NULL;
                        END;
                    END IF;
                END
                $$
                """
            ]
        ),
        Migration(
            summary: "budget reservations and settlements, one statement each",
            statements: [
                // One call per reservation (see PostgresBudgets): the lines' row locks, which
                // serialize every gateway's calls on a budget, are held for this function and the
                // commit only, never across round trips. Lines are taken in key order (bytes, as
                // every other locker of lines takes them), so two reservations never deadlock. A
                // refused line gives back the lines reserved before it (the inner block is a
                // subtransaction) and is returned as it stood. A cap of -1 is no cap.
                """
                CREATE FUNCTION orl_budget_reserve(
                    budget_namespaces TEXT[], budget_names TEXT[], agent_namespaces TEXT[], agent_names TEXT[], periods TEXT[],
                    period_starts BIGINT[], caps_usd BIGINT[], caps_tokens BIGINT[], before_usd BIGINT[], before_tokens BIGINT[],
                    amount_usd BIGINT, amount_tokens BIGINT,
                    OUT refused_line INTEGER, OUT line_spent_usd BIGINT, OUT line_spent_tokens BIGINT,
                    OUT line_reserved_usd BIGINT, OUT line_reserved_tokens BIGINT)
                LANGUAGE plpgsql AS $$
                DECLARE
                    i INTEGER;
                    usd_cap BIGINT;
                    token_cap BIGINT;
                BEGIN
                    PERFORM set_config('synchronous_commit', 'off', true);
                    BEGIN
                        FOR i IN
                            SELECT o FROM generate_subscripts(budget_namespaces, 1) AS o
                            ORDER BY budget_namespaces[o] COLLATE "C", budget_names[o] COLLATE "C", agent_namespaces[o] COLLATE "C",
                                agent_names[o] COLLATE "C", periods[o] COLLATE "C", period_starts[o]
                        LOOP
                            usd_cap := NULLIF(caps_usd[i], -1);
                            token_cap := NULLIF(caps_tokens[i], -1);
                            INSERT INTO budget_lines (budget_namespace, budget_name, agent_namespace, agent_name, period, period_start,
                                cap_micro_usd, cap_tokens, spent_micro_usd, spent_tokens, reserved_micro_usd, reserved_tokens)
                            VALUES (budget_namespaces[i], budget_names[i], agent_namespaces[i], agent_names[i], periods[i],
                                period_starts[i], usd_cap, token_cap, before_usd[i], before_tokens[i], 0, 0)
                            ON CONFLICT DO NOTHING;
                            UPDATE budget_lines AS b SET cap_micro_usd = usd_cap, cap_tokens = token_cap,
                                reserved_micro_usd = b.reserved_micro_usd + amount_usd, reserved_tokens = b.reserved_tokens + amount_tokens
                            WHERE b.budget_namespace = budget_namespaces[i] AND b.budget_name = budget_names[i]
                                AND b.agent_namespace = agent_namespaces[i] AND b.agent_name = agent_names[i]
                                AND b.period = periods[i] AND b.period_start = period_starts[i]
                                AND (usd_cap IS NULL OR b.spent_micro_usd + b.reserved_micro_usd + amount_usd <= usd_cap)
                                AND (token_cap IS NULL OR b.spent_tokens + b.reserved_tokens + amount_tokens <= token_cap);
                            IF NOT FOUND THEN
                                -- The UPDATE waited for the row's lock: this reads what it refused, or later.
                                SELECT b.spent_micro_usd, b.spent_tokens, b.reserved_micro_usd, b.reserved_tokens
                                INTO line_spent_usd, line_spent_tokens, line_reserved_usd, line_reserved_tokens
                                FROM budget_lines AS b
                                WHERE b.budget_namespace = budget_namespaces[i] AND b.budget_name = budget_names[i]
                                    AND b.agent_namespace = agent_namespaces[i] AND b.agent_name = agent_names[i]
                                    AND b.period = periods[i] AND b.period_start = period_starts[i];
                                refused_line := i;
                                RAISE SQLSTATE 'ORL01';
                            END IF;
                        END LOOP;
                    EXCEPTION WHEN SQLSTATE 'ORL01' THEN
                        NULL;
                    END;
                END
                $$
                """,
                // Settling or releasing a hold's lines (the caller deletes the hold in the same
                // statement): in the same key order as reservations.
                """
                CREATE FUNCTION orl_budget_settle(lines TEXT, held_usd BIGINT, held_tokens BIGINT, cost_usd BIGINT, cost_tokens BIGINT)
                RETURNS BOOLEAN LANGUAGE plpgsql AS $$
                DECLARE
                    k RECORD;
                BEGIN
                    PERFORM set_config('synchronous_commit', 'off', true);
                    FOR k IN
                        SELECT f[1] AS bns, f[2] AS bn, f[3] AS ans, f[4] AS an, f[5] AS period, f[6] AS window_start, cardinality(f) AS fields
                        FROM (SELECT string_to_array(l, E'\\t') AS f FROM unnest(string_to_array(lines, E'\\n')) AS l WHERE l <> '') AS s
                        ORDER BY f[1] COLLATE "C", f[2] COLLATE "C", f[3] COLLATE "C", f[4] COLLATE "C", f[5] COLLATE "C",
                            CASE WHEN f[6] ~ '^-?[0-9]+$' THEN f[6]::BIGINT END
                    LOOP
                        IF k.fields <> 6 OR k.window_start !~ '^-?[0-9]+$' THEN
                            RAISE EXCEPTION 'a budget hold is corrupt (its lines)';
                        END IF;
                        UPDATE budget_lines SET reserved_micro_usd = reserved_micro_usd - held_usd,
                            reserved_tokens = reserved_tokens - held_tokens,
                            spent_micro_usd = spent_micro_usd + cost_usd, spent_tokens = spent_tokens + cost_tokens
                        WHERE budget_namespace = k.bns AND budget_name = k.bn AND agent_namespace = k.ans AND agent_name = k.an
                            AND period = k.period AND period_start = k.window_start::BIGINT;
                    END LOOP;
                    RETURN true;
                END
                $$
                """,
            ]
        ),
        Migration(
            summary: "the runs topic moves once per transaction that writes runs, not once per statement",
            // A statement trigger on each run table moved the topic (and notified) at every
            // statement: six in a step's transaction. The writer now moves it once, before
            // it commits (`PostgresAccess.countRunChanges`).
            statements: ["runs", "run_steps", "run_attempts", "run_values", "tool_approvals"].map { "DROP TRIGGER \($0)_changes ON \($0)" }
        ),
        Migration(
            summary: "the steps' indexes hold only the steps their queries look for, and one index for what is due",
            // The twin of SQLite's "the steps' indexes hold only the steps their queries look
            // for" and "fewer pages written per step": a step changing state rewrote its entry in
            // four indexes led by the state, and ended steps stayed in them for good. The
            // partial indexes hold a step only while a query can want it; the deadline and
            // lease indexes become one on when a step is due (a Running step at the earlier
            // of its lease and deadline, a gate at its deadline: PostgresRunAccess names the
            // same expression). SQLite's blackboard without rowids has no twin: a heap table
            // and its primary key index are what PostgreSQL has.
            statements: [
                "DROP INDEX run_steps_ready",
                "DROP INDEX run_steps_deadline",
                "DROP INDEX run_steps_lease",
                "DROP INDEX run_steps_by_state",
                "CREATE INDEX run_steps_ready ON run_steps (namespace, agent, ready_at) WHERE state = 'Ready'",
                """
                CREATE INDEX run_steps_due ON run_steps ((CASE WHEN state = 'Running' THEN LEAST(lease_expires_at, deadline) ELSE deadline END))
                WHERE state IN ('Running', 'WaitingApproval')
                """,
                "CREATE INDEX run_steps_waiting ON run_steps (namespace) WHERE state = 'WaitingApproval'",
                "CREATE INDEX run_steps_open ON run_steps (run_id) WHERE state IN ('Pending', 'Ready', 'Running', 'WaitingApproval')",
            ]
        ),
    ]

    static var version: Int { migrations.count }

    /// Keys of the advisory locks the store takes (`pg_advisory_xact_lock`): 'orl' in the
    /// high bytes, so that they do not collide with another application's in the database.
    enum LockKey {
        static let write: Int64 = 0x6F72_6C00_0000_0001
        static let migrate: Int64 = 0x6F72_6C00_0000_0002
    }

    /// Brings the database up to `version`, or refuses it when it is newer.
    static func migrate(_ session: PostgresSession) throws(StoreError) {
        // The common case, an up-to-date database, takes no lock.
        if try currentVersion(session, tableMayBeMissing: true) == version { return }
        let intent = "migrate the PostgreSQL state"
        try session.execute("BEGIN", intent: intent)
        do throws(StoreError) {
            try session.execute("SELECT pg_advisory_xact_lock($1)", [.int(LockKey.migrate)], intent: intent)
            try session.execute(
                """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version BIGINT PRIMARY KEY,
                    summary TEXT NOT NULL,
                    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
                )
                """, intent: intent)
            // Read again under the lock: another process may have migrated meanwhile.
            let current = try currentVersion(session, tableMayBeMissing: false)
            for number in current..<version {
                let migration = migrations[number]
                let step = "migrate the PostgreSQL state to schema \(number + 1) (\(migration.summary))"
                for statement in migration.statements { try session.execute(statement, intent: step) }
                try session.execute(
                    "INSERT INTO schema_migrations (version, summary) VALUES ($1, $2)",
                    [.int(number + 1), .text(migration.summary)], intent: step)
            }
            try session.execute("COMMIT", intent: intent)
        } catch {
            _ = try? session.execute("ROLLBACK", intent: intent)
            throw error
        }
    }

    private static func currentVersion(_ session: PostgresSession, tableMayBeMissing: Bool) throws(StoreError) -> Int {
        let intent = "read the schema version of the PostgreSQL state"
        let rows: [PostgresRandomAccessRow]
        do {
            rows = try session.query("SELECT coalesce(max(version), 0)::bigint FROM schema_migrations", intent: intent)
        } catch {
            // An empty database has no table yet (42P01, undefined_table): asked directly, as
            // every command's connect does, rather than first asking whether the table exists,
            // which cost every command a round trip. Outside a transaction the failed
            // statement leaves the session usable.
            guard tableMayBeMissing, error.message.contains("[SQLSTATE 42P01]") else { throw error }
            return 0
        }
        let current = try rows.first?.int(0) ?? 0
        guard current <= version else {
            throw StoreError(
                "this state was written by a newer orlctl (schema \(current)); upgrade orlctl "
                    + "(this one knows schema \(version) and earlier) to use \(session.url)")
        }
        return current
    }
}
