package queue

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/google/uuid"
)

// StepMessage.AppendJSON writes json.Marshal's bytes, escapes included.
func TestStepMessageAppendJSON(t *testing.T) {
	for _, m := range []StepMessage{
		{},
		{TaskUUID: uuid.New(), StepUUID: uuid.Must(uuid.NewV7()), StepName: "validate", Handler: "orders.validate",
			Namespace: "ecommerce", CorrelationID: uuid.New(), Attempt: 3},
		{StepName: `q"<&>`, Handler: "tab\there", Namespace: "ü", Attempt: -2147483648},
	} {
		want, _ := json.Marshal(m)
		if got := m.AppendJSON([]byte("x")); !bytes.Equal(got, append([]byte("x"), want...)) {
			t.Errorf("AppendJSON(%+v) = %s, json.Marshal gives %s", m, got[1:], want)
		}
	}
}
