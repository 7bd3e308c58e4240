package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/craigpastro/pgmq-go"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tasker/tasker/internal/jsonenc"
)

// DB is satisfied by *pgxpool.Pool, pgx.Tx and *pgx.Conn, so every call can
// join the caller's transaction. It has the shape of pgmq-go's pgmq.DB.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Message is a message as read from a queue.
type Message struct {
	ID         int64
	ReadCount  int
	EnqueuedAt time.Time
	// VisibleAt is when the message becomes readable again.
	VisibleAt time.Time
	Body      json.RawMessage
	// Headers carry metadata such as traceparent. Non-string JSON values
	// (written by other clients) appear as their JSON text.
	Headers map[string]string
}

// Metrics describes a queue at ScrapedAt.
type Metrics struct {
	Queue string
	// Length counts the messages in the queue, VisibleLength those readable
	// now, TotalMessages those ever sent (including deleted and archived).
	Length, VisibleLength, TotalMessages int64
	// NewestAge and OldestAge are 0 for an empty queue.
	NewestAge, OldestAge time.Duration
	ScrapedAt            time.Time
}

// messageColumns names the six columns we read. Naming them, instead of
// SELECT *, keeps this package working if PGMQ adds columns.
const messageColumns = `msg_id, read_ct, enqueued_at, vt, message, headers`

const metricsColumns = `queue_name::text, queue_length, newest_msg_age_sec, oldest_msg_age_sec,
	total_messages, scrape_time, queue_visible_length`

// defaultPollInterval replaces a non-positive poll interval, which would make
// the server spin.
const defaultPollInterval = 100 * time.Millisecond

// notifyTrigger is the trigger enable_notify_insert installs, in both our SQL
// and the extension.
const notifyTrigger = "trigger_notify_queue_insert_listeners"

// Create creates a queue (its table, archive table and metadata). It is a
// no-op when the queue exists.
func Create(ctx context.Context, db DB, name string) error {
	if err := ValidateQueueName(name); err != nil {
		return fmt.Errorf("create queue: %w", err)
	}
	if err := pgmq.CreateQueue(ctx, db, name); err != nil {
		return fmt.Errorf("create queue %s: %w", name, err)
	}
	return nil
}

// CreateUnlogged creates a queue whose table is UNLOGGED: faster, but emptied
// by a crash. For messages that can be lost.
func CreateUnlogged(ctx context.Context, db DB, name string) error {
	if err := ValidateQueueName(name); err != nil {
		return fmt.Errorf("create unlogged queue: %w", err)
	}
	if err := pgmq.CreateUnloggedQueue(ctx, db, name); err != nil {
		return fmt.Errorf("create unlogged queue %s: %w", name, err)
	}
	return nil
}

// Drop deletes a queue with its messages and archive. It reports false when
// the queue did not exist. (pgmq-go's DropQueue discards that answer.)
func Drop(ctx context.Context, db DB, name string) (bool, error) {
	if err := ValidateQueueName(name); err != nil {
		return false, fmt.Errorf("drop queue: %w", err)
	}
	var dropped bool
	if err := db.QueryRow(ctx, `SELECT pgmq.drop_queue($1::text)`, name).Scan(&dropped); err != nil {
		return false, fmt.Errorf("drop queue %s: %w", name, err)
	}
	return dropped, nil
}

