package store

import (
	"context"
	"encoding/json"
	"time"

	"github.com/tasker/tasker/internal/queue"
)

// MessagesRead reads up to n messages from a queue, hiding them for vt. The
// read commits asynchronously (queue.ReadAsync): what it writes is only
// the messages' visibility timeout and read count.
func (s *Store) MessagesRead(ctx context.Context, queueName string, vt time.Duration, n int) ([]queue.Message, error) {
	return queue.ReadAsync(ctx, s.pool, queueName, vt, n)
}

// MessageDeleteTx deletes a message in the caller's transaction, so that a
// command and its effects commit together.
func (s *Store) MessageDeleteTx(ctx context.Context, tx Tx, queueName string, id int64) (bool, error) {
	return queue.Delete(ctx, tx.tx, queueName, id)
}

// MessagesDeleteNowTx deletes messages in the caller's transaction at once
// (after its buffered writes) and returns the ids that were there: a
// message another transaction deleted first is not among them.
func (s *Store) MessagesDeleteNowTx(ctx context.Context, tx Tx, queueName string, ids []int64) ([]int64, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	return queue.DeleteBatch(ctx, tx.tx, queueName, ids)
}

// MessagesDeleteTx deletes messages in the caller's transaction (in a
// deferred transaction, with its buffered writes).
func (s *Store) MessagesDeleteTx(ctx context.Context, tx Tx, queueName string, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	if b := tx.tx.buf; b != nil {
		// Applied with the transaction's other buffered writes; the
		// caller does not need the result.
		if b.deletes == nil {
			b.deletes = map[string][]int64{}
		}
		b.deletes[queueName] = append(b.deletes[queueName], ids...)
		return nil
	}
	_, err := queue.DeleteBatch(ctx, tx.tx, queueName, ids)
	return err
}

// MessageArchive moves a message to the queue's archive (poison messages).
func (s *Store) MessageArchive(ctx context.Context, queueName string, id int64) (bool, error) {
	return queue.Archive(ctx, s.pool, queueName, id)
}

// MessageSend sends a message outside any transaction.
func (s *Store) MessageSend(ctx context.Context, queueName string, body json.RawMessage, headers map[string]string) (int64, error) {
	id, err := queue.Send(ctx, s.pool, queueName, body, headers, 0)
	if err == nil {
		s.notify(ctx, map[string]struct{}{queueName: {}})
	}
	return id, err
}

// MessageSendTx sends a message in the caller's transaction.
func (s *Store) MessageSendTx(ctx context.Context, tx Tx, queueName string, body json.RawMessage, headers map[string]string) (int64, error) {
	tx.tx.inserted(queueName)
	return queue.Send(ctx, tx.tx, queueName, body, headers, 0)
}

// QueueMetrics reports depth and age of every queue.
func (s *Store) QueueMetrics(ctx context.Context) ([]queue.Metrics, error) {
	return queue.AllMetrics(ctx, s.pool)
}
