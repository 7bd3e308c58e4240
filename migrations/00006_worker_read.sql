-- worker_read is pgmq.read restricted to the handlers a worker has: it
-- takes only messages whose "handler" is one of p_handlers, with the same
-- visibility-timeout semantics (FIFO by msg_id, SKIP LOCKED, read_ct + 1).
-- A worker that registers some of a namespace's handlers then never hides
-- the other handlers' messages from the workers that have them. It runs as
-- the caller (SECURITY INVOKER): the caller's grants on the queue apply.
-- Messages without a string "handler" are returned to every worker, which
-- archives them as poison.

-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION tasker.worker_read(p_queue text, p_vt integer, p_qty integer, p_handlers text[])
RETURNS SETOF pgmq.message_record
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF p_queue IS NULL OR p_queue !~ '^[a-z][a-z0-9_]{0,46}$' THEN
        RAISE EXCEPTION 'worker_read: invalid queue name %', p_queue USING ERRCODE = '42602';
    END IF;
    RETURN QUERY EXECUTE format($q$
        WITH picked AS (
            SELECT msg_id FROM pgmq.%1$I
             WHERE vt <= clock_timestamp()
               AND ((message->>'handler') = ANY ($1)
                    -- a message with no handler can be no one's: every
                    -- worker takes it, to archive it as poison
                    OR jsonb_typeof(message->'handler') IS DISTINCT FROM 'string')
             ORDER BY msg_id
             LIMIT $2
               FOR UPDATE SKIP LOCKED)
        UPDATE pgmq.%1$I m
           SET vt = clock_timestamp() + make_interval(secs => $3), read_ct = m.read_ct + 1
          FROM picked
         WHERE m.msg_id = picked.msg_id
        RETURNING m.msg_id, m.read_ct, m.enqueued_at, m.vt, m.message, m.headers$q$, 'q_' || p_queue)
    USING p_handlers, p_qty, p_vt;
END;
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION tasker.worker_read(text, integer, integer, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tasker.worker_read(text, integer, integer, text[]) TO tasker_worker, tasker_api;

-- +goose Down
DROP FUNCTION IF EXISTS tasker.worker_read(text, integer, integer, text[]);
