-- Tasker's own implementation of the PGMQ SQL API (the 1.5-1.9 shape), for
-- Postgres servers where the pgmq extension cannot be installed. It is written
-- from the documented API, not copied from the extension: clients such as
-- github.com/craigpastro/pgmq-go v0.6.0 must work against it unchanged, so the
-- names, argument lists, return types and table layouts follow the extension.
--
-- Deliberate differences from the extension:
--   * queue names are validated strictly by every function (a lowercase letter,
--     then lowercase letters, digits or underscores; at most 47 characters)
--     instead of being lower-cased, so a typo cannot silently address another
--     queue;
--   * purge_queue deletes rather than truncates, so it does not take an ACCESS
--     EXCLUSIVE lock that would stall concurrent readers and writers;
--   * send_batch rejects a headers array whose length differs from msgs;
--   * enable_notify_insert installs a statement-level trigger (one
--     notification per INSERT statement, so a batch send costs one NOTIFY);
--   * partitioned queues (pg_partman) are not supported.
--
-- The file is idempotent (CREATE OR REPLACE, IF NOT EXISTS, guarded types), so
-- a later migration can re-run it to ship a fix to existing databases.
--
-- Every identifier built at run time goes through format('%I'), and every
-- value through a bind parameter or format('%L'): a queue name can never
-- inject SQL.

CREATE SCHEMA IF NOT EXISTS pgmq;

CREATE TABLE IF NOT EXISTS pgmq.meta (
    queue_name     varchar UNIQUE NOT NULL,
    is_partitioned boolean NOT NULL,
    is_unlogged    boolean NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- CREATE TYPE has no IF NOT EXISTS; the guard keeps the file re-runnable.
DO $$
BEGIN
    CREATE TYPE pgmq.message_record AS (
        msg_id      bigint,
        read_ct     integer,
        enqueued_at timestamptz,
        vt          timestamptz,
        message     jsonb,
        headers     jsonb
    );
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

DO $$
BEGIN
    CREATE TYPE pgmq.queue_record AS (
        queue_name     varchar,
        is_partitioned boolean,
        is_unlogged    boolean,
        created_at     timestamptz
    );
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

DO $$
BEGIN
    CREATE TYPE pgmq.metrics_result AS (
        queue_name           text,
        queue_length         bigint,
        newest_msg_age_sec   integer,
        oldest_msg_age_sec   integer,
        total_messages       bigint,
        scrape_time          timestamptz,
        queue_visible_length bigint
    );
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

------------------------------------------------------------------------------
-- Names
------------------------------------------------------------------------------

-- validate_queue_name raises invalid_name (42602) for anything but a plain
-- lowercase identifier of at most 47 characters. 47 keeps every derived name
-- (q_<name>_msg_id_seq, archived_at_idx_<name>) within Postgres's 63.
CREATE OR REPLACE FUNCTION pgmq.validate_queue_name(queue_name text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF queue_name IS NULL OR queue_name !~ '^[a-z][a-z0-9_]*$' THEN
        RAISE EXCEPTION 'invalid pgmq queue name %: use a lowercase letter, then lowercase letters, digits or underscores', quote_literal(coalesce(queue_name, '<null>'))
            USING ERRCODE = 'invalid_name';
    END IF;
    IF length(queue_name) > 47 THEN
        RAISE EXCEPTION 'invalid pgmq queue name %: longer than 47 characters', quote_literal(queue_name)
            USING ERRCODE = 'invalid_name';
    END IF;
END;
$$;

-- format_table_name returns the bare table name (q_<name> or a_<name>) after
-- validating the queue name; callers still quote it with %I.
CREATE OR REPLACE FUNCTION pgmq.format_table_name(queue_name text, prefix text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    PERFORM pgmq.validate_queue_name(queue_name);
    RETURN prefix || '_' || queue_name;
END;
$$;

------------------------------------------------------------------------------
-- Queue lifecycle
------------------------------------------------------------------------------

-- _create_queue does the work of create and create_unlogged. The advisory lock
-- serialises concurrent creators of one queue: two racing CREATE TABLE IF NOT
-- EXISTS can otherwise fail on the catalog's unique index.
CREATE OR REPLACE FUNCTION pgmq._create_queue(queue_name text, unlogged boolean)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    qtable text := pgmq.format_table_name(queue_name, 'q');
    atable text := pgmq.format_table_name(queue_name, 'a');
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('pgmq.queue_' || queue_name));

    EXECUTE format(
        'CREATE %s TABLE IF NOT EXISTS pgmq.%I (
            msg_id      bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY,
            read_ct     integer NOT NULL DEFAULT 0,
            enqueued_at timestamptz NOT NULL DEFAULT now(),
            vt          timestamptz NOT NULL,
            message     jsonb,
            headers     jsonb
        )',
        CASE WHEN unlogged THEN 'UNLOGGED' ELSE '' END, qtable);

    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS pgmq.%I (
            msg_id      bigint PRIMARY KEY,
            read_ct     integer NOT NULL DEFAULT 0,
            enqueued_at timestamptz NOT NULL DEFAULT now(),
            archived_at timestamptz NOT NULL DEFAULT now(),
            vt          timestamptz NOT NULL,
            message     jsonb,
            headers     jsonb
        )',
        atable);

    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON pgmq.%I (vt ASC)', qtable || '_vt_idx', qtable);
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON pgmq.%I (archived_at)', 'archived_at_idx_' || queue_name, atable);

    INSERT INTO pgmq.meta (queue_name, is_partitioned, is_unlogged)
    VALUES (_create_queue.queue_name, false, _create_queue.unlogged)
    ON CONFLICT DO NOTHING;
