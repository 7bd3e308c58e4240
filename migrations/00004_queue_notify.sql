-- Wake orchestrators at once when a step result or a task request arrives:
-- an insert into these queues NOTIFYs channel pgmq.q_<queue>.INSERT (once
-- per statement). Polling remains as a fallback.

-- +goose Up
SELECT pgmq.enable_notify_insert('orchestration_step_results');
SELECT pgmq.enable_notify_insert('orchestration_task_requests');

-- +goose Down
SELECT pgmq.disable_notify_insert('orchestration_step_results');
SELECT pgmq.disable_notify_insert('orchestration_task_requests');