// List returns the names of all queues, sorted.
func List(ctx context.Context, db DB) ([]string, error) {
	rows, err := db.Query(ctx, `SELECT queue_name::text FROM pgmq.list_queues() ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("list queues: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list queues: %w", err)
	}
	return names, nil
}

// Send enqueues body, readable after delay, and returns its id. headers may be
// nil.
func Send(ctx context.Context, db DB, name string, body json.RawMessage, headers map[string]string, delay time.Duration) (int64, error) {
	if err := checkSend(name, body); err != nil {
		return 0, fmt.Errorf("send to %s: %w", name, err)
	}
	id, err := send(ctx, db, name, body, headers, seconds(delay))
	if err != nil {
		return 0, fmt.Errorf("send to %s: %w", name, err)
	}
	return id, nil
}

func send(ctx context.Context, db DB, name string, body json.RawMessage, headers map[string]string, delay int32) (int64, error) {
	if headers == nil {
		return pgmq.SendWithDelay(ctx, db, name, body, int(delay))
	}
	h, err := encodeHeaders(headers)
	if err != nil {
		return 0, err
	}
	var id int64
	err = db.QueryRow(ctx, `SELECT * FROM pgmq.send($1::text, $2::jsonb, $3::jsonb, $4::integer)`,
		name, string(body), h, delay).Scan(&id)
	return id, err
}

// SendBatch enqueues bodies in one statement, readable after delay, and
// returns their ids in order. headers is nil or has one entry per body (a nil
// entry means no headers).
func SendBatch(ctx context.Context, db DB, name string, bodies []json.RawMessage, headers []map[string]string, delay time.Duration) ([]int64, error) {
	if err := checkSendBatch(name, bodies, headers); err != nil {
		return nil, fmt.Errorf("send batch to %s: %w", name, err)
	}
	if len(bodies) == 0 {
		return nil, nil
	}
	ids, err := sendBatch(ctx, db, name, bodies, headers, seconds(delay))
	if err != nil {
		return nil, fmt.Errorf("send batch to %s: %w", name, err)
	}
	return ids, nil
}

func sendBatch(ctx context.Context, db DB, name string, bodies []json.RawMessage, headers []map[string]string, delay int32) ([]int64, error) {
	msgs := make([]string, len(bodies))
	for i, b := range bodies {
		msgs[i] = string(b)
	}
	hs, err := encodeHeaderList(headers)
	if err != nil {
		return nil, err
	}
	rows, err := db.Query(ctx, `SELECT * FROM pgmq.send_batch($1::text, $2::jsonb[], $3::jsonb[], $4::integer)`,
		name, msgs, hs, delay)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int64])
}

// Read claims up to qty visible messages, oldest first, and hides them for vt.
// Concurrent readers never get the same message.
func Read(ctx context.Context, db DB, name string, vt time.Duration, qty int) ([]Message, error) {
	if err := checkRead(name, qty); err != nil {
		return nil, fmt.Errorf("read from %s: %w", name, err)
	}
	msgs, err := queryMessages(ctx, db,
		`SELECT `+messageColumns+` FROM pgmq.read($1::text, $2::integer, $3::integer)`,
		name, seconds(vt), qty)
	if err != nil {
		return nil, fmt.Errorf("read from %s: %w", name, err)
	}
	return msgs, nil
}

// Batcher sends a pipeline of statements: a pool or a connection.
type Batcher interface {
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// asyncCommit makes the rest of the (implicit) transaction of a pipeline
// commit without waiting for its WAL to reach disk, and plan its statements
// once per connection, on the primary key: a read by key and visibility
// time has one sensible plan, and a plan made while the queue table looked
// small (a sequential scan and a sort, then a hash join for the update)
// would read every row of the table, dead ones included, on every read as
// the queue grows.
const asyncCommit = `SELECT set_config('synchronous_commit', 'off', true), set_config('plan_cache_mode', 'force_generic_plan', true), set_config('enable_seqscan', 'off', true)`

// ReadAsync is Read on the queue's table directly, committing without
// waiting for the WAL flush: one round trip, a pipeline of two statements
// in one implicit transaction. pgmq.read builds its statement with format()
// and EXECUTE, so it is parsed and planned on every call (0.3 ms of the
// 0.7 ms a read took under load); this one is prepared once per connection,
// with a generic plan. Losing the visibility-timeout update to a Postgres
// crash only makes the messages visible again sooner, which a visibility
// timeout allows anyway; a later durable commit flushes it with its own.
func ReadAsync(ctx context.Context, db Batcher, name string, vt time.Duration, qty int) ([]Message, error) {
	return readAsync(ctx, db, name, vt, qty, "")
}

// WorkerReadAsync is tasker.worker_read (migrations/00006) on the queue's
// table directly, like ReadAsync: up to qty visible messages whose
// "handler" is one of handlers, or that have no string handler (poison, for
// the worker to archive), FIFO, SKIP LOCKED, hidden for vt, read_ct + 1,
// returned in msg_id order.
func WorkerReadAsync(ctx context.Context, db Batcher, name string, vt time.Duration, qty int, handlers []string) ([]Message, error) {
	if handlers == nil {
		handlers = []string{}
	}
	return readAsync(ctx, db, name, vt, qty, workerFilter, handlers)
}

// workerFilter keeps, of the visible messages, those for one of the handlers
// in $3 and those naming no handler (tasker.worker_read's condition).
const workerFilter = `
			   AND ((message->>'handler') = ANY ($3)
			        OR jsonb_typeof(message->'handler') IS DISTINCT FROM 'string')`

// readAsync is pgmq.read's statement on name's table, with filter (SQL
// using $3 and on) added to the choice of messages.
func readAsync(ctx context.Context, db Batcher, name string, vt time.Duration, qty int, filter string, filterArgs ...any) ([]Message, error) {
	if err := checkRead(name, qty); err != nil {
		return nil, fmt.Errorf("read from %s: %w", name, err)
	}
	q, _, err := browseTables(name)
	if err != nil {
		return nil, fmt.Errorf("read from %s: %w", name, err)
	}
	msgs, err := readPipelineAsync(ctx, db, readSQL(q, filter), append([]any{qty, seconds(vt)}, filterArgs...)...)
	if err != nil {
		return nil, fmt.Errorf("read from %s: %w", name, err)
	}
	return msgs, nil
}

// readSQL is pgmq.read's statement on the queue table q (quoted), with
// filter (SQL using $3 and on) added to the choice of messages: $1 is the
// quantity, $2 the visibility timeout in seconds.
func readSQL(q, filter string) string {
	return `
		WITH picked AS (
			SELECT msg_id FROM ` + q + `
			 WHERE vt <= clock_timestamp()` + filter + `
			 ORDER BY msg_id
			 LIMIT $1
			   FOR UPDATE SKIP LOCKED
		), updated AS (
			UPDATE ` + q + ` m
			   SET vt = clock_timestamp() + make_interval(secs => $2), read_ct = m.read_ct + 1
			  FROM picked
			 WHERE m.msg_id = picked.msg_id
			RETURNING m.msg_id, m.read_ct, m.enqueued_at, m.vt, m.message, m.headers
		)
		SELECT ` + messageColumns + ` FROM updated ORDER BY msg_id`
}

// readPipeline sends b, whose last statement selects messageColumns, and
// returns its messages.
func readPipeline(ctx context.Context, db Batcher, b *pgx.Batch) ([]Message, error) {
	res := db.SendBatch(ctx, b)
	msgs, err := func() ([]Message, error) {
		for i := 0; i < b.Len()-1; i++ {
			if _, err := res.Exec(); err != nil {
				return nil, err
			}
		}
		rows, err := res.Query()
		if err != nil {
			return nil, err
		}
		return pgx.CollectRows(rows, scanMessage)
	}()
	if cerr := res.Close(); err == nil && cerr != nil {
		err = cerr
	}
	return msgs, err
}

// readPipelineAsync runs a read statement that returns messageColumns (sql
// with args) in the asynchronous-commit pipeline.
func readPipelineAsync(ctx context.Context, db Batcher, sql string, args ...any) ([]Message, error) {
	b := &pgx.Batch{}
	b.Queue(asyncCommit)
	b.Queue(sql, args...)
	return readPipeline(ctx, db, b)
}

// ReadWithPoll is Read that waits on the server, checking every interval, for
// up to maxPoll (whole seconds) until a message is visible. It returns an
// empty slice when none arrived. The connection is busy while it waits.
func ReadWithPoll(ctx context.Context, db DB, name string, vt time.Duration, qty int, maxPoll, interval time.Duration) ([]Message, error) {
	if err := checkRead(name, qty); err != nil {
		return nil, fmt.Errorf("read with poll from %s: %w", name, err)
	}
	if interval <= 0 {
		interval = defaultPollInterval
	}
	msgs, err := queryMessages(ctx, db,
		`SELECT `+messageColumns+` FROM pgmq.read_with_poll($1::text, $2::integer, $3::integer, $4::integer, $5::integer)`,
		name, seconds(vt), qty, seconds(maxPoll), milliseconds(interval))
	if err != nil {
		return nil, fmt.Errorf("read with poll from %s: %w", name, err)
	}
	return msgs, nil
}

// Pop removes and returns the oldest visible message, or nil when there is
// none. A popped message cannot be redelivered.
func Pop(ctx context.Context, db DB, name string) (*Message, error) {
	if err := ValidateQueueName(name); err != nil {
		return nil, fmt.Errorf("pop from %s: %w", name, err)
	}
	msgs, err := queryMessages(ctx, db, `SELECT `+messageColumns+` FROM pgmq.pop($1::text)`, name)
	if err != nil {
		return nil, fmt.Errorf("pop from %s: %w", name, err)
	}
	return first(msgs), nil
}

// Delete removes a message for good; false when it was not in the queue.
func Delete(ctx context.Context, db DB, name string, id int64) (bool, error) {
	if err := ValidateQueueName(name); err != nil {
		return false, fmt.Errorf("delete from %s: %w", name, err)
	}
	ok, err := pgmq.Delete(ctx, db, name, id)
	if err != nil {
		return false, fmt.Errorf("delete from %s: %w", name, err)
	}
	return ok, nil
}

// DeleteBatch removes messages for good and returns the ids that were there.
func DeleteBatch(ctx context.Context, db DB, name string, ids []int64) ([]int64, error) {
	if err := ValidateQueueName(name); err != nil {
		return nil, fmt.Errorf("delete batch from %s: %w", name, err)
	}
	done, err := queryIDs(ctx, db, `SELECT * FROM pgmq.delete($1::text, $2::bigint[])`, name, ids)
	if err != nil {
		return nil, fmt.Errorf("delete batch from %s: %w", name, err)
	}
	return done, nil
}

// Archive moves a message to the queue's archive table; false when it was not
// in the queue.
func Archive(ctx context.Context, db DB, name string, id int64) (bool, error) {
	if err := ValidateQueueName(name); err != nil {
		return false, fmt.Errorf("archive in %s: %w", name, err)
	}
	ok, err := pgmq.Archive(ctx, db, name, id)
	if err != nil {
		return false, fmt.Errorf("archive in %s: %w", name, err)
	}
	return ok, nil
}

// ArchiveBatch moves messages to the archive and returns the ids that were in
// the queue.
func ArchiveBatch(ctx context.Context, db DB, name string, ids []int64) ([]int64, error) {
	if err := ValidateQueueName(name); err != nil {
		return nil, fmt.Errorf("archive batch in %s: %w", name, err)
	}
	done, err := queryIDs(ctx, db, `SELECT * FROM pgmq.archive($1::text, $2::bigint[])`, name, ids)
	if err != nil {
		return nil, fmt.Errorf("archive batch in %s: %w", name, err)
	}
	return done, nil
}

// SetVT makes a message visible vt from now (0: at once) and returns it, or
// nil when there is no such message. Use it to extend a lease or to release a
// message for retry.
func SetVT(ctx context.Context, db DB, name string, id int64, vt time.Duration) (*Message, error) {
	if err := ValidateQueueName(name); err != nil {
		return nil, fmt.Errorf("set vt in %s: %w", name, err)
	}
	msgs, err := queryMessages(ctx, db,
		`SELECT `+messageColumns+` FROM pgmq.set_vt($1::text, $2::bigint, $3::integer)`,
		name, id, seconds(vt))
	if err != nil {
		return nil, fmt.Errorf("set vt in %s: %w", name, err)
	}
	return first(msgs), nil
}

// Purge deletes every message in the queue (not its archive) and returns how
// many there were.
func Purge(ctx context.Context, db DB, name string) (int64, error) {
	if err := ValidateQueueName(name); err != nil {
		return 0, fmt.Errorf("purge %s: %w", name, err)
	}
	var n int64
	if err := db.QueryRow(ctx, `SELECT pgmq.purge_queue($1::text)`, name).Scan(&n); err != nil {
		return 0, fmt.Errorf("purge %s: %w", name, err)
	}
	return n, nil
}

// QueueMetrics returns one queue's metrics.
func QueueMetrics(ctx context.Context, db DB, name string) (Metrics, error) {
	if err := ValidateQueueName(name); err != nil {
		return Metrics{}, fmt.Errorf("metrics of %s: %w", name, err)
	}
	rows, err := db.Query(ctx, `SELECT `+metricsColumns+` FROM pgmq.metrics($1::text)`, name)
	if err != nil {
		return Metrics{}, fmt.Errorf("metrics of %s: %w", name, err)
	}
	m, err := pgx.CollectExactlyOneRow(rows, scanMetrics)
	if err != nil {
		return Metrics{}, fmt.Errorf("metrics of %s: %w", name, err)
	}
	return m, nil
}

// AllMetrics returns the metrics of every queue.
func AllMetrics(ctx context.Context, db DB) ([]Metrics, error) {
	rows, err := db.Query(ctx, `SELECT `+metricsColumns+` FROM pgmq.metrics_all()`)
	if err != nil {
		return nil, fmt.Errorf("metrics of all queues: %w", err)
	}
	ms, err := pgx.CollectRows(rows, scanMetrics)
	if err != nil {
		return nil, fmt.Errorf("metrics of all queues: %w", err)
	}
	return ms, nil
}

// EnableNotify makes every insert statement into the queue send a NOTIFY on
// NotifyChannel(name), so consumers can LISTEN instead of polling. It is
// idempotent. It needs our SQL implementation or the extension 1.7+; with the
// extension, a NOTIFY is sent per row, though Postgres folds identical ones
// within a transaction.
func EnableNotify(ctx context.Context, db DB, name string) error {
	if err := ValidateQueueName(name); err != nil {
		return fmt.Errorf("enable notify on %s: %w", name, err)
	}
	// Checked first because the extension's enable_notify_insert fails when
	// the trigger exists, and the failure would abort the caller's transaction.
	var enabled bool
	err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_trigger
		WHERE tgrelid = to_regclass(format('pgmq.%I', 'q_' || $1::text)) AND tgname = $2)`,
		name, notifyTrigger).Scan(&enabled)
	if err == nil && !enabled {
		_, err = db.Exec(ctx, `SELECT pgmq.enable_notify_insert($1::text)`, name)
	}
	if err != nil {
		return fmt.Errorf("enable notify on %s: %w", name, err)
	}
	return nil
}

