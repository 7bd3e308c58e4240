-- +goose Up
CREATE SCHEMA IF NOT EXISTS tasker;
-- +goose Down
DROP SCHEMA IF EXISTS tasker CASCADE;
