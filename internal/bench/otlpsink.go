package bench

import (
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// otlpSink is an OTLP/HTTP trace receiver that discards what it receives,
// so that --tracing measures the cost of producing and exporting spans (the
// batch processor, protobuf encoding, HTTP) without a collector.
type otlpSink struct {
	srv      *http.Server
	ln       net.Listener
	requests atomic.Int64
	bytes    atomic.Int64
	bufs     sync.Pool // *[]byte read buffers
}

func startOTLPSink() (*otlpSink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &otlpSink{ln: ln}
	s.bufs.New = func() any { b := make([]byte, 1<<20); return &b }
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", func(w http.ResponseWriter, r *http.Request) {
		// Read in large pieces: a request holds a few MB of spans, and the
		// 8 KiB reads of io.Copy into io.Discard made the sink, which stands
		// for a collector in another process, a few % of the benchmark's
		// CPU in read calls.
		buf := s.bufs.Get().(*[]byte)
		var n int64
		for {
			k, err := r.Body.Read(*buf)
			n += int64(k)
			if err != nil {
				break
			}
		}
		s.bufs.Put(buf)
		s.requests.Add(1)
		s.bytes.Add(n)
		// An empty body is a valid, fully successful ExportTraceServiceResponse.
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	})
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	// Ends when stop closes the server. A failure to serve shows up as
	// export errors in the exporters' logs.
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// endpoint is the base URL to give as the OTLP endpoint (protocol http/protobuf).
func (s *otlpSink) endpoint() string { return "http://" + s.ln.Addr().String() }

func (s *otlpSink) stop() { _ = s.srv.Close() }
