// Package queue is the only package that talks to PGMQ: the pgmq extension
// (1.5 to 1.9) where the server has it, otherwise tasker's SQL implementation
// of the same API (migrations/pgmq_impl/pgmq.sql). Both are installed by
// migration 1, so callers never need to know which one they have.
//
// Every function takes a DB, which *pgxpool.Pool, pgx.Tx and *pgx.Conn all
// satisfy: sending a message in the transaction that records the state change
// it announces is how the engine avoids lost or phantom messages.
//
// Queue names are checked with ValidateQueueName before any SQL is built, and
// the SQL side validates them again, so a hostile name fails twice over.
//
// Visibility timeouts and delays are whole seconds in PGMQ. Durations are
// rounded up (a positive duration never becomes 0, which would mean "visible
// at once"); zero and negative durations mean 0.
//
// github.com/craigpastro/pgmq-go is used for the calls it gets right and that
// report errors faithfully (create, send without headers, delete, archive).
// Calls it lacks, and calls that return row sets (its row-set functions drop
// the error of a failing statement, e.g. a read from a missing queue returns
// no messages and no error), go through SQL here with explicit casts.
package queue
