import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SseParser, parseSse } from './sse.ts';
import type { SseRawMessage } from './sse.ts';

function feed(chunks: (string | Uint8Array)[]): SseRawMessage[] {
  const p = new SseParser();
  const out: SseRawMessage[] = [];
  for (const c of chunks) out.push(...p.push(c));
  out.push(...p.end());
  return out;
}

const STREAM = [
  ': connected',
  '',
  'event: line',
  'data: {"line":"héllo wörld ✓"}',
  '',
  ': ping',
  '',
  'event: multi',
  'data: first',
  'data:second',
  'data',
  'id: 7',
  '',
  'data: no event name',
  '',
  'event: end',
  'data: {"state":"succeeded"}',
  '',
  '',
].join('\n');

const EXPECTED: SseRawMessage[] = [
  { event: 'line', data: '{"line":"héllo wörld ✓"}' },
  { event: 'multi', data: 'first\nsecond\n', id: '7' },
  { event: 'message', data: 'no event name', id: '7' },
  { event: 'end', data: '{"state":"succeeded"}', id: '7' },
];

test('parses events, comments, multi-line data and ids', () => {
  assert.deepEqual(feed([STREAM]), EXPECTED);
});

test('every split of the stream into two byte chunks gives the same events (incl. inside UTF-8 sequences)', () => {
  const bytes = Buffer.from(STREAM, 'utf8');
  for (let i = 0; i <= bytes.length; i++) {
    assert.deepEqual(feed([bytes.subarray(0, i), bytes.subarray(i)]), EXPECTED, `split at byte ${i}`);
  }
});

test('one byte at a time, with CRLF and lone CR line endings', () => {
  for (const eol of ['\r\n', '\r']) {
    const bytes = Buffer.from(STREAM.replace(/\n/g, eol), 'utf8');
    const chunks = [...bytes].map((b) => Uint8Array.of(b));
    assert.deepEqual(feed(chunks), EXPECTED, JSON.stringify(eol));
  }
});

test('a CRLF split between chunks is one line end, not two', () => {
  // If the LF after a chunk-final CR counted as a second line end, the blank line would
  // dispatch `a` early and `b` would become a separate event.
  const out = feed(['data: a\r', '\ndata: b\r', '\n\r', '\n']);
  assert.deepEqual(out, [{ event: 'message', data: 'a\nb' }]);
});

test('leading BOM is dropped; events without data and an unterminated last event are not dispatched', () => {
  const out = feed(['\uFEFFevent: nothing\n\n', 'data: ok\n\n', 'event: cut\ndata: partial']);
  assert.deepEqual(out, [{ event: 'message', data: 'ok' }]);
});

test('only the first space after the colon is removed; unknown fields are ignored', () => {
  const out = feed(['data:   padded\nretry: 100\nfoo: bar\n\n']);
  assert.deepEqual(out, [{ event: 'message', data: '  padded' }]);
});

test('parseSse decodes JSON data and keeps non-JSON as a string', async () => {
  async function* body() {
    yield 'event: line\ndata: {"a":1}\n\n';
    yield 'data: plain text\n\n';
  }
  const got = [];
  for await (const m of parseSse(body())) got.push(m);
  assert.deepEqual(got, [
    { event: 'line', data: { a: 1 } },
    { event: 'message', data: 'plain text' },
  ]);
});
