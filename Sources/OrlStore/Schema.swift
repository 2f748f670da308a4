import OrlCore

/// The database schema, as an ordered list of migrations.
///
/// `PRAGMA user_version` holds how many migrations a database has had. Opening applies
/// the missing ones, in order, in one write transaction, and refuses a database that has
/// more than this binary knows (written by a newer orlctl): reading it could misread
/// columns, and writing it could break the newer binary.
///
/// A migration, once released, never changes: a change is a new migration appended to
/// the list.
enum Schema {
    struct Migration {
        /// What the migration does, for errors.
        var summary: String
        var sql: String
    }

    static let migrations: [Migration] = [
        Migration(
            summary: "create resources, applies, events and status",
            sql: """
                -- The actual state: the manifest each resource was last applied with.
                -- A rowid table (not WITHOUT ROWID): manifests are kilobytes, and SQLite
                -- advises rowid tables for rows that large.
                CREATE TABLE resources (
                    kind TEXT NOT NULL,
                    namespace TEXT NOT NULL,
                    name TEXT NOT NULL,
                    manifest TEXT NOT NULL,           -- canonical JSON
                    spec_hash TEXT NOT NULL,          -- SHA-256 of the canonical spec, hex
                    generation INTEGER NOT NULL,
                    resource_version INTEGER NOT NULL,
                    source TEXT NOT NULL,             -- the apply source that owns it
                    file TEXT NOT NULL,
                    line INTEGER NOT NULL,
                    revision TEXT,                    -- a git commit, when known
                    applied_at INTEGER NOT NULL,      -- milliseconds since the epoch, UTC
                    applied_by TEXT NOT NULL,
                    PRIMARY KEY (kind, namespace, name)
                );
                -- The inventory of a source ("resources where source = ?"), covering.
                CREATE INDEX resources_by_source ON resources (source, kind, namespace, name);

                -- The append-only apply history. AUTOINCREMENT: a number is never reused,
                -- even after the newest applies are deleted.
                CREATE TABLE applies (
                    number INTEGER PRIMARY KEY AUTOINCREMENT,
                    source TEXT NOT NULL,
                    revision TEXT,
                    applied_at INTEGER NOT NULL,
                    applied_by TEXT NOT NULL,
                    summary TEXT NOT NULL,
                    plan TEXT NOT NULL,               -- JSON
                    result TEXT NOT NULL
                );

                -- Events; they outlive the resources they are about, so no foreign key.
                CREATE TABLE events (
                    number INTEGER PRIMARY KEY AUTOINCREMENT,
                    time INTEGER NOT NULL,
                    kind TEXT NOT NULL CHECK (kind IN ('Normal', 'Warning')),
                    resource_kind TEXT,
                    resource_namespace TEXT,
                    resource_name TEXT,
                    reason TEXT NOT NULL,
                    message TEXT NOT NULL,
                    CHECK ((resource_kind IS NULL) = (resource_namespace IS NULL)
                        AND (resource_kind IS NULL) = (resource_name IS NULL))
                );
                -- A resource's events, newest first.
                CREATE INDEX events_by_resource ON events (resource_kind, resource_namespace, resource_name, number);

                -- What the controller observed of each resource (no API yet). Goes away
                -- with the resource.
                CREATE TABLE status (
                    kind TEXT NOT NULL,
                    namespace TEXT NOT NULL,
                    name TEXT NOT NULL,
                    phase TEXT NOT NULL,
                    conditions TEXT NOT NULL DEFAULT '[]',  -- JSON array of conditions
                    observed_generation INTEGER NOT NULL DEFAULT 0,
                    updated_at INTEGER NOT NULL,
                    PRIMARY KEY (kind, namespace, name),
                    FOREIGN KEY (kind, namespace, name) REFERENCES resources (kind, namespace, name) ON DELETE CASCADE
                );
                """
        ),
        Migration(
            summary: "create supervision",
            sql: """
                -- The controller's record of each agent's process, so that a new controller
                -- adopts what an earlier one started. No foreign key: a removed agent's
                -- process is supervised until it has been stopped.
                CREATE TABLE supervision (
                    kind TEXT NOT NULL,
                    namespace TEXT NOT NULL,
                    name TEXT NOT NULL,
                    pid INTEGER,
                    start_time INTEGER,               -- clock ticks since boot (/proc/PID/stat)
                    launch_hash TEXT,
                    token TEXT,                       -- the agent's ORL_TOKEN
                    started_at INTEGER,               -- milliseconds since the epoch, UTC
                    restarts INTEGER NOT NULL DEFAULT 0,
                    crashes INTEGER NOT NULL DEFAULT 0,
                    last_exit TEXT,                   -- exited:CODE or signaled:SIGNAL
                    exited_at INTEGER,
                    PRIMARY KEY (kind, namespace, name),
                    CHECK ((pid IS NULL) = (start_time IS NULL))
                );
                """
        ),
        Migration(
            summary: "create holds",
            sql: """
                -- Agents suspended by orlctl suspend, kept apart from the manifest so that
                -- a re-apply does not undo it. Goes away with the resource.
                CREATE TABLE holds (
                    kind TEXT NOT NULL,
                    namespace TEXT NOT NULL,
                    name TEXT NOT NULL,
                    held_at INTEGER NOT NULL,         -- milliseconds since the epoch, UTC
                    held_by TEXT NOT NULL,
                    PRIMARY KEY (kind, namespace, name),
                    FOREIGN KEY (kind, namespace, name) REFERENCES resources (kind, namespace, name) ON DELETE CASCADE
                );
                """
        ),
        Migration(
            summary: "create ledger; keep agent tokens as digests",
            sql: """
                -- Every model call the gateway forwarded, for orlctl usage and budgets' spend.
                -- No foreign key: spend outlives the agent that spent it.
                CREATE TABLE ledger (
                    number INTEGER PRIMARY KEY AUTOINCREMENT,
                    time INTEGER NOT NULL,            -- when the call began, ms since the epoch, UTC
                    kind TEXT NOT NULL,               -- the agent
                    namespace TEXT NOT NULL,
                    name TEXT NOT NULL,
                    model TEXT NOT NULL,              -- provider/model
                    prompt_tokens INTEGER NOT NULL,
                    completion_tokens INTEGER NOT NULL,
                    usd REAL NOT NULL,
                    latency_ms INTEGER NOT NULL,
                    request_id TEXT NOT NULL,
                    outcome TEXT NOT NULL,
                    run TEXT,
                    step TEXT
                );
                -- Spend since a window's start, and one agent's calls.
                CREATE INDEX ledger_by_time ON ledger (time);
                CREATE INDEX ledger_by_agent ON ledger (namespace, name, time);

                -- Tokens were stored as they were; now only their SHA-256. The old ones
                -- cannot be turned into digests here, so their agents get new ones.
                ALTER TABLE supervision RENAME COLUMN token TO token_digest;
                UPDATE supervision SET token_digest = NULL;
                """
        ),
        Migration(
            summary: "create secrets",
            sql: """
                -- The vault: each value sealed with AES-256-GCM under the master key (which
                -- is never in the database), its namespace/name as associated data. Never
                -- plain text. Secrets are not resources: no foreign key.
                CREATE TABLE secrets (
                    namespace TEXT NOT NULL,
                    name TEXT NOT NULL,
                    box BLOB NOT NULL,                -- nonce (12 bytes), ciphertext, tag (16 bytes)
                    key_check TEXT NOT NULL,          -- identifies the master key that sealed it
                    size INTEGER NOT NULL,            -- the value's length in bytes
                    updated_at INTEGER NOT NULL,      -- milliseconds since the epoch, UTC
                    updated_by TEXT NOT NULL,
                    PRIMARY KEY (namespace, name)
                );
                """
        ),
        Migration(
            summary: "create runs, run steps, attempts, the blackboard and cron slots",
            sql: """
                -- Workflow runs. A run keeps the plan it started with (the DAG, retry
                -- policies, inputs, as JSON), so a re-apply does not change a run in flight.
                -- A rowid table: plans are kilobytes.
                CREATE TABLE runs (
                    id TEXT NOT NULL PRIMARY KEY,     -- 13 characters, sorted by creation time
                    namespace TEXT NOT NULL,
                    workflow TEXT NOT NULL,
                    generation INTEGER NOT NULL,      -- the Workflow's, when the run started
                    phase TEXT NOT NULL CHECK (phase IN ('Running', 'Succeeded', 'Failed', 'Cancelled')),
                    trigger TEXT NOT NULL CHECK (trigger IN ('manual', 'schedule')),
                    cron TEXT,                        -- schedule: the trigger's expression
                    slot INTEGER,                     -- schedule: the slot, milliseconds since the epoch
                    input TEXT NOT NULL,              -- JSON object of strings
                    plan TEXT NOT NULL,               -- JSON
                    created_at INTEGER NOT NULL,
                    created_by TEXT NOT NULL,
                    ended_at INTEGER,
                    error TEXT,
                    CHECK ((trigger = 'schedule') = (slot IS NOT NULL AND cron IS NOT NULL))
                );
                CREATE INDEX runs_by_workflow ON runs (namespace, workflow, id);
                -- At most one run per schedule slot of a workflow, whatever else goes wrong.
                CREATE UNIQUE INDEX runs_by_slot ON runs (namespace, workflow, slot) WHERE slot IS NOT NULL;

                -- Each step of each run: its state, attempts and lease. The agent is kept
                -- (not only in the plan) so that the next task of an agent is one index seek.
                CREATE TABLE run_steps (
                    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
                    idx INTEGER NOT NULL,             -- the step's position in the workflow
                    step TEXT NOT NULL,
                    namespace TEXT NOT NULL,
                    agent TEXT,                       -- NULL for an approval gate
                    state TEXT NOT NULL CHECK (state IN (
                        'Pending', 'Ready', 'Running', 'WaitingApproval',
                        'Succeeded', 'Failed', 'DeadLetter', 'Skipped', 'Cancelled')),
                    waiting INTEGER NOT NULL DEFAULT 0,  -- Pending: dependencies not yet finished
                    attempt INTEGER NOT NULL DEFAULT 0,
                    ready_at INTEGER,                 -- Ready: claimable from
                    lease_expires_at INTEGER,         -- Running: renewed by heartbeats
                    deadline INTEGER,                 -- Running: timeout; WaitingApproval: approval timeout
                    started_at INTEGER,
                    ended_at INTEGER,
                    error TEXT,
                    decided_by TEXT,                  -- approval gates
                    reason TEXT,
                    tokens INTEGER NOT NULL DEFAULT 0,  -- spend the model gateway records against the step
                    cost_usd REAL NOT NULL DEFAULT 0,
                    PRIMARY KEY (run_id, idx)
                ) WITHOUT ROWID;
                -- The next task of an agent: its Ready steps, oldest first.
                CREATE INDEX run_steps_ready ON run_steps (state, namespace, agent, ready_at);
                -- What a sweep gives up on: timeouts and expired leases.
                CREATE INDEX run_steps_deadline ON run_steps (state, deadline);
                CREATE INDEX run_steps_lease ON run_steps (state, lease_expires_at);
                -- Whether a run has open steps left.
                CREATE INDEX run_steps_by_state ON run_steps (run_id, state);

                -- Every attempt at an agent step, kept after it ends: how a dead letter
                -- is inspected.
                CREATE TABLE run_attempts (
                    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
                    step TEXT NOT NULL,
                    attempt INTEGER NOT NULL,
                    namespace TEXT NOT NULL,
                    agent TEXT NOT NULL,
                    started_at INTEGER NOT NULL,
                    ended_at INTEGER,
                    outcome TEXT NOT NULL CHECK (outcome IN (
                        'Running', 'Succeeded', 'Failed', 'TimedOut', 'LeaseExpired', 'Abandoned')),
                    error TEXT,
                    PRIMARY KEY (run_id, step, attempt)
                ) WITHOUT ROWID;

                -- The blackboard: versioned values per run (a step's output under its id).
                -- Append-only: a new version never overwrites an old one.
                CREATE TABLE run_values (
                    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
                    key TEXT NOT NULL,
                    version INTEGER NOT NULL,
                    value TEXT NOT NULL,              -- canonical JSON
                    written_at INTEGER NOT NULL,
                    step TEXT,
                    attempt INTEGER,
                    PRIMARY KEY (run_id, key, version)
                );

                -- The last slot of each cron trigger of each workflow, and the run it
                -- started (NULL: the slot was seen, not run), so no slot runs twice.
                CREATE TABLE cron_slots (
                    namespace TEXT NOT NULL,
                    workflow TEXT NOT NULL,
                    cron TEXT NOT NULL,
                    slot INTEGER NOT NULL,
                    run_id TEXT,
                    PRIMARY KEY (namespace, workflow, cron)
                ) WITHOUT ROWID;
                """
        ),
        Migration(
            summary: "create sources",
            sql: """
                -- Git sources synced by orlctl sync and watch: where they read, whether
                -- they are suspended, and how the last rounds went. Their resources are
                -- those whose source is 'git:' || name.
                CREATE TABLE sources (
                    name TEXT PRIMARY KEY,
                    url TEXT NOT NULL,
                    ref TEXT,                         -- NULL: the remote's default branch
                    path TEXT,                        -- NULL: the whole tree
                    suspended_at INTEGER,             -- milliseconds since the epoch, UTC
                    suspended_by TEXT,
                    last_applied TEXT,                -- a commit id
                    last_applied_at INTEGER,
                    last_attempted TEXT,
                    last_attempted_at INTEGER,
                    result TEXT CHECK (result IN ('Applied', 'Invalid', 'Refused', 'Failed', 'Unreachable')),
                    message TEXT NOT NULL DEFAULT '',
                    failures INTEGER NOT NULL DEFAULT 0,
                    CHECK ((suspended_at IS NULL) = (suspended_by IS NULL))
                );
                """
        ),
        Migration(
            summary: "sum a run's spend per step from the ledger",
            sql: """
                -- describe run sums the ledger's rows of the run per step: the ledger is the
                -- one record of spend, so the steps keep no copy of it.
                CREATE INDEX ledger_by_run ON ledger (run, step) WHERE run IS NOT NULL;
                ALTER TABLE run_steps DROP COLUMN tokens;
                ALTER TABLE run_steps DROP COLUMN cost_usd;
                """
        ),
        Migration(
            summary: "record where an Agent's or a Tool's code comes from",
            sql: """
                -- The directory relative paths in an Agent's runtime or a command Tool resolve
                -- against: the repository (or directory) `apply -f` read, or the read-only tree
                -- of the applied commit of a git source. NULL for other kinds.
                ALTER TABLE resources ADD COLUMN code_root TEXT;
                """
        ),
        Migration(
            summary: "keep the ledger's old rows as spend per agent, model and day",
            sql: """
                -- Retention rolls ledger rows past their age up into one row per UTC day,
                -- agent and model before deleting them, so spend history outlives the calls.
                CREATE TABLE ledger_daily (
                    day TEXT NOT NULL,                -- YYYY-MM-DD, UTC
                    kind TEXT NOT NULL,
                    namespace TEXT NOT NULL,
                    name TEXT NOT NULL,
                    model TEXT NOT NULL,
                    calls INTEGER NOT NULL,
                    prompt_tokens INTEGER NOT NULL,
                    completion_tokens INTEGER NOT NULL,
                    usd REAL NOT NULL,
                    PRIMARY KEY (day, kind, namespace, name, model)
                );
                CREATE INDEX events_by_time ON events (time);
                """
        ),
        Migration(
            summary: "keep per-call approvals of tools behind requireApproval",
            sql: """
                -- A call of a tool a Policy gates behind an approval, made outside a workflow
                -- step, waits here for orlctl approve/deny call/ID, or for its deadline.
                CREATE TABLE tool_approvals (
                    id TEXT PRIMARY KEY,              -- call-HEX
                    namespace TEXT NOT NULL,
                    agent TEXT NOT NULL,
                    tool TEXT NOT NULL,               -- SERVER/TOOL
                    arguments TEXT NOT NULL,          -- compact JSON, at most 4 KiB
                    requested_at INTEGER NOT NULL,
                    expires_at INTEGER NOT NULL,
                    state TEXT NOT NULL,              -- Pending, Approved, Denied, Expired
                    decided_by TEXT,
                    reason TEXT,
                    decided_at INTEGER
                );
                CREATE INDEX tool_approvals_pending ON tool_approvals (requested_at) WHERE state = 'Pending';
                """
        ),
        Migration(
            summary: "keep what the last apply of each source read, so that unchanged files are not read again",
            sql: """
                -- SHA-256 of the canonical manifest, hex: the plan compares it before the JSON.
                -- NULL for rows written before this migration (the plan hashes those itself).
                ALTER TABLE resources ADD COLUMN manifest_hash TEXT;

                -- The manifest index (ManifestIndex): per source and file, its content hash,
                -- a stamp of its file-system metadata (size, times, inode) that lets an
                -- apply trust the record without reading the file, and what reading it gave
                -- (resources by identity and manifest hash, its own diagnostics).
                CREATE TABLE manifest_files (
                    source TEXT NOT NULL,
                    path TEXT NOT NULL,
                    content_hash TEXT NOT NULL,
                    stamp TEXT,
                    record TEXT NOT NULL,
                    PRIMARY KEY (source, path)
                ) WITHOUT ROWID;
                -- The diagnostics of the checks across resources, per source and namespace.
                CREATE TABLE manifest_namespaces (
                    source TEXT NOT NULL,
                    namespace TEXT NOT NULL,
                    diagnostics TEXT NOT NULL,        -- JSON
                    PRIMARY KEY (source, namespace)
                ) WITHOUT ROWID;
                """
        ),
        Migration(
            summary: "create the alert outbox",
            sql: """
                -- Alerts' notifications, written from the event log before they are sent:
                -- a controller killed mid-delivery sends them on restart. One row per event
                -- and Alert, so an event is never queued twice for the same Alert.
                CREATE TABLE alert_outbox (
                    event_number INTEGER NOT NULL,    -- events.number (the delivery id is evt-N)
                    namespace TEXT NOT NULL,          -- the Alert
                    alert TEXT NOT NULL,
                    type TEXT NOT NULL,               -- AlertEventType
                    time INTEGER NOT NULL,            -- the event's
                    resource_kind TEXT NOT NULL,
                    resource_namespace TEXT NOT NULL,
                    resource_name TEXT NOT NULL,
                    reason TEXT NOT NULL,
                    message TEXT NOT NULL,
                    action TEXT,
                    state TEXT NOT NULL DEFAULT 'Pending' CHECK (state IN ('Pending', 'Delivered', 'Failed')),
                    attempts INTEGER NOT NULL DEFAULT 0,
                    next_attempt_at INTEGER NOT NULL,
                    last_error TEXT,
                    delivered_at INTEGER,
                    PRIMARY KEY (namespace, alert, event_number)
                );
                CREATE INDEX alert_outbox_due ON alert_outbox (state, next_attempt_at);
                -- The last event the outbox has looked at; events before the outbox existed
                -- are history, not news.
                CREATE TABLE alert_cursor (
                    id INTEGER PRIMARY KEY CHECK (id = 1),
                    event_number INTEGER NOT NULL
                );
                INSERT INTO alert_cursor (id, event_number) SELECT 1, COALESCE(MAX(number), 0) FROM events;
                """
        ),
        Migration(
            summary: "count changes per topic for the daemon's change feed",
            sql: """
                -- One generation per topic, bumped in the writing transaction by whatever
                -- process writes, so that the daemon wakes a consumer for the data it reads
                -- (PRAGMA data_version moves with every commit: the ledger, the controller's
                -- own statuses and supervision records, the outbox). Tables no consumer
                -- waits on have no trigger; events count when added (for the notifier).
                CREATE TABLE change_topics (topic TEXT PRIMARY KEY, generation INTEGER NOT NULL) WITHOUT ROWID;
                INSERT INTO change_topics (topic, generation) VALUES ('resources', 0), ('secrets', 0), ('runs', 0), ('events', 0);
                CREATE TRIGGER resources_insert_changes AFTER INSERT ON resources
                    BEGIN UPDATE change_topics SET generation = generation + 1 WHERE topic = 'resources'; END;
                CREATE TRIGGER resources_update_changes AFTER UPDATE ON resources
                    BEGIN UPDATE change_topics SET generation = generation + 1 WHERE topic = 'resources'; END;
                CREATE TRIGGER resources_delete_changes AFTER DELETE ON resources
                    BEGIN UPDATE change_topics SET generation = generation + 1 WHERE topic = 'resources'; END;
                CREATE TRIGGER holds_insert_changes AFTER INSERT ON holds
                    BEGIN UPDATE change_topics SET generation = generation + 1 WHERE topic = 'resources'; END;
                CREATE TRIGGER holds_update_changes AFTER UPDATE ON holds
                    BEGIN UPDATE change_topics SET generation = generation + 1 WHERE topic = 'resources'; END;
                CREATE TRIGGER holds_delete_changes AFTER DELETE ON holds
                    BEGIN UPDATE change_topics SET generation = generation + 1 WHERE topic = 'resources'; END;
                CREATE TRIGGER secrets_insert_changes AFTER INSERT ON secrets
                    BEGIN UPDATE change_topics SET generation = generation + 1 WHERE topic = 'secrets'; END;
                CREATE TRIGGER secrets_update_changes AFTER UPDATE ON secrets
                    BEGIN UPDATE change_topics SET generation = generation + 1 WHERE topic = 'secrets'; END;
                CREATE TRIGGER secrets_delete_changes AFTER DELETE ON secrets
                    BEGIN UPDATE change_topics SET generation = generation + 1 WHERE topic = 'secrets'; END;
                CREATE TRIGGER runs_insert_changes AFTER INSERT ON runs
                    BEGIN UPDATE change_topics SET generation = generation + 1 WHERE topic = 'runs'; END;
                CREATE TRIGGER runs_update_changes AFTER UPDATE ON runs
                    BEGIN UPDATE change_topics SET generation = generation + 1 WHERE topic = 'runs'; END;
                CREATE TRIGGER runs_delete_changes AFTER DELETE ON runs
                    BEGIN UPDATE change_topics SET generation = generation + 1 WHERE topic = 'runs'; END;
                CREATE TRIGGER run_steps_insert_changes AFTER INSERT ON run_steps
                    BEGIN UPDATE change_topics SET generation = generation + 1 WHERE topic = 'runs'; END;
                CREATE TRIGGER run_steps_update_changes AFTER UPDATE ON run_steps
                    BEGIN UPDATE change_topics SET generation = generation + 1 WHERE topic = 'runs'; END;
                CREATE TRIGGER run_steps_delete_changes AFTER DELETE ON run_steps
                    BEGIN UPDATE change_topics SET generation = generation + 1 WHERE topic = 'runs'; END;
                CREATE TRIGGER run_attempts_insert_changes AFTER INSERT ON run_attempts
                    BEGIN UPDATE change_topics SET generation = generation + 1 WHERE topic = 'runs'; END;
                CREATE TRIGGER run_attempts_update_changes AFTER UPDATE ON run_attempts
                    BEGIN UPDATE change_topics SET generation = generation + 1 WHERE topic = 'runs'; END;
                CREATE TRIGGER run_attempts_delete_changes AFTER DELETE ON run_attempts
                    BEGIN UPDATE change_topics SET generation = generation + 1 WHERE topic = 'runs'; END;
                CREATE TRIGGER run_values_insert_changes AFTER INSERT ON run_values
                    BEGIN UPDATE change_topics SET generation = generation + 1 WHERE topic = 'runs'; END;
                CREATE TRIGGER run_values_update_changes AFTER UPDATE ON run_values
                    BEGIN UPDATE change_topics SET generation = generation + 1 WHERE topic = 'runs'; END;
                CREATE TRIGGER run_values_delete_changes AFTER DELETE ON run_values
                    BEGIN UPDATE change_topics SET generation = generation + 1 WHERE topic = 'runs'; END;
                CREATE TRIGGER tool_approvals_insert_changes AFTER INSERT ON tool_approvals
                    BEGIN UPDATE change_topics SET generation = generation + 1 WHERE topic = 'runs'; END;
                CREATE TRIGGER tool_approvals_update_changes AFTER UPDATE ON tool_approvals
                    BEGIN UPDATE change_topics SET generation = generation + 1 WHERE topic = 'runs'; END;
                CREATE TRIGGER tool_approvals_delete_changes AFTER DELETE ON tool_approvals
                    BEGIN UPDATE change_topics SET generation = generation + 1 WHERE topic = 'runs'; END;
                CREATE TRIGGER events_insert_changes AFTER INSERT ON events
                    BEGIN UPDATE change_topics SET generation = generation + 1 WHERE topic = 'events'; END;
                """
        ),
        Migration(
            summary: "budget reservations kept in the state, exact across processes",
            sql: """
                -- One row per budget account and window (agent '' for a shared budget): spend
                -- and reservations in whole micro-dollars and tokens, so that the check
                -- spent + reserved + amount <= cap is exact. A hold is a reservation not yet
                -- settled or released, with the lines it was taken on.
                CREATE TABLE budget_lines (
                    budget_namespace TEXT NOT NULL,
                    budget_name TEXT NOT NULL,
                    agent_namespace TEXT NOT NULL,
                    agent_name TEXT NOT NULL,
                    period TEXT NOT NULL,
                    period_start INTEGER NOT NULL,
                    cap_micro_usd INTEGER,
                    cap_tokens INTEGER,
                    spent_micro_usd INTEGER NOT NULL,
                    spent_tokens INTEGER NOT NULL,
                    reserved_micro_usd INTEGER NOT NULL,
                    reserved_tokens INTEGER NOT NULL,
                    PRIMARY KEY (budget_namespace, budget_name, agent_namespace, agent_name, period, period_start)
                ) WITHOUT ROWID;
                CREATE TABLE budget_holds (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    micro_usd INTEGER NOT NULL,
                    tokens INTEGER NOT NULL,
                    created_at INTEGER NOT NULL,
                    lines TEXT NOT NULL
                );
                """
        ),
        Migration(
            summary: "keep each source's manifest index as one blob",
            sql: """
                -- The manifest index of a source (StoredManifestIndex): per file its path,
                -- content hash, file-system stamp and what reading it gave, the checks'
                -- diagnostics per namespace, and what the plan may take for granted; read
                -- in one query at every apply. The per-file tables it replaces are dropped:
                -- the next apply of each source reads everything once and writes the blob.
                CREATE TABLE manifest_indexes (source TEXT PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID;
                DROP TABLE manifest_files;
                DROP TABLE manifest_namespaces;
                """
        ),
        Migration(
            summary: "nodes: leases with a fencing generation, agents' placement, singletons; supervision stamped with its node",
            sql: """
                -- A controller node (orlctl controller --node): its lease, by the database's
                -- clock; generation grows at each registration and fences stale writers.
                CREATE TABLE nodes (
                    name TEXT PRIMARY KEY,
                    generation INTEGER NOT NULL,
                    expires_at INTEGER NOT NULL,      -- milliseconds since the epoch, UTC
                    renewed_at INTEGER NOT NULL,
                    registered_at INTEGER NOT NULL,
                    labels TEXT NOT NULL,             -- key=value lines, in key order
                    cordoned INTEGER NOT NULL DEFAULT 0
                ) WITHOUT ROWID;
                -- Where each agent is placed, under its node's generation then; the assignment
                -- it replaced, and whether that node has stopped the agent since.
                CREATE TABLE agent_assignments (
                    kind TEXT NOT NULL,
                    namespace TEXT NOT NULL,
                    name TEXT NOT NULL,
                    node TEXT NOT NULL,
                    generation INTEGER NOT NULL,
                    replacing_node TEXT,
                    replacing_generation INTEGER,
                    released INTEGER NOT NULL DEFAULT 0,
                    assigned_at INTEGER NOT NULL,
                    PRIMARY KEY (kind, namespace, name)
                ) WITHOUT ROWID;
                -- Which node runs each singleton (the runs driver, a git source's watcher): held
                -- while that node's lease is live under the generation it claimed with.
                CREATE TABLE singletons (
                    role TEXT PRIMARY KEY,
                    node TEXT NOT NULL,
                    generation INTEGER NOT NULL,
                    since INTEGER NOT NULL
                ) WITHOUT ROWID;
                ALTER TABLE supervision ADD COLUMN node TEXT;
                ALTER TABLE supervision ADD COLUMN node_generation INTEGER;
                """
        ),
        Migration(
            summary: "budget holds that expire: who made each (gateway, node and generation), its lease, and released ones kept",
            sql: """
                -- The gateway process that made the hold (it renews expires_at while it lives),
                -- the node it served under which lease generation ('' and 0: none), and, once
                -- the hold was released as abandoned, when (a late settlement then adds the
                -- call's cost to the lines' spend without giving the reservation back twice).
                -- Holds made before this migration have no expires_at and never expire.
                ALTER TABLE budget_holds ADD COLUMN owner TEXT NOT NULL DEFAULT '';
                ALTER TABLE budget_holds ADD COLUMN node TEXT NOT NULL DEFAULT '';
                ALTER TABLE budget_holds ADD COLUMN node_generation INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE budget_holds ADD COLUMN expires_at INTEGER;
                ALTER TABLE budget_holds ADD COLUMN released_at INTEGER;
                CREATE INDEX budget_holds_by_owner ON budget_holds (owner) WHERE released_at IS NULL;
                """
        ),
        Migration(
            summary: "the process that claimed each running step (its token digest), so its end gives the attempt up at once",
            sql: """
                -- Running steps claimed before this migration have none: their lease ends them.
                ALTER TABLE run_steps ADD COLUMN claimant TEXT;
                """
        ),
        Migration(
            summary: "the steps' indexes hold only the steps their queries look for (Ready, Running, open), not every step ever run",
            sql: """
                -- A step's every change rewrote its entry in four indexes led by its state,
                -- and ended steps stayed in them for good: a step of a long chain paid
                -- for WAL pages of indexes mostly made of finished steps. Partial indexes
                -- hold a step only while a query can want it (the queries name the same
                -- states, literally, so SQLite uses them).
                DROP INDEX run_steps_ready;
                DROP INDEX run_steps_deadline;
                DROP INDEX run_steps_lease;
                DROP INDEX run_steps_by_state;
                CREATE INDEX run_steps_ready ON run_steps (namespace, agent, ready_at) WHERE state = 'Ready';
                CREATE INDEX run_steps_deadline ON run_steps (deadline) WHERE state IN ('Running', 'WaitingApproval');
                CREATE INDEX run_steps_lease ON run_steps (lease_expires_at) WHERE state = 'Running';
                CREATE INDEX run_steps_waiting ON run_steps (namespace) WHERE state = 'WaitingApproval';
                CREATE INDEX run_steps_open ON run_steps (run_id, state) WHERE state IN ('Pending', 'Ready', 'Running', 'WaitingApproval');
                """
        ),
        Migration(
            summary: "the runs topic moves once per transaction that writes runs, not once per row written",
            sql: """
                -- A row trigger on each run table moved the topic at every row: six writes of
                -- change_topics in a step's transaction, each inside its statement. The
                -- writer now moves it once, before it commits (SQLStateAccess.countRunChanges);
                -- a consumer only asks whether the generation moved, never by how much.
                DROP TRIGGER runs_insert_changes;
                DROP TRIGGER runs_update_changes;
                DROP TRIGGER runs_delete_changes;
                DROP TRIGGER run_steps_insert_changes;
                DROP TRIGGER run_steps_update_changes;
                DROP TRIGGER run_steps_delete_changes;
                DROP TRIGGER run_attempts_insert_changes;
                DROP TRIGGER run_attempts_update_changes;
                DROP TRIGGER run_attempts_delete_changes;
                DROP TRIGGER run_values_insert_changes;
                DROP TRIGGER run_values_update_changes;
                DROP TRIGGER run_values_delete_changes;
                DROP TRIGGER tool_approvals_insert_changes;
                DROP TRIGGER tool_approvals_update_changes;
                DROP TRIGGER tool_approvals_delete_changes;
                """
        ),
        Migration(
            summary: "fewer pages written per step: one index for what is due, open steps indexed by run, the blackboard without rowids",
            sql: """
                -- Each step's commit wrote about ten WAL pages (a step of a chain: its own
                -- completion, the next step readied and claimed, in one transaction). Three
                -- fewer here, the queries unchanged in what they return:
                -- - the deadline and lease indexes held the same Running steps twice: one
                --   index on when each is due (a Running step at the earlier of its lease and
                --   its deadline, a gate waiting for approval at its deadline) serves both the
                --   sweep and the next wake-up (RunAccess names the same expression);
                -- - the open-steps index was led by (run, state): a step changing state moved
                --   to another page of it; by run alone a step keeps its place while open, and
                --   a chain's next step sits beside the one that ends;
                -- - run_values had rowids and its key in a second b-tree (two pages a
                --   value); keyed by (run, key, version) alone it is one. A value past about
                --   a kilobyte spills to overflow pages either way.
                DROP INDEX run_steps_deadline;
                DROP INDEX run_steps_lease;
                DROP INDEX run_steps_open;
                CREATE INDEX run_steps_due ON run_steps (
                    CASE WHEN state = 'Running' THEN min(coalesce(lease_expires_at, deadline), coalesce(deadline, lease_expires_at))
                    ELSE deadline END) WHERE state IN ('Running', 'WaitingApproval');
                CREATE INDEX run_steps_open ON run_steps (run_id) WHERE state IN ('Pending', 'Ready', 'Running', 'WaitingApproval');
                CREATE TABLE run_values_keyed (
                    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
                    key TEXT NOT NULL,
                    version INTEGER NOT NULL,
                    value TEXT NOT NULL,              -- canonical JSON
                    written_at INTEGER NOT NULL,
                    step TEXT,
                    attempt INTEGER,
                    PRIMARY KEY (run_id, key, version)
                ) WITHOUT ROWID;
                INSERT INTO run_values_keyed (run_id, key, version, value, written_at, step, attempt)
                    SELECT run_id, key, version, value, written_at, step, attempt FROM run_values;
                DROP TABLE run_values;
                ALTER TABLE run_values_keyed RENAME TO run_values;
                """
        ),
        Migration(
            summary: "the resources and events topics move once per transaction that writes them, not once per row written",
            sql: """
                -- A row trigger moved the topic at every resource, hold and event written: a
                -- first apply of 100,000 manifests wrote change_topics 200,000 times on its one
                -- writing thread. The writer now moves each topic once, before it commits
                -- (SQLStateAccess.countChanges), as it does the runs topic; a consumer only
                -- asks whether a generation moved, never by how much. The secrets keep their
                -- triggers: one secret is written at a time.
                DROP TRIGGER resources_insert_changes;
                DROP TRIGGER resources_update_changes;
                DROP TRIGGER resources_delete_changes;
                DROP TRIGGER holds_insert_changes;
                DROP TRIGGER holds_update_changes;
                DROP TRIGGER holds_delete_changes;
                DROP TRIGGER events_insert_changes;
                """
        ),
    ]

    static var version: Int { migrations.count }

    /// Brings the database up to `version`, or refuses it when it is newer.
    static func migrate(_ database: Database) throws(StoreError) {
        // The common case, an up-to-date database, takes no write lock.
        if try currentVersion(database) == version { return }
        try database.transaction(.immediate, intent: "migrate the state database") { () throws(StoreError) in
            // Read again under the write lock: another process may have migrated meanwhile.
            let current = try currentVersion(database)
            guard current < version else { return }
            for number in current..<version {
                let migration = migrations[number]
                try database.execute(migration.sql, intent: "migrate the state database to schema \(number + 1) (\(migration.summary))")
            }
            // PRAGMA takes no parameters; the version is an integer this code computed.
            try database.execute("PRAGMA user_version = \(version)", intent: "record schema \(version)")
        }
    }

    private static func currentVersion(_ database: Database) throws(StoreError) -> Int {
        let current = Int(try database.scalar("PRAGMA user_version", intent: "read the schema version") ?? 0)
        guard current <= version else {
            throw StoreError(
                "this state was written by a newer orlctl (schema \(current)); upgrade orlctl "
                    + "(this one knows schema \(version) and earlier) to use \(database.path)")
        }
        return current
    }
}
