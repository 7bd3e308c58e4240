-- Changes to the registered templates are announced on the channel
-- tasker_templates, so that orchestrators can cache which version a
-- template name resolves to (the latest, when a submission names none) and
-- forget it when a version is registered anywhere (store.TemplatesChannel).
-- Registrations are rare; the notification's commit-time lock costs
-- nothing on the hot path.

-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION tasker.notify_templates_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tasker_templates', '');
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER task_templates_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tasker.task_templates
    FOR EACH STATEMENT EXECUTE FUNCTION tasker.notify_templates_changed();

-- +goose Down
DROP TRIGGER task_templates_notify ON tasker.task_templates;
DROP FUNCTION tasker.notify_templates_changed();