// NotifyChannel is the channel that EnableNotify signals for inserts into the
// queue: "pgmq.q_<name>.INSERT", as in the extension. It contains dots and
// capitals, so quote it when listening:
//
//	conn.Exec(ctx, "LISTEN "+pgx.Identifier{queue.NotifyChannel(name)}.Sanitize())
func NotifyChannel(name string) string {
	return "pgmq.q_" + name + ".INSERT"
}

func checkSend(name string, body json.RawMessage) error {
	if err := ValidateQueueName(name); err != nil {
		return err
	}
	if !json.Valid(body) {
		return errors.New("body is not valid json")
	}
	return nil
}

func checkSendBatch(name string, bodies []json.RawMessage, headers []map[string]string) error {
	if err := ValidateQueueName(name); err != nil {
		return err
	}
	if headers != nil && len(headers) != len(bodies) {
		return fmt.Errorf("%d headers for %d bodies", len(headers), len(bodies))
	}
	for i, b := range bodies {
		if !json.Valid(b) {
			return fmt.Errorf("body %d is not valid json", i)
		}
	}
	return nil
}

func checkRead(name string, qty int) error {
	if err := ValidateQueueName(name); err != nil {
		return err
	}
	if qty < 1 || qty > math.MaxInt32 {
		return fmt.Errorf("qty %d out of range", qty)
	}
	return nil
}

