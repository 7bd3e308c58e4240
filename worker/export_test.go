package worker

// QueuedSubmissions is how many finished steps are waiting for the
// submitter (tests use it to know when a batch is complete).
func QueuedSubmissions(w *Worker) int { return len(w.submits) }

// HasHandler reports whether w would run steps of handler name.
func HasHandler(w *Worker, name string) bool {
	_, ok := w.handler(name)
	return ok
}

// StepCounts is how many started steps have a handler still running and how
// many have a result still being submitted (both zero when the worker is
// idle).
func StepCounts(w *Worker) (running, finishing int64) { return w.running.Load(), w.finishing.Load() }
