package worker

// QueuedSubmissions is how many finished steps are waiting for the
// submitter (tests use it to know when a batch is complete).
func QueuedSubmissions(w *Worker) int { return len(w.submits) }

// HasHandler reports whether w would run steps of handler name.
func HasHandler(w *Worker, name string) bool {
	_, ok := w.handler(name)
	return ok
}