// encodeHeaders returns headers as JSON text (pgx sends a string to a jsonb
// parameter verbatim), or nil for SQL NULL.
func encodeHeaders(headers map[string]string) (any, error) {
	if headers == nil {
		return nil, nil
	}
	return string(jsonenc.StringMap(headers)), nil
}

// encodeHeaderList returns one JSON text per entry (nil for SQL NULL), or nil
// for no headers at all.
func encodeHeaderList(headers []map[string]string) ([]*string, error) {
	if headers == nil {
		return nil, nil
	}
	out := make([]*string, len(headers))
	for i, h := range headers {
		if h == nil {
			continue
		}
		s := string(jsonenc.StringMap(h))
		out[i] = &s
	}
	return out, nil
}

func queryMessages(ctx context.Context, db DB, sql string, args ...any) ([]Message, error) {
	rows, err := db.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, scanMessage)
}

func scanMessage(row pgx.CollectableRow) (Message, error) {
	var m Message
	var body, headers []byte
	if err := row.Scan(&m.ID, &m.ReadCount, &m.EnqueuedAt, &m.VisibleAt, &body, &headers); err != nil {
		return Message{}, err
	}
	m.Body = body
	m.Headers = decodeHeaders(headers)
	return m, nil
}

// decodeHeaders takes headers as they are stored: string values as they
// are, other values as their JSON text. Headers that are not a JSON object
// (another client's odd message) count as none, so that one message cannot
// make every read of its queue fail.
func decodeHeaders(raw []byte) map[string]string {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	if m, ok := jsonenc.DecodeStringMap(raw); ok {
		return m
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil
	}
	out := make(map[string]string, len(fields))
	for k, v := range fields {
		out[k] = headerValue(v)
	}
	return out
}

