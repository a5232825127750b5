/**
 * A server-sent-events parser that follows the WHATWG "event stream" rules: lines end in LF,
 * CR or CRLF (even when a CR and its LF arrive in different chunks), `data` lines of one event
 * are joined with LF, lines starting with `:` are comments, a leading BOM is dropped, and an
 * event is dispatched on a blank line only if it carried data.
 */

export interface SseMessage {
  /** The `event:` field; `message` when the server sent none. */
  event: string;
  /** The `data:` lines, JSON-parsed when they are JSON, otherwise the raw string. */
  data: unknown;
  /** The `id:` field when the server sent one. */
  id?: string;
}

/** The raw form: data as the string the server sent. */
export interface SseRawMessage {
  event: string;
  data: string;
  id?: string;
}

export class SseParser {
  private buffer = '';
  private decoder = new TextDecoder('utf-8');
  private started = false;
  /** A chunk ended in CR: if the next one starts with LF, that LF belongs to the same line end. */
  private pendingCr = false;
  private event = '';
  private data: string[] = [];
  private hasData = false;
  private id: string | undefined;

  /** Feeds bytes (or already-decoded text) and returns the messages completed by them. */
  push(chunk: Uint8Array | string): SseRawMessage[] {
    let text = typeof chunk === 'string' ? chunk : this.decoder.decode(chunk, { stream: true });
    if (!this.started && text.length > 0) {
      this.started = true;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    if (this.pendingCr && text.startsWith('\n')) text = text.slice(1);
    this.pendingCr = false;
    this.buffer += text;
    const out: SseRawMessage[] = [];
    let start = 0;
    for (let i = 0; i < this.buffer.length; i++) {
      const c = this.buffer.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      const line = this.buffer.slice(start, i);
      if (c === 13) {
        if (i + 1 < this.buffer.length) {
          if (this.buffer.charCodeAt(i + 1) === 10) i++;
        } else {
          this.pendingCr = true;
        }
      }
      start = i + 1;
      const msg = this.line(line);
      if (msg) out.push(msg);
    }
    this.buffer = this.buffer.slice(start);
    return out;
  }

  /**
   * The stream closed. Per the spec an event without its terminating blank line is incomplete
   * and is dropped; this only flushes the decoder (whose leftovers cannot complete an event).
   */
  end(): SseRawMessage[] {
    const rest = this.decoder.decode();
    return rest ? this.push(rest) : [];
  }

  private line(line: string): SseRawMessage | null {
    if (line === '') return this.dispatch();
    if (line.startsWith(':')) return null;
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    switch (field) {
      case 'event':
        this.event = value;
        break;
      case 'data':
        this.data.push(value);
        this.hasData = true;
        break;
      case 'id':
        if (!value.includes('\0')) this.id = value;
        break;
      default:
        // `retry` and unknown fields: nothing a one-shot client needs.
        break;
    }
    return null;
  }

  private dispatch(): SseRawMessage | null {
    const msg: SseRawMessage | null = this.hasData ? { event: this.event || 'message', data: this.data.join('\n') } : null;
    if (msg && this.id !== undefined) msg.id = this.id;
    this.event = '';
    this.data = [];
    this.hasData = false;
    return msg;
  }
}

/** JSON when it parses, else the string: the platform sends JSON, other servers may not. */
export function decodeSseData(data: string): unknown {
  try {
    return JSON.parse(data);
  } catch {
    return data;
  }
}

/** Parses an SSE byte stream into messages; ends when the stream ends. */
export async function* parseSse(body: AsyncIterable<Uint8Array | string>): AsyncGenerator<SseMessage> {
  const parser = new SseParser();
  for await (const chunk of body) {
    for (const m of parser.push(chunk)) yield toMessage(m);
  }
  for (const m of parser.end()) yield toMessage(m);
}

function toMessage(m: SseRawMessage): SseMessage {
  const out: SseMessage = { event: m.event, data: decodeSseData(m.data) };
  if (m.id !== undefined) out.id = m.id;
  return out;
}
