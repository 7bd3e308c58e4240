// JSON-lines logging: one JSON object per line with the keys Go's log/slog
// JSON handler uses (time, level, msg), so the Node and the Go workers' logs
// can be read by the same tools. A child logger carries fields such as
// worker_id, task_uuid, step_uuid and correlation_id on every line.

const LEVELS = { DEBUG: 10, INFO: 20, WARN: 30, ERROR: 40 };

/** parseLevel accepts debug, info, warn or error (any case). */
export function parseLevel(name) {
  const level = String(name || 'info').toUpperCase();
  if (level === 'WARNING') return 'WARN';
  if (!(level in LEVELS)) {
    throw new Error(`unknown log level ${JSON.stringify(name)} (want debug, info, warn or error)`);
  }
  return level;
}

function plain(value) {
  if (value instanceof Error) {
    return value.message;
  }
  if (typeof value === 'bigint') {
    return value.toString();
  }
  return value;
}

export class Logger {
  /**
   * @param {object} [opts]
   * @param {string} [opts.level] minimum level written (default info)
   * @param {{write(s: string): unknown}} [opts.stream] default process.stderr
   * @param {object} [opts.fields] fields added to every line
   */
  constructor({ level = 'info', stream = process.stderr, fields = {} } = {}) {
    this.level = parseLevel(level);
    this.stream = stream;
    this.fields = fields;
  }

  /** with returns a child logger that adds fields to every line. */
  with(fields) {
    const child = new Logger({ level: this.level, stream: this.stream, fields: { ...this.fields, ...fields } });
    return child;
  }

  enabled(level) {
    return LEVELS[level] >= LEVELS[this.level];
  }

  write(level, msg, fields) {
    if (!this.enabled(level)) return;
    const line = { time: new Date().toISOString(), level, msg };
    for (const [k, v] of Object.entries(this.fields)) line[k] = plain(v);
    if (fields) {
      for (const [k, v] of Object.entries(fields)) {
        if (v !== undefined) line[k] = plain(v);
      }
    }
    let text;
    try {
      text = JSON.stringify(line);
    } catch (err) {
      text = JSON.stringify({ time: line.time, level, msg, log_error: `unserializable fields: ${err.message}` });
    }
    this.stream.write(text + '\n');
  }

  debug(msg, fields) { this.write('DEBUG', msg, fields); }
  info(msg, fields) { this.write('INFO', msg, fields); }
  warn(msg, fields) { this.write('WARN', msg, fields); }
  error(msg, fields) { this.write('ERROR', msg, fields); }
}