END;
$$;

CREATE OR REPLACE FUNCTION pgmq.create(queue_name text)
RETURNS void
LANGUAGE sql AS $$
    SELECT pgmq._create_queue(queue_name, false);
$$;

-- create_non_partitioned is the extension's name for what create does.
CREATE OR REPLACE FUNCTION pgmq.create_non_partitioned(queue_name text)
RETURNS void
LANGUAGE sql AS $$
    SELECT pgmq._create_queue(queue_name, false);
$$;

CREATE OR REPLACE FUNCTION pgmq.create_unlogged(queue_name text)
RETURNS void
LANGUAGE sql AS $$
    SELECT pgmq._create_queue(queue_name, true);
$$;

-- drop_queue returns false, rather than failing, when the queue is absent, as
-- the extension does.
CREATE OR REPLACE FUNCTION pgmq.drop_queue(queue_name text)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    qtable text := pgmq.format_table_name(queue_name, 'q');
    atable text := pgmq.format_table_name(queue_name, 'a');
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('pgmq.queue_' || queue_name));
    IF to_regclass(format('pgmq.%I', qtable)) IS NULL THEN
        RAISE NOTICE 'pgmq queue % does not exist', quote_literal(queue_name);
        DELETE FROM pgmq.meta m WHERE m.queue_name = drop_queue.queue_name;
        RETURN false;
    END IF;
    EXECUTE format('DROP TABLE IF EXISTS pgmq.%I', qtable);
    EXECUTE format('DROP TABLE IF EXISTS pgmq.%I', atable);
    DELETE FROM pgmq.meta m WHERE m.queue_name = drop_queue.queue_name;
    RETURN true;
END;
$$;

CREATE OR REPLACE FUNCTION pgmq.list_queues()
RETURNS SETOF pgmq.queue_record
LANGUAGE sql STABLE AS $$
    SELECT queue_name, is_partitioned, is_unlogged, created_at
    FROM pgmq.meta
    ORDER BY queue_name;
$$;

------------------------------------------------------------------------------
-- Sending
------------------------------------------------------------------------------

-- The four-argument timestamp form does the work; the others only compute the
-- visibility time. The overloads are separate functions rather than defaults
-- because, as in the extension, defaults would make send(q, msg) ambiguous.
CREATE OR REPLACE FUNCTION pgmq.send(queue_name text, msg jsonb, headers jsonb, delay timestamptz)
RETURNS SETOF bigint
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY EXECUTE format(
        'INSERT INTO pgmq.%I (vt, message, headers) VALUES ($1, $2, $3) RETURNING msg_id',
        pgmq.format_table_name(queue_name, 'q'))
    USING coalesce(delay, clock_timestamp()), msg, headers;
END;
$$;

CREATE OR REPLACE FUNCTION pgmq.send(queue_name text, msg jsonb)
RETURNS SETOF bigint
LANGUAGE sql AS $$
    SELECT * FROM pgmq.send(queue_name, msg, NULL::jsonb, clock_timestamp());
$$;

CREATE OR REPLACE FUNCTION pgmq.send(queue_name text, msg jsonb, headers jsonb)
RETURNS SETOF bigint
LANGUAGE sql AS $$
    SELECT * FROM pgmq.send(queue_name, msg, headers, clock_timestamp());
$$;