func headerValue(v json.RawMessage) string {
	var s string
	if len(v) > 0 && v[0] == '"' && json.Unmarshal(v, &s) == nil {
		return s
	}
	return string(v)
}

func queryIDs(ctx context.Context, db DB, sql string, args ...any) ([]int64, error) {
	rows, err := db.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int64])
}

func scanMetrics(row pgx.CollectableRow) (Metrics, error) {
	var m Metrics
	var newest, oldest *int32
	err := row.Scan(&m.Queue, &m.Length, &newest, &oldest, &m.TotalMessages, &m.ScrapedAt, &m.VisibleLength)
	m.NewestAge = secondsToDuration(newest)
	m.OldestAge = secondsToDuration(oldest)
	return m, err
}

func secondsToDuration(s *int32) time.Duration {
	if s == nil {
		return 0
	}
	return time.Duration(*s) * time.Second
}

func first(msgs []Message) *Message {
	if len(msgs) == 0 {
		return nil
	}
	return &msgs[0]
}

// seconds converts d to PGMQ's whole seconds, rounding up so that a positive
// duration never becomes 0; zero and negative give 0.
func seconds(d time.Duration) int32 {
	return ceilDiv(d, time.Second)
}

func milliseconds(d time.Duration) int32 {
	return ceilDiv(d, time.Millisecond)
}

