package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/tasker/tasker/internal/template"
)

// TemplateView is a registered template version.
type TemplateView struct {
	Namespace    string          `json:"namespace"`
	Name         string          `json:"name"`
	Version      string          `json:"version"`
	Description  string          `json:"description,omitempty"`
	ContentHash  string          `json:"content_hash,omitempty"`
	RegisteredAt *time.Time      `json:"registered_at,omitempty"`
	Definition   json.RawMessage `json:"definition"`
}

func templateView(t *template.Template, hash string, at *time.Time) (TemplateView, error) {
	def, err := t.JSON()
	if err != nil {
		return TemplateView{}, err
	}
	return TemplateView{Namespace: t.Namespace, Name: t.Name, Version: t.Version, Description: t.Description,
		ContentHash: hash, RegisteredAt: at, Definition: def}, nil
}

// readTemplate parses a posted template: YAML when the Content-Type says so,
// JSON when it says so or is absent. It writes the error response itself.
func (s *Server) readTemplate(w http.ResponseWriter, r *http.Request) (*template.Template, bool) {
	mt, ok := mediaType(w, r, "application/json", "application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
	if !ok {
		return nil, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("request body exceeds %d bytes", s.maxBodyBytes), "")
		} else {
			writeError(w, http.StatusBadRequest, "invalid_request", "could not read the request body", "")
		}
		return nil, false
	}
	if len(bytes.TrimSpace(body)) == 0 {
		// In the words decode uses for other endpoints' bodies.
		writeTemplateError(w, &template.ValidationError{Problems: []template.Problem{{Message: "request body is empty; a template document is required"}}})
		return nil, false
	}
	var t *template.Template
	if strings.HasSuffix(mt, "yaml") {
		t, err = template.Parse(body)
	} else {
		t, err = template.ParseJSON(body)
	}
	if err != nil {
		writeTemplateError(w, err)
		return nil, false
	}
	return t, true
}

// templateProblems is the error body of an invalid template: every problem,
// each with the path it concerns.
type templateProblems struct {
	Error struct {
		Code     string        `json:"code"`
		Message  string        `json:"message"`
		Problems []problemView `json:"problems,omitempty"`
	} `json:"error"`
}

type problemView struct {
	Path    string `json:"path"`
	Message string `json:"message"`
}

func writeTemplateError(w http.ResponseWriter, err error) {
	var body templateProblems
	body.Error.Code = "invalid_template"
	body.Error.Message = err.Error()
	var ve *template.ValidationError
	if errors.As(err, &ve) {
		for _, p := range ve.Problems {
			body.Error.Problems = append(body.Error.Problems, problemView{Path: p.Path, Message: p.Message})
		}
	}
	writeJSON(w, http.StatusBadRequest, body)
}

func (s *Server) validateTemplate(w http.ResponseWriter, r *http.Request) {
	t, ok := s.readTemplate(w, r)
	if !ok {
		return
	}
	v, err := templateView(t, t.Hash(), nil)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"valid": true, "template": v, "topological_order": t.TopologicalOrder()})
}

func (s *Server) registerTemplate(w http.ResponseWriter, r *http.Request) {
	t, ok := s.readTemplate(w, r)
	if !ok {
		return
	}
	rec, created, err := s.store.TemplateRegister(r.Context(), t)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	v, err := templateView(rec.Template, rec.Hash, &rec.CreatedAt)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	status := http.StatusCreated
	if !created {
		status = http.StatusOK
	}
	writeJSON(w, status, v)
}

func (s *Server) listTemplates(w http.ResponseWriter, r *http.Request) {
	recs, err := s.store.TemplateList(r.Context(), r.URL.Query().Get("namespace"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := struct {
		Templates []TemplateView `json:"templates"`
	}{Templates: make([]TemplateView, 0, len(recs))}
	for _, rec := range recs {
		at := rec.CreatedAt
		v, err := templateView(rec.Template, rec.Hash, &at)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		out.Templates = append(out.Templates, v)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getTemplate(w http.ResponseWriter, r *http.Request) {
	rec, err := s.store.TemplateGet(r.Context(), r.PathValue("namespace"), r.PathValue("name"), r.PathValue("version"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	v, err := templateView(rec.Template, rec.Hash, &rec.CreatedAt)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}