CREATE OR REPLACE FUNCTION pgmq.send(queue_name text, msg jsonb, delay integer)
RETURNS SETOF bigint
LANGUAGE sql AS $$
    SELECT * FROM pgmq.send(queue_name, msg, NULL::jsonb, clock_timestamp() + make_interval(secs => delay));
$$;

CREATE OR REPLACE FUNCTION pgmq.send(queue_name text, msg jsonb, delay timestamptz)
RETURNS SETOF bigint
LANGUAGE sql AS $$
    SELECT * FROM pgmq.send(queue_name, msg, NULL::jsonb, delay);
$$;

CREATE OR REPLACE FUNCTION pgmq.send(queue_name text, msg jsonb, headers jsonb, delay integer)
RETURNS SETOF bigint
LANGUAGE sql AS $$
    SELECT * FROM pgmq.send(queue_name, msg, headers, clock_timestamp() + make_interval(secs => delay));
$$;

-- send_batch inserts msgs in array order, pairing msgs[i] with headers[i]; the
-- ids come back in the same order.
CREATE OR REPLACE FUNCTION pgmq.send_batch(queue_name text, msgs jsonb[], headers jsonb[], delay timestamptz)
RETURNS SETOF bigint
LANGUAGE plpgsql AS $$
BEGIN
    IF headers IS NOT NULL AND cardinality(headers) <> cardinality(msgs) THEN
        RAISE EXCEPTION 'pgmq send_batch: % headers for % messages', cardinality(headers), cardinality(msgs)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY EXECUTE format(
        'INSERT INTO pgmq.%I (vt, message, headers)
         SELECT $1, m.msg, $3[m.i]
         FROM unnest($2::jsonb[]) WITH ORDINALITY AS m(msg, i)
         ORDER BY m.i
         RETURNING msg_id',
        pgmq.format_table_name(queue_name, 'q'))
    USING coalesce(delay, clock_timestamp()), msgs, headers;
END;
$$;

CREATE OR REPLACE FUNCTION pgmq.send_batch(queue_name text, msgs jsonb[])
RETURNS SETOF bigint
LANGUAGE sql AS $$
    SELECT * FROM pgmq.send_batch(queue_name, msgs, NULL::jsonb[], clock_timestamp());
$$;

CREATE OR REPLACE FUNCTION pgmq.send_batch(queue_name text, msgs jsonb[], headers jsonb[])
RETURNS SETOF bigint
LANGUAGE sql AS $$
    SELECT * FROM pgmq.send_batch(queue_name, msgs, headers, clock_timestamp());
$$;

CREATE OR REPLACE FUNCTION pgmq.send_batch(queue_name text, msgs jsonb[], delay integer)
RETURNS SETOF bigint
LANGUAGE sql AS $$
    SELECT * FROM pgmq.send_batch(queue_name, msgs, NULL::jsonb[], clock_timestamp() + make_interval(secs => delay));
$$;

CREATE OR REPLACE FUNCTION pgmq.send_batch(queue_name text, msgs jsonb[], delay timestamptz)
RETURNS SETOF bigint
LANGUAGE sql AS $$
    SELECT * FROM pgmq.send_batch(queue_name, msgs, NULL::jsonb[], delay);
$$;

CREATE OR REPLACE FUNCTION pgmq.send_batch(queue_name text, msgs jsonb[], headers jsonb[], delay integer)
RETURNS SETOF bigint
LANGUAGE sql AS $$
    SELECT * FROM pgmq.send_batch(queue_name, msgs, headers, clock_timestamp() + make_interval(secs => delay));
$$;

------------------------------------------------------------------------------
-- Reading
------------------------------------------------------------------------------

-- read claims up to qty visible messages, oldest first, hiding each for vt
-- seconds, and returns them in msg_id order (UPDATE ... RETURNING alone does
-- not promise an order). SKIP LOCKED lets concurrent readers take disjoint sets instead of
-- queueing behind each other's row locks. conditional filters on message
-- containment ('{}' matches everything).
CREATE OR REPLACE FUNCTION pgmq.read(queue_name text, vt integer, qty integer, conditional jsonb DEFAULT '{}')
RETURNS SETOF pgmq.message_record
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY EXECUTE format(
        'WITH claimed AS (
            SELECT msg_id
            FROM pgmq.%1$I
            WHERE vt <= clock_timestamp()
              AND ($3 = ''{}''::jsonb OR message @> $3)
            ORDER BY msg_id
            LIMIT $1
            FOR UPDATE SKIP LOCKED
        ),
        updated AS (
            UPDATE pgmq.%1$I q
            SET vt = clock_timestamp() + $2, read_ct = q.read_ct + 1
            FROM claimed
            WHERE q.msg_id = claimed.msg_id
            RETURNING q.msg_id, q.read_ct, q.enqueued_at, q.vt, q.message, q.headers
        )
        SELECT * FROM updated ORDER BY msg_id',
        pgmq.format_table_name(queue_name, 'q'))
    USING qty, make_interval(secs => vt), coalesce(conditional, '{}'::jsonb);