func ceilDiv(d, unit time.Duration) int32 {
	if d <= 0 {
		return 0
	}
	n := d / unit
	if d%unit != 0 {
		n++
	}
	if n > math.MaxInt32 {
		return math.MaxInt32
	}
	return int32(n)
}

// DeleteSQL returns a statement that deletes the messages $1 (bigint[]) from
// queue name's table directly, as pgmq.delete does, and counts them.
// pgmq.delete builds and plans its statement on every call; this one,
// sent from Go, is prepared once per connection.
func DeleteSQL(name string) (string, error) {
	q, _, err := browseTables(name)
	if err != nil {
		return "", err
	}
	return `WITH d AS (DELETE FROM ` + q + ` WHERE msg_id = ANY ($1::bigint[]) RETURNING 1) SELECT count(*) FROM d`, nil
}

// InsertSQL returns a statement that enqueues messages into queue name's
// table directly, as pgmq.send_batch does with no delay: $1 (jsonb[]) are
// the bodies and $2 (jsonb[], one per body) their headers, given ids in
// array order, visible at once. pgmq.send_batch builds and plans its insert
// on every call; this statement, sent from Go, is prepared once per
// connection. Callers inserting inside a pipeline use it where a call of
// send_batch would cost a plan per transaction.
func InsertSQL(name string) (string, error) {
	q, _, err := browseTables(name)
	if err != nil {
		return "", err
	}
	return `INSERT INTO ` + q + ` (vt, message, headers)
		SELECT clock_timestamp(), u.m, u.h FROM unnest($1::jsonb[], $2::jsonb[]) WITH ORDINALITY AS u(m, h, i)
		 ORDER BY u.i`, nil
}

