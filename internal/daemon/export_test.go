package daemon

// CloseListener closes the API's listener under the running HTTP server, as
// a failing network would.
func (d *Daemon) CloseListener() error { return d.ln.Close() }
