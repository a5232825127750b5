import { z } from 'zod';
import { openApiPath, routes } from './api.ts';
import type { RouteDef } from './api.ts';

const ErrorSchema = {
  type: 'object',
  required: ['error'],
  properties: {
    error: {
      type: 'object',
      required: ['code', 'message'],
      properties: { code: { type: 'string' }, message: { type: 'string' }, details: {} },
    },
  },
};

function jsonSchema(s: z.ZodType, io: 'input' | 'output'): Record<string, unknown> {
  const out = z.toJSONSchema(s, { io, unrepresentable: 'any' }) as Record<string, unknown>;
  delete out.$schema;
  return out;
}

function parametersOf(def: RouteDef): unknown[] {
  const params: unknown[] = [];
  for (const [where, schema] of [['path', def.params], ['query', def.query]] as const) {
    if (!schema) continue;
    const js = jsonSchema(schema, 'input') as { properties?: Record<string, unknown>; required?: string[] };
    for (const [name, prop] of Object.entries(js.properties ?? {})) {
      params.push({ name, in: where, required: where === 'path' || (js.required ?? []).includes(name), schema: prop });
    }
  }
  return params;
}

/** The OpenAPI 3.1 document, derived from the route table so it cannot drift from validation. */
export function buildOpenApi(version: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const [name, def] of Object.entries(routes) as [string, RouteDef][]) {
    const okStatus = String(def.status ?? 200);
    const op: Record<string, unknown> = {
      operationId: name,
      summary: def.summary,
      parameters: parametersOf(def),
      responses: {
        [okStatus]: def.stream === 'sse'
          ? { description: 'event stream', content: { 'text/event-stream': { schema: jsonSchema(def.response, 'output') } } }
          : {
            description: 'success',
            content: { 'application/json': { schema: jsonSchema(def.response, 'output') } },
            ...(def.paged ? { headers: { Link: { description: 'while more items follow: `<URL of the next page>; rel="next"`', schema: { type: 'string' } } } } : {}),
          },
        default: { description: 'error', content: { 'application/json': { schema: ErrorSchema } } },
      },
    };
    if (def.auth === 'token') {
      op.security = [{ bearer: [] }];
      op['x-scope'] = def.scope;
      op['x-min-role'] = def.role;
    }
    if (def.body) {
      op.requestBody = { required: true, content: { 'application/json': { schema: jsonSchema(def.body, 'input') } } };
    } else if (def.upload) {
      op.requestBody = { required: true, content: { [def.upload.contentType]: { schema: { type: 'string', format: 'binary' } } } };
    }
    (paths[openApiPath(def.path)] ??= {})[def.method.toLowerCase()] = op;
  }
  return {
    openapi: '3.1.0',
    info: { title: 'ShellWeGo API', version },
    servers: [{ url: '/' }],
    components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
    paths,
  };
}
