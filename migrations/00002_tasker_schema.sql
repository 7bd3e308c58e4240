-- The tasker schema (DESIGN §2). Every state change is a compare-and-swap on
-- the denormalised `state` column of the parent row, logged in the same
-- transaction as an append-only transition row; the most_recent flag marks the
-- current one (one per task/step, enforced by a partial unique index).

-- +goose Up
CREATE SCHEMA IF NOT EXISTS tasker;

CREATE TABLE tasker.namespaces (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,32}$'),
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tasker.task_templates (
    template_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    namespace    text NOT NULL REFERENCES tasker.namespaces (name),
    name         text NOT NULL,
    version      text NOT NULL,
    description  text NOT NULL DEFAULT '',
    definition   jsonb NOT NULL,
    content_hash text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (namespace, name, version)
);

CREATE TABLE tasker.tasks (
    task_uuid             uuid PRIMARY KEY,
    template_id           bigint NOT NULL REFERENCES tasker.task_templates (template_id),
    namespace             text NOT NULL,
    name                  text NOT NULL,
    version               text NOT NULL,
    state                 text NOT NULL,
    -- number of transitions so far; the next transition's sort_key
    transition_count      integer NOT NULL DEFAULT 0,
    context               jsonb NOT NULL DEFAULT '{}',
    tags                  text[] NOT NULL DEFAULT '{}',
    priority              integer NOT NULL DEFAULT 0,
    initiator             text NOT NULL DEFAULT '',
    source_system         text NOT NULL DEFAULT '',
    reason                text NOT NULL DEFAULT '',
    correlation_id        uuid NOT NULL,
    parent_correlation_id uuid,
    -- sha256 of the request's identity (idempotency key, or the whole request)
    identity_hash         text NOT NULL UNIQUE,
    -- W3C traceparent of the task's root span (task_orchestration), created
    -- when the task is accepted; every later span joins this trace
    traceparent           text NOT NULL DEFAULT '',
    -- set (in the transaction of its first terminal transition) once the
    -- root span has been emitted, so a task revived by an operator and
    -- finished again never emits a second root
    root_span_emitted     boolean NOT NULL DEFAULT false,
    -- when a task waiting for a step's backoff is to be looked at again
    wake_at               timestamptz,
    stale_after_seconds   integer NOT NULL DEFAULT 0,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    state_entered_at      timestamptz NOT NULL DEFAULT now(),
    completed_at          timestamptz
);
CREATE INDEX tasks_wake_idx ON tasker.tasks (wake_at) WHERE wake_at IS NOT NULL;
CREATE INDEX tasks_active_idx ON tasker.tasks (updated_at)
    WHERE state NOT IN ('complete', 'error', 'cancelled', 'resolved_manually');
CREATE INDEX tasks_namespace_created_idx ON tasker.tasks (namespace, created_at, task_uuid);
CREATE INDEX tasks_created_idx ON tasker.tasks (created_at, task_uuid);
CREATE INDEX tasks_correlation_idx ON tasker.tasks (correlation_id);

CREATE TABLE tasker.workflow_steps (
    step_uuid        uuid PRIMARY KEY,
    task_uuid        uuid NOT NULL REFERENCES tasker.tasks (task_uuid) ON DELETE CASCADE,
    name             text NOT NULL,
    handler          text NOT NULL,
    -- position in the template's topological order; steps are always listed
    -- and locked in this order
    position         integer NOT NULL,
    state            text NOT NULL,
    transition_count integer NOT NULL DEFAULT 0,
    attempts         integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL,
    retryable        boolean NOT NULL DEFAULT true,
    backoff_base_ms  integer NOT NULL,
    backoff_cap_ms   integer NOT NULL,
    timeout_seconds  integer NOT NULL,
    next_attempt_at  timestamptz,
    claimed_by       text,
    lease_expires_at timestamptz,
    inputs           jsonb,
    results          jsonb,
    last_error       jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    state_entered_at timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz,
    UNIQUE (task_uuid, name)
);
CREATE INDEX workflow_steps_lease_idx ON tasker.workflow_steps (lease_expires_at)
    WHERE state = 'in_progress';

CREATE TABLE tasker.workflow_step_edges (
    task_uuid uuid NOT NULL REFERENCES tasker.tasks (task_uuid) ON DELETE CASCADE,
    from_step uuid NOT NULL REFERENCES tasker.workflow_steps (step_uuid) ON DELETE CASCADE,
    to_step   uuid NOT NULL REFERENCES tasker.workflow_steps (step_uuid) ON DELETE CASCADE,
    PRIMARY KEY (from_step, to_step),
    CHECK (from_step <> to_step)
);
CREATE INDEX workflow_step_edges_to_idx ON tasker.workflow_step_edges (to_step);

CREATE TABLE tasker.task_transitions (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_uuid   uuid NOT NULL REFERENCES tasker.tasks (task_uuid) ON DELETE CASCADE,
    from_state  text,
    to_state    text NOT NULL,
    sort_key    integer NOT NULL,
    most_recent boolean NOT NULL,
    metadata    jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (task_uuid, sort_key)
);
CREATE UNIQUE INDEX task_transitions_most_recent_idx ON tasker.task_transitions (task_uuid) WHERE most_recent;

CREATE TABLE tasker.workflow_step_transitions (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    step_uuid   uuid NOT NULL REFERENCES tasker.workflow_steps (step_uuid) ON DELETE CASCADE,
    task_uuid   uuid NOT NULL,
    from_state  text,
    to_state    text NOT NULL,
    sort_key    integer NOT NULL,
    most_recent boolean NOT NULL,
    metadata    jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (step_uuid, sort_key)
);
CREATE UNIQUE INDEX workflow_step_transitions_most_recent_idx ON tasker.workflow_step_transitions (step_uuid) WHERE most_recent;
CREATE INDEX workflow_step_transitions_task_idx ON tasker.workflow_step_transitions (task_uuid);

CREATE TABLE tasker.dlq_entries (
    dlq_id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_uuid            uuid NOT NULL REFERENCES tasker.tasks (task_uuid) ON DELETE CASCADE,
    namespace            text NOT NULL,
    reason               text NOT NULL,
    detail               text NOT NULL DEFAULT '',
    snapshot             jsonb NOT NULL DEFAULT '{}',
    resolution_status    text NOT NULL DEFAULT 'pending'
        CHECK (resolution_status IN ('pending', 'investigating', 'resolved', 'ignored')),
    resolution_notes     text NOT NULL DEFAULT '',
    resolved_by          text NOT NULL DEFAULT '',
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dlq_entries_status_idx ON tasker.dlq_entries (resolution_status, created_at);
CREATE UNIQUE INDEX dlq_entries_open_task_idx ON tasker.dlq_entries (task_uuid)
    WHERE resolution_status IN ('pending', 'investigating');

-- +goose Down
DROP SCHEMA IF EXISTS tasker CASCADE;
