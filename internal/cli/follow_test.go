package cli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestFollowPrintsChangesNotTicks: outside a terminal, a wait prints a
// line per change of progress and repeats an unchanged one only every
// followQuietEvery (it printed one line per 200 ms poll, because the
// elapsed time made every line differ).
func TestFollowPrintsChangesNotTicks(t *testing.T) {
	var out bytes.Buffer
	var w progressWriter
	var running, done taskOut
	for _, doc := range []struct {
		into *taskOut
		json string
	}{
		{&running, `{"state":"steps_in_process","steps":[{},{}],"step_counts":{"in_progress":1,"pending":1}}`},
		{&done, `{"state":"complete","steps":[{},{}],"step_counts":{"complete":2}}`},
	} {
		if err := json.Unmarshal([]byte(doc.json), doc.into); err != nil {
			t.Fatal(err)
		}
	}
	for tick := time.Duration(0); tick < 70*time.Second; tick += 200 * time.Millisecond {
		w.print(&out, progressLine(running), tick)
	}
	w.print(&out, progressLine(done), 70*time.Second)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 4 || !strings.HasSuffix(lines[0], " 0s") || !strings.HasSuffix(lines[1], " 30s") ||
		!strings.HasSuffix(lines[2], " 1m0s") || !strings.Contains(lines[3], "2/2 steps complete") {
		t.Errorf("350 polls of one state and a change printed:\n%s", out.String())
	}
}
