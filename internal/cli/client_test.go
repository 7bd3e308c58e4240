package cli

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// slowTaskServer answers POST /v1/tasks with a new task at once and holds
// every other request until the client gives up: a server that is reached
// but does not answer in time.
func slowTaskServer(t *testing.T, id string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/v1/tasks" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusCreated)
			fmt.Fprintf(w, `{"task_uuid":%q,"namespace":"ns","name":"t","version":"1","state":"pending"}`, id)
			return
		}
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	return srv
}

// A --wait whose --timeout ends during a request says it timed out
// waiting for the task, not that the server cannot be reached.
func TestWaitTimeoutIsNotUnreachable(t *testing.T) {
	t.Parallel()
	const id = "01a21a1a-6905-7d33-8b68-ec8ffcfb9368"
	srv := slowTaskServer(t, id)
	_, errOut, code := run(t, "--server", srv.URL, "task", "submit", "-n", "ns", "--name", "t", "--wait", "--timeout", "300ms")
	if code != 1 || !strings.Contains(errOut, "timed out after 300ms waiting for task "+id) || strings.Contains(errOut, "cannot reach") {
		t.Errorf("exit %d, want 1 and a timeout naming the task:\n%s", code, errOut)
	}
}

// notifyingWriter is a buffer that closes seen when a write contains want.
type notifyingWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	seen chan struct{}
	once sync.Once
}

func (w *notifyingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if strings.Contains(string(p), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return w.buf.Write(p)
}

// An interrupt during task submit --wait (the injected interrupts context
// ends as SIGINT would end it) tells the user the task's UUID, that it keeps
// running and how to follow it, and exits 130; the UUID was printed as
// soon as the task was created.
func TestWaitInterruptedNamesTheTask(t *testing.T) {
	t.Parallel()
	const id = "01a21a1a-6905-7d33-8b68-ec8ffcfb9368"
	srv := slowTaskServer(t, id)
	stderr := &notifyingWriter{want: "task " + id + " created", seen: make(chan struct{})}
	g := &globals{stdout: &bytes.Buffer{}, stderr: stderr, interrupts: func(ctx context.Context) (context.Context, context.CancelFunc) {
		ctx, cancel := context.WithCancel(ctx)
		// Ends when the UUID has been printed or the command returns.
		go func() {
			select {
			case <-stderr.seen:
			case <-ctx.Done():
			}
			cancel()
		}()
		return ctx, cancel
	}}
	code := execute(g, []string{"--server", srv.URL, "task", "submit", "-n", "ns", "--name", "t", "--wait", "--timeout", "3s"})
	stderr.mu.Lock()
	errOut := stderr.buf.String()
	stderr.mu.Unlock()
	want := "interrupted: task " + id + " keeps running; follow it with: orchestrator --server " + srv.URL + " task get " + id + "\n"
	if code != exitInterrupted || !strings.HasPrefix(errOut, "task "+id+" created; ") || !strings.HasSuffix(errOut, want) {
		t.Errorf("exit %d, want 130, the UUID when created and %q:\n%s", code, want, errOut)
	}
}
