package queue

import (
	"errors"
	"fmt"
)

// Fixed queue names shared by every namespace.
const (
	// TaskRequestsQueue carries task requests from clients in any language.
	TaskRequestsQueue = "orchestration_task_requests"
	// StepResultsQueue carries step result notices from workers to orchestrators.
	StepResultsQueue = "orchestration_step_results"
)

// MaxQueueNameLen is the longest queue name PGMQ accepts.
const MaxQueueNameLen = 47

// MaxNamespaceLen is the longest namespace: its queues' names (the longest
// "domain_events_" + namespace) stay within MaxQueueNameLen.
const MaxNamespaceLen = 33

// namespacePattern is what ValidateNamespace accepts, for its message.
const namespacePattern = `^[a-z][a-z0-9_]{0,32}$`

// lowerName reports whether s is a lowercase ASCII letter followed by
// lowercase ASCII letters, digits or underscores (^[a-z][a-z0-9_]*$). The
// names are checked on every queue call, so without a regular expression.
func lowerName(s string) bool {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

// ErrInvalidName is returned (wrapped) for a namespace or queue name that the
// engine refuses; names are checked before any SQL is built from them.
var ErrInvalidName = errors.New("invalid name")

// ValidateNamespace checks a namespace name: a lowercase letter, then up to 32
// lowercase letters, digits or underscores. PGMQ folds case silently and limits
// queue names to 47 characters, so the engine is strict here.
func ValidateNamespace(ns string) error {
	if len(ns) > MaxNamespaceLen || !lowerName(ns) {
		return fmt.Errorf("%w: namespace %q must match %s (a lowercase letter, then up to 32 lowercase letters, digits or underscores)", ErrInvalidName, ns, namespacePattern)
	}
	return nil
}

// ValidateQueueName checks a queue name before it is used in SQL.
func ValidateQueueName(name string) error {
	if len(name) > MaxQueueNameLen || !lowerName(name) {
		return fmt.Errorf("%w: queue %q must be 1-%d lowercase letters, digits or underscores, starting with a letter", ErrInvalidName, name, MaxQueueNameLen)
	}
	return nil
}

// WorkerQueue is the queue that carries step messages for a namespace.
func WorkerQueue(ns string) (string, error) {
	if err := ValidateNamespace(ns); err != nil {
		return "", err
	}
	return "worker_" + ns + "_queue", nil
}

// DomainEventsQueue is the queue that carries a namespace's domain events.
func DomainEventsQueue(ns string) (string, error) {
	if err := ValidateNamespace(ns); err != nil {
		return "", err
	}
	return "domain_events_" + ns, nil
}
