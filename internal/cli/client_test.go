package cli

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
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