END;
$$;

-- read_with_poll retries read every poll_interval_ms until it returns
-- something or max_poll_seconds have passed. Each attempt runs in a fresh
-- snapshot (READ COMMITTED), so messages committed meanwhile are seen. It
-- reads before it checks the clock, so max_poll_seconds = 0 means one attempt.
CREATE OR REPLACE FUNCTION pgmq.read_with_poll(
    queue_name text,
    vt integer,
    qty integer,
    max_poll_seconds integer DEFAULT 5,
    poll_interval_ms integer DEFAULT 100,
    conditional jsonb DEFAULT '{}'
)
RETURNS SETOF pgmq.message_record
LANGUAGE plpgsql AS $$
DECLARE
    stop_at timestamptz := clock_timestamp() + make_interval(secs => max_poll_seconds);
    remaining double precision;
BEGIN
    PERFORM pgmq.validate_queue_name(queue_name);
    LOOP
        RETURN QUERY SELECT * FROM pgmq.read(queue_name, vt, qty, conditional);
        IF FOUND THEN
            RETURN;
        END IF;
        remaining := extract(epoch FROM stop_at - clock_timestamp());
        IF remaining <= 0 THEN
            RETURN;
        END IF;
        PERFORM pg_sleep(least(remaining, greatest(poll_interval_ms, 1) / 1000.0));
    END LOOP;
END;
$$;

-- pop claims and deletes up to qty visible messages (qty arrived in 1.7;
-- pop(q) still means one).
CREATE OR REPLACE FUNCTION pgmq.pop(queue_name text, qty integer DEFAULT 1)
RETURNS SETOF pgmq.message_record
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY EXECUTE format(
        'WITH claimed AS (
            SELECT msg_id
            FROM pgmq.%1$I
            WHERE vt <= clock_timestamp()
            ORDER BY msg_id
            LIMIT $1
            FOR UPDATE SKIP LOCKED
        ),
        deleted AS (
            DELETE FROM pgmq.%1$I q
            USING claimed
            WHERE q.msg_id = claimed.msg_id
            RETURNING q.msg_id, q.read_ct, q.enqueued_at, q.vt, q.message, q.headers
        )
        SELECT * FROM deleted ORDER BY msg_id',
        pgmq.format_table_name(queue_name, 'q'))
    USING qty;
END;
$$;

-- set_vt makes a message visible vt seconds from now (0: at once) and returns
-- it; no row when the message does not exist.
CREATE OR REPLACE FUNCTION pgmq.set_vt(queue_name text, msg_id bigint, vt integer)
RETURNS SETOF pgmq.message_record
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY EXECUTE format(
        'UPDATE pgmq.%I
         SET vt = clock_timestamp() + $2
         WHERE msg_id = $1
         RETURNING msg_id, read_ct, enqueued_at, vt, message, headers',
        pgmq.format_table_name(queue_name, 'q'))
    USING msg_id, make_interval(secs => vt);
END;
$$;

------------------------------------------------------------------------------
-- Settling: delete, archive, purge
------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION pgmq.delete(queue_name text, msg_ids bigint[])
RETURNS SETOF bigint
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY EXECUTE format(
        'DELETE FROM pgmq.%I WHERE msg_id = ANY($1) RETURNING msg_id',
        pgmq.format_table_name(queue_name, 'q'))
    USING msg_ids;
END;
$$;

CREATE OR REPLACE FUNCTION pgmq.delete(queue_name text, msg_id bigint)
RETURNS boolean
LANGUAGE sql AS $$
    SELECT EXISTS (SELECT 1 FROM pgmq.delete(queue_name, ARRAY[msg_id]));
$$;

