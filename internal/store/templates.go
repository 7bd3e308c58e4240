package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasker/tasker/internal/queue"
	"github.com/tasker/tasker/internal/template"
)

// TemplateRecord is a registered template version.
type TemplateRecord struct {
	ID        int64
	Template  *template.Template
	Hash      string
	CreatedAt time.Time
}

// TemplateRegister stores a template version, creating its namespace and the
// namespace's queues when they are new. Registering the same content again is
// a no-op (created=false); different content under an existing
// namespace/name/version is ErrConflict: versions are immutable, because
// running tasks refer to them.
func (s *Store) TemplateRegister(ctx context.Context, t *template.Template) (rec TemplateRecord, created bool, err error) {
	def, err := t.JSON()
	if err != nil {
		return rec, false, fmt.Errorf("encode template %s: %w", t.Key(), err)
	}
	hash := t.Hash()
	err = s.InTx(ctx, func(tx Tx) error {
		if err := namespaceEnsure(ctx, tx.tx, t.Namespace); err != nil {
			return err
		}
		var id int64
		var existingHash string
		var at time.Time
		err := tx.tx.QueryRow(ctx, `
			INSERT INTO tasker.task_templates (namespace, name, version, description, definition, content_hash)
			VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (namespace, name, version) DO NOTHING
			RETURNING template_id, created_at`,
			t.Namespace, t.Name, t.Version, t.Description, def, hash).Scan(&id, &at)
		if err == nil {
			created = true
			rec = TemplateRecord{ID: id, Template: t, Hash: hash, CreatedAt: at}
			return nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("insert template %s: %w", t.Key(), err)
		}
		err = tx.tx.QueryRow(ctx, `
			SELECT template_id, content_hash, created_at FROM tasker.task_templates
			 WHERE namespace = $1 AND name = $2 AND version = $3`,
			t.Namespace, t.Name, t.Version).Scan(&id, &existingHash, &at)
		if err != nil {
			return fmt.Errorf("read template %s: %w", t.Key(), err)
		}
		if existingHash != hash {
			return fmt.Errorf("%w: template %s is already registered with different content; register a new version", ErrConflict, t.Key())
		}
		rec = TemplateRecord{ID: id, Template: t, Hash: hash, CreatedAt: at}
		return nil
	})
	if err == nil && created {
		s.templates.gen.Add(1)
	}
	return rec, created, err
}

// namespaceEnsure creates a namespace with its worker and domain event
// queues (with insert notifications), the per-namespace worker role and its
// grants, if they do not exist yet. Provisioning goes through a SECURITY
// DEFINER function: a daemon running as tasker_api may not create tables or
// roles itself.
func namespaceEnsure(ctx context.Context, tx queue.DB, ns string) error {
	if err := queue.ValidateNamespace(ns); err != nil {
		return err
	}
	tag, err := tx.Exec(ctx, `INSERT INTO tasker.namespaces (name) VALUES ($1) ON CONFLICT DO NOTHING`, ns)
	if err != nil {
		return fmt.Errorf("create namespace %s: %w", ns, err)
	}
	if tag.RowsAffected() == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, `SELECT tasker.namespace_provision($1)`, ns); err != nil {
		return fmt.Errorf("provision namespace %s: %w", ns, err)
	}
	return nil
}

// TemplatesChannel is the notification channel on which every change of
// tasker.task_templates is announced (migration 00019's trigger), so that
// processes caching template lookups forget them.
const TemplatesChannel = "tasker_templates"

// templateCache remembers which template version a lookup by name resolved
// to. Every task submission names its template, and the lookup was a round
// trip and a freshly planned query per task (docs/performance.md, row 29).
//
// A named version never changes once registered, so its lookup is cached
// for good; "the latest version" changes when a newer one is registered, so
// it is cached only by a store told about registrations everywhere
// (CacheLatestTemplates). Every entry carries the generation it was read
// in; a registration through this store, or a notification on
// TemplatesChannel, starts a new generation and so drops every entry.
type templateCache struct {
	gen atomic.Int64
	// changed receives a value when templates changed elsewhere (nil:
	// latest-version lookups are not cached).
	changed atomic.Pointer[<-chan struct{}]
	byName  sync.Map // templateKey -> cachedTemplate
}

type templateKey struct{ ns, name, version string }

type cachedTemplate struct {
	gen int64
	rec TemplateRecord
}

