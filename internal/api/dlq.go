package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/store"
)

// maxResolutionNotesLen caps an operator's notes on a DLQ entry.
const maxResolutionNotesLen = 10000

// DLQView is a DLQ entry as the API shows it.
type DLQView struct {
	ID               int64           `json:"dlq_id"`
	TaskUUID         uuid.UUID       `json:"task_uuid"`
	Namespace        string          `json:"namespace"`
	Reason           string          `json:"reason"`
	Detail           string          `json:"detail"`
	Snapshot         json.RawMessage `json:"snapshot"`
	ResolutionStatus string          `json:"resolution_status"`
	ResolutionNotes  string          `json:"resolution_notes,omitempty"`
	ResolvedBy       string          `json:"resolved_by,omitempty"`
	CreatedAt        time.Time       `json:"created_at"`
	UpdatedAt        time.Time       `json:"updated_at"`
}

func dlqView(d store.DLQEntry) DLQView {
	return DLQView{ID: d.ID, TaskUUID: d.TaskUUID, Namespace: d.Namespace, Reason: d.Reason, Detail: d.Detail,
		Snapshot: d.Snapshot, ResolutionStatus: d.ResolutionStatus, ResolutionNotes: d.ResolutionNotes,
		ResolvedBy: d.ResolvedBy, CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt}
}

func validDLQStatus(w http.ResponseWriter, status, field string) bool {
	if status != "" && !slices.Contains(store.DLQStatuses, status) {
		writeError(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("%s %q is not one of %v", field, status, store.DLQStatuses), field)
		return false
	}
	return true
}

func (s *Server) listDLQ(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	status := q.Get("status")
	if !validDLQStatus(w, status, "status") {
		return
	}
	limit := 50
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 500 {
			writeError(w, http.StatusBadRequest, "invalid_request", "limit must be an integer from 1 to 500", "limit")
			return
		}
		limit = n
	}
	entries, err := s.store.DLQList(r.Context(), status, q.Get("namespace"), limit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := struct {
		Entries []DLQView `json:"entries"`
	}{Entries: make([]DLQView, 0, len(entries))}
	for _, e := range entries {
		out.Entries = append(out.Entries, dlqView(e))
	}
	writeJSON(w, http.StatusOK, out)
}

func pathID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	raw := r.PathValue("dlq_id")
	id, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || id < 1 {
		writeError(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("dlq_id %q is not a positive integer", raw), "dlq_id")
		return 0, false
	}
	return id, true
}

func (s *Server) getDLQ(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	d, err := s.store.DLQGet(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, dlqView(d))
}

func (s *Server) updateDLQ(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	// Notes and author are pointers: a field left out (or null) keeps what
	// the entry has; "" clears it.
	var body struct {
		ResolutionStatus string  `json:"resolution_status"`
		ResolutionNotes  *string `json:"resolution_notes"`
		ResolvedBy       *string `json:"resolved_by"`
	}
	if !s.decodeBody(w, r, &body) {
		return
	}
	if body.ResolutionStatus == "" {
		writeError(w, http.StatusBadRequest, "invalid_request", "resolution_status is required", "resolution_status")
		return
	}
	if !validDLQStatus(w, body.ResolutionStatus, "resolution_status") {
		return
	}
	if body.ResolutionNotes != nil {
		if err := orchestration.ValidateText("resolution_notes", *body.ResolutionNotes, maxResolutionNotesLen); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	if body.ResolvedBy != nil {
		if err := orchestration.ValidateText("resolved_by", *body.ResolvedBy, orchestration.MaxTextFieldLen); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	d, err := s.store.DLQUpdate(r.Context(), id, body.ResolutionStatus, body.ResolutionNotes, body.ResolvedBy)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, dlqView(d))
}
