import type { FastifyReply, FastifyRequest } from 'fastify';

/**
 * Points a paged list at its next page: `Link: </v1/apps?limit=200&after=shop>; rel="next"`.
 * The URL is relative to the request's (RFC 8288), so it holds behind any proxy or path prefix,
 * and keeps the request's other query parameters.
 */
export function setNextPage(req: FastifyRequest, reply: FastifyReply, query: Record<string, string | number | undefined>): void {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined) qs.set(k, String(v));
  const path = req.url.split('?')[0]!.split('/').pop()!;
  void reply.header('link', `<${path}?${qs.toString()}>; rel="next"`);
}
