//go:build e2e

package e2e

import (
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"
)

// The JSON of Jaeger's query HTTP API (/api/traces), which is what its UI
// reads. OTLP span attributes are tags, span events are logs (the event name
// in the "event" field), resource attributes are process tags.

type jaegerResponse struct {
	Data   []jaegerTrace `json:"data"`
	Errors []struct {
		Code int    `json:"code"`
		Msg  string `json:"msg"`
	} `json:"errors"`
}

type jaegerTrace struct {
	TraceID   string                   `json:"traceID"`
	Spans     []jaegerSpan             `json:"spans"`
	Processes map[string]jaegerProcess `json:"processes"`
	Warnings  []string                 `json:"warnings"`
}

type jaegerProcess struct {
	ServiceName string     `json:"serviceName"`
	Tags        []jaegerKV `json:"tags"`
}

type jaegerSpan struct {
	TraceID       string        `json:"traceID"`
	SpanID        string        `json:"spanID"`
	OperationName string        `json:"operationName"`
	References    []jaegerRef   `json:"references"`
	StartTime     int64         `json:"startTime"` // µs since the epoch
	Duration      int64         `json:"duration"`  // µs
	Tags          []jaegerKV    `json:"tags"`
	Logs          []jaegerLog   `json:"logs"`
	ProcessID     string        `json:"processID"`
	Warnings      []string      `json:"warnings"`
	service       string        // from Processes
	parent        *jaegerSpan   // nil for a root
	children      []*jaegerSpan // by start time
}

type jaegerRef struct {
	RefType string `json:"refType"`
	TraceID string `json:"traceID"`
	SpanID  string `json:"spanID"`
}

type jaegerKV struct {
	Key   string `json:"key"`
	Type  string `json:"type"`
	Value any    `json:"value"`
}

type jaegerLog struct {
	Timestamp int64      `json:"timestamp"`
	Fields    []jaegerKV `json:"fields"`
}

func kvString(kvs []jaegerKV, key string) (string, bool) {
	for _, kv := range kvs {
		if kv.Key == key {
			return fmt.Sprint(kv.Value), true
		}
	}
	return "", false
}

func (s *jaegerSpan) tag(key string) string {
	v, _ := kvString(s.Tags, key)
	return v
}

func (l jaegerLog) event() string {
	v, _ := kvString(l.Fields, "event")
	return v
}

// events lists the names of the span's events in order.
func (s *jaegerSpan) events() []string {
	out := make([]string, 0, len(s.Logs))
	for _, l := range s.Logs {
		out = append(out, l.event())
	}
	return out
}

func (s *jaegerSpan) hasEvent(name string) bool {
	for _, l := range s.Logs {
		if l.event() == name {
			return true
		}
	}
	return false
}

func (s *jaegerSpan) start() time.Time { return time.UnixMicro(s.StartTime) }
func (s *jaegerSpan) end() time.Time   { return time.UnixMicro(s.StartTime + s.Duration) }

// parentRef is the span's CHILD_OF reference, if any.
func (s *jaegerSpan) parentRef() (jaegerRef, bool) {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" {
			return r, true
		}
	}
	return jaegerRef{}, false
}

// normID lowercases an id and restores the leading zeros Jaeger may drop.
func normID(id string, n int) string {
	id = strings.ToLower(id)
	if len(id) < n {
		id = strings.Repeat("0", n-len(id)) + id
	}
	return id
}

// link resolves services and parent/child pointers; it returns the spans
// whose parent reference names no span of the trace.
func (tr *jaegerTrace) link() (byID map[string]*jaegerSpan, dangling []*jaegerSpan) {
	byID = map[string]*jaegerSpan{}
	for i := range tr.Spans {
		s := &tr.Spans[i]
		s.service = tr.Processes[s.ProcessID].ServiceName
		s.parent, s.children = nil, nil // link may run more than once
		byID[normID(s.SpanID, 16)] = s
	}
	for i := range tr.Spans {
		s := &tr.Spans[i]
		ref, ok := s.parentRef()
		if !ok {
			continue
		}
		p := byID[normID(ref.SpanID, 16)]
		if p == nil || normID(ref.TraceID, 32) != normID(tr.TraceID, 32) {
			dangling = append(dangling, s)
			continue
		}
		s.parent = p
		p.children = append(p.children, s)
	}
	for _, s := range byID {
		sort.SliceStable(s.children, func(i, j int) bool { return s.children[i].StartTime < s.children[j].StartTime })
	}
	return byID, dangling
}

// tree renders the span tree under root compactly: name, service, the
// states or step it is about, its duration and its events.
func tree(root *jaegerSpan) string {
	var b strings.Builder
	var walk func(s *jaegerSpan, prefix, branch string)
	walk = func(s *jaegerSpan, prefix, branch string) {
		b.WriteString(prefix + branch + s.OperationName)
		var about []string
		if from, to := s.tag("from_state"), s.tag("to_state"); from != "" || to != "" {
			if from == "" {
				from = "∅"
			}
			about = append(about, from+"→"+to)
		}
		if s.OperationName == "step_execution" {
			about = append(about, s.tag("step_name")+"#"+s.tag("attempt"), s.tag("outcome"))
		}
		if s.OperationName == "task_orchestration" {
			about = append(about, s.tag("namespace")+"/"+s.tag("task_name"), s.tag("outcome"))
		}
		if len(about) > 0 {
			b.WriteString(" (" + strings.Join(about, " ") + ")")
		}
		svc := strings.TrimPrefix(s.service, "tasker-")
		fmt.Fprintf(&b, " [%s %s]", svc, (time.Duration(s.Duration) * time.Microsecond).Round(10*time.Microsecond))
		if ev := s.events(); len(ev) > 0 {
			b.WriteString(" ⟨" + strings.Join(compact(ev), ", ") + "⟩")
		}
		b.WriteString("\n")
		next := prefix
		switch branch {
		case "├── ":
			next += "│   "
		case "└── ":
			next += "    "
		}
		for i, c := range s.children {
			br := "├── "
			if i == len(s.children)-1 {
				br = "└── "
			}
			walk(c, next, br)
		}
	}
	walk(root, "", "")
	return b.String()
}

// compact folds repeated event names: "step.before_transition×3".
func compact(names []string) []string {
	var out []string
	for i := 0; i < len(names); {
		j := i
		for j < len(names) && names[j] == names[i] {
			j++
		}
		if j-i > 1 {
			out = append(out, fmt.Sprintf("%s×%d", names[i], j-i))
		} else {
			out = append(out, names[i])
		}
		i = j
	}
	return out
}

// searchURL is the Jaeger search for traces of service with a span (or span
// event) carrying tag=value, started within [from, to].
func searchURL(base, service, tag, value string, from, to time.Time) string {
	q := url.Values{}
	q.Set("service", service)
	q.Set("tags", fmt.Sprintf(`{%q:%q}`, tag, value))
	q.Set("start", fmt.Sprint(from.UnixMicro()))
	q.Set("end", fmt.Sprint(to.UnixMicro()))
	q.Set("limit", "100")
	return base + "/api/traces?" + q.Encode()
}