// CacheLatestTemplates lets the store cache lookups of a template's latest
// version: changed must receive a value whenever tasker.task_templates
// changes, and when notifications may have been missed (a
// queue.Listener's SubscribeChannel(TemplatesChannel) does both).
func (s *Store) CacheLatestTemplates(changed <-chan struct{}) {
	s.templates.changed.Store(&changed)
}

// generation returns the current cache generation, first starting a new
// one if templates changed elsewhere.
func (c *templateCache) generation() (gen int64, latest bool) {
	ch := c.changed.Load()
	if ch == nil {
		return c.gen.Load(), false
	}
	select {
	case <-*ch:
		c.gen.Add(1)
	default:
	}
	return c.gen.Load(), true
}

// TemplateGet returns a registered template; an empty version means the most
// recently registered one.
func (s *Store) TemplateGet(ctx context.Context, ns, name, version string) (TemplateRecord, error) {
	gen, latest := s.templates.generation()
	key := templateKey{ns, name, version}
	cacheable := version != "" || latest
	if cacheable {
		if v, ok := s.templates.byName.Load(key); ok && v.(cachedTemplate).gen == gen {
			return v.(cachedTemplate).rec, nil
		}
	}
	rec, err := s.templateGet(ctx, ns, name, version)
	if err == nil && cacheable {
		// Read after gen was taken: a change since then has moved the
		// generation on, and this entry is never served.
		s.templates.byName.Store(key, cachedTemplate{gen: gen, rec: rec})
	}
	return rec, err
}

func (s *Store) templateGet(ctx context.Context, ns, name, version string) (TemplateRecord, error) {
	// The definition is read (and parsed) only when this process has not
	// parsed that version yet.
	var rec TemplateRecord
	err := s.pool.QueryRow(ctx, `
		SELECT template_id, content_hash, created_at FROM tasker.task_templates
		 WHERE namespace = $1 AND name = $2 AND ($3 = '' OR version = $3)
		 ORDER BY template_id DESC LIMIT 1`, ns, name, version).Scan(&rec.ID, &rec.Hash, &rec.CreatedAt)
	if err != nil {
		key := ns + "/" + name
		if version != "" {
			key += "@" + version
		}
		return rec, notFound(err, "template "+key)
	}
	if t, ok := s.parsed.Load(rec.ID); ok {
		rec.Template = t.(*template.Template)
		return rec, nil
	}
	return s.TemplateByID(ctx, rec.ID)
}

// TemplateByID returns a template version by its id.
func (s *Store) TemplateByID(ctx context.Context, id int64) (TemplateRecord, error) {
	rec, err := scanTemplate(s.pool.QueryRow(ctx, `
		SELECT template_id, definition, content_hash, created_at FROM tasker.task_templates WHERE template_id = $1`, id))
	if err != nil {
		return rec, notFound(err, fmt.Sprintf("template id %d", id))
	}
	s.parsed.Store(rec.ID, rec.Template)
	return rec, nil
}

// TemplateList lists registered templates, optionally of one namespace,
// ordered by namespace, name and registration.
func (s *Store) TemplateList(ctx context.Context, ns string) ([]TemplateRecord, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT template_id, definition, content_hash, created_at FROM tasker.task_templates
		 WHERE $1 = '' OR namespace = $1
		 ORDER BY namespace, name, template_id`, ns)
	if err != nil {
		return nil, fmt.Errorf("list templates: %w", err)
	}
	defer rows.Close()
	var out []TemplateRecord
	for rows.Next() {
		rec, err := scanTemplate(rows)
		if err != nil {
			return nil, fmt.Errorf("list templates: %w", err)
		}
		out = append(out, rec)
	}
	return out, rows.Err()
}

// NamespaceExists reports whether a namespace has been registered.
func (s *Store) NamespaceExists(ctx context.Context, ns string) (bool, error) {
	var ok bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM tasker.namespaces WHERE name = $1)`, ns).Scan(&ok)
	return ok, err
}

// NamespaceList lists registered namespaces.
func (s *Store) NamespaceList(ctx context.Context) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT name FROM tasker.namespaces ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

func scanTemplate(row pgx.Row) (TemplateRecord, error) {
	var rec TemplateRecord
	var def []byte
	if err := row.Scan(&rec.ID, &def, &rec.Hash, &rec.CreatedAt); err != nil {
		return rec, err
	}
	t, err := template.ParseJSON(def)
	if err != nil {
		return rec, fmt.Errorf("stored template %d no longer parses: %w", rec.ID, err)
	}
	rec.Template = t
	return rec, nil
}
