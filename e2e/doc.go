// Package e2e holds end-to-end checks that need more than Postgres: the
// tracing check runs the real orchestrator and example worker binaries,
// exports their spans by OTLP to a real Jaeger and reads the traces back
// through Jaeger's query API.
//
// The tests carry the e2e build tag; run them with `make e2e` (or
// scripts/with-postgres.sh -- scripts/e2e.sh), which builds and starts a
// private Jaeger (scripts/jaeger.sh) and exports its JAEGER_* addresses.
package e2e