// EncodeHeaders is the JSON text of a message's headers for InsertSQL's
// $2: nil (SQL NULL) for none.
func EncodeHeaders(h map[string]string) ([]byte, error) {
	if h == nil {
		return nil, nil
	}
	return jsonenc.StringMap(h), nil
}

// StepMessage is the body of a step message in a namespace's worker queue
// (DESIGN §6): what the orchestrator sends and a worker claims by.
type StepMessage struct {
	TaskUUID      uuid.UUID `json:"task_uuid"`
	StepUUID      uuid.UUID `json:"step_uuid"`
	StepName      string    `json:"step_name"`
	Handler       string    `json:"handler"`
	Namespace     string    `json:"namespace"`
	CorrelationID uuid.UUID `json:"correlation_id"`
	Attempt       int       `json:"attempt"`
}

// DecodeStepMessage is json.Unmarshal of a step message's body, with the
// same result and error; the bodies the orchestrator writes are read
// without reflection (a worker decodes one for every step it claims).
func DecodeStepMessage(body []byte) (StepMessage, error) {
	var m StepMessage
	if jsonenc.Fields(body, func(k []byte, kind jsonenc.Kind, text []byte) bool {
		var ok bool
		switch string(k) {
		case "task_uuid":
			m.TaskUUID, ok = jsonenc.AsUUID(kind, text)
		case "step_uuid":
			m.StepUUID, ok = jsonenc.AsUUID(kind, text)
		case "correlation_id":
			m.CorrelationID, ok = jsonenc.AsUUID(kind, text)
		case "step_name":
			m.StepName, ok = string(text), kind == jsonenc.String
		case "handler":
			m.Handler, ok = string(text), kind == jsonenc.String
		case "namespace":
			m.Namespace, ok = string(text), kind == jsonenc.String
		case "attempt":
			m.Attempt, ok = jsonenc.AsInt(kind, text)
		}
		return ok
	}) {
		return m, nil
	}
	m = StepMessage{}
	err := json.Unmarshal(body, &m)
	return m, err
}

// AppendJSON appends m as json.Marshal(m) writes it, without reflection:
// the orchestrator encodes one for every step it dispatches.
func (m StepMessage) AppendJSON(out []byte) []byte {
	out = append(out, `{"task_uuid":`...)
	out = jsonenc.AppendUUID(out, m.TaskUUID)
	out = append(out, `,"step_uuid":`...)
	out = jsonenc.AppendUUID(out, m.StepUUID)
	out = append(out, `,"step_name":`...)
	out = jsonenc.AppendString(out, m.StepName)
	out = append(out, `,"handler":`...)
	out = jsonenc.AppendString(out, m.Handler)
	out = append(out, `,"namespace":`...)
	out = jsonenc.AppendString(out, m.Namespace)
	out = append(out, `,"correlation_id":`...)
	out = jsonenc.AppendUUID(out, m.CorrelationID)
	out = append(out, `,"attempt":`...)
	out = strconv.AppendInt(out, int64(m.Attempt), 10)
	return append(out, '}')
}