-- archive moves messages to a_<name> in one statement, so a message is in
-- exactly one of the two tables at every instant.
CREATE OR REPLACE FUNCTION pgmq.archive(queue_name text, msg_ids bigint[])
RETURNS SETOF bigint
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY EXECUTE format(
        'WITH moved AS (
            DELETE FROM pgmq.%I
            WHERE msg_id = ANY($1)
            RETURNING msg_id, read_ct, enqueued_at, vt, message, headers
        )
        INSERT INTO pgmq.%I (msg_id, read_ct, enqueued_at, vt, message, headers)
        SELECT msg_id, read_ct, enqueued_at, vt, message, headers FROM moved
        RETURNING msg_id',
        pgmq.format_table_name(queue_name, 'q'),
        pgmq.format_table_name(queue_name, 'a'))
    USING msg_ids;
END;
$$;

CREATE OR REPLACE FUNCTION pgmq.archive(queue_name text, msg_id bigint)
RETURNS boolean
LANGUAGE sql AS $$
    SELECT EXISTS (SELECT 1 FROM pgmq.archive(queue_name, ARRAY[msg_id]));
$$;

-- purge_queue deletes every message (not the archive) and returns how many.
CREATE OR REPLACE FUNCTION pgmq.purge_queue(queue_name text)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    deleted bigint;
BEGIN
    EXECUTE format('DELETE FROM pgmq.%I', pgmq.format_table_name(queue_name, 'q'));
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END;
$$;

------------------------------------------------------------------------------
-- Metrics
------------------------------------------------------------------------------

-- metrics: total_messages is the identity sequence's last value, i.e. how many
-- messages were ever sent, including deleted and archived ones. Ages are NULL
-- for an empty queue.
CREATE OR REPLACE FUNCTION pgmq.metrics(queue_name text)
RETURNS pgmq.metrics_result
LANGUAGE plpgsql AS $$
DECLARE
    qtable text := pgmq.format_table_name(queue_name, 'q');
    result pgmq.metrics_result;
    seq text;
BEGIN
    seq := pg_get_serial_sequence(format('pgmq.%I', qtable), 'msg_id');
    EXECUTE format(
        'SELECT $1::text,
                count(*),
                extract(epoch FROM now() - max(enqueued_at))::integer,
                extract(epoch FROM now() - min(enqueued_at))::integer,
                coalesce(pg_sequence_last_value($2::regclass), 0),
                now(),
                count(*) FILTER (WHERE vt <= now())
         FROM pgmq.%I',
        qtable)
    INTO result
    USING queue_name, seq;
    RETURN result;
END;
$$;

CREATE OR REPLACE FUNCTION pgmq.metrics_all()
RETURNS SETOF pgmq.metrics_result
LANGUAGE sql AS $$
    SELECT r.*
    FROM pgmq.meta m
    CROSS JOIN LATERAL pgmq.metrics(m.queue_name) r
    ORDER BY m.queue_name;
$$;

------------------------------------------------------------------------------
-- Insert notifications
------------------------------------------------------------------------------

-- notify_queue_listeners signals 'pgmq.<table>.<op>', the channel the
-- extension (1.7+) uses, so listeners work with either implementation. The
-- payload is empty: listeners only need a wake-up, then they read.
CREATE OR REPLACE FUNCTION pgmq.notify_queue_listeners()
RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pgmq.' || TG_TABLE_NAME || '.' || TG_OP, '');
    RETURN NULL;
END;
$$;

-- enable_notify_insert is idempotent. The trigger is per statement (the
-- extension's fires per row), so a send_batch of n messages costs one NOTIFY.
-- The trigger name matches the extension's.
CREATE OR REPLACE FUNCTION pgmq.enable_notify_insert(queue_name text)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    qtable text := pgmq.format_table_name(queue_name, 'q');
BEGIN
    IF to_regclass(format('pgmq.%I', qtable)) IS NULL THEN
        RAISE EXCEPTION 'pgmq queue % does not exist', quote_literal(queue_name)
            USING ERRCODE = 'undefined_table';
    END IF;
    EXECUTE format('DROP TRIGGER IF EXISTS trigger_notify_queue_insert_listeners ON pgmq.%I', qtable);
    EXECUTE format(
        'CREATE TRIGGER trigger_notify_queue_insert_listeners
         AFTER INSERT ON pgmq.%I
         FOR EACH STATEMENT EXECUTE FUNCTION pgmq.notify_queue_listeners()',
        qtable);
END;
$$;

CREATE OR REPLACE FUNCTION pgmq.disable_notify_insert(queue_name text)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('DROP TRIGGER IF EXISTS trigger_notify_queue_insert_listeners ON pgmq.%I',
        pgmq.format_table_name(queue_name, 'q'));
END;
$$;
