package orchestration

import (
	"encoding/json"
	"testing"

	"github.com/google/uuid"
)

// decodeNotice gives json.Unmarshal's notice and error, whichever path it
// takes.
func FuzzDecodeNotice(f *testing.F) {
	id := uuid.New().String()
	f.Add(`{"task_uuid": "` + id + `", "step_uuid": "` + id + `", "attempt": 1, "success": true}`)
	f.Add(`{"attempt": 2, "success": false, "x": 1}`)
	f.Add(`{"attempt": "2", "success": null}`)
	f.Add(`{"Success": true, "attempt": -0}`)
	f.Add(`{"task_uuid": 12}`)
	f.Fuzz(func(t *testing.T, body string) {
		got, err := decodeNotice([]byte(body))
		var want ResultNotice
		werr := json.Unmarshal([]byte(body), &want)
		if got != want || (err == nil) != (werr == nil) || (err != nil && err.Error() != werr.Error()) {
			t.Fatalf("%q: got %+v, %v; json.Unmarshal %+v, %v", body, got, err, want, werr)
		}
	})
}
