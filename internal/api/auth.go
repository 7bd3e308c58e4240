package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"net/http"
	"strings"

	"github.com/tasker/tasker/internal/orchestration"
)

// Permission is what a route requires.
type Permission int

// Permissions, each implying the ones before it.
const (
	PermNone Permission = iota
	PermRead
	PermWrite
	PermAdmin
)

// PublicKind names endpoints that configuration may leave open.
type PublicKind int

// The public endpoint kinds.
const (
	PublicHealth PublicKind = iota
	PublicMetrics
)

// Credential is an accepted key and its permission level.
type Credential struct {
	Name  string
	Key   string
	Level Permission
}

// Authenticator checks API keys. A nil or disabled Authenticator lets every
// request through (local use).
type Authenticator struct {
	enabled       bool
	publicHealth  bool
	publicMetrics bool
	creds         []credential
	logger        *slog.Logger
}

type credential struct {
	name  string
	hash  [32]byte
	level Permission
}

// NewAuthenticator returns an authenticator; with enabled false it allows
// everything.
func NewAuthenticator(enabled, publicHealth, publicMetrics bool, creds []Credential, logger *slog.Logger) *Authenticator {
	a := &Authenticator{enabled: enabled, publicHealth: publicHealth, publicMetrics: publicMetrics, logger: logger}
	for _, c := range creds {
		a.creds = append(a.creds, credential{name: c.Name, hash: sha256.Sum256([]byte(c.Key)), level: c.Level})
	}
	return a
}

// LevelOf maps configured permission names to the highest level.
func LevelOf(perms []string) Permission {
	level := PermNone
	for _, p := range perms {
		switch p {
		case "read":
			level = max(level, PermRead)
		case "write":
			level = max(level, PermWrite)
		case "admin":
			level = max(level, PermAdmin)
		}
	}
	return level
}

// lookup finds the credential for a presented key. Every configured key is
// compared, in constant time over equal-length digests, so the time taken
// does not reveal which key (or how much of one) matched.
func (a *Authenticator) lookup(key string) (credential, bool) {
	h := sha256.Sum256([]byte(key))
	var found credential
	ok := false
	for _, c := range a.creds {
		if subtle.ConstantTimeCompare(h[:], c.hash[:]) == 1 {
			found, ok = c, true
		}
	}
	return found, ok
}

func presentedKey(r *http.Request) string {
	if k := r.Header.Get("X-API-Key"); k != "" {
		return k
	}
	// The scheme is case-insensitive (RFC 7235).
	scheme, key, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if strings.EqualFold(scheme, "Bearer") {
		return strings.TrimSpace(key)
	}
	return ""
}

// Require wraps h so that it needs a credential of at least perm.
func (a *Authenticator) Require(perm Permission, h http.Handler) http.Handler {
	if a == nil || !a.enabled || perm == PermNone {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := presentedKey(r)
		if key == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tasker"`)
			writeError(w, http.StatusUnauthorized, "unauthenticated", "an API key is required: send X-API-Key or Authorization: Bearer", "")
			return
		}
		c, ok := a.lookup(key)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tasker"`)
			writeError(w, http.StatusUnauthorized, "unauthenticated", "the API key is not valid", "")
			return
		}
		if c.level < perm {
			a.logger.Warn("request refused: insufficient permission", "key_name", c.name, "method", r.Method, "path", r.URL.Path)
			writeError(w, http.StatusForbidden, "forbidden", "the API key "+c.name+" lacks the "+permName(perm)+" permission", "")
			return
		}
		// Operator actions record who asked (the DLQ entries they close).
		h.ServeHTTP(w, r.WithContext(orchestration.WithOperator(r.Context(), c.name)))
	})
}

// Public wraps an operational endpoint that configuration may leave open.
func (a *Authenticator) Public(kind PublicKind, h http.Handler) http.Handler {
	if a == nil || !a.enabled {
		return h
	}
	if (kind == PublicHealth && a.publicHealth) || (kind == PublicMetrics && a.publicMetrics) {
		return h
	}
	return a.Require(PermRead, h)
}

func permName(p Permission) string {
	switch p {
	case PermRead:
		return "read"
	case PermWrite:
		return "write"
	case PermAdmin:
		return "admin"
	}
	return "none"
}
