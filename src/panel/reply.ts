/** What a panel route answers; turned into an HTTP response by the node adapter (http.ts). */
export interface PanelReply {
  status: number;
  /** JSON-encoded unless `rawBody` is set. */
  body?: unknown;
  /** Sent verbatim as application/json (the desired set, whose ETag is computed over these bytes). */
  rawBody?: string;
  headers?: Record<string, string>;
}

/** SkyPanelV2's error shape for its routes: `{success:false, error:{code, message}}`. */
export function failure(status: number, code: string, message: string): PanelReply {
  return { status, body: { success: false, error: { code, message } } };
}

/** SkyPanelV2's auth middleware shape: `{error:"Unauthorized", message}`. */
export function unauthorized(message: string): PanelReply {
  return { status: 401, body: { error: 'Unauthorized', message } };
}
